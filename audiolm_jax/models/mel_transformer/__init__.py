"""The masked log-mel transformer: the foundation's demo model."""

from __future__ import annotations

from audiolm_jax.models.mel_transformer.model import (
    MelTransformer,
    build_model,
    features,
    make_init_fn,
    make_train_step,
    reconstruct,
    reconstruction_losses,
)

__all__ = [
    "MelTransformer",
    "build_model",
    "features",
    "make_init_fn",
    "make_train_step",
    "reconstruct",
    "reconstruction_losses",
]
