"""Discriminators shared by the adversarially trained families (codec, vocoder)."""

from __future__ import annotations

from audiolm_jax.models.gan.discriminators import (
    CombinedDiscriminator,
    DiscriminatorOutput,
    MultiPeriodDiscriminator,
    MultiResolutionDiscriminator,
    MultiScaleSTFTDiscriminator,
    PeriodDiscriminator,
    ResolutionDiscriminator,
    STFTDiscriminator,
    resolution_planes,
    stft_planes,
)

__all__ = [
    "CombinedDiscriminator",
    "DiscriminatorOutput",
    "MultiPeriodDiscriminator",
    "MultiResolutionDiscriminator",
    "MultiScaleSTFTDiscriminator",
    "PeriodDiscriminator",
    "ResolutionDiscriminator",
    "STFTDiscriminator",
    "resolution_planes",
    "stft_planes",
]
