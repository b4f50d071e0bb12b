import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audiolm_jax.eval.audio_metrics import (
    MEL_RESOLUTIONS,
    bitrate_table,
    mel_distance,
    si_snr,
    spectrogram_panels,
)

SR = 16_000


@pytest.fixture(scope="module")
def signal():
    """[2, 4000, 2]: a chord (plus DC offset, which SI-SNR must ignore) and a chirp."""
    t = np.arange(4000) / SR
    chord = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 330 * t) + 0.05
    chirp = 0.4 * np.sin(2 * np.pi * (300 + 2000 * t) * t)
    x = np.stack([np.stack([chord, 0.5 * chord], -1), np.stack([chirp, -chirp], -1)])
    return x.astype(np.float32)


def white_noise_at(reference: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    """Zero-mean noise orthogonal to the (zero-mean) reference, |ref|^2 / |noise|^2 = 10^(snr/10)."""
    rng = np.random.default_rng(seed)
    ref = reference - reference.mean(axis=0, keepdims=True)
    noise = rng.standard_normal(reference.shape)
    noise -= noise.mean(axis=0, keepdims=True)
    noise -= np.sum(noise * ref) / np.sum(ref * ref) * ref
    noise *= np.sqrt(np.sum(ref * ref) / np.sum(noise * noise) / 10 ** (snr_db / 10))
    return noise.astype(np.float32)


def test_si_snr_identical_is_large_and_scale_invariant(signal):
    same = np.asarray(si_snr(signal, signal))
    assert same.shape == (2,) and np.all(same > 60)
    noisy = signal + np.stack([white_noise_at(x, 10.0, i) for i, x in enumerate(signal)])
    base = np.asarray(si_snr(noisy, signal))
    for gain in (0.1, 3.0, -2.0):  # the estimate's gain (even its sign) does not matter
        np.testing.assert_allclose(si_snr(gain * noisy, signal), base, atol=1e-3)
    np.testing.assert_allclose(si_snr(noisy + 0.3, signal), base, atol=1e-3)  # nor a DC offset


@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 12.5, 30.0])
def test_si_snr_known_value_for_white_noise(signal, snr_db):
    noisy = signal + np.stack([white_noise_at(x, snr_db, i) for i, x in enumerate(signal)])
    np.testing.assert_allclose(si_snr(noisy, signal), [snr_db, snr_db], atol=1e-3)


def test_si_snr_is_finite_on_silence_and_checks_shapes(signal):
    zeros = np.zeros_like(signal)
    assert np.all(np.isfinite(si_snr(zeros, zeros)))
    assert np.all(np.isfinite(si_snr(signal, zeros)))
    with pytest.raises(ValueError, match="same shape"):
        si_snr(signal, signal[:, :100])


def test_mel_distance_zero_for_identical_and_grows_with_noise(signal):
    assert np.allclose(mel_distance(signal, signal, SR), 0.0)
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(signal.shape).astype(np.float32)
    distances = [np.asarray(mel_distance(signal + level * noise, signal, SR))
                 for level in (0.001, 0.01, 0.1)]
    assert all(d.shape == (2,) for d in distances)
    assert np.all(distances[0] > 0)
    assert np.all(distances[0] < distances[1]) and np.all(distances[1] < distances[2])


def test_mel_distance_resolutions_jit_and_gain(signal):
    single = mel_distance(signal, 0.5 * signal, SR, resolutions=((1024, 256, 80),))
    # Halving the amplitude quarters the power: log(4) wherever the mel power is above the floor.
    assert np.all(np.asarray(single) > 0.1) and np.all(np.asarray(single) <= np.log(4) + 1e-4)
    jitted = jax.jit(lambda a, b: mel_distance(a, b, SR))(jnp.asarray(signal), 0.5 * signal)
    np.testing.assert_allclose(jitted, mel_distance(signal, 0.5 * signal, SR), rtol=1e-6)
    assert len(MEL_RESOLUTIONS) == 3
    with pytest.raises(ValueError, match="resolution"):
        mel_distance(signal, signal, SR, resolutions=())


def test_bitrate_table():
    table = bitrate_table([
        {"bandwidth": 1.5, "num_codebooks": 2, "mel_distance": np.array([1.2, 1.4]),
         "si_snr": -3.25},
        {"bandwidth": 24.0, "num_codebooks": 32, "mel_distance": 0.41234, "si_snr": 8.0},
    ])
    lines = table.splitlines()
    assert lines[0] == "| bandwidth (kbps) | codebooks | mel distance ↓ | SI-SNR (dB) ↑ |"
    assert lines[1] == "|---:|---:|---:|---:|"
    assert lines[2] == "| 1.5 | 2 | 1.300 | -3.25 |"
    assert lines[3] == "| 24 | 32 | 0.412 | 8.00 |"
    with pytest.raises(ValueError, match="si_snr"):
        bitrate_table([{"bandwidth": 1.5, "num_codebooks": 2, "mel_distance": 1.0}])


def test_spectrogram_panels(signal):
    panels = spectrogram_panels(signal[0], signal[0] * 0.5, SR)
    assert [label for label, _ in panels] == ["input", "decoded"]
    assert panels[0][1].shape == (1 + 4000 // 256, 80)
