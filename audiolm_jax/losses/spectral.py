"""Spectral and waveform reconstruction losses.

Each compares an estimate with its target, both `[batch, samples, channels]`
(or `[batch, samples]` for mono): `time_l1`, `multi_resolution_mel_loss`
(EnCodec's multi-scale mel loss) and `multi_resolution_stft_loss` (spectral
convergence + log magnitude, as Parallel WaveGAN). Pure functions computed in
float32, returning a float32 scalar.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from audiolm_jax.audio import spectral

# --------------------------------------------------------------- reconstruction


def _channels_first(audio: jax.Array) -> jax.Array:
    """[batch, samples] or [batch, samples, channels] -> [batch, channels, samples] float32."""
    audio = jnp.asarray(audio, jnp.float32)
    if audio.ndim == 2:
        return audio[:, None, :]
    if audio.ndim != 3:
        raise ValueError(f"expected audio [batch, samples, channels], got shape {audio.shape}")
    return jnp.moveaxis(audio, -1, 1)


def time_l1(estimate: jax.Array, target: jax.Array) -> jax.Array:
    """Mean absolute error on the waveform.

    Args:
      estimate, target: [batch, samples, channels] (any equal shapes).

    Returns:
      float32 scalar.
    """
    return jnp.mean(jnp.abs(jnp.asarray(estimate, jnp.float32) - jnp.asarray(target, jnp.float32)))


def _power_spectrum(audio: jax.Array, n_fft: int, hop_length: int, normalized: bool) -> jax.Array:
    """EnCodec's mel-loss framing: [..., samples] -> [..., ceil(samples / hop), n_fft//2+1].

    The signal is reflect-padded by `(n_fft - hop) // 2` on each side and
    zero-padded on the right until the last frame is full, then framed without
    centring, so the frame count is `ceil(samples / hop)` for every window size.
    """
    pad = (n_fft - hop_length) // 2
    widths = [(0, 0)] * (audio.ndim - 1)
    audio = jnp.pad(audio, widths + [(pad, pad)], mode="reflect")
    length = audio.shape[-1]
    frames = max(1, math.ceil((length - n_fft) / hop_length) + 1)
    extra = (frames - 1) * hop_length + n_fft - length
    if extra > 0:
        audio = jnp.pad(audio, widths + [(0, extra)])
    spec = spectral.stft(audio, n_fft, hop_length, center=False)
    # |X|^2 as re^2 + im^2: differentiable at 0, unlike jnp.abs of a complex zero.
    power = jnp.square(spec.real) + jnp.square(spec.imag)
    if normalized:
        power = power / np.float32(np.sum(np.square(spectral.hann_window(n_fft), dtype=np.float64)))
    return power


def _htk_mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float,
                        fmax: float | None) -> np.ndarray:
    """[n_fft//2+1, n_mels] HTK-scale, unnormalized triangles: torchaudio's MelScale defaults."""
    with warnings.catch_warnings():
        # With 64 mels the smallest windows (32, 64 samples) have fewer FFT bins
        # than filters, so some filters are empty; that is expected, and the
        # empty bands are equal (zero) for estimate and target alike.
        warnings.simplefilter("ignore", UserWarning)
        return spectral.mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax, True, None)


def multi_resolution_mel_loss(estimate: jax.Array, target: jax.Array, sample_rate: int,
                              range_start: int = 5, range_end: int = 11, n_mels: int = 64,
                              fmin: float = 0.0, fmax: float | None = None,
                              normalized: bool = True, alphas: bool = False,
                              floor: float = 1e-5) -> jax.Array:
    """EnCodec's multi-scale mel-spectrogram loss.

    For each window size `n = 2^i`, `i` in `[range_start, range_end]` (both
    included), hop `n / 4`:
    `mean|M_n(x) - M_n(y)| + alpha_i * mean((log10(floor + M_n(x)) - log10(floor + M_n(y)))^2)`
    with `M_n` the mel power spectrogram (HTK mel scale, unnormalized filters,
    periodic Hann window) and `alpha_i = sqrt(n - 1)` if `alphas` else 1.
    With `normalized`, the STFT is divided by the window's L2 norm and the sum
    over scales by `sum_i (alpha_i + 1)`.

    Args:
      estimate, target: [batch, samples, channels] or [batch, samples];
        `samples > (2^range_end - 2^range_end / 4) / 2` (reflection padding).
      sample_rate: Hz, for the mel scale.
      range_start, range_end: log2 of the smallest and largest window.
      n_mels: mel bands per scale.
      fmin, fmax: mel band edges in Hz (fmax None: Nyquist).
      normalized: see above.
      alphas: weigh the log term by `sqrt(n - 1)`.
      floor: added before the log.

    Returns:
      float32 scalar.
    """
    x, y = _channels_first(estimate), _channels_first(target)
    loss, total = jnp.zeros((), jnp.float32), 0.0
    for i in range(range_start, range_end + 1):
        n_fft = 2 ** i
        fb = _htk_mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax)
        mel_x = _power_spectrum(x, n_fft, n_fft // 4, normalized) @ fb   # [b, c, frames, mels]
        mel_y = _power_spectrum(y, n_fft, n_fft // 4, normalized) @ fb
        alpha = math.sqrt(n_fft - 1) if alphas else 1.0
        l1 = jnp.mean(jnp.abs(mel_x - mel_y))
        l2 = jnp.mean(jnp.square(jnp.log10(floor + mel_x) - jnp.log10(floor + mel_y)))
        loss = loss + l1 + alpha * l2
        total += alpha + 1.0
    return loss / total if normalized else loss


def multi_resolution_stft_loss(estimate: jax.Array, target: jax.Array,
                               n_ffts: Sequence[int] = (1024, 2048, 512),
                               hop_lengths: Sequence[int] = (120, 240, 50),
                               win_lengths: Sequence[int] = (600, 1200, 240),
                               factor_sc: float = 1.0, factor_mag: float = 1.0,
                               eps: float = 1e-7) -> jax.Array:
    """Multi-resolution STFT loss (Parallel WaveGAN), averaged over resolutions.

    Per resolution, with `|X|` the STFT magnitude (centred frames, reflection
    padding, periodic Hann window of `win_length` centred in `n_fft`):
    spectral convergence `||Y| - |X||_F / ||Y||_F` (over the whole batch) and
    log magnitude `mean|log|Y| - log|X||`, magnitudes floored at `sqrt(eps)`.

    Args:
      estimate, target: [batch, samples, channels] or [batch, samples];
        `samples > max(n_ffts) // 2`.
      n_ffts, hop_lengths, win_lengths: one entry per resolution.
      factor_sc, factor_mag: weights of the two terms.
      eps: floor on the squared magnitude (keeps log and sqrt finite).

    Returns:
      float32 scalar `factor_sc * sc + factor_mag * mag`, each averaged over resolutions.
    """
    if not len(n_ffts) == len(hop_lengths) == len(win_lengths):
        raise ValueError("n_ffts, hop_lengths and win_lengths must have the same length")
    x, y = _channels_first(estimate), _channels_first(target)

    def magnitude(audio: jax.Array, n_fft: int, hop: int, win: int) -> jax.Array:
        spec = spectral.stft(audio, n_fft, hop, win, center=True, pad_mode="reflect")
        return jnp.sqrt(jnp.maximum(jnp.square(spec.real) + jnp.square(spec.imag), eps))

    sc = mag = jnp.zeros((), jnp.float32)
    for n_fft, hop, win in zip(n_ffts, hop_lengths, win_lengths):
        mag_x, mag_y = magnitude(x, n_fft, hop, win), magnitude(y, n_fft, hop, win)
        sc = sc + jnp.linalg.norm((mag_y - mag_x).ravel()) / jnp.linalg.norm(mag_y.ravel())
        mag = mag + jnp.mean(jnp.abs(jnp.log(mag_y) - jnp.log(mag_x)))
    n = len(n_ffts)
    return factor_sc * sc / n + factor_mag * mag / n
