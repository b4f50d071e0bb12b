"""SEANet encoder and decoder of SoundStream / EnCodec codecs, offline and streaming.

The structure is that of Hugging Face's `EncodecEncoder` / `EncodecDecoder`
layer for layer: `encoder_plan(config)` / `decoder_plan(config)` list the
layers with HF's indices (ELUs included, which have no weights), and the
modules name each weighted layer `layers_{i}` with the same `i`. So an importer
walks HF's state dict and maps every key mechanically:

Key paths (HF `encoder.` / `decoder.` prefix -> the encoder's / decoder's params):

| HF state-dict key (prefix `layers.{i}.`)        | Flax path (`layers_{i}/`)  | here = torch.permute |
|-------------------------------------------------|----------------------------|----------------------|
| conv.weight_v / conv.parametrizations.weight.original1 | weight_v            | Conv1d (2, 1, 0); ConvTranspose1d (2, 0, 1) |
| conv.weight_g / conv.parametrizations.weight.original0 | weight_g            | same as weight_v     |
| conv.weight (norm_type time_group_norm)         | weight                     | same as weight_v     |
| conv.bias                                       | bias                       | -                    |
| norm.weight, norm.bias (time_group_norm)        | norm/scale, norm/bias      | -                    |
| lstm.weight_ih_l{n}, lstm.weight_hh_l{n}        | weight_ih_l{n}, weight_hh_l{n} | .T               |
| lstm.bias_ih_l{n}, lstm.bias_hh_l{n}            | bias_ih_l{n}, bias_hh_l{n} | -                    |
| block.{j}.<conv key> (residual blocks, j = 1, 3)| block_{j}/<flax name>      | Conv1d (2, 1, 0)     |
| shortcut.<conv key> (use_conv_shortcut)         | shortcut/<flax name>       | Conv1d (2, 1, 0)     |

i.e. `layers.{i}` -> `layers_{i}`, `block.{j}` -> `block_{j}`, drop `conv.` and
`lstm.`, `norm.weight` -> `norm/scale`, and permute kernels to channels last.
Shapes here: Conv1d `weight_v` [K, in, out], `weight_g` [1, 1, out];
ConvTranspose1d `weight_v` [K, in, out], `weight_g` [1, in, 1] (torch's
weight norm on a transposed conv has one gain per *input* channel); LSTM
`weight_*` [in, 4 * hidden]. The decoder's transposed convs are the
`decoder_plan` entries of kind "conv_transpose".

For the 24 kHz EnCodec defaults (ratios (8, 5, 4, 2), 32 filters, hidden 128):

| i  | encoder                     | decoder                          |
|----|-----------------------------|----------------------------------|
| 0  | conv 1->32, k7              | conv 128->512, k7                |
| 1  | resblock 32                 | lstm 512 (2 layers)              |
| 2  | elu                         | elu                              |
| 3  | conv 32->64, k4, s2         | conv_transpose 512->256, k16, s8 |
| 4  | resblock 64                 | resblock 256                     |
| 5  | elu                         | elu                              |
| 6  | conv 64->128, k8, s4        | conv_transpose 256->128, k10, s5 |
| 7  | resblock 128                | resblock 128                     |
| 8  | elu                         | elu                              |
| 9  | conv 128->256, k10, s5      | conv_transpose 128->64, k8, s4   |
| 10 | resblock 256                | resblock 64                      |
| 11 | elu                         | elu                              |
| 12 | conv 256->512, k16, s8      | conv_transpose 64->32, k4, s2    |
| 13 | lstm 512 (2 layers)         | resblock 32                      |
| 14 | elu                         | elu                              |
| 15 | conv 512->128, k7           | conv 32->1, k7                   |

A resblock of width `dim` is `block_1` (conv dim -> dim // compress,
residual_kernel_size, dilation dilation_growth_rate**j), `block_3` (conv
back to dim, k1) and `shortcut` (conv dim -> dim, k1) or the identity.

Streaming (causal models without time group norm): `init_streaming_state`,
then `encode_chunk` / `decode_chunk` per chunk (jitted, the state is a pytree:
the Flax `cache` collection); `stream_encode` / `stream_decode` do the loop.
Chunks concatenate to exactly the offline output. Two rules make that so:
every chunk but the last is a multiple of the hop (encoder), and with
`pad_mode="reflect"` the first chunk is at least `min_first_chunk_frames`
frames, because reflect padding at the start of a signal reads the samples
after it (a causal conv's left padding is not causal under reflect).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from audiolm_jax.layers.conv import INITS, LSTM, NORM_TYPES, PAD_MODES, Conv1d, ConvTranspose1d
from audiolm_jax.quantization.vq import (
    ResidualVectorQuantizer,
    bandwidth_to_num_quantizers,
    check_codes,
)

StreamingState = dict[str, Any]
"""A stream's carried state: the Flax `cache` collection of an encoder or decoder."""


@dataclasses.dataclass(frozen=True)
class SEANetConfig:
    """Architecture of a SEANet encoder/decoder pair; defaults are EnCodec 24 kHz.

    Field names follow `transformers.EncodecConfig` (`causal` is its
    `use_causal_conv`).

    Attributes:
      audio_channels: channels of the waveform (1 mono, 2 stereo).
      num_filters: channels after the first conv; doubled at each downsampling.
      hidden_size: latent dimension (encoder output, decoder input).
      upsampling_ratios: decoder strides; the encoder uses them reversed.
      num_residual_layers: residual blocks per resolution.
      dilation_growth_rate: block j of a resolution has dilation rate**j.
      residual_kernel_size: kernel of a residual block's first conv.
      kernel_size: kernel of the first conv.
      last_kernel_size: kernel of the last conv.
      compress: a residual block's hidden width is dim // compress.
      use_conv_shortcut: a 1x1 conv on the residual path, else the identity.
      num_lstm_layers: layers of the skip LSTM (0 makes it an identity).
      causal: causal padding and trimming (needed for streaming).
      norm_type: "weight_norm", "time_group_norm" or "none".
      pad_mode: "reflect", "constant" or "replicate".
      trim_right_ratio: share of a causal transposed conv's surplus cut on the right.
      param_init: conv initialization, "lecun" or "torch" (see `layers.conv.INITS`:
        PyTorch's default starves the latents of signal, so ours is "lecun";
        imported checkpoints overwrite it either way).
    """

    audio_channels: int = 1
    num_filters: int = 32
    hidden_size: int = 128
    upsampling_ratios: tuple[int, ...] = (8, 5, 4, 2)
    num_residual_layers: int = 1
    dilation_growth_rate: int = 2
    residual_kernel_size: int = 3
    kernel_size: int = 7
    last_kernel_size: int = 7
    compress: int = 2
    use_conv_shortcut: bool = True
    num_lstm_layers: int = 2
    causal: bool = True
    norm_type: str = "weight_norm"
    pad_mode: str = "reflect"
    trim_right_ratio: float = 1.0
    param_init: str = "lecun"

    def __post_init__(self):
        # Lists from a ConfigDict or JSON become a tuple so the config stays hashable
        # (modules holding it are static arguments of jit).
        object.__setattr__(self, "upsampling_ratios", tuple(int(r) for r in self.upsampling_ratios))
        if not self.upsampling_ratios or min(self.upsampling_ratios) < 1:
            raise ValueError("SEANetConfig.upsampling_ratios must be a non-empty list of positive "
                             f"ints, got {self.upsampling_ratios}")
        if self.norm_type not in NORM_TYPES:
            raise ValueError(f"SEANetConfig.norm_type must be one of {NORM_TYPES}, got "
                             f"{self.norm_type!r}")
        if self.pad_mode not in PAD_MODES:
            raise ValueError(f"SEANetConfig.pad_mode must be one of {PAD_MODES}, got "
                             f"{self.pad_mode!r}")
        if self.param_init not in INITS:
            raise ValueError(f"SEANetConfig.param_init must be one of {INITS}, got "
                             f"{self.param_init!r}")
        if not (self.causal or self.trim_right_ratio == 1.0):
            raise ValueError("SEANetConfig.trim_right_ratio != 1.0 only makes sense with "
                             "causal=True")
        if self.num_filters < 1 or self.compress < 1 or self.num_filters // self.compress < 1:
            raise ValueError(f"SEANetConfig: num_filters ({self.num_filters}) // compress "
                             f"({self.compress}) must be at least 1")

    @property
    def hop_length(self) -> int:
        """Samples per latent frame: the product of the ratios."""
        return math.prod(self.upsampling_ratios)

    @classmethod
    def from_encodec_config(cls, config: Any) -> SEANetConfig:
        """The SEANet part of a `transformers.EncodecConfig` (object or dict)."""
        get = config.get if isinstance(config, Mapping) else functools.partial(getattr, config)
        fields = {f.name for f in dataclasses.fields(cls)} - {"causal"}
        kwargs = {name: get(name) for name in fields if get(name, None) is not None}
        return cls(causal=get("use_causal_conv", True), **kwargs)


class LayerSpec(NamedTuple):
    """One entry of HF's `layers` list.

    kind is "conv", "conv_transpose", "resblock", "lstm" or "elu"; a resblock's
    kernel_size/dilation are those of its first conv.
    """

    kind: str
    in_channels: int
    out_channels: int
    kernel_size: int = 1
    stride: int = 1
    dilation: int = 1


def _resblocks(config: SEANetConfig, dim: int) -> list[LayerSpec]:
    return [LayerSpec("resblock", dim, dim, config.residual_kernel_size,
                      dilation=config.dilation_growth_rate**j)
            for j in range(config.num_residual_layers)]


def encoder_plan(config: SEANetConfig) -> list[LayerSpec]:
    """The encoder's layers, indexed like HF's `EncodecEncoder.layers`."""
    nf = config.num_filters
    plan = [LayerSpec("conv", config.audio_channels, nf, config.kernel_size)]
    scale = 1
    for ratio in reversed(config.upsampling_ratios):
        dim = scale * nf
        plan += _resblocks(config, dim)
        plan += [LayerSpec("elu", dim, dim),
                 LayerSpec("conv", dim, 2 * dim, 2 * ratio, stride=ratio)]
        scale *= 2
    dim = scale * nf
    return plan + [LayerSpec("lstm", dim, dim), LayerSpec("elu", dim, dim),
                   LayerSpec("conv", dim, config.hidden_size, config.last_kernel_size)]


def decoder_plan(config: SEANetConfig) -> list[LayerSpec]:
    """The decoder's layers, indexed like HF's `EncodecDecoder.layers`."""
    nf = config.num_filters
    scale = 2 ** len(config.upsampling_ratios)
    plan = [LayerSpec("conv", config.hidden_size, scale * nf, config.kernel_size),
            LayerSpec("lstm", scale * nf, scale * nf)]
    for ratio in config.upsampling_ratios:
        dim = scale * nf
        plan += [LayerSpec("elu", dim, dim),
                 LayerSpec("conv_transpose", dim, dim // 2, 2 * ratio, stride=ratio)]
        plan += _resblocks(config, dim // 2)
        scale //= 2
    return plan + [LayerSpec("elu", nf, nf),
                   LayerSpec("conv", nf, config.audio_channels, config.last_kernel_size)]


class SEANetResnetBlock(nn.Module):
    """x -> shortcut(x) + conv1x1(elu(conv_k(elu(x)))), HF's `EncodecResnetBlock`.

    Attributes:
      config: the codec's architecture.
      dilation: dilation of the first conv.
      dtype: compute dtype.
      precision: `jax.lax` precision of the convolutions.
    """

    config: SEANetConfig
    dilation: int = 1
    dtype: Any = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, streaming: bool = False) -> jax.Array:
        """[batch, time, dim] -> [batch, time, dim]."""
        cfg, dim = self.config, x.shape[-1]
        conv = functools.partial(Conv1d, causal=cfg.causal, pad_mode=cfg.pad_mode,
                                 norm_type=cfg.norm_type, param_init=cfg.param_init,
                                 dtype=self.dtype, precision=self.precision)
        # Names are HF's indices in `block` (0 and 2 are the ELUs).
        h = conv(dim // cfg.compress, cfg.residual_kernel_size, dilation=self.dilation,
                 name="block_1")(jax.nn.elu(x), streaming)
        h = conv(dim, 1, name="block_3")(jax.nn.elu(h), streaming)
        residual = conv(dim, 1, name="shortcut")(x, streaming) if cfg.use_conv_shortcut else x
        return residual + h


def _build_layer(spec: LayerSpec, name: str, config: SEANetConfig, dtype: Any,
                 precision: Any) -> Callable[[jax.Array, bool], jax.Array]:
    """The module (or activation) for one plan entry, as `f(x, streaming)`."""
    if spec.kind == "elu":
        return lambda x, streaming: jax.nn.elu(x)
    if spec.kind == "lstm":
        return LSTM(config.num_lstm_layers, dtype=dtype, precision=precision, name=name)
    if spec.kind == "resblock":
        return SEANetResnetBlock(config, spec.dilation, dtype=dtype, precision=precision,
                                 name=name)
    common = dict(causal=config.causal, norm_type=config.norm_type,
                  param_init=config.param_init, dtype=dtype, precision=precision, name=name)
    if spec.kind == "conv":
        return Conv1d(spec.out_channels, spec.kernel_size, spec.stride, spec.dilation,
                      pad_mode=config.pad_mode, **common)
    if spec.kind == "conv_transpose":
        return ConvTranspose1d(spec.out_channels, spec.kernel_size, spec.stride,
                               trim_right_ratio=config.trim_right_ratio, **common)
    raise ValueError(f"unknown layer kind {spec.kind!r}")


def _run_plan(plan: list[LayerSpec], x: jax.Array, config: SEANetConfig, dtype: Any,
              precision: Any, streaming: bool) -> jax.Array:
    for i, spec in enumerate(plan):
        x = _build_layer(spec, f"layers_{i}", config, dtype, precision)(x, streaming)
    return x


def _check_input(x: jax.Array, channels: int, what: str) -> None:
    if x.ndim != 3 or x.shape[-1] != channels:
        raise ValueError(f"{what} must be [batch, time, {channels}], got shape {tuple(x.shape)}")


class SEANetEncoder(nn.Module):
    """Waveform -> latent frames, HF's `EncodecEncoder` channels-last.

    Attributes:
      config: architecture.
      dtype: compute dtype (params stay float32; the output is float32).
      precision: `jax.lax` precision of convolutions and matmuls.
    """

    config: SEANetConfig = SEANetConfig()
    dtype: Any = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, audio: jax.Array, streaming: bool = False) -> jax.Array:
        """Encodes.

        Args:
          audio: [batch, samples, audio_channels].
          streaming: continue the stream held in the `cache` collection (see
            `encode_chunk`).

        Returns:
          [batch, ceil(samples / hop_length), hidden_size] float32.
        """
        _check_input(audio, self.config.audio_channels, "SEANetEncoder input")
        x = _run_plan(encoder_plan(self.config), audio.astype(self.dtype), self.config,
                      self.dtype, self.precision, streaming)
        return nn.with_logical_constraint(x.astype(jnp.float32), ("batch", "length", "embed"))


class SEANetDecoder(nn.Module):
    """Latent frames -> waveform, HF's `EncodecDecoder` channels-last.

    Attributes:
      config: architecture.
      dtype: compute dtype (params stay float32; the output is float32).
      precision: `jax.lax` precision of convolutions and matmuls.
    """

    config: SEANetConfig = SEANetConfig()
    dtype: Any = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, latents: jax.Array, streaming: bool = False) -> jax.Array:
        """Decodes.

        Args:
          latents: [batch, frames, hidden_size].
          streaming: continue the stream held in the `cache` collection (see
            `decode_chunk`).

        Returns:
          [batch, frames * hop_length, audio_channels] float32.
        """
        _check_input(latents, self.config.hidden_size, "SEANetDecoder input")
        x = _run_plan(decoder_plan(self.config), latents.astype(self.dtype), self.config,
                      self.dtype, self.precision, streaming)
        return nn.with_logical_constraint(x.astype(jnp.float32), ("batch", "length", None))


# ----------------------------------------------------------------------------- streaming

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
    """Decodes the next chunk of latent frames (jitted; recompiles per chunk shape).

    Args:
      decoder: a causal decoder.
      params: its `params` collection.
      state: from `init_streaming_state` or the previous call.
      latents: [batch, frames, hidden_size]; the first chunk at least
        `min_first_chunk_frames(config, "decoder")` frames.

    Returns:
      ([batch, frames * hop_length, audio_channels], the next state).
    """
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
    """Decodes latent frames chunk by chunk; equals `decoder.apply` on all frames.

    Args:
      decoder: a causal decoder.
      params: its `params` collection.
      latents: [batch, frames, hidden_size].
      chunk_frames: frames per chunk.
      first_chunk_frames: frames of the first chunk; by default chunk_frames
        raised to the reflect-padding minimum.

    Returns:
      [batch, frames * hop_length, audio_channels].
    """
    minimum = min_first_chunk_frames(decoder.config, "decoder")
    first = _first_chunk(chunk_frames, first_chunk_frames, minimum, "decoder")
    state = init_streaming_state(decoder, latents.shape[0])
    outputs = []
    for start, stop in _chunk_bounds(latents.shape[1], chunk_frames, first):
        audio, state = decode_chunk(decoder, params, state, latents[:, start:stop])
        outputs.append(audio)
    return jnp.concatenate(outputs, axis=1)


# ----------------------------------------------------------------------------- the codec


@dataclasses.dataclass(frozen=True)
class CodecConfig:
    """A whole SoundStream / EnCodec codec: SEANet autoencoder plus residual VQ.

    The first group of fields mirrors `transformers.EncodecConfig` (see
    `from_encodec_config`); the second group only matters for training.

    Attributes:
      seanet: encoder/decoder architecture.
      sample_rate: Hz.
      codebook_size: codes per codebook (a power of two, as in EnCodec).
      target_bandwidths: kbit/s the model serves; the largest sets the number
        of codebooks, and quantizer dropout draws from these.
      normalize: divide each chunk by its RMS before encoding and multiply the
        decoded chunk back (EnCodec 48 kHz); the scale travels with the codes.
      chunk_length_s: encode in windows of this many seconds (EnCodec 48 kHz
        uses 1 s) and overlap-add the decoded windows; None encodes the whole
        signal at once.
      overlap: fraction of a window shared with the next one.
      quantizer_dropout: train with a random bandwidth per batch.
      commitment_weight: weight of the commitment loss.
      ema_decay: EMA decay of the codebooks.
      kmeans_init: initialize codebooks with k-means on the first batch.
      kmeans_iters: iterations of that k-means.
      threshold_ema_dead_code: restart codes whose EMA usage falls below this.
    """

    seanet: SEANetConfig = SEANetConfig()
    sample_rate: int = 24000
    codebook_size: int = 1024
    target_bandwidths: tuple[float, ...] = (1.5, 3.0, 6.0, 12.0, 24.0)
    normalize: bool = False
    chunk_length_s: float | None = None
    overlap: float | None = None
    quantizer_dropout: bool = True
    commitment_weight: float = 1.0
    ema_decay: float = 0.99
    kmeans_init: bool = True
    kmeans_iters: int = 50
    threshold_ema_dead_code: float = 2.0

    def __post_init__(self):
        if isinstance(self.seanet, Mapping):
            object.__setattr__(self, "seanet", SEANetConfig(**self.seanet))
        object.__setattr__(self, "target_bandwidths",
                           tuple(float(b) for b in self.target_bandwidths))
        if self.sample_rate <= 0:
            raise ValueError(f"CodecConfig.sample_rate must be positive, got {self.sample_rate}")
        if self.codebook_size < 2 or self.codebook_size & (self.codebook_size - 1):
            raise ValueError("CodecConfig.codebook_size must be a power of two, got "
                             f"{self.codebook_size}")
        if not self.target_bandwidths or min(self.target_bandwidths) <= 0:
            raise ValueError("CodecConfig.target_bandwidths must be positive kbit/s, got "
                             f"{self.target_bandwidths}")
        if self.num_quantizers < 1:
            raise ValueError(f"CodecConfig: the largest bandwidth {max(self.target_bandwidths)} "
                             "kbps is below one codebook's bitrate "
                             f"({self.frame_rate * self.bits_per_code / 1000:g} kbps)")
        if self.chunk_length_s is not None and self.chunk_length_s <= 0:
            raise ValueError(f"CodecConfig.chunk_length_s must be positive, got "
                             f"{self.chunk_length_s}")
        if self.overlap is not None and not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"CodecConfig.overlap must be in [0, 1), got {self.overlap}")

    @property
    def hop_length(self) -> int:
        return self.seanet.hop_length

    @property
    def frame_rate(self) -> int:
        """Code frames per second, rounded up as EnCodec does (75 at 24 kHz)."""
        return math.ceil(self.sample_rate / self.hop_length)

    @property
    def bits_per_code(self) -> int:
        return math.ceil(math.log2(self.codebook_size))

    @property
    def num_quantizers(self) -> int:
        """Codebooks needed for the largest bandwidth (32 for EnCodec 24 kHz)."""
        return int(1000 * max(self.target_bandwidths) // (self.frame_rate * self.bits_per_code))

    @property
    def chunk_length(self) -> int | None:
        """Samples per encoding window, or None for whole-signal encoding."""
        if self.chunk_length_s is None:
            return None
        return int(self.chunk_length_s * self.sample_rate)

    @property
    def chunk_stride(self) -> int | None:
        """Samples between the starts of consecutive windows."""
        if self.chunk_length is None:
            return None
        if self.overlap is None:
            return self.chunk_length
        return max(1, int((1.0 - self.overlap) * self.chunk_length))

    def num_quantizers_for(self, bandwidth: float | None) -> int:
        """Codebooks used at `bandwidth` kbit/s (None: all of them).

        Raises:
          ValueError: naming the bandwidth when it is not one of
            `target_bandwidths`.
        """
        if bandwidth is None:
            return self.num_quantizers
        return bandwidth_to_num_quantizers(bandwidth, self.frame_rate, self.codebook_size,
                                           max_quantizers=self.num_quantizers,
                                           supported=self.target_bandwidths)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict; `CodecConfig(**d)` rebuilds the config."""
        out = dataclasses.asdict(self)
        out["seanet"]["upsampling_ratios"] = list(self.seanet.upsampling_ratios)
        out["target_bandwidths"] = list(self.target_bandwidths)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CodecConfig:
        """Inverse of `to_dict`; unknown fields are an error naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown CodecConfig fields {unknown}; known: {sorted(known)}")
        data = dict(data)
        if isinstance(data.get("seanet"), Mapping):
            seanet_known = {f.name for f in dataclasses.fields(SEANetConfig)}
            bad = sorted(set(data["seanet"]) - seanet_known)
            if bad:
                raise ValueError(f"unknown SEANetConfig fields {bad}; known: "
                                 f"{sorted(seanet_known)}")
            data["seanet"] = SEANetConfig(**data["seanet"])
        return cls(**data)

    @classmethod
    def from_encodec_config(cls, config: Any, **training: Any) -> CodecConfig:
        """The codec described by a `transformers.EncodecConfig` (object or config.json dict).

        Args:
          config: the Hugging Face config.
          **training: values for the training-only fields.
        """
        get = config.get if isinstance(config, Mapping) else functools.partial(getattr, config)
        codebook_dim = get("codebook_dim", None)
        hidden = get("hidden_size", 128)
        if codebook_dim not in (None, hidden):
            raise ValueError(f"EnCodec codebook_dim={codebook_dim} differs from hidden_size="
                             f"{hidden}; only codebook_dim == hidden_size (no projection) is "
                             "supported, as in every public EnCodec checkpoint")
        return cls(seanet=SEANetConfig.from_encodec_config(config),
                   sample_rate=get("sampling_rate", 24000),
                   codebook_size=get("codebook_size", 1024),
                   target_bandwidths=tuple(get("target_bandwidths", (1.5, 3.0, 6.0, 12.0, 24.0))),
                   normalize=bool(get("normalize", False)),
                   chunk_length_s=get("chunk_length_s", None),
                   overlap=get("overlap", None), **training)


@struct.dataclass
class CodecOutput:
    """What `Codec.__call__` returns.

    Attributes:
      audio: [batch, samples, channels] reconstruction, trimmed to the input length.
      latents: [batch, frames, hidden_size] encoder output before quantization.
      codes: [batch, frames, n_q] int32.
      commitment_loss: scalar.
      perplexity: [n_q] code usage per codebook (see `QuantizerOutput`).
      num_active: int32 scalar, codebooks summed into the reconstruction.
    """

    audio: jax.Array
    latents: jax.Array
    codes: jax.Array
    commitment_loss: jax.Array
    perplexity: jax.Array
    num_active: jax.Array


def rms_scale(audio: jax.Array) -> jax.Array:
    """EnCodec's normalization scale: RMS of the channel mean, plus 1e-8.

    [batch, samples, channels] -> [batch, 1, 1].
    """
    mono = jnp.mean(audio, axis=-1, keepdims=True)
    return jnp.sqrt(jnp.mean(jnp.square(mono), axis=1, keepdims=True)) + 1e-8


class Codec(nn.Module):
    """SEANet encoder -> residual VQ -> SEANet decoder (SoundStream / EnCodec).

    Variables: `params` (`encoder/...`, `decoder/...`, as in `SEANetEncoder` /
    `SEANetDecoder`) and `codebook` (`quantizer/layers_{i}/...`, see
    `audiolm_jax.quantization.vq`). `__call__` is the training forward pass
    over one window; `encode` / `decode` work on one window too, and
    `encode_audio` / `decode_audio` add EnCodec's windowing and overlap-add.

    Attributes:
      config: the codec.
      dtype: compute dtype of the convolutions (params, codebooks and outputs
        stay float32).
      precision: `jax.lax` precision of convolutions and matmuls.
    """

    config: CodecConfig = CodecConfig()
    dtype: Any = jnp.float32
    precision: Any = None

    def setup(self):
        cfg = self.config
        self.encoder = SEANetEncoder(cfg.seanet, self.dtype, self.precision)
        self.decoder = SEANetDecoder(cfg.seanet, self.dtype, self.precision)
        self.quantizer = ResidualVectorQuantizer(
            dim=cfg.seanet.hidden_size, num_quantizers=cfg.num_quantizers,
            codebook_size=cfg.codebook_size, decay=cfg.ema_decay, kmeans_init=cfg.kmeans_init,
            kmeans_iters=cfg.kmeans_iters, threshold_ema_dead_code=cfg.threshold_ema_dead_code,
            commitment_weight=cfg.commitment_weight, quantizer_dropout=cfg.quantizer_dropout,
            bandwidths=cfg.target_bandwidths, frame_rate=cfg.frame_rate)

    def __call__(self, audio: jax.Array, *, train: bool, rng: jax.Array | None = None,
                 num_quantizers: int | None = None,
                 bypass_quantizer: bool | jax.Array = False) -> CodecOutput:
        """Encodes, quantizes and decodes one window.

        Args:
          audio: [batch, samples, audio_channels].
          train: straight-through quantization, codebook updates (when the
            `codebook` collection is mutable) and quantizer dropout.
          rng: PRNG key, needed in training.
          num_quantizers: a fixed number of codebooks (static); None means
            quantizer dropout in training, all codebooks otherwise.
          bypass_quantizer: (may be traced) decode the unquantized latents and
            report a zero commitment loss, for a quantizer warm-up. The codes
            are still computed; the caller decides whether to keep the
            codebook updates (see `codec_gan`).

        Returns:
          CodecOutput.
        """
        scale = rms_scale(audio) if self.config.normalize else None
        latents = self.encoder(audio / scale if scale is not None else audio)
        q = self.quantizer(latents, train=train, num_quantizers=num_quantizers, rng=rng)
        quantized = jnp.where(bypass_quantizer, latents, q.quantized)
        commitment = jnp.where(bypass_quantizer, 0.0, q.commitment_loss)
        decoded = self.decoder(quantized)[:, :audio.shape[1]]
        if scale is not None:
            decoded = decoded * scale
        return CodecOutput(audio=decoded, latents=latents, codes=q.codes,
                           commitment_loss=commitment, perplexity=q.perplexity,
                           num_active=q.num_active)

    def encode(self, audio: jax.Array, num_quantizers: int | None = None
               ) -> tuple[jax.Array, jax.Array | None]:
        """Codes of one window (EnCodec's `_encode_frame`).

        Args:
          audio: [batch, samples, audio_channels].
          num_quantizers: codebooks to use; all when None.

        Returns:
          (codes [batch, ceil(samples / hop), n_q] int32, scale [batch] or None
          when the config does not normalize).
        """
        latents, scale = self.encode_latents(audio)
        return self.quantizer.encode(latents, num_quantizers), scale

    def decode(self, codes: jax.Array, scale: jax.Array | None = None) -> jax.Array:
        """Audio of one window's codes (EnCodec's `_decode_frame`).

        Args:
          codes: [batch, frames, n_q] with n_q <= num_quantizers.
          scale: [batch], from `encode` when the config normalizes.

        Returns:
          [batch, frames * hop_length, audio_channels] float32.
        """
        return self.decode_latents(self.quantizer.decode(codes), scale)

    def encode_latents(self, audio: jax.Array) -> tuple[jax.Array, jax.Array | None]:
        """Encoder half of `encode`: (latents [batch, frames, hidden], scale [batch] or None)."""
        scale = rms_scale(audio) if self.config.normalize else None
        latents = self.encoder(audio / scale if scale is not None else audio)
        return latents, (scale[:, 0, 0] if scale is not None else None)

    def decode_latents(self, latents: jax.Array, scale: jax.Array | None = None) -> jax.Array:
        """Decoder half of `decode`: latents (and scale) -> [batch, frames * hop, channels]."""
        audio = self.decoder(latents)
        return audio * scale[:, None, None] if scale is not None else audio

    def quantize(self, latents: jax.Array, num_quantizers: int | None = None) -> jax.Array:
        """Codes of encoder latents: [batch, frames, hidden] -> [batch, frames, n_q]."""
        return self.quantizer.encode(latents, num_quantizers)

    def dequantize(self, codes: jax.Array) -> jax.Array:
        """Latents of codes: [batch, frames, n_q] -> [batch, frames, hidden]."""
        return self.quantizer.decode(codes)


# ----------------------------------------------------------------------------- windowed codec


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
def _encode_latents(model: Codec, variables: Any, audio: jax.Array):
    return model.apply(variables, audio, method=Codec.encode_latents)


@functools.partial(jax.jit, static_argnames=("model", "num_quantizers"))
def _quantize(model: Codec, variables: Any, latents: jax.Array, num_quantizers: int):
    return model.apply(variables, latents, num_quantizers, method=Codec.quantize)


@functools.partial(jax.jit, static_argnames=("model",))
def _dequantize(model: Codec, variables: Any, codes: jax.Array):
    return model.apply(variables, codes, method=Codec.dequantize)


@functools.partial(jax.jit, static_argnames=("model",))
def _decode_latents(model: Codec, variables: Any, latents: jax.Array, scale: jax.Array | None):
    return model.apply(variables, latents, scale, method=Codec.decode_latents)


def _encode_window(model: Codec, variables: Any, audio: jax.Array, num_quantizers: int):
    latents, scale = _encode_latents(model, variables, audio)
    return _quantize(model, variables, latents, num_quantizers), scale


def _decode_window(model: Codec, variables: Any, codes: jax.Array, scale: jax.Array | None):
    return _decode_latents(model, variables, _dequantize(model, variables, codes), scale)


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
