"""The melody embedder: MusicLM's melody conditioning, trained contrastively on renderings."""

from __future__ import annotations

from audiolm_jax.models.melody.model import (
    MODEL_NAME,
    MelodyConfig,
    MelodyEmbedder,
    batch_losses,
    make_init_fn,
    make_train_step,
    pitch_features,
)


def load(path):
    """A `MelodyTokenizer` (embeddings, and tokens when the export has `rvq.npz`) from an export
    or a training workdir."""
    # Imported on call: that module imports this package.
    from audiolm_jax.tokenizers.mulan import MelodyTokenizer

    return MelodyTokenizer.load(path)


__all__ = [
    "MODEL_NAME",
    "MelodyConfig",
    "MelodyEmbedder",
    "batch_losses",
    "load",
    "make_init_fn",
    "make_train_step",
    "pitch_features",
]
