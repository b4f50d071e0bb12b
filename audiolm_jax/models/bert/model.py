"""BERT text encoder, laid out like Hugging Face's `BertModel` (post-LN, absolute positions).

The text side of caption-conditioned models (e.g. a MuLan text tower, or
sentence embeddings of captions) is a BERT. Parameter names follow HF's so
`audiolm_jax.convert.bert` maps `bert-base-uncased` or
`sentence-transformers/all-MiniLM-L6-v2` key for key:

    input_ids [B, L] (WordPiece ids, `audiolm_jax.text.wordpiece`)
      -> embeddings: word + position + token type, LayerNorm     [B, L, hidden]
      -> layers, each (post-LN):
           x = LN(x + out(MHSA(q(x), k(x), v(x))))   padding keys masked out
           x = LN(x + output(act(intermediate(x))))
      -> last_hidden_state                                       [B, L, hidden]

    HF key (below `bert.` if prefixed)                 Flax param path
    embeddings.{word,position,token_type}_embeddings   embeddings/<same>/embedding
    embeddings.LayerNorm                               embeddings/layer_norm
    encoder.layer.{i}.attention.self.{query,key,value} encoder_layer_{i}/attention/<same>
        weight [H*D, hidden] -> kernel [hidden, H, D]; bias [H*D] -> [H, D]
    encoder.layer.{i}.attention.output.dense           encoder_layer_{i}/attention/out
        weight [hidden, H*D] -> kernel [H, D, hidden]
    encoder.layer.{i}.attention.output.LayerNorm       encoder_layer_{i}/attention_layer_norm
    encoder.layer.{i}.intermediate.dense               encoder_layer_{i}/intermediate
    encoder.layer.{i}.output.dense                     encoder_layer_{i}/output
    encoder.layer.{i}.output.LayerNorm                 encoder_layer_{i}/output_layer_norm

Dropout (a training regularizer) and the pooler (a `tanh(Dense(h[:, 0]))` only
next-sentence prediction used) are not modelled; sentence-transformers
checkpoints pool with `mean_pool` instead.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from audiolm_jax.checks import check_choice, check_divisible

# HF's ACT2FN names -> JAX. "gelu" is the exact erf form; "gelu_new" and
# "gelu_pytorch_tanh" are both the tanh approximation (the same formula).
_ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Architecture; field names and defaults as `transformers.BertConfig`.

    `pad_token_id` does not change the forward pass (padding is masked by the
    caller's mask); it is kept so a tokenizer can be checked against the
    checkpoint (`WordPieceTokenizer.check_compatible`).
    """

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    # The hash of the vocabulary the weights were trained with
    # (`WordPieceTokenizer.vocab_hash`); None when unknown (a raw HF config).
    vocab_hash: str | None = None

    def __post_init__(self):
        check_divisible("BertConfig", "hidden_size", self.hidden_size, "num_attention_heads",
                        self.num_attention_heads)
        check_choice("BertConfig.hidden_act", self.hidden_act, sorted(_ACTIVATIONS))
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"BertConfig.{name} must be positive, got {getattr(self, name)}")

    @classmethod
    def from_hf(cls, hf_config: Any) -> BertConfig:
        """From a `config.json` dict (or a `transformers.BertConfig`).

        Raises:
          ValueError: for another model_type, relative position embeddings
            (`position_embedding_type` other than "absolute"), a decoder or
            cross-attention BERT, or an unsupported `hidden_act`.
        """
        data = hf_config if isinstance(hf_config, dict) else hf_config.to_dict()
        model_type = data.get("model_type")
        if model_type != "bert":
            raise ValueError(f"BERT import: config describes model_type {model_type!r}, not "
                             f"'bert' (RoBERTa, DistilBERT, ... have other layouts)")
        # transformers 5 drops the field from config.json when it is the default.
        position_type = data.get("position_embedding_type", "absolute")
        if position_type != "absolute":
            raise ValueError(f"BERT import: position_embedding_type {position_type!r} is not "
                             f"supported (only 'absolute')")
        if data.get("is_decoder") or data.get("add_cross_attention"):
            raise ValueError("BERT import: decoder BERTs (is_decoder / add_cross_attention) are "
                             "not supported; this is the bidirectional encoder")
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in fields}
        if kwargs.get("pad_token_id") is None:
            kwargs.pop("pad_token_id", None)
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


def _embed(num: int, features: int, axes: tuple[str | None, str], name: str) -> nn.Embed:
    return nn.Embed(num, features, dtype=jnp.float32, name=name,
                    embedding_init=nn.with_logical_partitioning(
                        nn.initializers.normal(0.02), axes))


def _layer_norm(config: BertConfig, name: str) -> nn.LayerNorm:
    # float32 whatever the compute dtype: the residual stream lives here.
    return nn.LayerNorm(epsilon=config.layer_norm_eps, dtype=jnp.float32,
                        param_dtype=jnp.float32, name=name,
                        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)))


class _Projection(nn.Module):
    """x [..., *in] -> x @ kernel [*in, *out] + bias [*out], logically partitioned.

    Not `nn.DenseGeneral`: it initializes a flat 2-D kernel and reshapes it, so
    inside `sharding_context` the 3-axis [embed, heads, kv] constraint lands on
    the 2-D array, a rank error (at apply too: Flax re-traces the init to check
    shapes).
    """

    features: tuple[int, ...]
    in_axes: tuple[str, ...]
    out_axes: tuple[str, ...]
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        n_in = len(self.in_axes)
        kernel = self.param("kernel", nn.with_logical_partitioning(
            nn.initializers.normal(0.02), self.in_axes + self.out_axes),
            x.shape[x.ndim - n_in:] + self.features, jnp.float32)
        bias = self.param("bias", nn.with_logical_partitioning(
            nn.initializers.zeros, self.out_axes), self.features, jnp.float32)
        y = jnp.tensordot(x.astype(self.dtype), kernel.astype(self.dtype), axes=n_in)
        return y + bias.astype(self.dtype)


def _dense(features: int | tuple[int, ...], in_axes: tuple[str, ...],
           out_axes: tuple[str, ...], name: str, dtype: Any) -> _Projection:
    """A projection of the trailing `len(in_axes)` dims onto `features` (BERT's init, N(0, 0.02))."""
    features = (features,) if isinstance(features, int) else tuple(features)
    return _Projection(features, in_axes, out_axes, dtype, name=name)


class BertEmbeddings(nn.Module):
    """HF `BertEmbeddings`: word + absolute position + token type, then LayerNorm (float32)."""

    config: BertConfig

    @nn.compact
    def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array) -> jax.Array:
        """[B, L] ids and segment ids -> [B, L, hidden] float32."""
        cfg = self.config
        d = cfg.hidden_size
        x = (_embed(cfg.vocab_size, d, ("vocab", "embed"), "word_embeddings")(input_ids)
             + _embed(cfg.type_vocab_size, d, (None, "embed"),
                      "token_type_embeddings")(token_type_ids)
             + _embed(cfg.max_position_embeddings, d, (None, "embed"),
                      "position_embeddings")(jnp.arange(input_ids.shape[1]))[None])
        return _layer_norm(cfg, "layer_norm")(x)


class BertSelfAttention(nn.Module):
    """Bidirectional multi-head attention with biased q/k/v/out (HF `BertAttention` minus its LN)."""

    config: BertConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        """x [B, L, hidden], mask [B, L] bool (True = real token) -> [B, L, hidden] in `dtype`."""
        cfg = self.config
        heads = (cfg.num_attention_heads, cfg.head_dim)
        q, k, v = (_dense(heads, ("embed",), ("heads", "kv"), name, self.dtype)(x)
                   for name in ("query", "key", "value"))                    # [B, L, H, D]
        # Padding keys get a large negative logit (HF adds finfo.min), so every
        # query, padded ones included, attends only to the real tokens.
        out = jax.nn.dot_product_attention(q, k, v, mask=mask[:, None, None, :])
        return _dense(cfg.hidden_size, ("heads", "kv"), ("embed",), "out", self.dtype)(out)


class BertLayer(nn.Module):
    """HF `BertLayer`: post-LN attention block, then post-LN feed-forward block."""

    config: BertConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        cfg = self.config
        attn = BertSelfAttention(cfg, self.dtype, name="attention")(x, mask)
        x = _layer_norm(cfg, "attention_layer_norm")(x + attn)
        h = _dense(cfg.intermediate_size, ("embed",), ("mlp",), "intermediate", self.dtype)(x)
        h = _ACTIVATIONS[cfg.hidden_act](h)
        h = _dense(cfg.hidden_size, ("mlp",), ("embed",), "output", self.dtype)(h)
        x = _layer_norm(cfg, "output_layer_norm")(x + h)
        return nn.with_logical_constraint(x, ("batch", "length", "embed"))


class Bert(nn.Module):
    """BERT encoder: token ids -> HF `BertModel`'s `last_hidden_state`.

    Attributes:
      config: architecture.
      dtype: compute dtype of the matmuls and attention (e.g. bfloat16).
        Params are float32; embeddings, LayerNorms and therefore the residual
        stream stay float32.
    """

    config: BertConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, input_ids: jax.Array, mask: jax.Array,
                 token_type_ids: jax.Array | None = None) -> jax.Array:
        """Encodes.

        Args:
          input_ids: [batch, length] int token ids ([CLS] ... [SEP] then padding).
          mask: [batch, length] bool, True on real tokens (HF's attention_mask).
          token_type_ids: [batch, length] segment ids (None: all 0).

        Returns:
          [batch, length, hidden] float32. Padded positions hold values too
          (as in HF); mask them out downstream (`mean_pool`).

        Raises:
          ValueError: for inputs that are not [batch, length], shapes that
            disagree, or length > max_position_embeddings.
        """
        cfg = self.config
        if input_ids.ndim != 2:
            raise ValueError(f"Bert expects input_ids [batch, length], got shape "
                             f"{input_ids.shape}")
        if mask.shape != input_ids.shape:
            raise ValueError(f"Bert: mask shape {mask.shape} != input_ids shape "
                             f"{input_ids.shape}")
        length = input_ids.shape[1]
        if length > cfg.max_position_embeddings:
            raise ValueError(f"Bert: {length} tokens exceed max_position_embeddings "
                             f"{cfg.max_position_embeddings}; tokenize with max_length <= "
                             f"{cfg.max_position_embeddings}")
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        elif token_type_ids.shape != input_ids.shape:
            raise ValueError(f"Bert: token_type_ids shape {token_type_ids.shape} != input_ids "
                             f"shape {input_ids.shape}")
        mask = mask.astype(bool)
        x = BertEmbeddings(cfg, name="embeddings")(input_ids, token_type_ids)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
        for i in range(cfg.num_hidden_layers):
            x = BertLayer(cfg, self.dtype, name=f"encoder_layer_{i}")(x, mask)
        return x


