"""Pitch-salient features in JAX: a semitone (constant-Q style) spectrogram and chroma.

The melody embedder needs a front end in which a note is the same feature
whatever instrument plays it. A constant-Q transform gives one bin per
semitone; here it is computed the cheap way that JAX likes: one long-window
STFT, then a fixed [freq_bins, semitones] matrix of triangular weights centred
on each equal-tempered pitch (width one semitone on each side, on a log
frequency axis). Pitches whose semitone spacing is finer than the STFT's
resolution (low notes with a short window) get the interpolated bin instead of
an empty row, so every output bin has weight.

Chroma folds the semitone axis onto the 12 pitch classes.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np

from audiolm_jax.audio.spectral import stft


def midi_to_hz(midi: np.ndarray | float) -> np.ndarray:
    """Equal temperament, A4 = MIDI 69 = 440 Hz."""
    return 440.0 * 2.0 ** ((np.asarray(midi, np.float64) - 69.0) / 12.0)


@functools.lru_cache(maxsize=16)
def semitone_filterbank(sample_rate: int, n_fft: int, midi_low: int, midi_high: int
                        ) -> np.ndarray:
    """[n_fft // 2 + 1, midi_high - midi_low + 1] triangular semitone weights.

    Row f, column p weighs STFT bin f for MIDI pitch `midi_low + p`: 1 at the
    pitch's frequency, falling linearly in log frequency to 0 one semitone away.
    Each column sums to 1, so a pure tone's energy lands at the same scale in any
    octave.
    """
    if not 0 <= midi_low <= midi_high:
        raise ValueError(f"need 0 <= midi_low <= midi_high, got {midi_low}, {midi_high}")
    nyquist_midi = 69.0 + 12.0 * np.log2(sample_rate / 2 / 440.0)
    if midi_high + 1 > nyquist_midi:
        raise ValueError(f"midi_high={midi_high} (+1 semitone) is above the Nyquist frequency "
                         f"of {sample_rate} Hz audio (MIDI {nyquist_midi:.1f})")
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    bin_midi = np.full(freqs.shape, -np.inf)
    bin_midi[1:] = 69.0 + 12.0 * np.log2(freqs[1:] / 440.0)
    pitches = np.arange(midi_low, midi_high + 1, dtype=np.float64)
    weights = np.maximum(0.0, 1.0 - np.abs(bin_midi[:, None] - pitches[None, :]))
    # Below the STFT's resolution a semitone can fall between two bins: use linear
    # interpolation between the neighbouring bins instead.
    bin_hz = sample_rate / n_fft
    for p, hz in enumerate(midi_to_hz(pitches)):
        if weights[:, p].sum() == 0.0:
            position = hz / bin_hz
            low = int(np.floor(position))
            weights[low, p] = 1.0 - (position - low)
            weights[low + 1, p] = position - low
    weights /= weights.sum(axis=0, keepdims=True)
    return weights.astype(np.float32)


def semitone_magnitude(audio: jnp.ndarray, sample_rate: int, n_fft: int = 4096,
                       hop_length: int = 512, midi_low: int = 36, midi_high: int = 96
                       ) -> jnp.ndarray:
    """STFT magnitude pooled per equal-tempered semitone.

    Args:
      audio: [..., samples] float.
      sample_rate: of `audio`.
      n_fft: STFT window (long, so low semitones are resolved; 4096 at 16 kHz is
        3.9 Hz per bin, about a semitone at C2).
      hop_length: STFT hop (512 at 16 kHz = 31.25 frames/s).
      midi_low, midi_high: the pitch range, inclusive (36..96 = C2..C7).

    Returns:
      [..., frames, midi_high - midi_low + 1] float32 (linear magnitude),
      `frames = 1 + samples // hop_length` (centred frames).
    """
    if audio.shape[-1] < n_fft // 2 + 1:
        raise ValueError(f"audio of {audio.shape[-1]} samples is shorter than half the "
                         f"semitone STFT window ({n_fft // 2 + 1} samples at {sample_rate} Hz)")
    magnitude = jnp.abs(stft(audio, n_fft, hop_length))
    return magnitude @ jnp.asarray(semitone_filterbank(sample_rate, n_fft, midi_low, midi_high))


def semitone_spectrogram(audio: jnp.ndarray, sample_rate: int, n_fft: int = 4096,
                         hop_length: int = 512, midi_low: int = 36, midi_high: int = 96,
                         floor: float = 1e-4) -> jnp.ndarray:
    """`log(floor + semitone_magnitude(...))`: [..., samples] -> [..., frames, pitches]."""
    return jnp.log(floor + semitone_magnitude(audio, sample_rate, n_fft, hop_length,
                                              midi_low, midi_high))


def relative_log_semitones(magnitude: jnp.ndarray, floor_db: float = -60.0) -> jnp.ndarray:
    """Per-frame log magnitude relative to the frame's loudest semitone, floored at
    `floor_db`: a gain change leaves it unchanged. [..., frames, pitches] -> same."""
    peak = jnp.max(magnitude, axis=-1, keepdims=True)
    ratio = magnitude / (peak + 1e-8)
    return jnp.log(jnp.maximum(ratio, 10.0 ** (floor_db / 20.0)))


def chroma(semitones: jnp.ndarray, midi_low: int) -> jnp.ndarray:
    """[..., frames, pitches] semitone energies (not log) -> [..., frames, 12], C first."""
    pitches = semitones.shape[-1]
    classes = (np.arange(midi_low, midi_low + pitches) % 12)
    fold = np.zeros((pitches, 12), np.float32)
    fold[np.arange(pitches), classes] = 1.0
    return semitones @ jnp.asarray(fold)
