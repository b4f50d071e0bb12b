"""Streaming a whole codec: audio chunks -> codes, and codes -> audio chunks.

Two levels: the SEANet encoder and decoder stream latents in and out
(`init_streaming_state`, `encode_chunk` / `decode_chunk`, `stream_encode` /
`stream_decode`), and `CodecStreamEncoder` / `CodecStreamDecoder` add the
residual VQ on each side so that a causal codec runs as a real-time coder:

    encoder = CodecStreamEncoder(model, variables, num_quantizers=8)
    decoder = CodecStreamDecoder(model, variables)
    for chunk in microphone:              # [batch, samples, channels], any length
        codes = encoder.push(chunk)       # [batch, new frames, n_q], maybe 0 frames
        speaker.play(decoder.push(codes)) # [batch, new frames * hop, channels]
    speaker.play(decoder.push(encoder.flush()))
    speaker.play(decoder.flush())

Codes and audio are exactly those of the offline `Codec.encode` /
`Codec.decode` on the whole signal (up to float rounding in the audio), for
any chunking. Two things make the stream wait before its first output: the
encoder only processes whole hops (`hop_length` samples; the last, partial hop
waits for `flush`), and with `pad_mode="reflect"` the first chunk must reach
`min_first_chunk_frames` frames into the signal (reflect padding at the start of
a signal reads the samples after it). Latency is therefore
`min_first_chunk_frames` frames at the start, one hop after that.

Only causal codecs without time group norm stream (a non-causal conv looks at
the future; a group norm's statistics span the whole signal), and not codecs
that normalize their input (`CodecConfig.normalize`, EnCodec 48 kHz): the RMS
scale of a window is only known once the whole window has been heard.

Each distinct chunk shape compiles the step once (`jax.jit`); feed chunks of a
constant size for a steady stream.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from audiolm_jax.models.codec.inference import jit_dequantize, jit_quantize
from audiolm_jax.models.codec.model import Codec, CodecConfig
from audiolm_jax.models.codec.seanet import (
    LayerSpec,
    SEANetConfig,
    SEANetDecoder,
    SEANetEncoder,
    StreamingState,
    decoder_plan,
    encoder_plan,
)
from audiolm_jax.quantization.vq import check_codes

SEANet = SEANetEncoder | SEANetDecoder


def _conv_left_paddings(spec: LayerSpec, config: SEANetConfig) -> list[int]:
    """Left paddings (in the layer's own time steps) of the padded convs in one plan entry."""
    if spec.kind == "conv":
        return [(spec.kernel_size - 1) * spec.dilation + 1 - spec.stride]
    if spec.kind == "resblock":
        return [(config.residual_kernel_size - 1) * spec.dilation]
    return []


def min_first_chunk_frames(config: SEANetConfig, part: str) -> int:
    """Shortest first chunk, in frames, for which streaming equals the offline output.

    With reflect padding each causal conv's first left padding mirrors the
    `padding` samples after the signal's start, so the first chunk must reach
    `padding + 1` steps into every conv. Other pad modes need one frame.

    Args:
      config: architecture.
      part: "encoder" or "decoder".
    """
    if part not in ("encoder", "decoder"):
        raise ValueError(f"part must be 'encoder' or 'decoder', got {part!r}")
    if config.pad_mode != "reflect":
        return 1
    hop, frames = config.hop_length, 1
    # Time steps of the current layer per latent frame.
    steps = hop if part == "encoder" else 1
    plan = encoder_plan(config) if part == "encoder" else decoder_plan(config)
    for spec in plan:
        for pad in _conv_left_paddings(spec, config):
            frames = max(frames, -(-(pad + 1) // steps))
        if spec.kind == "conv":
            steps //= spec.stride
        elif spec.kind == "conv_transpose":
            steps *= spec.stride
    return frames


def _check_streamable(config: SEANetConfig) -> None:
    if not config.causal:
        raise ValueError("streaming needs SEANetConfig.causal=True")
    if config.norm_type == "time_group_norm":
        raise ValueError("streaming is impossible with norm_type='time_group_norm' (its "
                         "statistics span the whole signal)")
    if config.trim_right_ratio != 1.0:
        raise ValueError("streaming needs SEANetConfig.trim_right_ratio == 1.0")


def init_streaming_state(model: SEANet, batch_size: int) -> StreamingState:
    """The state of a fresh stream: all zeros (empty buffers, zero LSTM carries).

    Args:
      model: a causal `SEANetEncoder` or `SEANetDecoder`.
      batch_size: streams processed side by side.

    Returns:
      The `cache` collection, a pytree of arrays.
    """
    cfg = model.config
    _check_streamable(cfg)
    if isinstance(model, SEANetEncoder):
        dummy = jax.ShapeDtypeStruct((batch_size, cfg.hop_length, cfg.audio_channels), jnp.float32)
    else:
        dummy = jax.ShapeDtypeStruct((batch_size, 1, cfg.hidden_size), jnp.float32)
    # Only the shapes of the cache matter; evaluate init abstractly and zero them.
    shapes = jax.eval_shape(
        lambda x: model.init(jax.random.key(0), x, streaming=True)["cache"], dummy)
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


@functools.partial(jax.jit, static_argnums=0)
def _stream_step(model: SEANet, params: Any, state: StreamingState,
                 x: jax.Array) -> tuple[jax.Array, StreamingState]:
    y, variables = model.apply({"params": params, "cache": state}, x, streaming=True,
                               mutable=["cache"])
    return y, variables["cache"]


def encode_chunk(encoder: SEANetEncoder, params: Any, state: StreamingState,
                 chunk: jax.Array) -> tuple[jax.Array, StreamingState]:
    """Encodes the next chunk of a stream (jitted; recompiles per chunk shape).

    Args:
      encoder: a causal encoder.
      params: its `params` collection.
      state: from `init_streaming_state` or the previous call.
      chunk: [batch, samples, audio_channels]; samples a multiple of hop_length
        except in the last chunk; the first chunk at least
        `min_first_chunk_frames(config, "encoder")` frames.

    Returns:
      ([batch, ceil(samples / hop_length), hidden_size], the next state).
    """
    _check_streamable(encoder.config)
    return _stream_step(encoder, params, state, chunk)


def decode_chunk(decoder: SEANetDecoder, params: Any, state: StreamingState,
                 latents: jax.Array) -> tuple[jax.Array, StreamingState]:
    """`encode_chunk`'s mirror: latents `[batch, frames, hidden_size]` (the first chunk
    at least `min_first_chunk_frames(config, "decoder")` frames) -> (`[batch, frames *
    hop_length, audio_channels]`, the next state)."""
    _check_streamable(decoder.config)
    return _stream_step(decoder, params, state, latents)


def _chunk_bounds(total: int, chunk: int, first: int) -> list[tuple[int, int]]:
    starts = [0] + list(range(first, total, chunk))
    return [(s, min(total, first if s == 0 else s + chunk)) for s in starts if s < total]


def _first_chunk(chunk: int, first: int | None, minimum: int, part: str) -> int:
    first = max(chunk, minimum) if first is None else first
    if first < minimum:
        raise ValueError(f"first chunk of {first} frames is shorter than the {minimum} frames "
                         f"the {part} needs with reflect padding (min_first_chunk_frames)")
    return first


def stream_encode(encoder: SEANetEncoder, params: Any, audio: jax.Array, chunk_size: int,
                  first_chunk_size: int | None = None) -> jax.Array:
    """Encodes audio chunk by chunk; equals `encoder.apply` on the whole signal.

    Args:
      encoder: a causal encoder.
      params: its `params` collection.
      audio: [batch, samples, audio_channels].
      chunk_size: samples per chunk, a multiple of hop_length.
      first_chunk_size: samples of the first chunk (a multiple of hop_length);
        by default chunk_size raised to the reflect-padding minimum.

    Returns:
      [batch, ceil(samples / hop_length), hidden_size].
    """
    hop = encoder.config.hop_length
    if chunk_size % hop or (first_chunk_size or hop) % hop:
        raise ValueError(f"chunk sizes must be multiples of hop_length={hop}, got chunk_size="
                         f"{chunk_size}, first_chunk_size={first_chunk_size}")
    minimum = min_first_chunk_frames(encoder.config, "encoder")
    first = _first_chunk(chunk_size // hop, first_chunk_size and first_chunk_size // hop,
                         minimum, "encoder") * hop
    state = init_streaming_state(encoder, audio.shape[0])
    outputs = []
    for start, stop in _chunk_bounds(audio.shape[1], chunk_size, first):
        frames, state = encode_chunk(encoder, params, state, audio[:, start:stop])
        outputs.append(frames)
    return jnp.concatenate(outputs, axis=1)


def stream_decode(decoder: SEANetDecoder, params: Any, latents: jax.Array, chunk_frames: int,
                  first_chunk_frames: int | None = None) -> jax.Array:
    """Decodes latent frames `[batch, frames, hidden_size]` chunk by chunk (`chunk_frames`
    each; the first `first_chunk_frames`, by default `chunk_frames` raised to the
    reflect-padding minimum) into `[batch, frames * hop_length, audio_channels]`; equals
    `decoder.apply` on all frames.
    """
    minimum = min_first_chunk_frames(decoder.config, "decoder")
    first = _first_chunk(chunk_frames, first_chunk_frames, minimum, "decoder")
    state = init_streaming_state(decoder, latents.shape[0])
    outputs = []
    for start, stop in _chunk_bounds(latents.shape[1], chunk_frames, first):
        audio, state = decode_chunk(decoder, params, state, latents[:, start:stop])
        outputs.append(audio)
    return jnp.concatenate(outputs, axis=1)


def check_streamable(config: CodecConfig) -> None:
    """Raises a ValueError saying why a codec cannot stream, if it cannot.

    Raises:
      ValueError: for `normalize=True`, a non-causal model, time group norm or
        `trim_right_ratio != 1`.
    """
    if config.normalize:
        raise ValueError(
            "this codec cannot stream: it normalizes its input (CodecConfig.normalize=True, as "
            "EnCodec 48 kHz does), dividing each window by its RMS over the whole window, and a "
            "stream cannot know the RMS of audio it has not heard yet; encode offline "
            "(encode_audio) instead")
    try:
        # Builds the (abstract) state, which runs the SEANet streaming checks below.
        init_streaming_state(SEANetEncoder(config.seanet), 1)
    except ValueError as error:
        raise ValueError(f"this codec cannot stream: {error}") from error


class _Stream:
    """Shared buffering: a numpy queue along axis 1 and a lazily created state."""

    def __init__(self, model: Codec, variables: Any, part: str, batch_size: int | None):
        check_streamable(model.config)
        self.model, self.variables = model, variables
        self.config = model.config
        self.hop = model.config.hop_length
        self.min_first_frames = min_first_chunk_frames(model.config.seanet, part)
        self.batch_size = batch_size
        self.state: Any = None
        self.started = False
        self.closed = False
        self._pending: np.ndarray | None = None

    def _enqueue(self, x: Any, width: int, what: str, dtype: Any) -> np.ndarray:
        if self.closed:
            raise ValueError(f"this {type(self).__name__} was flushed; start a new one")
        x = np.asarray(x)
        if x.ndim != 3 or x.shape[-1] != width:
            raise ValueError(f"{what} must be [batch, time, {width}], got shape {x.shape}")
        if self.batch_size is None:
            self.batch_size = x.shape[0]
        if x.shape[0] != self.batch_size:
            raise ValueError(f"{what} has batch {x.shape[0]}, but this stream carries "
                             f"{self.batch_size} streams")
        x = x.astype(dtype, copy=False)
        self._pending = x if self._pending is None else np.concatenate([self._pending, x], 1)
        return self._pending

    def _take(self, length: int) -> np.ndarray:
        assert self._pending is not None
        out, self._pending = self._pending[:, :length], self._pending[:, length:]
        self.started = True
        return out

    @property
    def pending(self) -> int:
        """Time steps received but not yet processed."""
        return 0 if self._pending is None else int(self._pending.shape[1])


class CodecStreamEncoder(_Stream):
    """Audio chunks in, codes out, holding the carried state between calls.

    Args:
      model: a causal codec.
      variables: {"params": ..., "codebook": ...}.
      num_quantizers: codebooks per frame; all when None.
      bandwidth: kbit/s instead of num_quantizers (one of target_bandwidths).
      batch_size: streams encoded side by side; taken from the first chunk when None.

    Raises:
      ValueError: when the codec cannot stream (see `check_streamable`).
    """

    def __init__(self, model: Codec, variables: Any, num_quantizers: int | None = None,
                 bandwidth: float | None = None, batch_size: int | None = None):
        super().__init__(model, variables, "encoder", batch_size)
        if num_quantizers is not None and bandwidth is not None:
            raise ValueError("give num_quantizers or bandwidth, not both")
        n = (model.config.num_quantizers_for(bandwidth) if num_quantizers is None
             else int(num_quantizers))
        if not 1 <= n <= model.config.num_quantizers:
            raise ValueError(f"num_quantizers={n}: this codec has "
                             f"{model.config.num_quantizers} codebooks")
        self.num_quantizers = n
        self.encoder = SEANetEncoder(model.config.seanet, model.dtype, model.precision)
        self.frames_out = 0

    def _run(self, audio: np.ndarray) -> np.ndarray:
        if self.state is None:
            self.state = init_streaming_state(self.encoder, self.batch_size)
        latents, self.state = encode_chunk(self.encoder, self.variables["params"]["encoder"],
                                           self.state, jnp.asarray(audio))
        codes = np.asarray(jit_quantize(self.model, {"codebook": self.variables["codebook"]}, latents,
                                     self.num_quantizers))
        self.frames_out += codes.shape[1]
        return codes

    def _empty(self) -> np.ndarray:
        return np.zeros((self.batch_size or 0, 0, self.num_quantizers), np.int32)

    def push(self, audio: Any) -> np.ndarray:
        """Encodes what it can of the next chunk.

        Args:
          audio: [batch, samples, audio_channels], any number of samples.

        Returns:
          [batch, frames, n_q] int32 codes of the whole hops received so far
          (0 frames until the first `min_first_chunk_frames` hops have arrived).
        """
        pending = self._enqueue(audio, self.config.seanet.audio_channels, "audio", np.float32)
        hops = pending.shape[1] // self.hop
        if hops == 0 or (not self.started and hops < self.min_first_frames):
            return self._empty()
        return self._run(self._take(hops * self.hop))

    def flush(self) -> np.ndarray:
        """Encodes the rest (a last partial hop, or a signal shorter than the first chunk)
        and closes the stream. Returns [batch, frames, n_q] (maybe 0 frames)."""
        rest = self._take(self.pending) if self.pending else None
        self.closed = True
        return self._empty() if rest is None else self._run(rest)


class CodecStreamDecoder(_Stream):
    """Codes in, audio chunks out, holding the carried state between calls.

    Args:
      model: a causal codec.
      variables: {"params": ..., "codebook": ...}.
      batch_size: streams decoded side by side; taken from the first codes when None.

    Raises:
      ValueError: when the codec cannot stream (see `check_streamable`).
    """

    def __init__(self, model: Codec, variables: Any, batch_size: int | None = None):
        super().__init__(model, variables, "decoder", batch_size)
        self.decoder = SEANetDecoder(model.config.seanet, model.dtype, model.precision)
        self.num_quantizers: int | None = None

    def _run(self, codes: np.ndarray) -> np.ndarray:
        if self.state is None:
            self.state = init_streaming_state(self.decoder, self.batch_size)
        latents = jit_dequantize(self.model, {"codebook": self.variables["codebook"]}, jnp.asarray(codes))
        audio, self.state = decode_chunk(self.decoder, self.variables["params"]["decoder"],
                                         self.state, latents)
        return np.asarray(audio)

    def _empty(self) -> np.ndarray:
        return np.zeros((self.batch_size or 0, 0, self.config.seanet.audio_channels), np.float32)

    def push(self, codes: Any) -> np.ndarray:
        """Decodes the next codes.

        Args:
          codes: [batch, frames, n_q] integers; n_q fixed for the stream.

        Returns:
          [batch, frames * hop_length, audio_channels] float32 audio of the
          frames received so far (none until `min_first_chunk_frames` frames
          have arrived; after that, all of them at once).

        Raises:
          ValueError: naming a code outside the codebooks, or a change of n_q.
        """
        codes = np.asarray(codes)
        if codes.ndim != 3:
            raise ValueError(f"codes must be [batch, frames, n_q], got shape {codes.shape}")
        n_q = codes.shape[-1]
        if self.num_quantizers is None:
            if not 1 <= n_q <= self.config.num_quantizers:
                raise ValueError(f"codes have {n_q} codebooks; this codec has "
                                 f"{self.config.num_quantizers}")
            self.num_quantizers = n_q
        check_codes(codes, self.config.codebook_size, codebook_axis=-1)
        pending = self._enqueue(codes, self.num_quantizers, "codes", np.int32)
        frames = pending.shape[1]
        if frames == 0 or (not self.started and frames < self.min_first_frames):
            return self._empty()
        return self._run(self._take(frames))

    def flush(self) -> np.ndarray:
        """Decodes frames still held back (a stream shorter than the first chunk) and
        closes the stream. Returns [batch, samples, audio_channels]."""
        rest = self._take(self.pending) if self.pending else None
        self.closed = True
        return self._empty() if rest is None else self._run(rest)


def iter_encode_codes(model: Codec, variables: Any, chunks: Iterable[Any],
                      num_quantizers: int | None = None) -> Iterator[np.ndarray]:
    """Generator: codes for each audio chunk as it arrives, then the flushed rest.

    Args:
      chunks: [batch, samples, audio_channels] arrays, any lengths.

    Yields:
      [batch, frames, n_q] int32 (empty ones skipped).
    """
    stream = CodecStreamEncoder(model, variables, num_quantizers)
    for chunk in chunks:
        codes = stream.push(chunk)
        if codes.shape[1]:
            yield codes
    codes = stream.flush()
    if codes.shape[1]:
        yield codes


def iter_decode_codes(model: Codec, variables: Any,
                      chunks: Iterable[Any]) -> Iterator[np.ndarray]:
    """Generator: audio for each chunk of codes as it arrives, then the flushed rest.

    Args:
      chunks: [batch, frames, n_q] integer arrays.

    Yields:
      [batch, samples, audio_channels] float32 (empty ones skipped).
    """
    stream = CodecStreamDecoder(model, variables)
    for chunk in chunks:
        audio = stream.push(chunk)
        if audio.shape[1]:
            yield audio
    audio = stream.flush()
    if audio.shape[1]:
        yield audio


def _split(x: Any, size: int, what: str) -> list[Any]:
    if int(size) != size or size < 1:
        raise ValueError(f"{what} must be a positive integer, got {size}")
    return [x[:, i:i + size] for i in range(0, x.shape[1], size)]


def stream_encode_codes(model: Codec, variables: Any, audio: Any, chunk_size: int,
                        num_quantizers: int | None = None) -> np.ndarray:
    """Encodes a signal chunk by chunk; equals `Codec.encode` on the whole signal.

    Args:
      model: a causal codec without input normalization.
      variables: {"params": ..., "codebook": ...}.
      audio: [batch, samples, audio_channels].
      chunk_size: samples fed per step (any positive size; the encoder works on
        whole hops and holds the rest back).
      num_quantizers: codebooks; all when None.

    Returns:
      [batch, ceil(samples / hop_length), n_q] int32.
    """
    audio = np.asarray(audio, np.float32)
    stream = CodecStreamEncoder(model, variables, num_quantizers, batch_size=audio.shape[0])
    pieces = [stream.push(chunk) for chunk in _split(audio, chunk_size, "chunk_size")]
    pieces.append(stream.flush())
    return np.concatenate(pieces, axis=1)


def stream_decode_codes(model: Codec, variables: Any, codes: Any,
                        chunk_frames: int) -> np.ndarray:
    """Decodes codes chunk by chunk; equals `Codec.decode` on all of them.

    Args:
      model: a causal codec without input normalization.
      variables: {"params": ..., "codebook": ...}.
      codes: [batch, frames, n_q] integers.
      chunk_frames: frames fed per step.

    Returns:
      [batch, frames * hop_length, audio_channels] float32.
    """
    codes = np.asarray(codes)
    if codes.ndim != 3:
        raise ValueError(f"codes must be [batch, frames, n_q], got shape {codes.shape}")
    stream = CodecStreamDecoder(model, variables, batch_size=codes.shape[0])
    pieces = [stream.push(chunk) for chunk in _split(codes, chunk_frames, "chunk_frames")]
    pieces.append(stream.flush())
    return np.concatenate(pieces, axis=1)
