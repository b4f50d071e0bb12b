"""w2v-BERT: the Conformer semantic encoder and its self-supervised pretraining.

- `model`: `W2vBertConfig`, `W2vBert` (HF `Wav2Vec2BertModel` layout).
- `pretrain`: w2v-BERT / BEST-RQ / k-means-target pretraining heads, losses and train step.

Import: `python -m audiolm_jax.convert w2v_bert HF_DIR OUT`.
"""

from __future__ import annotations

from audiolm_jax.models.w2v_bert.model import (
    ConformerLayer,
    ConvModule,
    FeedForward,
    SelfAttention,
    W2vBert,
    W2vBertConfig,
    count_flops_per_frame,
    encode_audio,
)
from audiolm_jax.models.w2v_bert.pretrain import (
    PretrainConfig,
    SemanticPretrainModel,
    make_init_fn,
    make_train_step,
    pretrain_losses,
)


def load(path):
    """A `W2vBert` and its variables from an export or a Hugging Face directory."""
    # Imported on call: that module imports this package.
    from audiolm_jax.convert.w2v_bert import load_w2v_bert

    return load_w2v_bert(path)


__all__ = [
    "ConformerLayer",
    "ConvModule",
    "FeedForward",
    "PretrainConfig",
    "SelfAttention",
    "SemanticPretrainModel",
    "W2vBert",
    "W2vBertConfig",
    "count_flops_per_frame",
    "encode_audio",
    "load",
    "make_init_fn",
    "make_train_step",
    "pretrain_losses",
]
