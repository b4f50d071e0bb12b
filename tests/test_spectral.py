import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest

from audiolm_jax.audio import spectral


@pytest.fixture(scope="module")
def signal():
    rng = np.random.default_rng(0)
    t = np.arange(12_345) / 24_000
    return (0.5 * np.sin(2 * np.pi * 440 * t) + 0.1 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.mark.parametrize("n_fft,hop,win", [(1024, 256, None), (512, 128, 400), (400, 160, None)])
def test_stft_matches_librosa(signal, n_fft, hop, win):
    ours = np.asarray(spectral.stft(jnp.asarray(signal), n_fft, hop, win))
    ref = librosa.stft(signal, n_fft=n_fft, hop_length=hop, win_length=win).T
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=2e-3 * np.abs(ref).max())


def test_log_mel_matches_librosa_and_jits(signal):
    kw = dict(n_fft=1024, hop_length=256, n_mels=80)
    ours = jax.jit(lambda x: spectral.log_mel_spectrogram(x, 24_000, **kw))(signal[None])[0]
    ref = np.log(np.maximum(librosa.feature.melspectrogram(y=signal, sr=24_000, **kw), 1e-5)).T
    assert ours.shape == ref.shape
    # log domain: absolute error; bins near the floor are the least precise in float32.
    np.testing.assert_allclose(np.asarray(ours), ref, atol=2e-3)


def test_mel_batches_over_leading_axes(signal):
    batch = np.stack([signal, 0.5 * signal])
    mel = spectral.mel_spectrogram(jnp.asarray(batch), 24_000, n_mels=40)
    np.testing.assert_allclose(np.asarray(mel[1]), 0.25 * np.asarray(mel[0]), rtol=1e-4, atol=1e-6)


def test_too_short_signal_is_a_clear_error():
    with pytest.raises(ValueError, match="shorter than n_fft"):
        spectral.stft(jnp.zeros(100), 1024, 256, center=False)
