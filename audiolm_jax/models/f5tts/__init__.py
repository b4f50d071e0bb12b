"""F5-TTS (SWivid/F5-TTS): flow-matching text to speech over vocos log-mel, in JAX.

- `model`: `F5Config` (`base()` = F5TTS_v1_Base, `tiny()`), `DiT` (the velocity
  network: text ConvNeXt-V2 embedding, convolutional positions, AdaLN-Zero
  blocks with rotary attention).
- `sampling`: `sample` (the package's `CFM.sample`: Euler over the shared ODE
  solver, batched classifier-free guidance, sway sampling, EPSS grids) and
  `SampleInfo` (steps, velocity evaluations, network passes).
- `pipeline`: the character vocabulary, the speech-rate duration rule, long-text
  chunking and `F5TTS` (reference audio + transcript + text -> mel, or -> audio
  through a vocos-mel-24khz vocoder).
- `train`: the package's CFM loss (70-100 % span infilling, guidance dropout),
  `make_init_fn` / `make_train_step` for `train/f5tts.py`.

Import of the released weights: `python -m audiolm_jax.convert f5tts SRC OUT_DIR`
(`audiolm_jax.convert.f5tts`); `load(OUT_DIR)` gives an `F5TTS`. docs/f5tts.md.
"""

from __future__ import annotations

from audiolm_jax.models.f5tts.model import DiT, F5Config, init_dit
from audiolm_jax.models.f5tts.sampling import SampleInfo, sample, time_grid

MODEL_NAME = "f5tts"


def load(path, dtype=None):
    """A `pipeline.F5TTS` from a `convert f5tts` export."""
    import jax.numpy as jnp

    from audiolm_jax.models.f5tts.pipeline import load as load_pipeline

    return load_pipeline(path, dtype or jnp.float32)


__all__ = ["DiT", "F5Config", "MODEL_NAME", "SampleInfo", "init_dit", "load", "sample",
           "time_grid"]
