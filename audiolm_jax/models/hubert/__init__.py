"""HuBERT: the encoder whose k-means tokens AudioLM uses as semantic tokens.

Import: `python -m audiolm_jax.convert hubert HF_DIR OUT`.
"""

from __future__ import annotations

from audiolm_jax.models.hubert.model import (
    Attention,
    EncoderLayer,
    FeatureExtractor,
    HuBERT,
    HubertConfig,
    PositionalConv,
)


def load(path):
    """A `HuBERT` and its variables from an export or a Hugging Face directory."""
    # Imported on call: that module imports this package.
    from audiolm_jax.convert.hubert import load_hubert

    return load_hubert(path)


__all__ = [
    "Attention",
    "EncoderLayer",
    "FeatureExtractor",
    "HuBERT",
    "HubertConfig",
    "PositionalConv",
    "load",
]
