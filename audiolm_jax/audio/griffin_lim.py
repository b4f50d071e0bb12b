"""Griffin-Lim phase reconstruction in JAX: the no-training vocoder baseline.

Fast Griffin-Lim (Perraudin et al. 2013), as `librosa.griffinlim` with
`init=None`: start from zero phase, then alternate `istft` and `stft`, keeping
the given magnitudes and the latest phases, with momentum on the phase
estimate. One jitted `lax.fori_loop`; batches over leading axes.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from audiolm_jax.audio.spectral import istft, stft


def griffin_lim(magnitude: jnp.ndarray, *, n_fft: int, hop_length: int,
                win_length: int | None = None, n_iter: int = 32, momentum: float = 0.99,
                length: int | None = None) -> jnp.ndarray:
    """A waveform whose STFT magnitude approximates `magnitude`.

    Args:
      magnitude: [..., frames, n_fft // 2 + 1] non-negative linear magnitudes (as
        `abs(stft(...))`, centred frames).
      n_iter: iterations (each one `istft` + one `stft`).
      momentum: the "fast" Griffin-Lim momentum; 0 is the original algorithm.
      length: samples of the output (None: `hop_length * (frames - 1)`).

    Returns:
      [..., samples] float32.
    """
    if momentum < 0:
        raise ValueError(f"griffin_lim: momentum must be >= 0, got {momentum}")
    return _griffin_lim(jnp.asarray(magnitude, jnp.float32), jnp.float32(momentum),
                        n_fft=n_fft, hop_length=hop_length, win_length=win_length,
                        n_iter=n_iter, length=length)


@functools.partial(jax.jit, static_argnames=("n_fft", "hop_length", "win_length", "n_iter",
                                             "length"))
def _griffin_lim(magnitude: jnp.ndarray, momentum: jnp.ndarray, *, n_fft: int,
                 hop_length: int, win_length: int | None, n_iter: int,
                 length: int | None) -> jnp.ndarray:
    eps = jnp.finfo(jnp.float32).tiny
    samples = length if length is not None else hop_length * (magnitude.shape[-2] - 1)

    def step(_, carry):
        angles, previous = carry
        audio = istft(angles, n_fft, hop_length, win_length, length=samples)
        rebuilt = stft(audio, n_fft, hop_length, win_length)
        # `previous` starts at zero, so the first iteration has no momentum term.
        estimate = rebuilt - (momentum / (1.0 + momentum)) * previous
        angles = estimate / (jnp.abs(estimate) + eps) * magnitude
        return angles, rebuilt

    start = magnitude.astype(jnp.complex64)
    angles, _ = jax.lax.fori_loop(0, n_iter, step, (start, jnp.zeros_like(start)))
    return istft(angles, n_fft, hop_length, win_length, length=samples)


def spectral_convergence(audio: jnp.ndarray, magnitude: jnp.ndarray, *, n_fft: int,
                         hop_length: int, win_length: int | None = None) -> jnp.ndarray:
    """`||abs(stft(audio)) - magnitude||_F / ||magnitude||_F` over the last two axes."""
    rebuilt = jnp.abs(stft(audio, n_fft, hop_length, win_length))
    frames = min(rebuilt.shape[-2], magnitude.shape[-2])
    diff = rebuilt[..., :frames, :] - magnitude[..., :frames, :]
    return jnp.linalg.norm(diff, axis=(-2, -1)) / jnp.linalg.norm(magnitude, axis=(-2, -1))


def mel_to_magnitude(mel: jnp.ndarray, filterbank: jnp.ndarray) -> jnp.ndarray:
    """Linear magnitudes whose mel projection approximates `mel`: the least-squares
    solution (pseudo-inverse of the filterbank) clipped at zero.

    librosa's `mel_to_stft` solves the non-negative least squares exactly; the
    clipped pseudo-inverse is one matrix product, and Griffin-Lim's error from
    the missing phase dwarfs the difference.

    Args:
      mel: [..., frames, n_mels] linear (not log) mel values.
      filterbank: [bins, n_mels], as `audiolm_jax.audio.spectral.mel_filterbank`.

    Returns:
      [..., frames, bins] float32 >= 0.
    """
    inverse = jnp.linalg.pinv(jnp.asarray(filterbank, jnp.float32))        # [n_mels, bins]
    return jnp.maximum(jnp.asarray(mel, jnp.float32) @ inverse, 0.0)
