"""Waveform augmentations: lengths, determinism, the SNR asked for, bad settings named."""

import numpy as np
import pytest

from audiolm_jax.audio import augment

SR = 16_000


def _tone(seconds=1.0):
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + 0.3 * np.sin(2 * np.pi * 3 * t))
            ).astype(np.float32)


@pytest.mark.parametrize("name", augment.TRANSFORMS)
def test_each_transform_keeps_a_finite_clip_of_the_right_length(name):
    x = _tone()
    aug = augment.Augmenter(SR, probabilities=((name, 1.0),), max_samples=int(1.2 * SR))
    y = aug(x, np.random.default_rng(0))
    assert y.dtype == np.float32 and np.all(np.isfinite(y)) and np.max(np.abs(y)) <= 0.99 + 1e-6
    if name == "speed":
        assert 0.9 * len(x) / 1.1 <= len(y) <= int(1.2 * SR)
    else:
        assert len(y) == len(x)
    assert not np.allclose(y[: len(x)][: len(y)], x[: len(y)], atol=1e-3)   # it changed the clip


def test_chain_is_deterministic_per_seed_and_noise_hits_its_snr():
    x = _tone()
    aug = augment.Augmenter(SR)
    a = aug(x, np.random.default_rng(7))
    b = aug(x, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    noisy = augment.noise(x, 10.0, "pink", np.random.default_rng(0))
    snr = 10 * np.log10(np.mean(x ** 2) / np.mean((noisy - x) ** 2))
    assert abs(snr - 10.0) < 0.1
    # speed 1.1 shortens by 1.1; the bucket limit keeps a slowed clip inside it.
    assert abs(len(augment.speed(x, SR, 1.1)) - len(x) / 1.1) < 2
    limited = augment.Augmenter(SR, probabilities=(("speed", 1.0),), max_samples=len(x))
    for seed in range(5):
        assert len(limited(x, np.random.default_rng(seed))) <= len(x)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="unknown augmentations"):
        augment.Augmenter(SR, probabilities=(("chorus", 0.5),))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        augment.Augmenter(SR, probabilities=(("noise", 1.5),))


def _peak_hz(x):
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.argmax(spectrum) * SR / len(x)


def test_transforms_do_what_they_say():
    t = np.arange(SR) / SR
    tone = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    assert abs(_peak_hz(tone) - 220) < 2
    assert abs(_peak_hz(augment.pitch(tone, SR, 12.0)) - 440) < 4       # an octave up
    assert abs(_peak_hz(augment.speed(tone, SR, 1.1)) - 242) < 4        # tempo and pitch

    def high_share(x):   # energy above 2 kHz / energy below
        power = np.abs(np.fft.rfft(x)) ** 2
        return power[len(power) // 4:].sum() / power[: len(power) // 4].sum()

    noise = np.random.default_rng(0).standard_normal(SR).astype(np.float32) * 0.1
    assert high_share(augment.tilt(noise, 0.9)) > 1.5 * high_share(noise)      # brighter
    assert high_share(augment.tilt(noise, -0.6)) < 0.8 * high_share(noise)     # duller
    # Griffin-Lim keeps the mel spectrogram, not the waveform.
    import librosa

    voiced = _tone()
    gl = augment.griffin_lim(voiced, SR)
    log_mel = lambda x: np.log(librosa.feature.melspectrogram(  # noqa: E731
        y=x, sr=SR, n_fft=512, hop_length=128, n_mels=40) + 1e-5).ravel()
    assert np.corrcoef(log_mel(gl), log_mel(voiced))[0, 1] > 0.9
    assert np.corrcoef(gl, voiced)[0, 1] < 0.9
