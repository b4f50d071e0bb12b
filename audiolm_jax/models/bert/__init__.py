"""BERT: the text encoder (MuLan's text tower).

Import: `python -m audiolm_jax.convert bert HF_DIR OUT`.
"""

from __future__ import annotations

from audiolm_jax.models.bert.model import (
    Bert,
    BertConfig,
    BertEmbeddings,
    BertLayer,
    BertSelfAttention,
)


def load(path):
    """`(BertConfig, variables, WordPieceTokenizer)` from an export or a Hugging Face directory."""
    # Imported on call: that module imports this package.
    from audiolm_jax.convert.bert import load_bert

    return load_bert(path)


__all__ = ["Bert", "BertConfig", "BertEmbeddings", "BertLayer", "BertSelfAttention", "load"]
