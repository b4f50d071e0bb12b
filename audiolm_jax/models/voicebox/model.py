"""Voicebox's network (Le et al. 2023): a Transformer over frames that predicts a velocity.

One module serves both Voicebox models; they differ in what a "frame" is:

* the audio model: one frame per mel frame. Input per frame = Dense of the
  concatenation [noisy mel x_t, masked context mel, embedding of the frame's
  phone]; output = the velocity of x_t (100 mel bins).
* the duration model: one frame per phone. Input = [noisy log-duration x_t,
  masked context log-durations, phone embedding]; output = a velocity of one
  value per phone.

    x_t, context [b, t, f], phones [b, t] -> Dense(dim) -> + ConvPositionEmbedding
      -> + the time embedding on every frame -> L Transformer blocks with
      U-Net skips (block L - 1 - i reads concat(h, h_i) through a Dense, i < L / 2)
      -> norm -> Dense(f) -> velocity [b, t, f]

Positions come from the convolutional embedding and, in attention, from a
symmetric ALiBi bias (or RoPE, by config). The paper prepends the time
embedding as one extra frame; under ALiBi that frame sits at position 0 and
takes the distance penalty like any other, so past a few hundred frames no
head sees it. Added to every frame, t reaches every position at distance zero.

Classifier-free guidance drops the audio context and the phones together:
`drop_condition[b]` zeroes row b's context and replaces its phones by the
`<pad>` id's learned "no phone" embedding (id 0), so the unconditional model is
the same network.

A `regression` model (the paper's baseline, `VoiceboxConfig.objective`) is the
same network fed zeros for x_t and t = 0, trained with L1 to output the features
themselves on masked frames.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from audiolm_jax.checks import check_choice
from audiolm_jax.layers.attention import POSITIONS
from audiolm_jax.layers.conv import grouped_conv1d
from audiolm_jax.layers.embeddings import TimestepEmbedding
from audiolm_jax.layers.linear import logical_dense
from audiolm_jax.layers.norms import RMSNorm
from audiolm_jax.layers.transformer import TransformerBlock

OBJECTIVES = ("flow", "regression")
_RANGES = ("span_fraction", "random_frames_fraction", "prompt_fraction")
_STATISTICS = ("feature_mean", "feature_std")


@dataclasses.dataclass(frozen=True)
class VoiceboxConfig:
    """One Voicebox network (the audio model or the duration model).

    Attributes:
      feature_dim: f, values per frame (100 mel bins; 1 log-duration).
      num_phones: phone vocabulary size, `<pad>` (id 0, also "no phone") included.
      phone_embed_dim: phone embedding width.
      dim: Transformer width.
      num_layers: Transformer blocks (even, for the U-Net skips).
      num_heads: attention heads (head_dim = dim / num_heads).
      mlp_ratio: MLP width / dim.
      conv_pos_kernel: kernel of the convolutional position embedding (odd).
      conv_pos_groups: its channel groups.
      attention_positions: "alibi" (the paper's) or "rope".
      objective: "flow" (conditional flow matching) or "regression" (L1 baseline).
      sigma_min: sigma of the optimal-transport path at t = 1.
      p_uncond: probability of dropping the whole condition (classifier-free guidance).
        A regression model never uses guidance, so it must be 0 there.
      p_random_frames: probability a training mask is random frames.
      p_prompt: probability a training mask is a prompt mask (a context prefix and a
        generated suffix, the zero-shot TTS shape); one span otherwise.
      span_fraction: (min, max) share of the frames one span masks.
      random_frames_fraction: (min, max) share of frames a random-frames mask takes.
      prompt_fraction: (min, max) share of the frames a prompt mask gives as context
        (when the example is not a joined prompt + utterance pair).
      feature_mean, feature_std: features are normalized `(x - mean) / std` before
        the flow and back after sampling: scalars, or `feature_dim` values (per
        mel bin). The configs use statistics of speech frames
        (`configs/voicebox/common.py` says which).
    """

    feature_dim: int = 100
    num_phones: int = 64
    phone_embed_dim: int = 256
    dim: int = 1024
    num_layers: int = 24
    num_heads: int = 16
    mlp_ratio: int = 4
    conv_pos_kernel: int = 31
    conv_pos_groups: int = 16
    attention_positions: str = "alibi"
    objective: str = "flow"
    sigma_min: float = 1e-5
    p_uncond: float = 0.2
    p_random_frames: float = 0.3
    p_prompt: float = 0.0
    span_fraction: tuple[float, float] = (0.7, 1.0)
    random_frames_fraction: tuple[float, float] = (0.7, 1.0)
    prompt_fraction: tuple[float, float] = (0.1, 0.7)
    feature_mean: float | tuple[float, ...] = 0.0
    feature_std: float | tuple[float, ...] = 1.0

    def __post_init__(self):
        for name in _RANGES + _STATISTICS:
            value = getattr(self, name)
            if not isinstance(value, (int, float)):
                object.__setattr__(self, name, tuple(float(v) for v in value))
        check_choice("VoiceboxConfig.objective", self.objective, OBJECTIVES)
        check_choice("VoiceboxConfig.attention_positions", self.attention_positions,
                     tuple(p for p in POSITIONS if p != "none"))
        if self.num_layers < 2 or self.num_layers % 2:
            raise ValueError(f"VoiceboxConfig.num_layers must be even and >= 2 (U-Net skips), "
                             f"got {self.num_layers}")
        if self.dim % self.num_heads:
            raise ValueError(f"VoiceboxConfig: dim={self.dim} is not divisible by "
                             f"num_heads={self.num_heads}")
        if self.conv_pos_kernel % 2 == 0 or self.dim % self.conv_pos_groups:
            raise ValueError(f"VoiceboxConfig: conv_pos_kernel must be odd and dim divisible by "
                             f"conv_pos_groups, got {self.conv_pos_kernel}, {self.conv_pos_groups}")
        for name in _RANGES:
            low, high = getattr(self, name)
            if not 0.0 < low <= high <= 1.0:
                raise ValueError(f"VoiceboxConfig.{name} must be 0 < min <= max <= 1, got "
                                 f"{(low, high)}")
        for name in ("p_uncond", "p_random_frames", "p_prompt"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"VoiceboxConfig.{name} must be a probability, got "
                                 f"{getattr(self, name)}")
        if self.p_prompt + self.p_random_frames > 1.0:
            raise ValueError(f"VoiceboxConfig: p_prompt + p_random_frames = "
                             f"{self.p_prompt + self.p_random_frames} > 1")
        if self.objective == "regression" and self.p_uncond > 0:
            raise ValueError(f"VoiceboxConfig: a regression model never uses guidance, so "
                             f"p_uncond must be 0 (got {self.p_uncond}): dropping the "
                             "condition would only waste its training")
        for name in _STATISTICS:
            value = getattr(self, name)
            if not isinstance(value, (int, float)) and len(value) != self.feature_dim:
                raise ValueError(f"VoiceboxConfig.{name} has {len(value)} values; it must be "
                                 f"one number or feature_dim={self.feature_dim}")
        if min(np.atleast_1d(self.feature_std)) <= 0:
            raise ValueError(f"VoiceboxConfig.feature_std must be positive, got {self.feature_std}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for name in _RANGES + _STATISTICS:
            if isinstance(out[name], tuple):
                out[name] = list(out[name])
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VoiceboxConfig:
        """Inverse of `to_dict`; unknown fields are an error naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown VoiceboxConfig fields {unknown}; known: {sorted(known)}")
        return cls(**data)


class ConvPositionEmbedding(nn.Module):
    """x + GELU(grouped 'same' Conv1d(x)), wav2vec 2.0's relative position embedding.
    [b, t, d] -> [b, t, d]; frames where `mask` is False are zeroed first so padding
    never leaks into valid frames."""

    kernel_size: int
    groups: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        dim = x.shape[-1]
        kernel = self.param("kernel", nn.with_logical_partitioning(
            nn.initializers.lecun_normal(in_axis=(0, 1), out_axis=2), (None, None, "embed")),
            (self.kernel_size, dim // self.groups, dim), jnp.float32)
        bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
                          (dim,), jnp.float32)
        h = jnp.where(mask[..., None], x, 0).astype(self.dtype)
        half = self.kernel_size // 2
        h = jnp.pad(h, ((0, 0), (half, half), (0, 0)))
        h = grouped_conv1d(h, kernel.astype(self.dtype), self.groups)
        return x + jax.nn.gelu(h + bias.astype(self.dtype))


class VoiceboxTransformer(nn.Module):
    """The velocity network. See the module docstring.

    Attributes:
      config: the architecture.
      dtype: compute dtype (params and the output stay float32).
      remat: recompute each block in the backward pass.
    """

    config: VoiceboxConfig
    dtype: Any = jnp.float32
    remat: bool = False

    @nn.compact
    def __call__(self, x_t: jax.Array, context: jax.Array, phones: jax.Array, t: jax.Array,
                 mask: jax.Array | None = None,
                 drop_condition: jax.Array | None = None) -> jax.Array:
        """Predicts the velocity of `x_t` (or, for a regression model, the features).

        Args:
          x_t: [batch, frames, feature_dim] the noisy features at time t.
          context: [batch, frames, feature_dim] the known features, zero where masked.
          phones: [batch, frames] int phone ids (0 = `<pad>` / no phone).
          t: [batch] flow times in [0, 1].
          mask: [batch, frames] bool, True on valid frames (None: all valid).
          drop_condition: [batch] bool, True to drop the context and phones of a row
            (the unconditional model of classifier-free guidance).

        Returns:
          [batch, frames, feature_dim] float32.
        """
        cfg = self.config
        batch, frames, features = x_t.shape
        if features != cfg.feature_dim or context.shape != x_t.shape:
            raise ValueError(f"x_t {x_t.shape} and context {context.shape} must both be "
                             f"[batch, frames, {cfg.feature_dim}]")
        if phones.shape != (batch, frames):
            raise ValueError(f"phones {phones.shape} must be [batch, frames] = {(batch, frames)}")
        if mask is None:
            mask = jnp.ones((batch, frames), bool)
        phones = phones.astype(jnp.int32)
        if drop_condition is not None:
            drop = drop_condition[:, None]
            context = jnp.where(drop[..., None], 0.0, context)
            phones = jnp.where(drop, 0, phones)
        embed = nn.Embed(cfg.num_phones, cfg.phone_embed_dim, name="phone_embedding",
                         embedding_init=nn.with_logical_partitioning(
                             nn.initializers.normal(1.0), ("vocab", "embed")))(phones)
        h = jnp.concatenate([x_t.astype(jnp.float32), context.astype(jnp.float32),
                             embed.astype(jnp.float32)], axis=-1)
        h = logical_dense(cfg.dim, (None, "embed"), "input_projection", dtype=self.dtype)(h)
        h = nn.with_logical_constraint(h, ("batch", "length", "embed"))
        h = ConvPositionEmbedding(cfg.conv_pos_kernel, cfg.conv_pos_groups, self.dtype,
                                  name="conv_position")(h, mask)
        time = TimestepEmbedding(cfg.dim, dtype=self.dtype, name="time_embedding")(t)
        h = h + time[:, None, :].astype(h.dtype)

        block = nn.remat(TransformerBlock) if self.remat else TransformerBlock
        half = cfg.num_layers // 2
        skips = []
        for i in range(cfg.num_layers):
            if i < half:
                skips.append(h)
            else:
                # U-Net: the second half's block i reads the first half's block L - 1 - i.
                h = jnp.concatenate([h, skips.pop()], axis=-1)
                h = logical_dense(cfg.dim, (None, "embed"), f"skip_{i}", dtype=self.dtype)(h)
            h = block(cfg.num_heads, cfg.head_dim, cfg.mlp_ratio * cfg.dim, dtype=self.dtype,
                      attention_positions=cfg.attention_positions, name=f"layer_{i}")(h, mask)
        h = RMSNorm(dtype=self.dtype, name="final_norm")(h)
        out = logical_dense(cfg.feature_dim, ("embed", None), "output_projection",
                            kernel_init=nn.initializers.zeros)(h.astype(jnp.float32))
        return out.astype(jnp.float32)
