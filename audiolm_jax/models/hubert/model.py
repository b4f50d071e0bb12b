"""HuBERT / wav2vec 2.0 encoder (Hugging Face `HubertModel` layout), for semantic tokens.

Most open AudioLM reimplementations take their semantic tokens from k-means
over a HuBERT layer. This module is HF's `HubertModel` at inference,
channels-last, with parameter names that follow HF's so that
`audiolm_jax.convert.hubert` maps a checkpoint key for key:

    waveform [B, T]
      -> feature_extractor: 7 strided convs (first with per-channel GroupNorm,
         "group", or every one with LayerNorm, "layer"), GELU  -> [B, F, 512]
      -> feature_projection: LayerNorm, Dense                  -> [B, F, hidden]
      -> encoder: + grouped positional conv (weight norm over the kernel axis,
         "same" padding), then post-norm transformer layers (LayerNorm before
         the first layer) or, with `do_stable_layer_norm`, pre-norm layers
         and a final LayerNorm.

`HuBERT(...)(audio)` returns every layer's hidden states, the input of the
tokenizer's layer choice. Dropout, masking and LayerDrop (training-only) are
not part of this module.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

_GELU = lambda x: jax.nn.gelu(x, approximate=False)  # noqa: E731  (torch's exact GELU)


@dataclasses.dataclass(frozen=True)
class HubertConfig:
    """Fields of `transformers.HubertConfig` that shape the inference graph."""

    conv_dim: tuple[int, ...] = (512,) * 7
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    conv_bias: bool = False
    feat_extract_norm: str = "group"
    feat_proj_layer_norm: bool = True
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    layer_norm_eps: float = 1e-5
    do_stable_layer_norm: bool = False

    def __post_init__(self):
        for name in ("conv_dim", "conv_kernel", "conv_stride"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        if not len(self.conv_dim) == len(self.conv_kernel) == len(self.conv_stride):
            raise ValueError("HubertConfig: conv_dim, conv_kernel and conv_stride must have the "
                             f"same length, got {self.conv_dim}, {self.conv_kernel}, "
                             f"{self.conv_stride}")
        if self.feat_extract_norm not in ("group", "layer"):
            raise ValueError(f"HubertConfig.feat_extract_norm must be 'group' or 'layer', got "
                             f"{self.feat_extract_norm!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"HubertConfig: hidden_size {self.hidden_size} is not divisible by "
                             f"num_attention_heads {self.num_attention_heads}")

    @classmethod
    def from_hf(cls, config: Any) -> HubertConfig:
        """From a `transformers.HubertConfig` or its `config.json` dict."""
        data = config if isinstance(config, dict) else config.to_dict()
        for key, want in (("hidden_act", "gelu"), ("feat_extract_activation", "gelu")):
            if data.get(key, want) != want:
                raise ValueError(f"HuBERT import supports {key}={want!r}, got {data[key]!r}")
        if data.get("conv_pos_batch_norm", False):
            raise ValueError("HuBERT import does not support conv_pos_batch_norm=True")
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})

    @property
    def hop_length(self) -> int:
        """Waveform samples per output frame (320 for HuBERT: 50 Hz at 16 kHz)."""
        return math.prod(self.conv_stride)

    def num_frames(self, num_samples: int) -> int:
        """Output frames for `num_samples` input samples (valid convolutions)."""
        n = num_samples
        for k, s in zip(self.conv_kernel, self.conv_stride):
            n = (n - k) // s + 1
        return n


def _conv(x: jax.Array, kernel: jax.Array, stride: int = 1, groups: int = 1,
          padding: int = 0) -> jax.Array:
    """[B, T, Cin] * [K, Cin / groups, Cout] -> [B, T', Cout]."""
    return jax.lax.conv_general_dilated(
        x, kernel, (stride,), [(padding, padding)], dimension_numbers=("NWC", "WIO", "NWC"),
        feature_group_count=groups, precision=jax.lax.Precision.HIGHEST)


class FeatureExtractor(nn.Module):
    """HF's `HubertFeatureEncoder`: waveform [B, T] -> [B, frames, conv_dim[-1]]."""

    config: HubertConfig

    @nn.compact
    def __call__(self, audio: jax.Array) -> jax.Array:
        cfg = self.config
        x = audio[..., None].astype(jnp.float32)
        for i, (dim, k, s) in enumerate(zip(cfg.conv_dim, cfg.conv_kernel, cfg.conv_stride)):
            kernel = self.param(f"conv_layers_{i}_conv_kernel", nn.initializers.lecun_normal(),
                                (k, x.shape[-1], dim))
            x = _conv(x, kernel, stride=s)
            if cfg.conv_bias:
                x = x + self.param(f"conv_layers_{i}_conv_bias", nn.initializers.zeros, (dim,))
            if cfg.feat_extract_norm == "layer":
                x = nn.LayerNorm(epsilon=1e-5, name=f"conv_layers_{i}_layer_norm")(x)
            elif i == 0:
                # GroupNorm with one group per channel: each channel over time.
                x = nn.GroupNorm(num_groups=dim, epsilon=1e-5,
                                 name=f"conv_layers_{i}_layer_norm")(x)
            x = _GELU(x)
        return x


class PositionalConv(nn.Module):
    """HF's `HubertPositionalConvEmbedding`: grouped conv, weight norm over dim 2, GELU."""

    config: HubertConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        k, groups, dim = cfg.num_conv_pos_embeddings, cfg.num_conv_pos_embedding_groups, x.shape[-1]
        # torch's weight_norm(dim=2) on a [out, in/groups, K] weight: one gain per tap.
        v = self.param("weight_v", nn.initializers.lecun_normal(), (k, dim // groups, dim))
        g = self.param("weight_g", nn.initializers.ones, (k, 1, 1))
        kernel = v * (g / jnp.sqrt(jnp.sum(jnp.square(v), axis=(1, 2), keepdims=True)))
        y = _conv(x, kernel, groups=groups, padding=k // 2)
        y = y + self.param("bias", nn.initializers.zeros, (dim,))
        if k % 2 == 0:
            y = y[:, :-1]                                       # HF's SamePad layer
        return _GELU(y)


class Attention(nn.Module):
    """Multi-head self-attention with HF's q/k/v/out projections (biases on)."""

    config: HubertConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        heads, dim = cfg.num_attention_heads, cfg.hidden_size
        dense = lambda name: nn.Dense(dim, name=name,  # noqa: E731
                                      precision=jax.lax.Precision.HIGHEST)
        split = lambda t: t.reshape(*t.shape[:2], heads, dim // heads)  # noqa: E731
        q, k, v = (split(dense(n)(x)) for n in ("q_proj", "k_proj", "v_proj"))
        out = jax.nn.dot_product_attention(q, k, v)
        return dense("out_proj")(out.reshape(*x.shape[:2], dim))


class EncoderLayer(nn.Module):
    """One transformer layer, post-norm (HF `HubertEncoderLayer`) or pre-norm (`...StableLayerNorm`)."""

    config: HubertConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        norm = lambda name: nn.LayerNorm(epsilon=cfg.layer_norm_eps, name=name)  # noqa: E731
        hp = jax.lax.Precision.HIGHEST

        def feed_forward(h):
            h = _GELU(nn.Dense(cfg.intermediate_size, name="feed_forward_intermediate_dense",
                               precision=hp)(h))
            return nn.Dense(cfg.hidden_size, name="feed_forward_output_dense", precision=hp)(h)

        attention = Attention(cfg, name="attention")
        if cfg.do_stable_layer_norm:
            x = x + attention(norm("layer_norm")(x))
            return x + feed_forward(norm("final_layer_norm")(x))
        x = norm("layer_norm")(x + attention(x))
        return norm("final_layer_norm")(x + feed_forward(x))


class HuBERT(nn.Module):
    """HuBERT encoder: waveform -> hidden states of every layer.

    Attributes:
      config: architecture.
    """

    config: HubertConfig = HubertConfig()

    @nn.compact
    def __call__(self, audio: jax.Array) -> dict[str, Any]:
        """Encodes.

        Args:
          audio: [batch, samples] float waveform at the model's sample rate
            (16 kHz for the public checkpoints), normalized as its feature
            extractor would (zero mean, unit variance when `do_normalize`).

        Returns:
          {"features": [B, F, conv_dim[-1]] conv features,
           "hidden_states": list of num_hidden_layers + 1 arrays [B, F, hidden]:
             the transformer's input, then each layer's output (as
             transformers 5 returns them: for the pre-norm variant the
             last one is before the final LayerNorm),
           "last_hidden_state": the encoder output, [B, F, hidden] (after the
             final LayerNorm for the pre-norm variant)}.
        """
        cfg = self.config
        if audio.ndim != 2:
            raise ValueError(f"HuBERT expects audio [batch, samples], got shape {audio.shape}")
        if cfg.num_frames(audio.shape[1]) < 1:
            raise ValueError(f"HuBERT: {audio.shape[1]} samples is shorter than one frame "
                             f"(receptive field of the conv feature extractor)")
        features = FeatureExtractor(cfg, name="feature_extractor")(audio)
        x = features
        if cfg.feat_proj_layer_norm:
            x = nn.LayerNorm(epsilon=cfg.layer_norm_eps, name="feature_projection_layer_norm")(x)
        x = nn.Dense(cfg.hidden_size, name="feature_projection_projection",
                     precision=jax.lax.Precision.HIGHEST)(x)
        x = x + PositionalConv(cfg, name="encoder_pos_conv_embed")(x)
        encoder_norm = nn.LayerNorm(epsilon=cfg.layer_norm_eps, name="encoder_layer_norm")
        if not cfg.do_stable_layer_norm:
            x = encoder_norm(x)
        hidden_states = [x]
        for i in range(cfg.num_hidden_layers):
            x = EncoderLayer(cfg, name=f"encoder_layers_{i}")(x)
            hidden_states.append(x)
        last = encoder_norm(x) if cfg.do_stable_layer_norm else x
        return {"features": features, "hidden_states": hidden_states, "last_hidden_state": last}
