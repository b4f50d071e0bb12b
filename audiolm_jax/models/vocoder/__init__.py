"""The vocoder: Vocos (ConvNeXt backbone + ISTFT head) from log-mel or EnCodec features.

- `model`: `VocosConfig`, `Vocos`, `mel_features` (the features it decodes, in JAX).
- `train`: adversarial training (multi-period, multi-resolution and multi-scale STFT
  discriminators from `models.gan`).

Import: `python -m audiolm_jax.convert vocos SRC_DIR OUT_DIR` (the `vocos` package's
config.yaml + pytorch_model.bin / model.safetensors).
"""

from __future__ import annotations

from audiolm_jax.models.vocoder.model import (
    LOG_FLOOR,
    MEL_SETTINGS,
    AdaLayerNorm,
    ConvNeXtBlock,
    Vocos,
    VocosConfig,
    check_mel_settings,
    depthwise_conv1d,
    griffin_lim_from_features,
    init_vocos,
    istft,
    mel_features,
)

MODEL_NAME = "vocoder"
# The committed vocoder (weights/vocoder_tiny, trained by the recipe in weights/README.md):
# what Voicebox bundles and the TTS harness decode with unless told otherwise. Its mel
# settings are vocos-mel-24khz's with silence floored at 1e-5.
DEFAULT_VOCODER = "vocoder_tiny"


def load(path):
    """`(VocosConfig, variables)` from an export, a training workdir or a `vocos` directory."""
    # Imported on call: that module imports this package.
    from audiolm_jax.convert.vocos import load_vocoder

    return load_vocoder(path)


__all__ = [
    "AdaLayerNorm",
    "ConvNeXtBlock",
    "DEFAULT_VOCODER",
    "LOG_FLOOR",
    "MEL_SETTINGS",
    "MODEL_NAME",
    "Vocos",
    "VocosConfig",
    "check_mel_settings",
    "depthwise_conv1d",
    "griffin_lim_from_features",
    "init_vocos",
    "istft",
    "load",
    "mel_features",
]
