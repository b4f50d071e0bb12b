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

Streaming (causal models without time group norm) lives in `streaming.py`:
`init_streaming_state`, then `encode_chunk` / `decode_chunk` per chunk (jitted,
the state is a pytree: the Flax `cache` collection); `stream_encode` /
`stream_decode` do the loop.
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

from audiolm_jax.checks import check_choice
from audiolm_jax.layers.conv import INITS, LSTM, NORM_TYPES, PAD_MODES, Conv1d, ConvTranspose1d

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
        check_choice("SEANetConfig.norm_type", self.norm_type, NORM_TYPES)
        check_choice("SEANetConfig.pad_mode", self.pad_mode, PAD_MODES)
        check_choice("SEANetConfig.param_init", self.param_init, INITS)
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


class _SEANetHalf(nn.Module):
    """What the encoder and decoder share: a plan of layers run channels-last.

    Attributes:
      config: architecture.
      dtype: compute dtype (params stay float32; the output is float32).
      precision: `jax.lax` precision of convolutions and matmuls.
    """

    config: SEANetConfig = SEANetConfig()
    dtype: Any = jnp.float32
    precision: Any = None

    def _run(self, plan: list[LayerSpec], x: jax.Array, width: int, what: str,
             streaming: bool, out_axes: tuple) -> jax.Array:
        _check_input(x, width, what)
        x = _run_plan(plan, x.astype(self.dtype), self.config, self.dtype, self.precision,
                      streaming)
        return nn.with_logical_constraint(x.astype(jnp.float32), out_axes)


class SEANetEncoder(_SEANetHalf):
    """Waveform -> latent frames, HF's `EncodecEncoder` channels-last (see `_SEANetHalf`)."""

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
        return self._run(encoder_plan(self.config), audio, self.config.audio_channels,
                         "SEANetEncoder input", streaming, ("batch", "length", "embed"))


class SEANetDecoder(_SEANetHalf):
    """Latent frames -> waveform, HF's `EncodecDecoder` channels-last (see `_SEANetHalf`)."""

    @nn.compact
    def __call__(self, latents: jax.Array, streaming: bool = False) -> jax.Array:
        """[batch, frames, hidden_size] latents -> [batch, frames * hop_length, audio_channels]
        float32; `streaming` continues the stream in the `cache` collection (`decode_chunk`)."""
        return self._run(decoder_plan(self.config), latents, self.config.hidden_size,
                         "SEANetDecoder input", streaming, ("batch", "length", None))
