"""Offline codec inference over signals of any length, window by window.

EnCodec 48 kHz codes a long signal in overlapping windows of
`chunk_length_s` (each normalized by its RMS when `normalize=True`) and joins
the decoded windows by linear overlap-add; the 24 kHz model codes the whole
signal as one window. `encode_audio` / `decode_audio` do both.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from audiolm_jax.models.codec.model import Codec, CodecConfig
from audiolm_jax.quantization.vq import check_codes


@dataclasses.dataclass
class EncodedAudio:
    """Codes of a signal, window by window (one window unless `chunk_length_s` is set).

    Attributes:
      codes: [batch, windows, frames, n_q] int32. A window shorter than the
        others (the last) is zero-padded; `window_frames` has the true counts.
      scales: [batch, windows] float32 RMS scales, or None when the codec does
        not normalize.
      num_samples: length of the encoded signal, to trim the decoded audio.
      window_frames: valid frames of each window.
    """

    codes: np.ndarray
    scales: np.ndarray | None
    num_samples: int
    window_frames: tuple[int, ...]

    @property
    def num_quantizers(self) -> int:
        return int(self.codes.shape[-1])


def window_bounds(config: CodecConfig, num_samples: int) -> list[tuple[int, int]]:
    """(start, stop) of each encoding window, as EnCodec's `encode` loops."""
    if config.chunk_length is None:
        return [(0, num_samples)]
    return [(start, min(num_samples, start + config.chunk_length))
            for start in range(0, num_samples, config.chunk_stride)]


# The SEANet halves and the quantizer are jitted apart, so a new bandwidth
# recompiles only the cheap quantizer step, not the convolutions.


@functools.partial(jax.jit, static_argnames=("model",))
def jit_encode_latents(model: Codec, variables: Any, audio: jax.Array):
    return model.apply(variables, audio, method=Codec.encode_latents)


@functools.partial(jax.jit, static_argnames=("model", "num_quantizers"))
def jit_quantize(model: Codec, variables: Any, latents: jax.Array, num_quantizers: int):
    return model.apply(variables, latents, num_quantizers, method=Codec.quantize)


@functools.partial(jax.jit, static_argnames=("model",))
def jit_dequantize(model: Codec, variables: Any, codes: jax.Array):
    return model.apply(variables, codes, method=Codec.dequantize)


@functools.partial(jax.jit, static_argnames=("model",))
def jit_decode_latents(model: Codec, variables: Any, latents: jax.Array, scale: jax.Array | None):
    return model.apply(variables, latents, scale, method=Codec.decode_latents)


def _encode_window(model: Codec, variables: Any, audio: jax.Array, num_quantizers: int):
    latents, scale = jit_encode_latents(model, variables, audio)
    return jit_quantize(model, variables, latents, num_quantizers), scale


def _decode_window(model: Codec, variables: Any, codes: jax.Array, scale: jax.Array | None):
    return jit_decode_latents(model, variables, jit_dequantize(model, variables, codes), scale)


def _check_audio(audio: Any, config: CodecConfig) -> jax.Array:
    audio = jnp.asarray(audio, jnp.float32)
    channels = config.seanet.audio_channels
    if audio.ndim != 3 or audio.shape[-1] != channels:
        raise ValueError(f"audio must be [batch, samples, {channels}] for this "
                         f"{channels}-channel codec, got shape {tuple(audio.shape)}")
    if audio.shape[1] == 0:
        raise ValueError("audio is empty (0 samples)")
    return audio


def encode_audio(model: Codec, variables: Any, audio: Any,
                 bandwidth: float | None = None) -> EncodedAudio:
    """Encodes a whole signal, windowed like Hugging Face's `EncodecModel.encode`.

    Windows of equal length are encoded in one batched, jitted call.

    Args:
      model: the codec.
      variables: {"params": ..., "codebook": ...}.
      audio: [batch, samples, audio_channels] at `model.config.sample_rate`.
      bandwidth: kbit/s, one of `target_bandwidths`; None uses every codebook
        (note: Hugging Face defaults to the *smallest* bandwidth).

    Returns:
      EncodedAudio.

    Raises:
      ValueError: for a bandwidth the model was not trained for (naming it),
        or audio of the wrong shape.
    """
    cfg = model.config
    n_q = cfg.num_quantizers_for(bandwidth)
    audio = _check_audio(audio, cfg)
    batch, total = audio.shape[:2]
    bounds = window_bounds(cfg, total)
    codes: list[Any] = [None] * len(bounds)
    scales: list[Any] = [None] * len(bounds)
    for length in sorted({stop - start for start, stop in bounds}):
        group = [i for i, (start, stop) in enumerate(bounds) if stop - start == length]
        stacked = jnp.concatenate([audio[:, bounds[i][0]:bounds[i][1]] for i in group])
        group_codes, group_scales = _encode_window(model, variables, stacked, n_q)
        for j, i in enumerate(group):
            codes[i] = np.asarray(group_codes[j * batch:(j + 1) * batch])
            if group_scales is not None:
                scales[i] = np.asarray(group_scales[j * batch:(j + 1) * batch])
    window_frames = tuple(c.shape[1] for c in codes)
    width = max(window_frames)
    padded = np.stack([np.pad(c, ((0, 0), (0, width - c.shape[1]), (0, 0))) for c in codes],
                      axis=1).astype(np.int32)
    return EncodedAudio(codes=padded,
                        scales=np.stack(scales, axis=1) if cfg.normalize else None,
                        num_samples=int(total), window_frames=window_frames)


def linear_overlap_add(windows: list[jax.Array], stride: int) -> jax.Array:
    """EnCodec's overlap-add with triangular weights, for [batch, samples, channels] windows.

    Where windows overlap, each is weighted by its distance to its own edge
    (a triangle peaking mid-window) and the sum is divided by the total
    weight, so a lone window passes through unchanged.
    """
    length = windows[0].shape[1]
    total = stride * (len(windows) - 1) + windows[-1].shape[1]
    t = jnp.linspace(0.0, 1.0, length + 2, dtype=jnp.float32)[1:-1]
    weight = 0.5 - jnp.abs(t - 0.5)
    out = jnp.zeros((windows[0].shape[0], total, windows[0].shape[2]), jnp.float32)
    weight_sum = jnp.zeros((total,), jnp.float32)
    for i, window in enumerate(windows):
        n = window.shape[1]
        out = out.at[:, i * stride:i * stride + n].add(weight[:n, None] * window)
        weight_sum = weight_sum.at[i * stride:i * stride + n].add(weight[:n])
    return out / weight_sum[None, :, None]


def decode_audio(model: Codec, variables: Any, encoded: EncodedAudio) -> jax.Array:
    """Inverse of `encode_audio`: decodes each window and overlap-adds them.

    Args:
      model: the codec.
      variables: {"params": ..., "codebook": ...}.
      encoded: from `encode_audio` (or loaded from an `.npz`).

    Returns:
      [batch, num_samples, audio_channels] float32.

    Raises:
      ValueError: for a code outside a codebook (naming it and its codebook)
        or more codebooks than the model has.
    """
    cfg = model.config
    codes = np.asarray(encoded.codes)
    if codes.ndim != 4:
        raise ValueError(f"codes must be [batch, windows, frames, n_q], got shape {codes.shape}")
    if not 1 <= codes.shape[-1] <= cfg.num_quantizers:
        raise ValueError(f"codes have {codes.shape[-1]} codebooks; this codec has "
                         f"{cfg.num_quantizers}")
    if len(encoded.window_frames) != codes.shape[1]:
        raise ValueError(f"window_frames has {len(encoded.window_frames)} entries for "
                         f"{codes.shape[1]} windows")
    for i, frames in enumerate(encoded.window_frames):
        check_codes(codes[:, i, :frames], cfg.codebook_size, codebook_axis=-1)
    if cfg.normalize and encoded.scales is None:
        raise ValueError("this codec normalizes its input: decoding needs the scales "
                         "that encode_audio returned")
    batch = codes.shape[0]
    windows: list[Any] = [None] * codes.shape[1]
    for frames in sorted(set(encoded.window_frames)):
        group = [i for i, f in enumerate(encoded.window_frames) if f == frames]
        stacked = jnp.asarray(np.concatenate([codes[:, i, :frames] for i in group]))
        scale = (jnp.asarray(np.concatenate([encoded.scales[:, i] for i in group]))
                 if cfg.normalize else None)
        audio = _decode_window(model, variables, stacked, scale)
        for j, i in enumerate(group):
            windows[i] = audio[j * batch:(j + 1) * batch]
    if len(windows) == 1:
        audio = windows[0]
    else:
        audio = linear_overlap_add(windows, cfg.chunk_stride)
    return audio[:, :encoded.num_samples]


def init_codec(config: CodecConfig, seed: int = 0, num_samples: int | None = None,
               dtype: Any = jnp.float32) -> tuple[Codec, dict]:
    """A codec and freshly initialized, unboxed variables {"params", "codebook"}.

    Uses the cheap "rbg" PRNG so that initialization compiles fast on CPU.
    (Trainers use `training.state.create_sharded_state`, which keeps the
    logical-axis annotations to derive shardings.)
    """
    model = Codec(config, dtype=dtype)
    length = num_samples or config.hop_length * 4
    dummy = jnp.zeros((1, length, config.seanet.audio_channels), jnp.float32)
    variables = jax.jit(lambda key: model.init(key, dummy, train=False))(
        jax.random.key(seed, impl="rbg"))
    return model, dict(nn.meta.unbox(variables))
