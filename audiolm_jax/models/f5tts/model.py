"""F5-TTS's DiT in JAX: the velocity network of the `f5-tts` package (SWivid/F5-TTS).

F5-TTS is flow-matching text to speech over vocos-mel-24khz log-mel frames. Its
network predicts the velocity of the noisy mel `x` given the mel prompt `cond`
(the reference frames, zeros elsewhere), the text and the time t in [0, 1]:

    text ids -> Embedding (+1: row 0 is the filler) + sinusoids -> ConvNeXt-V2 x L
    [x, cond, text] -> Linear -> + ConvPositionEmbedding (grouped conv k31 x 2, Mish)
    t -> sinusoids (256) -> Linear -> SiLU -> Linear                 (the time vector)
    DiT blocks: AdaLN-Zero (6 modulations from t), rotary self-attention,
                tanh-GELU feed-forward
    final AdaLN (scale, shift from t) -> Linear -> mel bins

The text is aligned to the frames by padding alone: character i sits at frame i
and every frame past the text holds the filler, so the network learns the
alignment itself (no duration model, no phonemes).

Differences of layout from the package (the converter maps them; the numbers are
the same):

- attention is the shared `layers.attention.MultiHeadAttention` (fused
  `qkv` [embed, 3, heads, kv]). x_transformers rotates interleaved feature pairs
  (2i, 2i+1); the shared RoPE rotates half-split pairs (i, i + D/2) at the same
  frequencies. The converter permutes each head's q and k features from the
  first order to the second; q.k is unchanged by a permutation applied to both.
- linear kernels are [in, out]; convolution kernels [width, in/groups, out].

Supported: the DiT of F5TTS_v1_Base / F5TTS_v1_Small (`qk_norm=None`,
`pe_attn_head=None`, no average upsampling); the v0 F5TTS_Base (rotary on one
head only) is refused by `F5Config`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from audiolm_jax.layers.attention import MultiHeadAttention
from audiolm_jax.layers.conv import grouped_conv1d
from audiolm_jax.layers.embeddings import sinusoidal_embedding
from audiolm_jax.layers.linear import logical_dense
from audiolm_jax.layers.norms import LayerNorm


@dataclasses.dataclass(frozen=True)
class F5Config:
    """The DiT's shape (the `model.arch` block of the package's configs) and its mel.

    Attributes:
      dim, depth, heads, dim_head: the transformer (attention width heads * dim_head).
      ff_mult: feed-forward width = int(dim * ff_mult).
      mel_dim: mel bins in and out.
      text_num_embeds: vocabulary size (lines of vocab.txt); the table has one
        more row, row 0 being the filler.
      text_dim: text embedding width.
      text_mask_padding: zero the filler positions of the text embedding before
        and after every ConvNeXt block (v1 models; the v0 model did not).
      conv_layers, conv_mult: ConvNeXt-V2 blocks over the text and their width factor.
      long_skip_connection: concat the first block's input to the last's output.
      attn_mask_enabled: mask padded keys in attention (batches of several
        durations); the released models were trained without (False).
      sample_rate, n_fft, hop_length, win_length, mel_floor: the vocos mel the model
        reads and writes (`audio.spectral.vocos_log_mel` with `floor=mel_floor`;
        F5-TTS floors at 1e-5, the `vocos` package's own extractor at 1e-7).
      qk_norm, pe_attn_head: the package's options this port does not implement;
        anything but None is refused.
    """

    dim: int = 1024
    depth: int = 22
    heads: int = 16
    dim_head: int = 64
    ff_mult: float = 2.0
    mel_dim: int = 100
    text_num_embeds: int = 2545
    text_dim: int = 512
    text_mask_padding: bool = True
    conv_layers: int = 4
    conv_mult: int = 2
    long_skip_connection: bool = False
    attn_mask_enabled: bool = False
    sample_rate: int = 24_000
    n_fft: int = 1024
    hop_length: int = 256
    win_length: int = 1024
    mel_floor: float = 1e-5
    qk_norm: str | None = None
    pe_attn_head: int | None = None

    def __post_init__(self):
        if self.qk_norm is not None:
            raise ValueError(f"F5Config: qk_norm={self.qk_norm!r} is not supported (only None, "
                             "as in F5TTS_v1_Base)")
        if self.pe_attn_head is not None:
            raise ValueError(f"F5Config: pe_attn_head={self.pe_attn_head} (rotary on some heads "
                             "only, the v0 F5TTS_Base) is not supported; only None")
        if self.dim % 16:
            raise ValueError(f"F5Config: dim {self.dim} must be divisible by 16 (the grouped "
                             "convolutions of the position embedding)")
        if self.dim_head % 2 or self.text_dim % 2:
            raise ValueError("F5Config: dim_head and text_dim must be even (rotary and "
                             "sinusoidal features come in pairs)")

    @classmethod
    def base(cls) -> F5Config:
        """F5TTS_v1_Base (configs/F5TTS_v1_Base.yaml; 2545 vocab entries as released)."""
        return cls()

    @classmethod
    def tiny(cls) -> F5Config:
        """A CPU-sized model for tests."""
        return cls(dim=64, depth=4, heads=4, dim_head=16, text_num_embeds=40, text_dim=32,
                   conv_layers=2, mel_dim=24)

    @property
    def ff_dim(self) -> int:
        return int(self.dim * self.ff_mult)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> F5Config:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ValueError(f"F5Config: unknown field(s) {unknown}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------- pieces


def layer_norm(x: jax.Array, eps: float = 1e-6) -> jax.Array:
    """LayerNorm without parameters (the package's `elementwise_affine=False`), float32."""
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    return ((x32 - mean) * jax.lax.rsqrt(var + eps)).astype(x.dtype)


def time_features(t: jax.Array, dim: int = 256, scale: float = 1000.0) -> jax.Array:
    """The package's `SinusPositionEmbedding`. [batch] -> [batch, dim] float32.

    `[sin(s t f_i), cos(s t f_i)]` with `f_i = exp(-i log(10^4) / (dim/2 - 1))`: the
    last frequency is exactly 1e-4, unlike the shared `timestep_embedding`
    (`f_i = 10^(-4 i / (dim/2))`), so it is computed here, in the package's order
    of operations.
    """
    half = dim // 2
    freqs = jnp.exp(jnp.arange(half, dtype=jnp.float32) * -(math.log(10_000.0) / (half - 1)))
    angles = (scale * jnp.asarray(t, jnp.float32))[:, None] * freqs[None]
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


def text_positions(length: int, dim: int) -> jax.Array:
    """The text's sinusoids (the package's `precompute_freqs_cis`): `[cos, sin]` at
    `f_i = 10^(-4 * 2i / dim)`. [length, dim] float32.

    The shared `sinusoidal_embedding` has the same frequencies in `[sin, cos]`
    order, so the halves are swapped."""
    return jnp.roll(sinusoidal_embedding(jnp.arange(length), dim), dim // 2, axis=-1)


def depthwise_conv(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
    """'Same' depthwise convolution, `Conv1d(groups=channels, padding=k // 2)`.

    x: [batch, time, channels]; kernel: [width, channels] (odd width). As shifted
    multiply-adds: one channel per group is elementwise work, which XLA:CPU runs far
    faster this way than as a grouped convolution.
    """
    width, length = kernel.shape[0], x.shape[1]
    padded = jnp.pad(x, ((0, 0), (width // 2, width // 2), (0, 0)))
    return sum(padded[:, k:k + length] * kernel[k] for k in range(width)) + bias


def _drop(x: jax.Array, drop: bool | jax.Array) -> jax.Array:
    """`x` zeroed where `drop` says: a Python bool for the whole batch (guidance's
    null pass), or a [batch] bool array per row (training's condition drops)."""
    if isinstance(drop, bool):
        return jnp.zeros_like(x) if drop else x
    drop = jnp.asarray(drop, bool).reshape((-1,) + (1,) * (x.ndim - 1))
    return jnp.where(drop, jnp.zeros_like(x), x)


class ConvNeXtV2Block(nn.Module):
    """x + pw2(GRN(GELU(pw1(LN(dwconv7(x)))))). [batch, text, dim] -> same.

    GRN (global response normalization) normalizes each channel's L2 norm over
    time by its mean over channels: `gamma * (x * N) + beta + x`.
    """

    hidden: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, valid: jax.Array | None = None) -> jax.Array:
        """`valid` ([batch, time] bool): GRN's norms over those positions only (exact
        padding); None: over all of them, as the package."""
        dim = x.shape[-1]
        kernel = self.param("dwconv_kernel", nn.with_logical_partitioning(
            nn.initializers.lecun_normal(in_axis=0, out_axis=()), (None, "embed")),
            (7, dim), jnp.float32)
        bias = self.param("dwconv_bias", nn.with_logical_partitioning(
            nn.initializers.zeros, ("embed",)), (dim,), jnp.float32)
        h = depthwise_conv(x, kernel.astype(self.dtype), bias.astype(self.dtype))
        h = LayerNorm(eps=1e-6, dtype=self.dtype, name="norm")(h)
        h = logical_dense(self.hidden, ("embed", "mlp"), "pwconv1", dtype=self.dtype)(h)
        h = jax.nn.gelu(h, approximate=False)
        gamma = self.param("grn_gamma", nn.with_logical_partitioning(
            nn.initializers.zeros, ("mlp",)), (self.hidden,), jnp.float32)
        beta = self.param("grn_beta", nn.with_logical_partitioning(
            nn.initializers.zeros, ("mlp",)), (self.hidden,), jnp.float32)
        h32 = h.astype(jnp.float32)
        sq = jnp.square(h32) if valid is None else jnp.where(valid[..., None], jnp.square(h32), 0)
        gx = jnp.sqrt(jnp.sum(sq, axis=1, keepdims=True))                  # [b, 1, hidden]
        nx = gx / (jnp.mean(gx, axis=-1, keepdims=True) + 1e-6)
        h = (gamma * (h32 * nx) + beta + h32).astype(self.dtype)
        h = logical_dense(dim, ("mlp", "embed"), "pwconv2", dtype=self.dtype)(h)
        return x + h


class TextEmbedding(nn.Module):
    """Character ids -> [batch, frames, text_dim], aligned to the frames by padding.

    Ids are the vocabulary's (`-1` pads a batch); +1 makes row 0 the filler.
    The ids are cut or filler-padded to `frames`; a row with `lengths` fills its
    frames from `lengths[b]` on too and keeps them exactly zero (the package's
    per-sample padding). With `drop_text` (guidance's unconditional pass) every id
    becomes the filler, but the filler mask stays the real text's, as in the package;
    a [batch] bool array drops the rows where it is True (training's per-row drops).
    """

    config: F5Config
    dtype: jnp.dtype = jnp.float32
    exact_padding: bool = False     # see `DiT`

    @nn.compact
    def __call__(self, text: jax.Array, frames: int, lengths: jax.Array | None = None,
                 drop_text: bool | jax.Array = False) -> jax.Array:
        cfg = self.config
        text = jnp.asarray(text, jnp.int32)[:, :frames] + 1
        text = jnp.pad(text, ((0, 0), (0, frames - text.shape[1])))
        valid = None
        if lengths is not None:
            valid = jnp.arange(frames)[None] < jnp.asarray(lengths)[:, None]      # [b, n]
            text = jnp.where(valid, text, 0)
        filler = text == 0
        text = _drop(text, drop_text)
        table = self.param("embedding", nn.with_logical_partitioning(
            nn.initializers.normal(stddev=1.0), ("vocab", "embed")),
            (cfg.text_num_embeds + 1, cfg.text_dim), jnp.float32)
        h = jnp.take(table, text, axis=0).astype(self.dtype)
        if valid is not None:
            h = jnp.where(valid[..., None], h, 0)
        if cfg.conv_layers:
            pos = text_positions(frames, cfg.text_dim)[None]
            if valid is not None:
                pos = pos * valid[..., None]
            h = h + pos.astype(self.dtype)
            blocks = [ConvNeXtV2Block(cfg.text_dim * cfg.conv_mult, self.dtype, name=f"block_{i}")
                      for i in range(cfg.conv_layers)]
            if cfg.text_mask_padding:
                h = jnp.where(filler[..., None], 0, h)
            for block in blocks:
                h = block(h, valid if self.exact_padding else None)
                if cfg.text_mask_padding:
                    h = jnp.where(filler[..., None], 0, h)
        return nn.with_logical_constraint(h, ("batch", "length", "embed"))


class ConvPositionEmbedding(nn.Module):
    """Two 'same' grouped convolutions (k31, 16 groups), each followed by Mish, with
    padded frames zeroed before and after each. [batch, frames, dim] -> same."""

    kernel_size: int = 31
    groups: int = 16
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        dim = x.shape[-1]
        keep = None if mask is None else mask[..., None]
        if keep is not None:
            x = jnp.where(keep, x, 0)
        pad = self.kernel_size // 2
        for i in range(2):
            kernel = self.param(f"conv_{i}_kernel", nn.with_logical_partitioning(
                nn.initializers.lecun_normal(in_axis=(0, 1), out_axis=2), (None, None, "embed")),
                (self.kernel_size, dim // self.groups, dim), jnp.float32)
            bias = self.param(f"conv_{i}_bias", nn.with_logical_partitioning(
                nn.initializers.zeros, ("embed",)), (dim,), jnp.float32)
            x = grouped_conv1d(jnp.pad(x, ((0, 0), (pad, pad), (0, 0))),
                               kernel.astype(self.dtype), self.groups) + bias.astype(self.dtype)
            if keep is not None:
                x = jnp.where(keep, x, 0)
            x = x * jnp.tanh(jax.nn.softplus(x))                                   # Mish
        return x


class DiTBlock(nn.Module):
    """AdaLN-Zero transformer block. x: [batch, frames, dim], t: [batch, dim] -> x.

    From t: (shift, scale, gate) for attention and for the feed-forward, in the
    package's order; each branch's output is gated and added. Attention outputs of
    padded frames are zeroed (`mask`); keys are masked only with `attn_mask_enabled`
    or `exact_padding`.
    """

    config: F5Config
    dtype: jnp.dtype = jnp.float32
    exact_padding: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        cfg = self.config
        mod = logical_dense(6 * cfg.dim, ("embed", "mlp"), "modulation", dtype=self.dtype,
                            kernel_init=nn.initializers.zeros)(jax.nn.silu(t))
        shift_a, scale_a, gate_a, shift_f, scale_f, gate_f = jnp.split(mod[:, None], 6, axis=-1)
        h = layer_norm(x) * (1 + scale_a) + shift_a
        h = MultiHeadAttention(cfg.heads, cfg.dim_head, dtype=self.dtype, positions="rope",
                               use_bias=True, name="attn")(
            h, mask if cfg.attn_mask_enabled or self.exact_padding else None)
        if mask is not None:
            h = jnp.where(mask[..., None], h, 0)
        x = x + gate_a * h
        h = layer_norm(x) * (1 + scale_f) + shift_f
        h = logical_dense(cfg.ff_dim, ("embed", "mlp"), "ff_in", dtype=self.dtype)(h)
        h = jax.nn.gelu(h, approximate=True)
        h = logical_dense(cfg.dim, ("mlp", "embed"), "ff_out", dtype=self.dtype)(h)
        x = x + gate_f * h
        return nn.with_logical_constraint(x, ("batch", "length", "embed"))


class DiT(nn.Module):
    """F5-TTS's velocity network.

    `__call__` is one pass from ids; `embed_text` and `velocity` split it so that a
    sampler embeds the text once (it does not change over the ODE) and runs only
    `velocity` per step, as the package's text cache does.

    `exact_padding` makes a row padded past its `mask` compute what it computes
    alone: padded frames are masked out of attention as keys and out of the text
    blocks' GRN norms (the package does neither, so its padded batch rows differ
    slightly from single rows). Bucketed sampling uses it; parameters are the same.
    """

    config: F5Config
    dtype: jnp.dtype = jnp.float32
    remat: bool = False         # recompute each block's activations in the backward pass
    exact_padding: bool = False

    def setup(self):
        cfg = self.config
        self.text_embed = TextEmbedding(cfg, self.dtype, self.exact_padding)
        self.time_in = logical_dense(cfg.dim, (None, "mlp"), "time_in", dtype=self.dtype)
        self.time_out = logical_dense(cfg.dim, ("mlp", "embed"), "time_out", dtype=self.dtype)
        self.input_proj = logical_dense(cfg.dim, (None, "embed"), "input_proj", dtype=self.dtype)
        self.conv_pos = ConvPositionEmbedding(dtype=self.dtype)
        block = nn.remat(DiTBlock) if self.remat else DiTBlock
        self.blocks = [block(cfg, self.dtype, self.exact_padding, name=f"block_{i}")
                       for i in range(cfg.depth)]
        if cfg.long_skip_connection:
            self.long_skip = logical_dense(cfg.dim, (None, "embed"), "long_skip",
                                           use_bias=False, dtype=self.dtype)
        self.final_modulation = logical_dense(2 * cfg.dim, ("embed", "mlp"), "final_modulation",
                                              dtype=self.dtype, kernel_init=nn.initializers.zeros)
        self.proj_out = logical_dense(cfg.mel_dim, ("embed", None), "proj_out", dtype=self.dtype,
                                      kernel_init=nn.initializers.zeros)

    def embed_text(self, text: jax.Array, frames: int, lengths: jax.Array | None = None,
                   drop_text: bool | jax.Array = False) -> jax.Array:
        """[batch, chars] ids (-1 padded) -> [batch, frames, text_dim]."""
        return self.text_embed(text, frames, lengths, drop_text)

    def velocity(self, x: jax.Array, cond: jax.Array, text_embed: jax.Array, time: jax.Array,
                 mask: jax.Array | None = None) -> jax.Array:
        """The predicted velocity.

        Args:
          x: [batch, frames, mel_dim] the noisy mel.
          cond: [batch, frames, mel_dim] the prompt mel (zeros where generated, and
            all zeros in guidance's unconditional pass).
          text_embed: [batch, frames, text_dim] from `embed_text`.
          time: [batch] or a scalar, t in [0, 1].
          mask: [batch, frames] bool, True on each row's frames (None: all valid).

        Returns:
          [batch, frames, mel_dim] float32.
        """
        batch = x.shape[0]
        time = jnp.broadcast_to(jnp.asarray(time, jnp.float32), (batch,))
        t = self.time_out(jax.nn.silu(self.time_in(time_features(time).astype(self.dtype))))
        h = jnp.concatenate([x, cond, text_embed], axis=-1).astype(self.dtype)
        h = self.input_proj(h)
        h = self.conv_pos(h, mask) + h
        residual = h
        for block in self.blocks:
            h = block(h, t, mask)
        if self.config.long_skip_connection:
            h = self.long_skip(jnp.concatenate([h, residual], axis=-1))
        scale, shift = jnp.split(self.final_modulation(jax.nn.silu(t))[:, None], 2, axis=-1)
        h = layer_norm(h) * (1 + scale) + shift
        return self.proj_out(h).astype(jnp.float32)

    def __call__(self, x: jax.Array, cond: jax.Array, text: jax.Array, time: jax.Array,
                 mask: jax.Array | None = None, drop_audio_cond: bool | jax.Array = False,
                 drop_text: bool | jax.Array = False) -> jax.Array:
        """One pass from text ids (the package's `DiT.forward` without `cfg_infer`).

        Args:
          x, cond: [batch, frames, mel_dim]; text: [batch, chars] ids, -1 padded;
          time: [batch] or scalar; mask: [batch, frames] bool or None;
          drop_audio_cond, drop_text: guidance's unconditional inputs: a bool for the
            whole batch, or [batch] bool arrays for some rows (training).
        """
        lengths = None if mask is None else jnp.sum(mask, axis=1)
        text_embed = self.embed_text(text, x.shape[1], lengths, drop_text)
        return self.velocity(x, _drop(cond, drop_audio_cond), text_embed, time, mask)


def init_dit(config: F5Config, key: jax.Array, frames: int = 8, chars: int = 4) -> dict:
    """Boxed params of `DiT(config)` (logically partitioned)."""
    x = jnp.zeros((1, frames, config.mel_dim))
    return DiT(config).init(key, x, x, jnp.zeros((1, chars), jnp.int32), jnp.zeros((1,)))["params"]
