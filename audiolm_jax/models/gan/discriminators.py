"""GAN discriminators for the codec and the vocoder.

* `MultiScaleSTFTDiscriminator` (EnCodec, Défossez et al. 2022): one 2-D
  convolutional sub-discriminator per STFT resolution, reading the complex
  spectrogram as `2 * channels` real planes.
* `MultiPeriodDiscriminator` (HiFi-GAN, Kong et al. 2020): one 2-D
  convolutional sub-discriminator per period `p`, reading the waveform folded
  into `[T / p, p]` so each column holds every p-th sample.
* `MultiResolutionDiscriminator` (DAC, Kumar et al. 2023, as trained by the
  `vocos` package): one sub-discriminator per STFT window, reading the
  centred complex spectrogram of the DC-free, peak-normalized waveform split
  into five frequency bands, each band with its own conv stack.
* `CombinedDiscriminator` runs several and concatenates their outputs.

Every multi-discriminator returns `(logits, features)`: `logits` is a list with
one array per sub-discriminator and `features` a list (per sub-discriminator)
of lists (per layer) of activations, the layout `audiolm_jax.losses.adversarial` expects.

Layout is channels last throughout: audio `[batch, samples, channels]`,
activations `[batch, height, width, features]` (height is time: STFT frames or
waveform rows). All convolutions are weight-normalized (`w = g * v / ||v||`,
one gain per output channel, params `weight_v` and `weight_g`, as
`torch.nn.utils.weight_norm(dim=0)`), so their weights can be compared with or
imported from PyTorch one-to-one (layouts in `_WeightNormConv2d`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from audiolm_jax.audio import spectral
from audiolm_jax.layers.conv import conv2d

# (logits per sub-discriminator, feature maps per sub-discriminator per layer).
DiscriminatorOutput = tuple[list[jax.Array], list[list[jax.Array]]]


def _as_channels_last(audio: jax.Array) -> jax.Array:
    """[batch, samples] (mono) or [batch, samples, channels] -> [batch, samples, channels]."""
    if audio.ndim == 2:
        return audio[..., None]
    if audio.ndim != 3:
        raise ValueError(f"expected audio [batch, samples, channels], got shape {audio.shape}")
    return audio


class _WeightNormConv2d(nn.Module):
    """2-D convolution with weight normalization, channels last.

    The effective kernel is `weight_g * weight_v / ||weight_v||`, the norm taken
    per output channel over (height, width, in): PyTorch's `weight_norm(dim=0)`
    on a `Conv2d`. At initialization `weight_g = ||weight_v||`, so the layer
    starts as a plain convolution with `weight_v`'s kernel, as in PyTorch.
    Params follow `layers/conv.py`'s conventions (that module is 1-D only):

    | param    | shape here          | PyTorch shape       | here = torch.permute |
    |----------|---------------------|---------------------|----------------------|
    | weight_v | [kh, kw, in, out]   | [out, in, kh, kw]   | (2, 3, 1, 0)         |
    | weight_g | [1, 1, 1, out]      | [out, 1, 1, 1]      | (2, 3, 1, 0)         |
    | bias     | [out]               | [out]               | -                    |

    Attributes:
      features: output channels.
      kernel_size: (height, width).
      strides: (height, width).
      dilation: (height, width) kernel dilation.
      padding: (height, width) zeros added on both sides of each axis; None
        gives `(k - 1) * d // 2`, "same" for odd kernels at stride 1.
      out_axis: logical name of the output-channel axis. The final logit
        layer (one channel) passes None so no rule table tries to shard a
        dimension of size 1.
      dtype: compute dtype; params and the normalization stay float32.
    """

    features: int
    kernel_size: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    padding: tuple[int, int] | None = None
    out_axis: str | None = "conv_out"
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """[batch, height, width, in] -> [batch, height', width', features]."""
        kh, kw = self.kernel_size
        fan_in = kh * kw * x.shape[-1]
        # PyTorch's Conv2d default (kaiming_uniform with a = sqrt(5)) is
        # U(-1/sqrt(fan_in), 1/sqrt(fan_in)): variance_scaling(1/3, fan_in, uniform).
        v_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform",
                                                  in_axis=(0, 1, 2), out_axis=3)
        v = self.param("weight_v", nn.with_logical_partitioning(
            v_init, (None, None, "conv_in", self.out_axis)),
            (kh, kw, x.shape[-1], self.features), jnp.float32)

        def v_norm(w: jax.Array) -> jax.Array:
            return jnp.sqrt(jnp.sum(jnp.square(w), axis=(0, 1, 2), keepdims=True))

        # The gain starts at ||v|| (as PyTorch's weight_norm), so the first
        # forward pass is that of the unnormalized kernel.
        g = self.param("weight_g", nn.with_logical_partitioning(
            lambda _key, _shape, _dtype=jnp.float32: v_norm(v), (None, None, None, self.out_axis)),
            (1, 1, 1, self.features), jnp.float32)
        bound = 1.0 / math.sqrt(fan_in)     # PyTorch's default bias init
        bias = self.param("bias", nn.with_logical_partitioning(
            lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound,
                                                                     bound), (self.out_axis,)),
            (self.features,), jnp.float32)
        kernel = v * (g / v_norm(v))
        padding = self.padding
        if padding is None:
            padding = tuple((k - 1) * d // 2 for k, d in zip(self.kernel_size, self.dilation))
        # `conv2d` is `lax.conv_general_dilated` in forms with fast XLA:CPU
        # gradients (its notes: the textbook input gradients of the frequency-
        # strided convs alone took about half of an MS-STFT discriminator step).
        y = conv2d(x.astype(self.dtype), kernel.astype(self.dtype), self.strides,
                   ((padding[0], padding[0]), (padding[1], padding[1])), self.dilation)
        return y + bias.astype(self.dtype)


# --------------------------------------------------------------------------- STFT


def stft_planes(audio: jax.Array, n_fft: int, hop_length: int, win_length: int | None = None,
                normalized: bool = True) -> jax.Array:
    """The STFT discriminator's input: real and imaginary parts as channels.

    Uncentred frames (`center=False`: frame `t` covers samples
    `[t * hop, t * hop + n_fft)`), periodic Hann window, and with `normalized`
    the spectrum divided by `sqrt(sum(window ** 2))` — torchaudio's
    `Spectrogram(center=False, normalized=True, power=None)`, which EnCodec uses.

    Args:
      audio: [batch, samples, channels] (or [batch, samples] for mono).
      n_fft, hop_length, win_length: STFT sizes; `win_length` defaults to `n_fft`.
      normalized: divide by the window's L2 norm, so the planes' scale does not
        depend on the resolution.

    Returns:
      [batch, frames, n_fft // 2 + 1, 2 * channels] float32 with
      `frames = 1 + (samples - n_fft) // hop_length`; channels ordered
      `[real_0 .. real_{C-1}, imag_0 .. imag_{C-1}]` as EnCodec concatenates them.
    """
    audio = _as_channels_last(audio).astype(jnp.float32)
    spec = spectral.stft(jnp.moveaxis(audio, -1, 1), n_fft, hop_length, win_length,
                         center=False)                        # [b, c, frames, bins] complex
    if normalized:
        window = spectral.hann_window(n_fft, win_length)
        spec = spec / np.float32(np.sqrt(np.sum(np.square(window, dtype=np.float64))))
    planes = jnp.concatenate([spec.real, spec.imag], axis=1)  # [b, 2c, frames, bins]
    return jnp.moveaxis(planes, 1, -1)


class STFTDiscriminator(nn.Module):
    """One resolution of the multi-scale STFT discriminator.

    Layers (EnCodec's `DiscriminatorSTFT`): a (3, 9) conv, one (3, 9) conv per
    dilation with time dilation `d` and frequency stride 2, a (3, 3) conv, each
    followed by LeakyReLU and recorded as a feature map, then a (3, 3) conv to
    `out_channels` logits. Kernels are (time, frequency).

    Attributes:
      n_fft, hop_length, win_length: the STFT resolution (hop defaults to
        `n_fft // 4`, window to `n_fft`).
      filters: base width. Channels are `min(filters * filters_scale ** i,
        max_filters)` with i = 1 for the first conv, i for the i-th dilated
        conv (from 1) and `len(dilations) + 1` for the (3, 3) conv.
      filters_scale: channel growth per layer (EnCodec uses 1: all layers
        `filters` wide).
      max_filters: channel cap.
      kernel_size: (time, frequency) kernel of the inner convs.
      dilations: time dilations of the strided convs.
      stride: (time, frequency) stride of the dilated convs.
      normalized: window-normalized STFT (see `stft_planes`).
      negative_slope: LeakyReLU slope.
      out_channels: logit channels.
      dtype: compute dtype.
    """

    n_fft: int = 1024
    hop_length: int | None = None
    win_length: int | None = None
    filters: int = 32
    filters_scale: int = 1
    max_filters: int = 1024
    kernel_size: tuple[int, int] = (3, 9)
    dilations: Sequence[int] = (1, 2, 4)
    stride: tuple[int, int] = (1, 2)
    normalized: bool = True
    negative_slope: float = 0.2
    out_channels: int = 1
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, audio: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
        """Scores one clip at this resolution.

        Args:
          audio: [batch, samples, channels], `samples >= n_fft`.

        Returns:
          logits: [batch, frames, bins', out_channels] float32, `frames` the STFT
            frame count and `bins' = ceil` of `n_fft // 2 + 1` halved once per dilation.
          features: `len(dilations) + 2` maps [batch, frames, bins_i, filters_i]
            in the compute dtype.
        """
        hop = self.hop_length or self.n_fft // 4
        x = stft_planes(audio, self.n_fft, hop, self.win_length, self.normalized)
        x = nn.with_logical_constraint(x.astype(self.dtype), ("batch", "length", None, None))

        def width(i: int) -> int:
            return min(self.filters * self.filters_scale ** i, self.max_filters)

        k_t, k_f = self.kernel_size
        layers = [_WeightNormConv2d(width(1), self.kernel_size, dtype=self.dtype, name="conv_0")]
        for i, d in enumerate(self.dilations):
            layers.append(_WeightNormConv2d(width(i + 1), self.kernel_size, strides=self.stride,
                                            dilation=(d, 1), dtype=self.dtype, name=f"conv_{i + 1}"))
        layers.append(_WeightNormConv2d(width(len(self.dilations) + 1), (k_t, k_t),
                                        dtype=self.dtype, name=f"conv_{len(self.dilations) + 1}"))
        features = []
        for layer in layers:
            x = nn.leaky_relu(layer(x), self.negative_slope)
            features.append(x)
        logits = _WeightNormConv2d(self.out_channels, (k_t, k_t), dtype=self.dtype,
                                   out_axis=None, name="conv_post")(x)
        return logits.astype(jnp.float32), features


class MultiScaleSTFTDiscriminator(nn.Module):
    """EnCodec's multi-scale STFT discriminator (MS-STFTD).

    Attributes:
      n_ffts: one sub-discriminator per FFT size.
      hop_lengths: per resolution; None gives `n_fft // 4` each.
      win_lengths: per resolution; None gives `n_fft` each.
      filters, filters_scale, max_filters, kernel_size, dilations, stride,
        normalized, negative_slope, out_channels: see `STFTDiscriminator`.
      dtype: compute dtype.
    """

    n_ffts: Sequence[int] = (1024, 2048, 512, 256, 128)
    hop_lengths: Sequence[int] | None = None
    win_lengths: Sequence[int] | None = None
    filters: int = 32
    filters_scale: int = 1
    max_filters: int = 1024
    kernel_size: tuple[int, int] = (3, 9)
    dilations: Sequence[int] = (1, 2, 4)
    stride: tuple[int, int] = (1, 2)
    normalized: bool = True
    negative_slope: float = 0.2
    out_channels: int = 1
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, audio: jax.Array) -> DiscriminatorOutput:
        """[batch, samples, channels] -> (logits per resolution, feature maps per resolution)."""
        hops = self.hop_lengths or [n // 4 for n in self.n_ffts]
        wins = self.win_lengths or list(self.n_ffts)
        if not len(self.n_ffts) == len(hops) == len(wins):
            raise ValueError(f"n_ffts {self.n_ffts}, hop_lengths {hops} and win_lengths {wins} "
                             "must have the same length")
        logits, features = [], []
        for i, (n_fft, hop, win) in enumerate(zip(self.n_ffts, hops, wins)):
            out, feats = STFTDiscriminator(
                n_fft=n_fft, hop_length=hop, win_length=win, filters=self.filters,
                filters_scale=self.filters_scale, max_filters=self.max_filters,
                kernel_size=tuple(self.kernel_size), dilations=tuple(self.dilations),
                stride=tuple(self.stride), normalized=self.normalized,
                negative_slope=self.negative_slope, out_channels=self.out_channels,
                dtype=self.dtype, name=f"stft_{i}")(audio)
            logits.append(out)
            features.append(feats)
        return logits, features


# ------------------------------------------------------------------------ period


class PeriodDiscriminator(nn.Module):
    """One period of HiFi-GAN's multi-period discriminator.

    The waveform is right-padded by reflection to a multiple of `period` and
    folded to [batch, samples / period, period, channels]; (k, 1) kernels then
    only mix samples `period` apart, in each column independently.

    Attributes:
      period: folding period.
      channels: output channels of the strided convs; all but the last use
        stride (stride, 1), the last stride 1 (HiFi-GAN: 32, 128, 512, 1024, 1024).
      kernel_size: time kernel of those convs.
      stride: time stride.
      post_kernel_size: time kernel of the logit conv.
      negative_slope: LeakyReLU slope.
      out_channels: logit channels.
      dtype: compute dtype.
    """

    period: int
    channels: Sequence[int] = (32, 128, 512, 1024, 1024)
    kernel_size: int = 5
    stride: int = 3
    post_kernel_size: int = 3
    negative_slope: float = 0.1
    out_channels: int = 1
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, audio: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
        """Scores one clip at this period.

        Args:
          audio: [batch, samples, channels], `samples > period` (reflection padding).

        Returns:
          logits: [batch, rows, period, out_channels] float32, `rows` the folded
            length `ceil(samples / period)` divided by `stride` (rounding up) once
            per strided conv.
          features: `len(channels) + 1` maps (the logits included, as HiFi-GAN),
            [batch, rows_i, period, channels_i] in the compute dtype. vocos's
            `DiscriminatorP` leaves out the first conv's map: its are ours[1:].
        """
        audio = _as_channels_last(audio)
        batch, samples, chans = audio.shape
        pad = (-samples) % self.period
        if pad:
            audio = jnp.pad(audio, ((0, 0), (0, pad), (0, 0)), mode="reflect")
        # Sample n lands at (n // period, n % period): each column is one phase.
        x = audio.reshape(batch, (samples + pad) // self.period, self.period, chans)
        x = nn.with_logical_constraint(x.astype(self.dtype), ("batch", "length", None, None))
        features = []
        for i, ch in enumerate(self.channels):
            stride = 1 if i == len(self.channels) - 1 else self.stride
            x = _WeightNormConv2d(ch, (self.kernel_size, 1), strides=(stride, 1),
                                  padding=((self.kernel_size - 1) // 2, 0), dtype=self.dtype,
                                  name=f"conv_{i}")(x)
            x = nn.leaky_relu(x, self.negative_slope)
            features.append(x)
        x = _WeightNormConv2d(self.out_channels, (self.post_kernel_size, 1),
                              padding=((self.post_kernel_size - 1) // 2, 0), dtype=self.dtype,
                              out_axis=None, name="conv_post")(x)
        features.append(x)
        return x.astype(jnp.float32), features


class MultiPeriodDiscriminator(nn.Module):
    """HiFi-GAN's multi-period discriminator (MPD).

    Attributes:
      periods: one sub-discriminator per period (primes, so their folds
        overlap as little as possible).
      channels, kernel_size, stride, post_kernel_size, negative_slope,
        out_channels: see `PeriodDiscriminator`.
      dtype: compute dtype.
    """

    periods: Sequence[int] = (2, 3, 5, 7, 11)
    channels: Sequence[int] = (32, 128, 512, 1024, 1024)
    kernel_size: int = 5
    stride: int = 3
    post_kernel_size: int = 3
    negative_slope: float = 0.1
    out_channels: int = 1
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, audio: jax.Array) -> DiscriminatorOutput:
        """[batch, samples, channels] -> (logits per period, feature maps per period)."""
        logits, features = [], []
        for p in self.periods:
            out, feats = PeriodDiscriminator(
                period=p, channels=tuple(self.channels), kernel_size=self.kernel_size,
                stride=self.stride, post_kernel_size=self.post_kernel_size,
                negative_slope=self.negative_slope, out_channels=self.out_channels,
                dtype=self.dtype, name=f"period_{p}")(audio)
            logits.append(out)
            features.append(feats)
        return logits, features


# -------------------------------------------------------------------- resolution

# Frequency bands of `ResolutionDiscriminator`, as fractions of the bins (DAC's).
RESOLUTION_BANDS = ((0.0, 0.1), (0.1, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0))


def band_edges(n_bins: int, bands: Sequence[tuple[float, float]] = RESOLUTION_BANDS
               ) -> list[tuple[int, int]]:
    """Bin ranges `[lo, hi)` of the bands: `int(fraction * n_bins)` rounded down, as DAC."""
    return [(int(lo * n_bins), int(hi * n_bins)) for lo, hi in bands]


def resolution_planes(audio: jax.Array, window_length: int, hop_length: int | None = None
                      ) -> jax.Array:
    """The resolution discriminator's input: a centred complex STFT as channels.

    The waveform loses its mean and is scaled to a peak of 0.8 (per clip and
    channel, over time), then torchaudio's `Spectrogram(n_fft=window_length,
    power=None)` defaults: periodic Hann window of `window_length`, centred
    frames (reflect padding of `window_length // 2`), no normalization.

    Args:
      audio: [batch, samples, channels] (or [batch, samples]), `samples >
        window_length // 2` (reflection padding).
      window_length: FFT size and window.
      hop_length: defaults to `window_length // 4`.

    Returns:
      [batch, 1 + samples // hop, window_length // 2 + 1, 2 * channels] float32,
      channels `[real_0 .. real_{C-1}, imag_0 .. imag_{C-1}]` (mono: `[real,
      imag]`, torch's `view_as_real` order).
    """
    hop = hop_length or window_length // 4
    audio = _as_channels_last(audio).astype(jnp.float32)
    audio = audio - jnp.mean(audio, axis=1, keepdims=True)
    # The peak through argmax + gather, not `jnp.max`: max's gradient is a mask of the
    # elements equal to the max divided by their count, and when XLA recomputes the
    # operand inside a fusion (seen at --xla_backend_optimization_level=0) no element
    # compares equal and the gradient is 0 / 0. The gather sends it to one sample, as
    # torch's `max(dim)` backward does.
    magnitude = jnp.abs(audio)
    index = jnp.argmax(magnitude, axis=1, keepdims=True)
    peak = jnp.take_along_axis(magnitude, index, axis=1)
    audio = 0.8 * audio / (peak + 1e-9)
    spec = spectral.stft(jnp.moveaxis(audio, -1, 1), window_length, hop, center=True,
                         pad_mode="reflect")                     # [b, c, frames, bins]
    planes = jnp.concatenate([spec.real, spec.imag], axis=1)     # [b, 2c, frames, bins]
    return jnp.moveaxis(planes, 1, -1)


class ResolutionDiscriminator(nn.Module):
    """One STFT resolution of the multi-resolution discriminator (vocos's
    `DiscriminatorR`, DAC's band-split STFT discriminator).

    The spectrogram (`resolution_planes`) is cut into frequency bands; each band
    runs its own stack of a (3, 9) conv, three (3, 9) convs with frequency
    stride 2 and a (3, 3) conv, each followed by LeakyReLU; the band outputs,
    concatenated again along frequency, go through a (3, 3) conv to one logit
    channel. Kernels are (time, frequency), padding "same".

    Params: `band_{b}_conv_{j}` (b over the bands, j = 0..4) and `conv_post`,
    vocos's `band_convs.{b}.{j}` and `conv_post`.

    Attributes:
      window_length: FFT size and window of the spectrogram.
      hop_length: defaults to `window_length // 4`.
      channels: width of every band conv.
      bands: (low, high) fractions of the `window_length // 2 + 1` bins.
      negative_slope: LeakyReLU slope.
      dtype: compute dtype.
    """

    window_length: int
    hop_length: int | None = None
    channels: int = 32
    bands: Sequence[tuple[float, float]] = RESOLUTION_BANDS
    negative_slope: float = 0.1
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, audio: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
        """Scores one clip at this resolution.

        Args:
          audio: [batch, samples, channels], `samples > window_length // 2`.

        Returns:
          logits: [batch, frames, bins', 1] float32, `frames = 1 + samples // hop`
            and `bins'` the sum over bands of each band's width halved (rounding
            up) three times.
          features: as vocos, every band conv's activation but the first (band
            by band, [batch, frames, bins_j, channels]), then the logits before
            the float32 cast: `4 * len(bands) + 1` maps.
        """
        x = resolution_planes(audio, self.window_length, self.hop_length)
        x = nn.with_logical_constraint(x.astype(self.dtype), ("batch", "length", None, None))
        outputs, features = [], []
        for b, (lo, hi) in enumerate(band_edges(x.shape[2], self.bands)):
            if hi <= lo:
                raise ValueError(f"band {self.bands[b]} of {x.shape[2]} bins is empty")
            h = x[:, :, lo:hi]
            specs = [((3, 9), (1, 1))] + [((3, 9), (1, 2))] * 3 + [((3, 3), (1, 1))]
            for j, (kernel, stride) in enumerate(specs):
                h = _WeightNormConv2d(self.channels, kernel, strides=stride, dtype=self.dtype,
                                      name=f"band_{b}_conv_{j}")(h)
                h = nn.leaky_relu(h, self.negative_slope)
                if j > 0:
                    features.append(h)
            outputs.append(h)
        x = jnp.concatenate(outputs, axis=2)
        logits = _WeightNormConv2d(1, (3, 3), dtype=self.dtype, out_axis=None,
                                   name="conv_post")(x)
        features.append(logits)
        return logits.astype(jnp.float32), features


class MultiResolutionDiscriminator(nn.Module):
    """The multi-resolution discriminator vocos trains with (DAC's MRD).

    Attributes:
      window_lengths: one `ResolutionDiscriminator` per STFT window (vocos's
        `fft_sizes`).
      hop_lengths: per resolution; None gives `window_length // 4` each.
      channels, bands, negative_slope: see `ResolutionDiscriminator`.
      dtype: compute dtype.
    """

    window_lengths: Sequence[int] = (2048, 1024, 512)
    hop_lengths: Sequence[int] | None = None
    channels: int = 32
    bands: Sequence[tuple[float, float]] = RESOLUTION_BANDS
    negative_slope: float = 0.1
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, audio: jax.Array) -> DiscriminatorOutput:
        """[batch, samples, channels] -> (logits per resolution, feature maps per resolution)."""
        hops = self.hop_lengths or [w // 4 for w in self.window_lengths]
        if len(hops) != len(self.window_lengths):
            raise ValueError(f"window_lengths {self.window_lengths} and hop_lengths {hops} "
                             "must have the same length")
        logits, features = [], []
        for i, (window, hop) in enumerate(zip(self.window_lengths, hops)):
            out, feats = ResolutionDiscriminator(
                window_length=window, hop_length=hop, channels=self.channels,
                bands=tuple(tuple(b) for b in self.bands), negative_slope=self.negative_slope,
                dtype=self.dtype, name=f"resolution_{i}")(audio)
            logits.append(out)
            features.append(feats)
        return logits, features


class CombinedDiscriminator(nn.Module):
    """Runs several multi-discriminators on the same audio and concatenates
    their outputs, so losses see one flat list of sub-discriminators.

    Example:
      disc = CombinedDiscriminator((MultiScaleSTFTDiscriminator(),
                                    MultiPeriodDiscriminator()))

    Attributes:
      discriminators: modules returning `(logits list, features list)`.
    """

    discriminators: Sequence[nn.Module]

    def __call__(self, audio: jax.Array) -> DiscriminatorOutput:
        """[batch, samples, channels] -> (all logits, all feature-map lists)."""
        logits, features = [], []
        for disc in self.discriminators:
            out, feats = disc(audio)
            logits.extend(out)
            features.extend(feats)
        return logits, features
