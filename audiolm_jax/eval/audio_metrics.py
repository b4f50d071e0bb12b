"""Reconstruction metrics for codecs and vocoders: SI-SNR, log-mel distance, bitrate tables.

Both metrics are pure JAX, jit-able (`sample_rate` and `resolutions` are
static) and take channels-last audio `[batch, samples, channels]`, returning one
value per batch element `[batch]`.

- `si_snr`: scale-invariant signal-to-noise ratio in dB (Le Roux et al., 2019,
  "SDR - half-baked or well done?"). Higher is better; it ignores the gain of the
  estimate, but not its phase, so it punishes codecs that reproduce the
  spectrum with a different waveform (GAN-trained codecs score low on it).
- `mel_distance`: mean absolute difference of natural-log mel spectrograms,
  averaged over three STFT resolutions (`MEL_RESOLUTIONS`). Lower is better; it
  ignores phase, so it tracks what is heard better than SI-SNR does.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from audiolm_jax.audio import spectral

MEL_RESOLUTIONS: tuple[tuple[int, int, int], ...] = ((512, 128, 64), (1024, 256, 80),
                                                     (2048, 512, 128))
"""(n_fft, hop_length, n_mels) of `mel_distance`'s resolutions, in samples.

Multi-resolution, as in the codec losses of EnCodec/DAC: the short window
resolves transients, the long one pitch and harmonics. Periodic Hann windows of
length n_fft, centred frames (librosa's `center=True`, zero padding), power
spectra, Slaney mel filters from 0 Hz to Nyquist, `log(max(mel, 1e-5))`. No
filter is empty at any rate from 8 to 48 kHz.
"""

LOG_FLOOR = 1e-5
"""Floor of the mel power before the log (about -50 dB): silence is not infinitely far away."""


def _check_pair(estimate: jax.Array, reference: jax.Array) -> None:
    if estimate.shape != reference.shape or estimate.ndim != 3:
        raise ValueError("estimate and reference must both be [batch, samples, channels] of the "
                         f"same shape, got {tuple(estimate.shape)} and {tuple(reference.shape)}")


@functools.partial(jax.jit, static_argnames=("eps",))
def si_snr(estimate: jax.Array, reference: jax.Array, eps: float = 1e-8) -> jax.Array:
    """Scale-invariant SNR in dB.

    Each channel is made zero-mean over time; samples and channels are then
    treated as one vector per batch element: with `s = <e, r> r / |r|^2` the
    projection of the estimate on the reference and `n = e - s`,
    `si_snr = 10 log10(|s|^2 / |n|^2)`. `eps` keeps it finite for silent or
    identical signals (identical signals give a large value, about
    `10 log10(|r|^2 / eps)`).

    Args:
      estimate: [batch, samples, channels], e.g. decoded audio.
      reference: [batch, samples, channels], the original.
      eps: added to the energies and the reference's norm.

    Returns:
      [batch] float32 dB.
    """
    _check_pair(estimate, reference)
    estimate = estimate.astype(jnp.float32)
    reference = reference.astype(jnp.float32)
    estimate = estimate - jnp.mean(estimate, axis=1, keepdims=True)
    reference = reference - jnp.mean(reference, axis=1, keepdims=True)
    axes = (1, 2)
    dot = jnp.sum(estimate * reference, axis=axes, keepdims=True)
    energy = jnp.sum(jnp.square(reference), axis=axes, keepdims=True)
    target = dot / (energy + eps) * reference
    noise = estimate - target
    ratio = (jnp.sum(jnp.square(target), axis=axes) + eps) / (jnp.sum(jnp.square(noise), axis=axes)
                                                               + eps)
    return 10.0 * jnp.log10(ratio)


def log_mel(audio: jax.Array, sample_rate: int, n_fft: int = 1024, hop_length: int = 256,
            n_mels: int = 80) -> jax.Array:
    """Log-mel spectrogram of channels-last audio, as `mel_distance` sees it.

    Args:
      audio: [batch, samples, channels].

    Returns:
      [batch, channels, frames, n_mels] float32 (natural log, floor `LOG_FLOOR`).
    """
    return spectral.log_mel_spectrogram(jnp.moveaxis(audio.astype(jnp.float32), -1, 1),
                                        sample_rate, n_fft=n_fft, hop_length=hop_length,
                                        n_mels=n_mels, floor=LOG_FLOOR)


@functools.partial(jax.jit, static_argnames=("sample_rate", "resolutions"))
def mel_distance(estimate: jax.Array, reference: jax.Array, sample_rate: int,
                 resolutions: tuple[tuple[int, int, int], ...] = MEL_RESOLUTIONS) -> jax.Array:
    """Multi-resolution log-mel L1 distance.

    For each (n_fft, hop_length, n_mels) of `resolutions` (default
    `MEL_RESOLUTIONS`: 512/128/64, 1024/256/80 and 2048/512/128), the mean
    over channels, frames and mel bins of `|log_mel(estimate) - log_mel(reference)|`;
    then the mean over resolutions. Identical signals give 0.

    Args:
      estimate: [batch, samples, channels].
      reference: [batch, samples, channels].
      sample_rate: Hz (sets the mel filters' frequencies).
      resolutions: a tuple of (n_fft, hop_length, n_mels) triples.

    Returns:
      [batch] float32 (natural-log units; 1.0 is a factor e in power).
    """
    _check_pair(estimate, reference)
    if not resolutions:
        raise ValueError("mel_distance needs at least one (n_fft, hop_length, n_mels) resolution")
    total = jnp.zeros(estimate.shape[0], jnp.float32)
    for n_fft, hop, n_mels in resolutions:
        diff = jnp.abs(log_mel(estimate, sample_rate, n_fft, hop, n_mels)
                       - log_mel(reference, sample_rate, n_fft, hop, n_mels))
        total = total + jnp.mean(diff, axis=(1, 2, 3))
    return total / len(resolutions)


_TABLE_COLUMNS = (("bandwidth", "bandwidth (kbps)", "{:g}"),
                  ("num_codebooks", "codebooks", "{:d}"),
                  ("mel_distance", "mel distance ↓", "{:.3f}"),
                  ("si_snr", "SI-SNR (dB) ↑", "{:.2f}"))


def bitrate_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A markdown table of reconstruction quality per bitrate.

    Args:
      rows: one mapping per bandwidth with keys `bandwidth` (kbit/s),
        `num_codebooks`, `mel_distance` and `si_snr` (dB); array values (e.g. a
        per-example `[batch]` metric) are averaged.

    Returns:
      The table, one line per row in the given order, ending with a newline.

    Raises:
      ValueError: naming a missing key.
    """
    lines = ["| " + " | ".join(title for _, title, _ in _TABLE_COLUMNS) + " |",
             "|" + "|".join("---:" for _ in _TABLE_COLUMNS) + "|"]
    for i, row in enumerate(rows):
        missing = [key for key, _, _ in _TABLE_COLUMNS if key not in row]
        if missing:
            raise ValueError(f"bitrate_table row {i} lacks {missing}; each row needs "
                             f"{[key for key, _, _ in _TABLE_COLUMNS]}")
        cells = []
        for key, _, fmt in _TABLE_COLUMNS:
            value = float(np.mean(np.asarray(row[key], np.float64)))
            cells.append(fmt.format(int(round(value))) if fmt == "{:d}" else fmt.format(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def spectrogram_panels(reference: np.ndarray, estimate: np.ndarray, sample_rate: int,
                       n_fft: int = 1024, hop_length: int = 256, n_mels: int = 80
                       ) -> list[tuple[str, np.ndarray]]:
    """(label, [frames, n_mels]) panels of two signals' log-mels, reference first.

    For `audiolm_jax.eval.plots.plot_spectrograms`; channels are averaged first.

    Args:
      reference, estimate: [samples, channels] (or [samples]) of equal length.
    """
    def mel(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        x = x.reshape(x.shape[0], -1).mean(axis=1)
        return np.asarray(log_mel(jnp.asarray(x)[None, :, None], sample_rate, n_fft,
                                  hop_length, n_mels))[0, 0]

    return [("input", mel(reference)), ("decoded", mel(estimate))]
