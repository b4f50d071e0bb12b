"""Losses shared by the model families.

- `spectral`: waveform and multi-resolution mel / STFT reconstruction losses.
- `adversarial`: hinge and feature-matching losses over discriminator outputs.
- `balancer`: EnCodec's gradient-norm loss balancer.
- `contrastive`: symmetric InfoNCE over a global batch (MuLan, melody).
"""

from audiolm_jax.losses.adversarial import (
    feature_matching_loss,
    hinge_discriminator_loss,
    hinge_generator_loss,
)
from audiolm_jax.losses.balancer import LossBalancer
from audiolm_jax.losses.contrastive import contrastive_loss
from audiolm_jax.losses.spectral import (
    multi_resolution_mel_loss,
    multi_resolution_stft_loss,
    time_l1,
)

__all__ = [
    "LossBalancer", "contrastive_loss", "feature_matching_loss", "hinge_discriminator_loss",
    "hinge_generator_loss", "multi_resolution_mel_loss", "multi_resolution_stft_loss", "time_l1",
]
