"""Token and time embeddings for codec-token language models and flow-matching models.

* `MultiCodebookEmbedding`: the frame embedding of residual-VQ token streams
  `[batch, frames, codebooks]`, one table per codebook, summed (MusicGen, VALL-E's
  NAR stage, SoundStorm).
* `codebook_offsets` / `flatten_with_offsets` / `unflatten_with_offsets`: the
  flattened single-vocabulary stream `[batch, frames * codebooks]` of AudioLM's
  coarse and fine stages.
* `apply_delay_pattern` / `revert_delay_pattern` / `delay_mask`: MusicGen's delay
  interleaving, in which codebook `q` lags `q` frames so that one decoder step
  emits every codebook of a frame while book `q` still sees books `< q` of it.
* `sinusoidal_embedding`, `timestep_embedding`, `TimestepEmbedding`: positional
  and continuous-time (flow matching / diffusion) features.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# --------------------------------------------------------------------------------------
# Multi-codebook token embedding.
# --------------------------------------------------------------------------------------


class MultiCodebookEmbedding(nn.Module):
    """Sum of one embedding table per codebook. [b, t, k] int -> [b, t, embed].

    Every codebook has its own rows for ids `0 .. codebook_size - 1` and, when
    `num_special_tokens > 0`, for the special ids `codebook_size ..
    codebook_size + num_special_tokens - 1` (pad, bos, mask, ...; see
    `special_id`). All tables live in one parameter `[codebooks, vocab, embed]`
    with `vocab = codebook_size + num_special_tokens`, so the whole embedding is
    one gather and one sharding annotation.

    Attributes:
      num_codebooks: k, the number of residual codebooks.
      codebook_size: entries per codebook (the codec's vocabulary).
      embed_dim: output features.
      num_special_tokens: extra ids past `codebook_size`, per codebook.
      dtype: output dtype (the table stays float32).
      embedding_init: table initializer; default normal with std
        `1/sqrt(num_codebooks)`, so the sum over books has unit variance per
        feature whatever k is.
    """

    num_codebooks: int
    codebook_size: int
    embed_dim: int
    num_special_tokens: int = 0
    dtype: jnp.dtype = jnp.float32
    embedding_init: Callable | None = None

    @property
    def vocab_size(self) -> int:
        """Rows per codebook table: codebook entries plus special ids."""
        return self.codebook_size + self.num_special_tokens

    def special_id(self, index: int) -> int:
        """The id of special token `index` (0-based), e.g. `special_id(0)` as the pad id."""
        if not 0 <= index < self.num_special_tokens:
            raise ValueError(f"special token {index} out of range [0, {self.num_special_tokens})")
        return self.codebook_size + index

    @nn.compact
    def __call__(self, codes: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """Embeds and sums the codebooks of each frame.

        Args:
          codes: [batch, frames, codebooks] int ids in `[0, vocab_size)`.
          mask: optional bool, [batch, frames, codebooks] or [batch, frames]; True
            where a token is present. Absent tokens contribute zero (e.g. books a
            delay pattern has not reached yet, or frames past a row's length),
            which lets a model skip special ids altogether.

        Returns:
          [batch, frames, embed_dim] in `dtype`.
        """
        if codes.shape[-1] != self.num_codebooks:
            raise ValueError(f"codes {codes.shape}: expected {self.num_codebooks} codebooks last")
        init = self.embedding_init or nn.initializers.normal(stddev=self.num_codebooks ** -0.5)
        table = self.param(
            "embedding",
            nn.with_logical_partitioning(init, ("codebooks", "vocab", "embed")),
            (self.num_codebooks, self.vocab_size, self.embed_dim), jnp.float32)
        # Advanced indexing table[q, codes[..., q]]: the book index keeps each lookup in
        # its own table (out-of-range ids clamp inside that book, never into a neighbour).
        books = jnp.arange(self.num_codebooks)
        vectors = table[books, codes.astype(jnp.int32)]            # [b, t, k, embed]
        if mask is not None:
            mask = mask if mask.ndim == codes.ndim else mask[..., None]
            vectors = jnp.where(mask[..., None], vectors, 0.0)
        out = jnp.sum(vectors, axis=-2).astype(self.dtype)           # [b, t, embed]
        if out.ndim == 3:
            out = nn.with_logical_constraint(out, ("batch", "length", "embed"))
        return out


# --------------------------------------------------------------------------------------
# Flattened single-vocabulary streams (AudioLM coarse / fine stages).
# --------------------------------------------------------------------------------------


def codebook_offsets(num_codebooks: int, codebook_size: int) -> jax.Array:
    """[num_codebooks] int32 offsets `q * codebook_size`: book q's ids move to
    `[q * codebook_size, (q + 1) * codebook_size)` of one shared vocabulary."""
    return jnp.arange(num_codebooks, dtype=jnp.int32) * codebook_size


def flatten_with_offsets(codes: jax.Array, codebook_size: int) -> jax.Array:
    """[..., frames, k] -> [..., frames * k], frame-major, book q offset by `q * codebook_size`.

    Frame-major order (all books of frame 0, then frame 1, ...) is AudioLM's: a
    decoder predicting the flat stream emits book q of a frame after books `< q`
    of the same frame. The flat vocabulary has `k * codebook_size` entries.
    """
    *lead, frames, k = codes.shape
    flat = codes.astype(jnp.int32) + codebook_offsets(k, codebook_size)
    return flat.reshape(*lead, frames * k)


def unflatten_with_offsets(flat: jax.Array, num_codebooks: int,
                           codebook_size: int) -> jax.Array:
    """Inverse of `flatten_with_offsets`: [..., frames * k] -> [..., frames, k].

    Exactly invertible (integer arithmetic); the length must be a multiple of k.
    """
    *lead, length = flat.shape
    if length % num_codebooks:
        raise ValueError(f"flat length {length} is not a multiple of {num_codebooks} codebooks")
    codes = flat.astype(jnp.int32).reshape(*lead, length // num_codebooks, num_codebooks)
    return codes - codebook_offsets(num_codebooks, codebook_size)


# --------------------------------------------------------------------------------------
# MusicGen delay pattern.
# --------------------------------------------------------------------------------------


def _delays(num_codebooks: int, delays: Sequence[int] | None) -> tuple[int, ...]:
    """Static per-book delays; the default `(0, 1, ..., k - 1)` is MusicGen's."""
    if delays is None:
        return tuple(range(num_codebooks))
    delays = tuple(int(d) for d in delays)
    if len(delays) != num_codebooks or min(delays) < 0:
        raise ValueError(f"delays {delays}: need {num_codebooks} non-negative ints")
    return delays


def apply_delay_pattern(codes: jax.Array, pad_id: int,
                        delays: Sequence[int] | None = None) -> jax.Array:
    """Shifts book q right by `delays[q]` frames (default q). [b, t, k] -> [b, t + D, k].

    `out[:, s, q] = codes[:, s - delays[q], q]` where `0 <= s - delays[q] < t`,
    `pad_id` elsewhere; D = max(delays). Example, k = 3, t = 2 (P = pad):

        book 0:  a0 a1 P  P
        book 1:  P  b0 b1 P
        book 2:  P  P  c0 c1

    Args:
      codes: [..., frames, k] ints.
      pad_id: fill value (usually a special id of `MultiCodebookEmbedding`).
      delays: static per-book delays, length k.

    Returns:
      [..., frames + max(delays), k], codes' dtype.
    """
    k = codes.shape[-1]
    delays = _delays(k, delays)
    total = max(delays)
    lead = [(0, 0)] * (codes.ndim - 2)
    # k is static and small: one static pad per book is simpler (and as fast) as a gather.
    books = [jnp.pad(codes[..., q], lead + [(d, total - d)], constant_values=pad_id)
             for q, d in enumerate(delays)]
    return jnp.stack(books, axis=-1)


def revert_delay_pattern(delayed: jax.Array, delays: Sequence[int] | None = None) -> jax.Array:
    """Inverse of `apply_delay_pattern`: [b, t + D, k] -> [b, t, k], `out[:, s, q] =
    delayed[:, s + delays[q], q]`. Exact for any input; the pads are dropped."""
    k = delayed.shape[-1]
    delays = _delays(k, delays)
    frames = delayed.shape[-2] - max(delays)
    if frames < 0:
        raise ValueError(f"delayed length {delayed.shape[-2]} is shorter than the delay {max(delays)}")
    books = [delayed[..., d:d + frames, q] for q, d in enumerate(delays)]
    return jnp.stack(books, axis=-1)


def delay_mask(num_frames: int, num_codebooks: int, delays: Sequence[int] | None = None,
               lengths: jax.Array | None = None) -> jax.Array:
    """Where a delayed stream holds a real code rather than padding.

    Args:
      num_frames: t, frames before delaying (static).
      num_codebooks: k.
      delays: as in `apply_delay_pattern`.
      lengths: optional [batch] valid frames per row (right padding), so frames
        past a row's own length count as padding too.

    Returns:
      bool [t + D, k], or [batch, t + D, k] with `lengths`: True where
      `delays[q] <= s < length + delays[q]`.
    """
    delays = _delays(num_codebooks, delays)
    steps = jnp.arange(num_frames + max(delays))[:, None]              # [t + D, 1]
    d = jnp.asarray(delays)[None, :]                                   # [1, k]
    if lengths is None:
        return (steps >= d) & (steps < num_frames + d)
    lengths = jnp.asarray(lengths)[:, None, None]                      # [b, 1, 1]
    return (steps >= d)[None] & (steps[None] < lengths + d[None])


# --------------------------------------------------------------------------------------
# Sinusoidal position and time features.
# --------------------------------------------------------------------------------------


def sinusoidal_embedding(positions: jax.Array, dim: int, max_period: float = 10_000.0, *,
                         cos_first: bool = False, tensor2tensor: bool = False) -> jax.Array:
    """Transformer sinusoids of (possibly fractional) positions. [...] -> [..., dim] float32.

    Layout `[sin(p * f_0), ..., sin(p * f_{h-1}), cos(p * f_0), ..., cos(p * f_{h-1})]`
    with `h = dim // 2` and `f_i = max_period ** (-i / h)` (frequencies from 1 down
    to just above `1 / max_period`), the layout of guided-diffusion / DiT with sin
    first. An odd `dim` gets a trailing zero feature.

    `cos_first` puts the cosines first; `tensor2tensor` spaces the frequencies as
    `f_i = max_period ** (-i / (h - 1))`, ending exactly at `1 / max_period`
    (fairseq's and MusicGen's positions use both).
    """
    half = dim // 2
    if tensor2tensor:   # computed as fairseq does (exp of a float32 step), bit for bit
        step = np.float32(np.log(max_period) / max(half - 1, 1))
        freqs = jnp.exp(jnp.arange(half, dtype=jnp.float32) * -step)         # [h]
    else:
        freqs = max_period ** (-jnp.arange(half, dtype=jnp.float32) / half)  # [h]
    angles = jnp.asarray(positions, jnp.float32)[..., None] * freqs          # [..., h]
    parts = [jnp.cos(angles), jnp.sin(angles)] if cos_first else [jnp.sin(angles), jnp.cos(angles)]
    out = jnp.concatenate(parts, axis=-1)
    if dim % 2:
        out = jnp.pad(out, [(0, 0)] * (out.ndim - 1) + [(0, 1)])
    return out


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10_000.0,
                       scale: float = 1000.0) -> jax.Array:
    """Features of continuous time t in [0, 1]. [...] -> [..., dim] float32.

    `sinusoidal_embedding(scale * t)`: unscaled, t in [0, 1] would turn every
    feature by at most one radian, leaving nearly all of them constant; scale
    1000 matches DDPM's integer steps (and SD3 / flow-matching practice), so a
    model pretrained on steps 0..999 sees the same features.
    """
    return sinusoidal_embedding(jnp.asarray(t, jnp.float32) * scale, dim, max_period)


class TimestepEmbedding(nn.Module):
    """t in [0, 1] -> sinusoid -> Dense -> SiLU -> Dense. [...] -> [..., embed_dim].

    Attributes:
      embed_dim: output features.
      frequency_dim: sinusoid features (256 as in DiT).
      hidden_dim: MLP width; `embed_dim` when None.
      scale, max_period: see `timestep_embedding`.
      dtype: compute dtype (params stay float32).
    """

    embed_dim: int
    frequency_dim: int = 256
    hidden_dim: int | None = None
    scale: float = 1000.0
    max_period: float = 10_000.0
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, t: jax.Array) -> jax.Array:
        """t: [batch] (any shape) floats in [0, 1]. Returns [batch, embed_dim] in `dtype`."""
        hidden = self.hidden_dim or self.embed_dim
        h = timestep_embedding(t, self.frequency_dim, self.max_period, self.scale)
        h = nn.Dense(hidden, dtype=self.dtype, name="dense_in",
                     kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                                              (None, "mlp")),
                     bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)))(h)
        h = jax.nn.silu(h)
        return nn.Dense(self.embed_dim, dtype=self.dtype, name="dense_out",
                        kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                                                 ("mlp", "embed")),
                        bias_init=nn.with_logical_partitioning(nn.initializers.zeros,
                                                               ("embed",)))(h)
