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


@pytest.mark.parametrize("dft", ["fft", "matmul"])
@pytest.mark.parametrize("n_fft,hop,win", [(1024, 256, None), (512, 128, 400), (400, 160, None)])
def test_stft_matches_librosa(signal, n_fft, hop, win, dft):
    """Against librosa in float64 (periodic Hann, zero-padded centring). Measured:
    < 6e-7 of max|X| for both DFTs; a symmetric Hann window is off by 1.6e-3 to
    4.3e-3 of max|X|, so 1e-5 tells the two apart (2e-3 could not at n_fft=1024)."""
    ours = np.asarray(spectral.stft(jnp.asarray(signal), n_fft, hop, win, dft=dft))
    ref = librosa.stft(signal.astype(np.float64), n_fft=n_fft, hop_length=hop, win_length=win,
                       dtype=np.complex128).T
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("n_fft,win", [(1024, None), (400, None), (512, 400), (512, 301)])
def test_hann_window_is_periodic_and_centred(n_fft, win):
    """`scipy.signal.get_window('hann', n, fftbins=True)` (librosa's window), centred in
    n_fft as `librosa.util.pad_center` does; not numpy's symmetric `np.hanning`."""
    from scipy.signal import get_window

    n = win or n_fft
    ours = spectral.hann_window(n_fft, win)
    assert ours.shape == (n_fft,) and ours.dtype == np.float32
    ref = librosa.util.pad_center(get_window("hann", n, fftbins=True), size=n_fft)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-7)
    left = (n_fft - n) // 2
    body = ours[left:left + n].astype(np.float64)
    # Periodic: w[k] = sin^2(pi k / n); one zero (k = 0), the last sample is w[1] > 0,
    # and the taps sum to exactly n / 2. A symmetric window ends on a second zero.
    assert body[0] == 0.0 and body[-1] == pytest.approx(body[1], abs=1e-7) and body[-1] > 0
    np.testing.assert_allclose(body.sum(), n / 2, rtol=1e-6)
    assert not np.allclose(body, np.hanning(n), atol=1e-4)
    assert not ours[:left].any() and not ours[left + n:].any()


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
