"""Voicebox: flow-matching speech generation (zero-shot TTS, infilling, editing, denoising).

- `model`: `VoiceboxConfig`, `VoiceboxTransformer` (the audio and the duration network).
- `flow`: training masks, the flow-matching (or regression) loss, the guided ODE sampler.
"""

from __future__ import annotations

from audiolm_jax.models.voicebox.flow import (
    denormalize,
    guided_velocity,
    loss_fn,
    normalize,
    random_frames_mask,
    sample,
    span_mask,
    training_mask,
)
from audiolm_jax.models.voicebox.model import (
    ConvPositionEmbedding,
    VoiceboxConfig,
    VoiceboxTransformer,
)

MODEL_NAME = "voicebox"

__all__ = [
    "ConvPositionEmbedding",
    "MODEL_NAME",
    "VoiceboxConfig",
    "VoiceboxTransformer",
    "denormalize",
    "guided_velocity",
    "loss_fn",
    "normalize",
    "random_frames_mask",
    "sample",
    "span_mask",
    "training_mask",
]
