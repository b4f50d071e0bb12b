"""ISTFT and Griffin-Lim against librosa, and Griffin-Lim converging."""

import librosa
import numpy as np
import pytest

from audiolm_jax.audio.griffin_lim import griffin_lim, spectral_convergence
from audiolm_jax.audio.spectral import istft, stft


def speechlike(n=6000, sr=8000, seed=0):
    t = np.arange(n) / sr
    rng = np.random.default_rng(seed)
    x = sum(np.sin(2 * np.pi * f * t * (1 + 0.1 * t)) / (k + 1)
            for k, f in enumerate((180, 360, 540, 900)))
    return (0.2 * x * (0.6 + 0.4 * np.sin(3 * t)) + 0.01 * rng.standard_normal(n)).astype(
        np.float32)


@pytest.mark.parametrize("n_fft,hop,win", [(256, 64, None), (512, 128, 400)])
def test_istft_matches_librosa_and_inverts_stft(n_fft, hop, win):
    x = speechlike()
    spec = np.asarray(stft(x, n_fft, hop, win))
    ours = np.asarray(istft(spec, n_fft, hop, win, length=len(x)))
    ref = librosa.istft(spec.T.astype(np.complex128), hop_length=hop, win_length=win,
                        n_fft=n_fft, length=len(x))
    np.testing.assert_allclose(ours, ref, atol=2e-6 * np.abs(ref).max())
    np.testing.assert_allclose(ours, x, atol=1e-5)                   # perfect reconstruction
    default = np.asarray(istft(spec, n_fft, hop, win))
    assert default.shape == (hop * (spec.shape[0] - 1),)
    batch = np.asarray(istft(np.stack([spec, 2 * spec]), n_fft, hop, win, length=len(x)))
    np.testing.assert_allclose(batch[1], 2 * ours, rtol=1e-5, atol=1e-6)


def test_griffin_lim_matches_librosa_and_converges():
    x = speechlike()
    n_fft, hop = 256, 64
    magnitude = np.abs(np.asarray(stft(x, n_fft, hop)))
    ours = np.asarray(griffin_lim(magnitude, n_fft=n_fft, hop_length=hop, n_iter=4,
                                  length=len(x)))
    ref = librosa.griffinlim(magnitude.T.astype(np.float64), n_iter=4, hop_length=hop,
                             n_fft=n_fft, init=None, length=len(x))
    np.testing.assert_allclose(ours, ref, atol=1e-4 * np.abs(ref).max())
    errors = [float(spectral_convergence(
        griffin_lim(magnitude, n_fft=n_fft, hop_length=hop, n_iter=n, length=len(x)),
        magnitude, n_fft=n_fft, hop_length=hop)) for n in (1, 8, 32)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.5 * errors[0]
    # Original Griffin-Lim (no momentum) converges more slowly than the fast one.
    plain = float(spectral_convergence(
        griffin_lim(magnitude, n_fft=n_fft, hop_length=hop, n_iter=32, momentum=0.0,
                    length=len(x)), magnitude, n_fft=n_fft, hop_length=hop))
    assert plain > errors[2]
    with pytest.raises(ValueError, match="momentum"):
        griffin_lim(magnitude, n_fft=n_fft, hop_length=hop, momentum=-1.0)
