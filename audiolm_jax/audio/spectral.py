"""STFT and log-mel spectrograms in JAX, numerically matching librosa.

All functions are pure, jit-able and batch over leading axes. Frames are laid
out like librosa's with `center=True`: frame `t` is centred on sample
`t * hop_length`, the signal padded by `n_fft // 2` on each side, so a signal
of `n` samples gives `1 + n // hop_length` frames. Output is channels last:
`[..., frames, bins]` (librosa returns `[bins, frames]`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import librosa
import numpy as np


@functools.lru_cache(maxsize=32)
def hann_window(n_fft: int, win_length: int | None = None) -> np.ndarray:
    """Periodic Hann window (as `scipy.signal.get_window('hann', n, fftbins=True)`),
    zero-padded to `n_fft` and centred, as librosa does for `win_length < n_fft`."""
    win_length = win_length or n_fft
    n = np.arange(win_length)
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / win_length)
    left = (n_fft - win_length) // 2
    return np.pad(window, (left, n_fft - win_length - left)).astype(np.float32)


@functools.lru_cache(maxsize=16)
def dft_matrices(n_fft: int) -> tuple[np.ndarray, np.ndarray]:
    """[n_fft, n_fft // 2 + 1] cos and -sin matrices: frames @ them = Re, Im of the rfft."""
    k = np.arange(n_fft // 2 + 1)[None, :]
    n = np.arange(n_fft)[:, None]
    angle = 2.0 * np.pi * ((n * k) % n_fft) / n_fft    # reduced mod n_fft for accuracy
    return np.cos(angle).astype(np.float32), (-np.sin(angle)).astype(np.float32)


def stft(audio: jnp.ndarray, n_fft: int, hop_length: int, win_length: int | None = None,
         center: bool = True, pad_mode: str = "constant", dft: str = "fft") -> jnp.ndarray:
    """Short-time Fourier transform.

    Args:
      audio: [..., samples] real waveform.
      n_fft, hop_length, win_length: as in librosa.
      center: pad `n_fft // 2` on each side so frames are centred on `t * hop`.
      pad_mode: `jnp.pad` mode for centring ("constant" is librosa's default).
      dft: "fft" (`jnp.fft.rfft`) or "matmul" (two [n_fft, bins] matrix products).
        Under `jit` with a batch-sharded input, XLA's SPMD partitioner all-gathers
        the frames of every device around an FFT; the matmul form stays sharded
        and runs on the matrix units, at O(n_fft) instead of O(log n_fft) FLOPs
        per bin (cheap for short windows such as 400 samples).

    Returns:
      [..., frames, n_fft // 2 + 1] complex64.
    """
    if center:
        pad = [(0, 0)] * (audio.ndim - 1) + [(n_fft // 2, n_fft // 2)]
        audio = jnp.pad(audio, pad, mode=pad_mode)
    num_frames = 1 + (audio.shape[-1] - n_fft) // hop_length
    if num_frames < 1:
        raise ValueError(f"signal of {audio.shape[-1]} samples is shorter than n_fft={n_fft}")
    # Gather frames with one index array: [frames, n_fft] indices into the last axis.
    idx = jnp.arange(num_frames)[:, None] * hop_length + jnp.arange(n_fft)[None, :]
    # `jnp.take` on the last axis, not `audio[..., idx]`: with a batch-sharded input
    # the indexing form lowers to a gather that XLA partitions by all-gathering every
    # device's frames; `take` keeps the batch dimension sharded.
    frames = jnp.take(audio, idx, axis=-1) * hann_window(n_fft, win_length)
    if dft == "fft":
        return jnp.fft.rfft(frames, n=n_fft, axis=-1)
    if dft != "matmul":
        raise ValueError(f"dft={dft!r}: expected 'fft' or 'matmul'")
    cos, sin = dft_matrices(n_fft)
    real = jnp.matmul(frames, cos, precision=jax.lax.Precision.HIGHEST)
    imag = jnp.matmul(frames, sin, precision=jax.lax.Precision.HIGHEST)
    return jax.lax.complex(real, imag)


def overlap_add(frames: jnp.ndarray, hop_length: int) -> jnp.ndarray:
    """Sums frames placed `hop_length` apart. [..., frames, n] -> [..., n + hop * (frames - 1)].

    When the hop divides the frame (every STFT setting here: n_fft = 4 hops),
    each frame is `n / hop` blocks of one hop and block k of frame t lands on
    block t + k: the sum is `n / hop` shifted, padded adds, which XLA fuses and
    differentiates cheaply. Otherwise a scatter-add does it.
    """
    *lead, num_frames, n = frames.shape
    total = n + hop_length * (num_frames - 1)
    if n % hop_length:
        idx = np.arange(num_frames)[:, None] * hop_length + np.arange(n)[None, :]
        return jnp.zeros((*lead, total), frames.dtype).at[..., idx].add(frames)
    blocks_per_frame = n // hop_length
    blocks = frames.reshape(*lead, num_frames, blocks_per_frame, hop_length)
    no_pad = [(0, 0)] * len(lead)
    y = sum(jnp.pad(blocks[..., k, :], no_pad + [(k, blocks_per_frame - 1 - k), (0, 0)])
            for k in range(blocks_per_frame))
    return y.reshape(*lead, total)


def istft(spec: jnp.ndarray, n_fft: int, hop_length: int, win_length: int | None = None,
          center: bool = True, length: int | None = None) -> jnp.ndarray:
    """Inverse of `stft` by weighted overlap-add, as `librosa.istft` (transposed input).

    Args:
      spec: [..., frames, n_fft // 2 + 1] complex.
      length: samples to return (trimmed or zero-padded); None gives
        `hop_length * (frames - 1)` with `center` (what `stft` of that many
        samples frames).

    Returns:
      [..., samples] float32. Samples whose window overlap sums to (nearly)
      zero are left unnormalized, as librosa does.
    """
    num_frames = spec.shape[-2]
    window = hann_window(n_fft, win_length)
    frames = jnp.fft.irfft(spec, n=n_fft, axis=-1).astype(jnp.float32) * window
    total = n_fft + hop_length * (num_frames - 1)
    idx = np.arange(num_frames)[:, None] * hop_length + np.arange(n_fft)[None, :]
    y = overlap_add(frames, hop_length)
    # The squared-window overlap is a constant of the shapes: computed in numpy.
    overlap = np.bincount(idx.ravel(), weights=np.tile(np.square(window.astype(np.float64)),
                                                       num_frames), minlength=total)
    tiny = np.finfo(np.float32).tiny
    y = y / np.where(overlap > tiny, overlap, 1.0).astype(np.float32)
    start = n_fft // 2 if center else 0
    if length is None:
        end = total - n_fft // 2 if center else total
        return y[..., start:end]
    y = y[..., start:start + length]
    if y.shape[-1] < length:
        y = jnp.pad(y, [(0, 0)] * (y.ndim - 1) + [(0, length - y.shape[-1])])
    return y


@functools.lru_cache(maxsize=32)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                   fmax: float | None = None, htk: bool = False,
                   norm: str | None = "slaney") -> np.ndarray:
    """[n_fft // 2 + 1, n_mels] mel filterbank, identical to `librosa.filters.mel(...).T`."""
    fb = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax,
                             htk=htk, norm=norm)
    return np.ascontiguousarray(fb.T.astype(np.float32))


def mel_spectrogram(audio: jnp.ndarray, sample_rate: int, n_fft: int = 1024,
                    hop_length: int = 256, win_length: int | None = None, n_mels: int = 80,
                    fmin: float = 0.0, fmax: float | None = None, power: float = 2.0,
                    center: bool = True, dft: str = "fft") -> jnp.ndarray:
    """Mel spectrogram, as `librosa.feature.melspectrogram` (transposed).

    Args:
      audio: [..., samples].
      power: 1 for magnitude, 2 for power.
      dft: see `stft`.

    Returns:
      [..., frames, n_mels] float32.
    """
    spec = jnp.abs(stft(audio, n_fft, hop_length, win_length, center, dft=dft)) ** power
    return spec @ mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax)


def log_mel_spectrogram(audio: jnp.ndarray, sample_rate: int, n_fft: int = 1024,
                        hop_length: int = 256, win_length: int | None = None,
                        n_mels: int = 80, fmin: float = 0.0, fmax: float | None = None,
                        power: float = 2.0, floor: float = 1e-5,
                        center: bool = True, dft: str = "fft") -> jnp.ndarray:
    """`log(max(mel, floor))`, natural log. [..., samples] -> [..., frames, n_mels]."""
    mel = mel_spectrogram(audio, sample_rate, n_fft, hop_length, win_length, n_mels, fmin,
                          fmax, power, center, dft)
    return jnp.log(jnp.maximum(mel, floor))


def vocos_log_mel(audio: jnp.ndarray, sample_rate: int, n_fft: int = 1024,
                  hop_length: int = 256, n_mels: int = 100, f_min: float = 0.0,
                  f_max: float | None = None, padding: str = "center",
                  floor: float = 1e-7) -> jnp.ndarray:
    """The log-mel of the `vocos` package (`MelSpectrogramFeatures`), in JAX.

    torchaudio's `MelSpectrogram(power=1)`: magnitudes (not power), periodic
    Hann window of `n_fft`, reflect padding, HTK mel scale with unnormalized
    triangles, then `log(max(mel, 1e-7))`. This is what a mel Vocos decodes and
    what Voicebox generates (the defaults are vocos-mel-24khz's); it differs from
    `log_mel_spectrogram` (librosa's Slaney filters on power), so the two are
    never interchangeable.

    Args:
      audio: [..., samples].
      padding: "center" (frames centred on `t * hop`, `1 + samples // hop` frames) or
        "same" (reflect-padded by `(n_fft - hop) // 2` each side, uncentred).

    Returns:
      [..., frames, n_mels] float32.
    """
    if padding not in ("center", "same"):
        raise ValueError(f"padding must be 'center' or 'same', got {padding!r}")
    audio = jnp.asarray(audio, jnp.float32)
    if padding == "same":
        pad = (n_fft - hop_length) // 2
        audio = jnp.pad(audio, [(0, 0)] * (audio.ndim - 1) + [(pad, pad)], mode="reflect")
    spec = stft(audio, n_fft, hop_length, center=padding == "center", pad_mode="reflect")
    filters = mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max, htk=True, norm=None)
    mel = jnp.matmul(jnp.abs(spec), filters, precision=jax.lax.Precision.HIGHEST)
    return jnp.log(jnp.maximum(mel, floor))
