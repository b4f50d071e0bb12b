"""Conformer semantic encoder (w2v-BERT), laid out like Hugging Face's `Wav2Vec2BertModel`.

AudioLM's semantic tokens are k-means clusters of a w2v-BERT layer. This is
that encoder, with parameter names that follow HF's so `audiolm_jax.convert.w2v_bert`
maps `facebook/w2v-bert-2.0` key for key:

    waveform [B, T] (16 kHz)
      -> `audio.fbank.stacked_features`: Kaldi log-mel, per-bin normalized,
         2 frames stacked                                  [B, F, 160]  (50 Hz)
      -> feature_projection: LayerNorm, Dense              [B, F, hidden]
      -> (pretraining: masked frames replaced by `masked_spec_embed`)
      -> Conformer layers, each
           x + 0.5 * FFN(LN(x))                     macaron half feed-forward
           x + MHSA(LN(x)) with relative positions  ("relative_key" for w2v-BERT 2.0,
                                                     "relative" Transformer-XL, "rotary")
           x + ConvModule(x): LN, pointwise -> GLU, causal depthwise conv, LN,
               swish, pointwise
           LN(x + 0.5 * FFN(LN(x)))

`W2vBert(...)(features, mask)` returns every layer's hidden states, the input of
the tokenizer's layer choice; `encode_audio` runs the front end first. Dropout
and LayerDrop (training regularizers) are not modelled; masking for
pretraining is (`time_mask`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from audiolm_jax.audio.fbank import FbankConfig, stacked_features
from audiolm_jax.checks import check_choice, check_divisible
from audiolm_jax.layers.linear import logical_dense

_POSITION_TYPES = ("relative_key", "relative", "rotary", None)
_ACTIVATIONS = {"swish": jax.nn.silu, "silu": jax.nn.silu, "relu": jax.nn.relu,
                "gelu": lambda x: jax.nn.gelu(x, approximate=False)}


@dataclasses.dataclass(frozen=True)
class W2vBertConfig:
    """Architecture; fields and defaults as `transformers.Wav2Vec2BertConfig` (w2v-BERT 2.0).

    The front-end fields (`sample_rate`, `num_mel_bins`, `stride`) are the
    feature extractor's; `feature_projection_input_dim` must equal
    `num_mel_bins * stride`.
    """

    hidden_size: int = 1024
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    intermediate_size: int = 4096
    feature_projection_input_dim: int = 160
    hidden_act: str = "swish"
    layer_norm_eps: float = 1e-5
    position_embeddings_type: str | None = "relative_key"
    rotary_embedding_base: float = 10_000.0
    left_max_position_embeddings: int = 64
    right_max_position_embeddings: int = 8
    conv_depthwise_kernel_size: int = 31
    # Front end (SeamlessM4TFeatureExtractor).
    sample_rate: int = 16_000
    num_mel_bins: int = 80
    stride: int = 2

    def __post_init__(self):
        check_divisible("W2vBertConfig", "hidden_size", self.hidden_size,
                        "num_attention_heads", self.num_attention_heads)
        check_choice("W2vBertConfig.position_embeddings_type", self.position_embeddings_type,
                     _POSITION_TYPES)
        check_choice("W2vBertConfig.hidden_act", self.hidden_act, sorted(_ACTIVATIONS))
        if self.conv_depthwise_kernel_size % 2 == 0:
            raise ValueError("W2vBertConfig.conv_depthwise_kernel_size must be odd, got "
                             f"{self.conv_depthwise_kernel_size}")
        if self.feature_projection_input_dim != self.num_mel_bins * self.stride:
            raise ValueError(f"W2vBertConfig: feature_projection_input_dim "
                             f"{self.feature_projection_input_dim} != num_mel_bins "
                             f"{self.num_mel_bins} x stride {self.stride}")

    @classmethod
    def from_hf(cls, config: Any) -> W2vBertConfig:
        """From a `transformers.Wav2Vec2BertConfig` or its `config.json` dict."""
        data = config if isinstance(config, dict) else config.to_dict()
        if data.get("add_adapter", False) or data.get("use_intermediate_ffn_before_adapter"):
            raise ValueError("w2v-BERT import: checkpoints with add_adapter=True (the CTC "
                             "fine-tuning adapter and its intermediate FFN) are not supported; "
                             "use the encoder-only facebook/w2v-bert-2.0 layout")
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in fields}
        kwargs["stride"] = max(1, int(data.get("feature_projection_input_dim", 160)) // 80)
        return cls(**kwargs)

    @property
    def fbank(self) -> FbankConfig:
        return FbankConfig(sample_rate=self.sample_rate, num_mel_bins=self.num_mel_bins,
                           stride=self.stride)

    @property
    def frame_rate(self) -> float:
        """Encoder frames per second (50 for stride 2 at 16 kHz)."""
        return self.sample_rate / self.fbank.samples_per_frame

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


class FeedForward(nn.Module):
    """intermediate_dense -> activation -> output_dense."""

    config: W2vBertConfig
    activation: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        act = _ACTIVATIONS[self.activation or cfg.hidden_act]
        h = act(logical_dense(cfg.intermediate_size, ("embed", "mlp"), "intermediate_dense")(x))
        return logical_dense(cfg.hidden_size, ("mlp", "embed"), "output_dense")(h)


class ConvModule(nn.Module):
    """Conformer convolution module (HF `Wav2Vec2BertConvolutionModule`); causal depthwise conv."""

    config: W2vBertConfig

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None) -> jax.Array:
        cfg = self.config
        eps, dim, k = cfg.layer_norm_eps, cfg.hidden_size, cfg.conv_depthwise_kernel_size
        h = nn.LayerNorm(epsilon=eps, name="layer_norm")(x)
        if mask is not None:
            h = jnp.where(mask[..., None], h, 0.0)
        h = jax.nn.glu(logical_dense(2 * dim, ("embed", "mlp"), "pointwise_conv1", use_bias=False)(h))
        kernel = self.param("depthwise_conv", nn.with_logical_partitioning(
            nn.initializers.lecun_normal(in_axis=0, out_axis=2), (None, None, "embed")),
            (k, 1, dim))
        h = jax.lax.conv_general_dilated(
            h, kernel.astype(h.dtype), (1,), [(k - 1, 0)],            # causal: left padding
            dimension_numbers=("NWC", "WIO", "NWC"), feature_group_count=dim)
        h = nn.LayerNorm(epsilon=eps, name="depthwise_layer_norm")(h)
        h = _ACTIVATIONS[cfg.hidden_act](h)
        return logical_dense(dim, ("mlp", "embed"), "pointwise_conv2", use_bias=False)(h)


def _sinusoid(positions: jax.Array, dim: int) -> jax.Array:
    """[n] signed positions -> [n, dim], sin at even and cos at odd features (HF's table)."""
    div = jnp.exp(jnp.arange(0, dim, 2, dtype=jnp.float32) * -(math.log(10_000.0) / dim))
    angles = positions[:, None].astype(jnp.float32) * div
    return jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1).reshape(len(positions), dim)


def _rotate(x: jax.Array, base: float, heads: int) -> jax.Array:
    """HF's rotary embedding on [B, L, hidden] split into heads (applied before q/k projection)."""
    b, length, dim = x.shape
    dh = dim // heads
    inv_freq = 1.0 / (base ** (jnp.arange(0, dh, 2, dtype=jnp.float32) / dh))
    freqs = jnp.arange(length, dtype=jnp.float32)[:, None] * inv_freq
    emb = jnp.concatenate([freqs, freqs], axis=-1)[None, :, None, :]   # [1, L, 1, dh]
    h = x.reshape(b, length, heads, dh)
    rotated = jnp.concatenate([-h[..., dh // 2:], h[..., : dh // 2]], axis=-1)
    return (h * jnp.cos(emb) + rotated * jnp.sin(emb)).reshape(b, length, dim).astype(x.dtype)


class SelfAttention(nn.Module):
    """Multi-head self-attention with w2v-BERT's relative position options."""

    config: W2vBertConfig

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None) -> jax.Array:
        cfg = self.config
        b, length, dim = x.shape
        heads, dh = cfg.num_attention_heads, cfg.head_dim
        scale = dh ** -0.5
        kind = cfg.position_embeddings_type
        qk_in = _rotate(x, cfg.rotary_embedding_base, heads) if kind == "rotary" else x
        split = lambda t: t.reshape(b, length, heads, dh)  # noqa: E731
        q = split(logical_dense(dim, ("embed", "heads"), "linear_q")(qk_in))
        k = split(logical_dense(dim, ("embed", "heads"), "linear_k")(qk_in))
        v = split(logical_dense(dim, ("embed", "heads"), "linear_v")(x))
        bias = None                                                   # [B, H, L, L] logits
        if kind == "relative_key":
            left, right = cfg.left_max_position_embeddings, cfg.right_max_position_embeddings
            table = self.param("distance_embedding", nn.initializers.normal(1.0),
                               (left + right + 1, dh))
            distance = jnp.arange(length)[None, :] - jnp.arange(length)[:, None]   # key - query
            index = jnp.clip(distance, -left, right) + left                        # [L, L]
            # q against the left + right + 1 distance embeddings, then gathered per
            # (query, key): HF materializes table[index] ([L, L, dh]) and contracts it,
            # L / (left + right + 1) times the FLOPs and an [L, L, dh] temporary.
            per_distance = jnp.einsum("blhd,kd->bhlk", q, table.astype(q.dtype))  # [B,H,L,K]
            bias = jnp.take_along_axis(
                per_distance, jnp.broadcast_to(index, per_distance.shape[:2] + index.shape),
                axis=-1) * scale
        elif kind == "relative":
            # Transformer-XL: logits (q + u).k + (q + v_bias).P[i - j]; P for offsets
            # L-1 .. -(L-1) is projected once and gathered per (query, key).
            u = self.param("pos_bias_u", nn.initializers.xavier_uniform(), (heads, dh))
            vb = self.param("pos_bias_v", nn.initializers.xavier_uniform(), (heads, dh))
            offsets = jnp.arange(length - 1, -length, -1)                           # [2L-1]
            pos = logical_dense(dim, ("embed", "heads"), "linear_pos", use_bias=False)(
                _sinusoid(offsets, dim).astype(x.dtype)).reshape(2 * length - 1, heads, dh)
            scores = jnp.einsum("blhd,phd->bhlp", q + vb.astype(q.dtype), pos)    # [B,H,L,2L-1]
            index = (length - 1) - jnp.arange(length)[:, None] + jnp.arange(length)[None, :]
            bias = jnp.take_along_axis(scores, jnp.broadcast_to(index, scores.shape[:2] + index.shape),
                                       axis=-1) * scale
            q = q + u.astype(q.dtype)
        if mask is not None:
            key_bias = jnp.where(mask[:, None, None, :], 0.0, jnp.finfo(jnp.float32).min)
            bias = key_bias if bias is None else bias + key_bias
        out = jax.nn.dot_product_attention(q, k, v, bias=None if bias is None
                                           else bias.astype(q.dtype))
        return logical_dense(dim, ("heads", "embed"), "linear_out")(out.reshape(b, length, dim))


class ConformerLayer(nn.Module):
    """HF `Wav2Vec2BertEncoderLayer`."""

    config: W2vBertConfig

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None) -> jax.Array:
        cfg = self.config
        norm = lambda name: nn.LayerNorm(epsilon=cfg.layer_norm_eps, name=name)  # noqa: E731
        x = x + 0.5 * FeedForward(cfg, name="ffn1")(norm("ffn1_layer_norm")(x))
        x = x + SelfAttention(cfg, name="self_attn")(norm("self_attn_layer_norm")(x), mask)
        x = x + ConvModule(cfg, name="conv_module")(x, mask)
        x = x + 0.5 * FeedForward(cfg, name="ffn2")(norm("ffn2_layer_norm")(x))
        x = norm("final_layer_norm")(x)
        return nn.with_logical_constraint(x, ("batch", "length", "embed"))


class W2vBert(nn.Module):
    """w2v-BERT Conformer encoder: stacked filterbank features -> hidden states of every layer.

    Attributes:
      config: architecture.
      remat: recompute each layer's activations in the backward pass.
    """

    config: W2vBertConfig = W2vBertConfig()
    remat: bool = False

    @nn.compact
    def __call__(self, features: jax.Array, mask: jax.Array | None = None,
                 time_mask: jax.Array | None = None) -> dict[str, Any]:
        """Encodes.

        Args:
          features: [B, F, feature_projection_input_dim] from `audio.fbank.stacked_features`.
          mask: [B, F] bool, True on valid frames (None: all valid).
          time_mask: [B, F] bool, True on frames to hide behind `masked_spec_embed`
            (masked prediction pretraining; None at inference).

        Returns:
          {"projected": [B, F, hidden] feature projection output (before masking),
           "hidden_states": num_hidden_layers + 1 arrays [B, F, hidden]: the
             encoder input, then each Conformer layer's output,
           "last_hidden_state": [B, F, hidden], the last layer's output}.
        """
        cfg = self.config
        if features.ndim != 3 or features.shape[-1] != cfg.feature_projection_input_dim:
            raise ValueError(f"W2vBert expects features [batch, frames, "
                             f"{cfg.feature_projection_input_dim}], got shape {features.shape}")
        x = nn.LayerNorm(epsilon=cfg.layer_norm_eps, name="feature_projection_layer_norm")(features)
        projected = logical_dense(cfg.hidden_size, (None, "embed"), "feature_projection_projection")(x)
        x = projected
        mask_embed = self.param("masked_spec_embed", nn.initializers.uniform(1.0),
                                (cfg.hidden_size,))
        if time_mask is not None:
            x = jnp.where(time_mask[..., None], mask_embed.astype(x.dtype), x)
        if mask is not None:
            x = jnp.where(mask[..., None], x, 0.0)
        layer_cls = nn.remat(ConformerLayer) if self.remat else ConformerLayer
        hidden_states = [x]
        for i in range(cfg.num_hidden_layers):
            x = layer_cls(cfg, name=f"encoder_layers_{i}")(x, mask)
            hidden_states.append(x)
        return {"projected": projected, "hidden_states": hidden_states, "last_hidden_state": x}


def encode_audio(model: W2vBert, variables: Any, audio: jax.Array,
                 lengths: jax.Array | None = None) -> dict[str, Any]:
    """Waveform -> encoder outputs (front end included); see `W2vBert.__call__`.

    Args:
      audio: [batch, samples] at `model.config.sample_rate`, rows right-padded
        to `lengths` (None: all whole).

    Returns:
      The encoder's dict plus "features" and "mask" (valid frames).
    """
    features, mask = stacked_features(audio, lengths, model.config.fbank)
    out = model.apply(variables, features, None if lengths is None else mask)
    return {**out, "features": features, "mask": mask}


def count_flops_per_frame(config: W2vBertConfig, frames: int) -> float:
    """Forward FLOPs per encoder frame for a sequence of `frames` (2 per multiply-add).

    Dense layers dominate; attention adds 2 * 2 * frames * hidden per frame
    (scores and weighted values), relative-key bias another 2 * frames * hidden.
    """
    d, f, k = config.hidden_size, config.intermediate_size, config.conv_depthwise_kernel_size
    per_layer = (2 * 2 * d * f * 2          # two feed-forwards, two matmuls each
                 + 4 * 2 * d * d            # q, k, v, out
                 + 2 * d * 2 * d + 2 * d * d + 2 * d * k   # pointwise1, pointwise2, depthwise
                 + 2 * 2 * frames * d)      # attention scores and values
    if config.position_embeddings_type in ("relative_key", "relative"):
        per_layer += 2 * frames * d
    total = config.num_hidden_layers * per_layer + 2 * config.feature_projection_input_dim * d
    return float(total)
