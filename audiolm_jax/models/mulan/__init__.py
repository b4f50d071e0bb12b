"""MuLan: the contrastive text-music embedder (audio tower + BERT text tower)."""

from __future__ import annotations

from audiolm_jax.models.mulan.model import (
    MODEL_NAME,
    AudioTower,
    AudioTowerConfig,
    MuLan,
    MuLanConfig,
    batch_losses,
    build_config,
    log_mel_patches,
    make_init_fn,
    make_train_step,
    window_starts,
    with_frozen,
)


def load(path):
    """A `MuLanEmbedder` (`embed_text`, `embed_audio`, `rank`) from an export or a training workdir."""
    # Imported on call: that module imports this package.
    from audiolm_jax.tokenizers.mulan import MuLanEmbedder

    return MuLanEmbedder.load(path)


__all__ = [
    "AudioTower",
    "AudioTowerConfig",
    "MODEL_NAME",
    "MuLan",
    "MuLanConfig",
    "batch_losses",
    "build_config",
    "load",
    "log_mel_patches",
    "make_init_fn",
    "make_train_step",
    "window_starts",
    "with_frozen",
]
