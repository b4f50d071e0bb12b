"""Kaldi-style log-mel filterbank (w2v-BERT 2.0's front end), in JAX.

Matches Hugging Face's `SeamlessM4TFeatureExtractor` (the feature extractor of
`facebook/w2v-bert-2.0`) so that imported encoders see the features they were
trained on:

    waveform [B, T] at 16 kHz, scaled to 16-bit integer range (x 2**15)
      -> 25 ms frames every 10 ms, no centering (frames = 1 + (T - 400) // 160)
      -> per frame: remove the DC offset, pre-emphasis 0.97, Povey window,
         512-point power spectrum
      -> 80 mel filters triangular in Kaldi's mel scale (20 Hz .. 8 kHz), log
         with floor 1.19e-7                                       [B, frames, 80]
      -> per utterance and per mel bin: zero mean, unit variance (ddof=1)
      -> frames zero-padded to an even count, cut to a multiple of `stride`
         and stacked                               [B, frames // stride, 80 * stride]

Frame stacking with stride 2 gives the encoder's 50 Hz frame rate; stride 4
gives 25 Hz.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

_INT16_SCALE = 2.0**15
_MEL_FLOOR = 1.192092955078125e-07


@dataclasses.dataclass(frozen=True)
class FbankConfig:
    """Front-end settings; the defaults are w2v-BERT 2.0's."""

    sample_rate: int = 16_000
    num_mel_bins: int = 80
    frame_length: int = 400
    hop_length: int = 160
    fft_length: int = 512
    min_frequency: float = 20.0
    preemphasis: float = 0.97
    stride: int = 2

    @property
    def feature_dim(self) -> int:
        """Width of a stacked frame: num_mel_bins * stride."""
        return self.num_mel_bins * self.stride

    @property
    def samples_per_frame(self) -> int:
        """Waveform samples per stacked (encoder) frame: hop_length * stride."""
        return self.hop_length * self.stride

    def num_fbank_frames(self, num_samples: int) -> int:
        """Filterbank frames (before stacking) of `num_samples` samples."""
        if num_samples < self.frame_length:
            return 0
        return 1 + (num_samples - self.frame_length) // self.hop_length

    def num_frames(self, num_samples: int) -> int:
        """Encoder frames (after padding to an even count, cutting and stacking)."""
        return _round_up(self.num_fbank_frames(num_samples), 2) // self.stride

    def min_samples(self) -> int:
        """The shortest input: enough filterbank frames for one encoder frame (and at
        least two, which the per-bin variance needs)."""
        frames = max(2, self.stride - 1)
        return self.frame_length + (frames - 1) * self.hop_length


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


@functools.lru_cache(maxsize=8)
def kaldi_mel_filters(num_mel_bins: int = 80, fft_length: int = 512, sample_rate: int = 16_000,
                      min_frequency: float = 20.0) -> np.ndarray:
    """[fft_length // 2 + 1, num_mel_bins] triangles in Kaldi's mel scale (1127 ln(1 + f/700)).

    The triangles are linear in mel (not in Hz), as Kaldi builds them.
    """
    def to_mel(f):
        return 1127.0 * np.log(1.0 + np.asarray(f, np.float64) / 700.0)

    edges = np.linspace(to_mel(min_frequency), to_mel(sample_rate / 2), num_mel_bins + 2)
    bins = to_mel(sample_rate / fft_length * np.arange(fft_length // 2 + 1))
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins[:, None] - lower) / (center - lower)
    falling = (upper - bins[:, None]) / (upper - center)
    return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


def povey_window(length: int = 400) -> np.ndarray:
    """Kaldi's Povey window: a symmetric Hann window to the power 0.85."""
    return np.power(np.hanning(length), 0.85).astype(np.float32)


def log_mel_fbank(audio: jax.Array, config: FbankConfig = FbankConfig()) -> jax.Array:
    """Kaldi log-mel filterbank, not normalized.

    Args:
      audio: [batch, samples] float waveform in [-1, 1] at `config.sample_rate`.

    Returns:
      [batch, frames, num_mel_bins] natural-log mel energies, frames =
      `config.num_fbank_frames(samples)`.
    """
    c = config
    num = c.num_fbank_frames(audio.shape[-1])
    if num < 1:
        raise ValueError(f"audio of {audio.shape[-1]} samples is shorter than one "
                         f"{c.frame_length}-sample filterbank frame")
    x = jnp.asarray(audio, jnp.float32) * _INT16_SCALE
    index = np.arange(num)[:, None] * c.hop_length + np.arange(c.frame_length)[None]
    frames = x[:, index]                                        # [B, frames, frame_length]
    frames = frames - frames.mean(axis=-1, keepdims=True)
    # Pre-emphasis inside each frame; the first sample is scaled, as Kaldi does.
    frames = jnp.concatenate([frames[..., :1] * (1.0 - c.preemphasis),
                              frames[..., 1:] - c.preemphasis * frames[..., :-1]], axis=-1)
    frames = frames * povey_window(c.frame_length)
    power = jnp.square(jnp.abs(jnp.fft.rfft(frames, n=c.fft_length, axis=-1)))
    filters = kaldi_mel_filters(c.num_mel_bins, c.fft_length, c.sample_rate, c.min_frequency)
    mel = jnp.einsum("bfk,km->bfm", power, filters, precision=jax.lax.Precision.HIGHEST)
    return jnp.log(jnp.maximum(mel, _MEL_FLOOR))


def stacked_features(audio: jax.Array, lengths: jax.Array | None = None,
                     config: FbankConfig = FbankConfig()) -> tuple[jax.Array, jax.Array]:
    """Normalized, stacked filterbank features: the encoder's input.

    Args:
      audio: [batch, samples] float waveform at `config.sample_rate`; rows may be
        right-padded.
      lengths: [batch] valid samples per row (None: every row is whole).
      config: front-end settings.

    Returns:
      (features [batch, frames, num_mel_bins * stride], mask [batch, frames] bool,
      True where the stacked frame is inside the row's audio). Statistics for
      the per-bin normalization use valid frames only; padded frames are zero.
      Frames are stacked as Hugging Face's extractor stacks them: padded to an
      even count, the remainder modulo `stride` dropped; a stacked frame is
      valid when its second filterbank frame is.
    """
    c = config
    if audio.ndim != 2:
        raise ValueError(f"expected audio [batch, samples], got shape {audio.shape}")
    if audio.shape[-1] < c.min_samples():
        raise ValueError(f"audio of {audio.shape[-1]} samples ({audio.shape[-1] / c.sample_rate:.4f}"
                         f" s) is shorter than one encoder frame: the front end needs at least "
                         f"{c.min_samples()} samples at {c.sample_rate} Hz")
    mel = log_mel_fbank(audio, c)                                # [B, F, M]
    num = mel.shape[1]
    if lengths is None:
        valid = jnp.ones(mel.shape[:2], bool)
    else:
        valid_frames = 1 + (jnp.asarray(lengths) - c.frame_length) // c.hop_length
        valid = jnp.arange(num)[None] < valid_frames[:, None]
    weight = valid[..., None].astype(jnp.float32)
    count = weight.sum(axis=1, keepdims=True)
    mean = (mel * weight).sum(axis=1, keepdims=True) / count
    var = (jnp.square(mel - mean) * weight).sum(axis=1, keepdims=True) / jnp.maximum(count - 1, 1)
    mel = jnp.where(valid[..., None], (mel - mean) / jnp.sqrt(var + 1e-7), 0.0)
    pad = num % 2
    mel = jnp.pad(mel, ((0, 0), (0, pad), (0, 0)))
    valid = jnp.pad(valid, ((0, 0), (0, pad)))
    batch, frames = mel.shape[0], mel.shape[1] // c.stride
    keep = frames * c.stride
    features = mel[:, :keep].reshape(batch, frames, c.stride * c.num_mel_bins)
    mask = valid[:, :keep].reshape(batch, frames, c.stride)[..., min(1, c.stride - 1)]
    return features, mask
