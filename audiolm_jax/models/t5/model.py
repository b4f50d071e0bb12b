"""T5 text encoder, equal to Hugging Face's `T5EncoderModel` (MusicGen's text conditioning).

Pre-norm transformer with relative position buckets instead of position embeddings:

    input_ids [B, L]
      -> shared embedding (no scaling)                              [B, L, d_model]
      -> num_layers blocks, each (pre-norm, residual in float32):
           x = x + o(attention(q(n), k(n), v(n)) + position bias)    n = RMSNorm(x)
           x = x + wo(act(wi(n)))            or  wo(act(wi_0(n)) * wi_1(n))  (gated)
      -> final RMSNorm                                              [B, L, d_model]

T5's own quirks, all reproduced:

* The norm is T5LayerNorm: RMS, no mean subtraction, no bias (`layers.norms.RMSNorm`).
* Attention logits are `q . k` with NO `1 / sqrt(d_kv)`: the scale was folded into
  the q initialization when T5 was trained.
* Positions enter only as a learned per-head bias over bucketed relative distances
  (`relative_position_buckets`), held by the first block in HF and reused by every
  block; here it is one top-level table, computed once per call.
* "gated-gelu" (T5 v1.1, flan-t5) means gelu_new, the tanh approximation.

Parameters (Flax path: shape, logical axes), filled from HF keys by
`audiolm_jax.convert.t5.t5_encoder_params`:

    shared/embedding                     [vocab, d_model]      ("vocab", "embed")
    relative_attention_bias              [buckets, heads]      (None, "heads")
    block_{i}/attention_norm/scale       [d_model]             ("embed",)
    block_{i}/attention/{q,k,v}          [d_model, heads, d_kv]  ("embed", "heads", "kv")
    block_{i}/attention/o                [heads, d_kv, d_model]  ("heads", "kv", "embed")
    block_{i}/mlp_norm/scale             [d_model]             ("embed",)
    block_{i}/mlp/{wi | wi_0, wi_1}/kernel  [d_model, d_ff]    ("embed", "mlp")
    block_{i}/mlp/wo/kernel              [d_ff, d_model]       ("mlp", "embed")
    final_norm/scale                     [d_model]             ("embed",)

Dropout is not modelled (this is the frozen conditioning encoder).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from audiolm_jax.checks import check_choice
from audiolm_jax.layers.linear import logical_dense
from audiolm_jax.layers.norms import RMSNorm

# HF's ACT2FN names that T5 checkpoints use -> JAX. "gelu" is the exact erf form;
# "gelu_new" / "gelu_pytorch_tanh" are the tanh approximation (one formula).
_ACTIVATIONS = {
    "relu": jax.nn.relu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "silu": jax.nn.silu,
}
# transformers.T5Config's defaults: a config.json written by transformers 5 omits
# fields that equal them, so `from_hf` must fill them in the same way.
_HF_DEFAULTS = dict(vocab_size=32128, d_model=512, d_kv=64, d_ff=2048, num_layers=6,
                    num_heads=8, relative_attention_num_buckets=32,
                    relative_attention_max_distance=128, feed_forward_proj="relu",
                    layer_norm_epsilon=1e-6)
# Architectures with this encoder layout (mT5 is T5 v1.1 with a bigger vocabulary).
# UMT5 is not: each of its blocks has its own relative bias table.
_MODEL_TYPES = ("t5", "mt5")


def parse_feed_forward_proj(spelling: str) -> tuple[bool, str]:
    """HF's `feed_forward_proj` -> (gated, activation name), the way `transformers.T5Config`
    reads it: "relu" -> (False, "relu"), "gated-gelu" -> (True, "gelu_new") (its
    backward-compatible meaning), "gated-silu" -> (True, "silu"), "gelu_new" -> (False,
    "gelu_new").

    Raises:
      ValueError: naming the spelling when it is not `[gated-]<activation>` with a known
        activation.
    """
    parts = str(spelling).split("-")
    if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated"):
        raise ValueError(f"T5Config.feed_forward_proj must be '<act>' or 'gated-<act>' "
                         f"(e.g. 'relu', 'gated-gelu'), got {spelling!r}")
    gated, act = len(parts) == 2, parts[-1]
    if spelling == "gated-gelu":
        act = "gelu_new"
    check_choice("T5Config.feed_forward_proj's activation", act, sorted(_ACTIVATIONS))
    return gated, act


@dataclasses.dataclass(frozen=True)
class T5Config:
    """T5 encoder architecture; field names and defaults as `transformers.T5Config`.

    `inner_dim = num_heads * d_kv` need not equal `d_model` (T5 v1.1 large/xl do not).
    """

    vocab_size: int
    d_model: int
    d_kv: int
    d_ff: int
    num_layers: int
    num_heads: int
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    # "relu" (T5), "gated-gelu" (T5 v1.1 / flan-t5), or any HF "[gated-]<act>" spelling.
    feed_forward_proj: str = "relu"
    layer_norm_epsilon: float = 1e-6

    def __post_init__(self):
        for name in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads",
                     "relative_attention_max_distance"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"T5Config.{name} must be positive, got {getattr(self, name)}")
        if self.relative_attention_num_buckets < 4:
            # Bidirectional bucketing halves them, then halves again into exact and log
            # buckets: fewer than 4 leaves a half without buckets.
            raise ValueError(f"T5Config.relative_attention_num_buckets must be >= 4, got "
                             f"{self.relative_attention_num_buckets}")
        if self.relative_attention_max_distance <= self.relative_attention_num_buckets // 4:
            # The log buckets span (num_buckets // 4, max_distance]: it must not be empty.
            raise ValueError(f"T5Config.relative_attention_max_distance must exceed "
                             f"relative_attention_num_buckets // 4 = "
                             f"{self.relative_attention_num_buckets // 4}, got "
                             f"{self.relative_attention_max_distance}")
        if self.layer_norm_epsilon <= 0:
            raise ValueError(f"T5Config.layer_norm_epsilon must be positive, got "
                             f"{self.layer_norm_epsilon}")
        parse_feed_forward_proj(self.feed_forward_proj)

    @classmethod
    def from_hf(cls, hf_config: Mapping[str, Any] | Any) -> T5Config:
        """From a T5 `config.json` dict (or a `transformers.T5Config`), e.g. the
        `text_encoder` sub-dict of a MusicGen config. Fields it lacks take
        transformers' defaults (transformers 5 drops default-valued fields).

        Raises:
          ValueError: for a model_type other than t5/mt5, or a field value this
            encoder cannot hold (named).
        """
        data = dict(hf_config) if isinstance(hf_config, Mapping) else hf_config.to_dict()
        model_type = data.get("model_type", "t5")
        if model_type not in _MODEL_TYPES:
            raise ValueError(f"T5 import: config describes model_type {model_type!r}, not one of "
                             f"{_MODEL_TYPES}")
        kwargs = {}
        for field in dataclasses.fields(cls):
            value = data.get(field.name)
            kwargs[field.name] = _HF_DEFAULTS[field.name] if value is None else value
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def is_gated_act(self) -> bool:
        """Whether the feed-forward is gated (`wi_0`, `wi_1`) rather than one `wi`."""
        return parse_feed_forward_proj(self.feed_forward_proj)[0]

    @property
    def dense_act_fn(self) -> str:
        """The feed-forward activation's HF name ("relu", "gelu_new", ...)."""
        return parse_feed_forward_proj(self.feed_forward_proj)[1]

    @property
    def inner_dim(self) -> int:
        return self.num_heads * self.d_kv


def relative_position_buckets(query_length: int, key_length: int, num_buckets: int,
                              max_distance: int, bidirectional: bool = True) -> np.ndarray:
    """T5's bucket of every (query i, key j) pair's relative position `j - i`.

    Bidirectional: half the buckets for keys after the query, half for keys before.
    Within a half, distances below `half // 2` get a bucket each; larger ones share
    logarithmically wider buckets up to `max_distance`, beyond which all share the last.

    Computed in numpy float32 on the host, like HF's torch float32 (a different log
    could round a distance that lands exactly on a bucket edge the other way); the
    lengths are static, so under `jit` this is a constant.

    Returns:
      [query_length, key_length] int32 in [0, num_buckets).
    """
    # Each bucket depends only on j - i: compute the 2L-1 distinct ones, then index.
    relative = np.arange(-(query_length - 1), key_length, dtype=np.int64)
    buckets = np.zeros_like(relative)
    if bidirectional:
        num_buckets //= 2
        buckets += (relative > 0).astype(np.int64) * num_buckets
        relative = np.abs(relative)
    else:
        relative = -np.minimum(relative, 0)
    max_exact = num_buckets // 2
    is_small = relative < max_exact
    with np.errstate(divide="ignore"):                 # log(0) on the (unused) small ones
        scaled = (np.log(relative.astype(np.float32) / np.float32(max_exact))
                  / np.float32(math.log(max_distance / max_exact))
                  * np.float32(num_buckets - max_exact))
    large = max_exact + np.where(is_small, 0, scaled).astype(np.int64)
    large = np.minimum(large, num_buckets - 1)
    buckets += np.where(is_small, relative, large)
    index = np.arange(key_length)[None, :] - np.arange(query_length)[:, None] + query_length - 1
    return buckets[index].astype(np.int32)


class T5Attention(nn.Module):
    """T5 self-attention: no biases, no logit scaling, an additive position bias.

    Attributes:
      config: architecture.
      dtype: compute dtype of the projections and the attention.
    """

    config: T5Config
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, position_bias: jax.Array, mask: jax.Array | None
                 ) -> jax.Array:
        """Attends bidirectionally.

        Args:
          x: [batch, length, d_model] (already normalized).
          position_bias: [1, heads, length, length], added to the logits.
          mask: [batch, length] bool, True on real tokens, or None (all real).

        Returns:
          [batch, length, d_model] in `dtype`.
        """
        cfg = self.config
        d_model = x.shape[-1]
        shape = (d_model, cfg.num_heads, cfg.d_kv)
        init = nn.initializers.variance_scaling(1.0, "fan_in", "normal", in_axis=0,
                                                out_axis=(1, 2))
        x = x.astype(self.dtype)
        q, k, v = (jnp.einsum("ble,ehd->blhd", x, self.param(
            name, nn.with_logical_partitioning(init, ("embed", "heads", "kv")), shape,
            jnp.float32).astype(self.dtype)) for name in ("q", "k", "v"))    # [b, l, h, d]
        key_mask = None if mask is None else mask[:, None, None, :]          # [b, 1, 1, l_k]
        # scale=1: T5's logits are raw dot products. Padded keys are masked out for
        # every query (padded queries included, which HF computes too).
        out = jax.nn.dot_product_attention(q, k, v, bias=position_bias.astype(self.dtype),
                                           mask=key_mask, scale=1.0)
        out = nn.with_logical_constraint(out, ("batch", "length", "heads", "kv"))
        out_init = nn.initializers.variance_scaling(1.0, "fan_in", "normal", in_axis=(0, 1),
                                                    out_axis=2)
        w_o = self.param("o", nn.with_logical_partitioning(out_init, ("heads", "kv", "embed")),
                         (cfg.num_heads, cfg.d_kv, d_model), jnp.float32)
        return jnp.einsum("blhd,hde->ble", out, w_o.astype(self.dtype))


class T5FeedForward(nn.Module):
    """HF `T5DenseActDense` (`wo(act(wi(x)))`) or `T5DenseGatedActDense`
    (`wo(act(wi_0(x)) * wi_1(x))`), bias-free."""

    config: T5Config
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """[batch, length, d_model] -> [batch, length, d_model] in `dtype`."""
        cfg = self.config
        act = _ACTIVATIONS[cfg.dense_act_fn]
        x = x.astype(self.dtype)

        def dense(features: int, axes: tuple[str, str], name: str) -> nn.Dense:
            return logical_dense(features, axes, name, use_bias=False, dtype=self.dtype)

        if cfg.is_gated_act:
            h = act(dense(cfg.d_ff, ("embed", "mlp"), "wi_0")(x)) * dense(
                cfg.d_ff, ("embed", "mlp"), "wi_1")(x)
        else:
            h = act(dense(cfg.d_ff, ("embed", "mlp"), "wi")(x))
        h = nn.with_logical_constraint(h, ("batch", "length", "mlp"))
        return dense(x.shape[-1], ("mlp", "embed"), "wo")(h)


class T5Block(nn.Module):
    """One pre-norm encoder block: attention, then feed-forward, each residual."""

    config: T5Config
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, position_bias: jax.Array, mask: jax.Array | None
                 ) -> jax.Array:
        """x [batch, length, d_model] float32 -> the same shape, float32."""
        eps = self.config.layer_norm_epsilon
        # The norms and the residual stream stay float32 whatever the compute dtype.
        h = RMSNorm(eps, name="attention_norm")(x)
        x = x + T5Attention(self.config, self.dtype, name="attention")(
            h, position_bias, mask).astype(jnp.float32)
        h = RMSNorm(eps, name="mlp_norm")(x)
        x = x + T5FeedForward(self.config, self.dtype, name="mlp")(h).astype(jnp.float32)
        return nn.with_logical_constraint(x, ("batch", "length", "embed"))


class T5Encoder(nn.Module):
    """T5 encoder: token ids -> HF `T5EncoderModel(...).last_hidden_state`.

    Attributes:
      config: architecture.
      dtype: compute dtype of the matmuls and attention (e.g. bfloat16). Params are
        float32; the embedding, norms and residual stream stay float32.
    """

    config: T5Config
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None
                 ) -> jax.Array:
        """Encodes.

        Args:
          input_ids: [batch, length] int token ids (text, `</s>`, then padding), as
            `audiolm_jax.text.t5_tokenizer.T5Tokenizer.encode` gives them.
          attention_mask: [batch, length] bool or int, nonzero on real tokens; None
            when every position is real.

        Returns:
          [batch, length, d_model] float32. Padded positions hold values too (as in
          HF); mask them out downstream.

        Raises:
          ValueError: for input_ids that are not [batch, length], or a mask of
            another shape.
        """
        cfg = self.config
        if input_ids.ndim != 2:
            raise ValueError(f"T5Encoder expects input_ids [batch, length], got shape "
                             f"{input_ids.shape}")
        if attention_mask is not None:
            if attention_mask.shape != input_ids.shape:
                raise ValueError(f"T5Encoder: attention_mask shape {attention_mask.shape} != "
                                 f"input_ids shape {input_ids.shape}")
            attention_mask = attention_mask.astype(bool)
        length = input_ids.shape[1]
        x = nn.Embed(cfg.vocab_size, cfg.d_model, dtype=jnp.float32, name="shared",
                     embedding_init=nn.with_logical_partitioning(
                         nn.initializers.normal(1.0), ("vocab", "embed")))(input_ids)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
        table = self.param("relative_attention_bias", nn.with_logical_partitioning(
            nn.initializers.normal(cfg.d_model ** -0.5), (None, "heads")),
            (cfg.relative_attention_num_buckets, cfg.num_heads), jnp.float32)
        buckets = relative_position_buckets(length, length, cfg.relative_attention_num_buckets,
                                            cfg.relative_attention_max_distance)
        position_bias = jnp.transpose(table[buckets], (2, 0, 1))[None]   # [1, heads, l, l]
        for i in range(cfg.num_layers):
            x = T5Block(cfg, self.dtype, name=f"block_{i}")(x, position_bias, attention_mask)
        return RMSNorm(cfg.layer_norm_epsilon, name="final_norm")(x)
