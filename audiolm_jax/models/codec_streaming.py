"""Streaming a whole codec: audio chunks -> codes, and codes -> audio chunks.

`models/codec.py` streams the SEANet encoder and decoder (latents in, latents
out); this module adds the residual VQ on each side so that a causal codec runs
as a real-time coder:

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

from audiolm_jax.models.codec import (
    Codec,
    CodecConfig,
    SEANetDecoder,
    SEANetEncoder,
    decode_chunk,
    encode_chunk,
    init_streaming_state,
    min_first_chunk_frames,
)
from audiolm_jax.quantization.vq import check_codes


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
        # Builds the (abstract) state, which runs models/codec.py's own checks.
        init_streaming_state(SEANetEncoder(config.seanet), 1)
    except ValueError as error:
        raise ValueError(f"this codec cannot stream: {error}") from error


# The SEANet steps (`encode_chunk` / `decode_chunk`) and the quantizer are jitted
# apart: the costly conv step compiles once per chunk shape whatever the number
# of codebooks.


@functools.partial(jax.jit, static_argnames=("model", "num_quantizers"))
def _quantize(model: Codec, codebook: Any, latents: jax.Array, num_quantizers: int) -> jax.Array:
    return model.apply({"codebook": codebook}, latents, num_quantizers, method=Codec.quantize)


@functools.partial(jax.jit, static_argnames=("model",))
def _dequantize(model: Codec, codebook: Any, codes: jax.Array) -> jax.Array:
    return model.apply({"codebook": codebook}, codes, method=Codec.dequantize)


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
        codes = np.asarray(_quantize(self.model, self.variables["codebook"], latents,
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
        latents = _dequantize(self.model, self.variables["codebook"], jnp.asarray(codes))
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
