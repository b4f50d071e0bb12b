"""Audio file I/O: decode, validate, resample.

Decoding goes through soundfile (wav/flac/ogg, and mp3 with libsndfile >= 1.1)
and falls back to librosa/audioread for anything soundfile cannot open.
Audio is returned channels last, `[samples, channels]`, float32 in [-1, 1].
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf

from audiolm_jax.files import atomic_path

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif")


class BadAudioError(ValueError):
    """A file that cannot be used as training audio; the message names the file and why."""


def load_audio(path: str | os.PathLike, sample_rate: int | None = None,
               mono: bool = True) -> tuple[np.ndarray, int]:
    """Decodes an audio file.

    Args:
      path: the file.
      sample_rate: resample to this rate; None keeps the file's rate.
      mono: average the channels.

    Returns:
      (audio [samples, channels] float32, sample_rate).

    Raises:
      BadAudioError: unreadable, empty, NaN/inf.
    """
    path = Path(path)
    try:
        audio, sr = sf.read(path, dtype="float32", always_2d=True)
    except Exception as sf_error:  # noqa: BLE001 - fall back to librosa for odd formats
        try:
            import librosa

            audio, sr = librosa.load(path, sr=None, mono=False)
            audio = np.atleast_2d(audio).T.astype(np.float32)
        except Exception as lr_error:  # noqa: BLE001
            raise BadAudioError(f"{path}: cannot decode ({sf_error}; {lr_error})") from lr_error
    if audio.shape[0] == 0:
        raise BadAudioError(f"{path}: file has no samples")
    if not np.all(np.isfinite(audio)):
        raise BadAudioError(f"{path}: audio contains NaN or inf")
    if mono and audio.shape[1] > 1:
        audio = audio.mean(axis=1, keepdims=True)
    if sample_rate is not None and sr != sample_rate:
        audio = resample(audio, sr, sample_rate)
        sr = sample_rate
    return audio, int(sr)


def resample(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Band-limited resampling (soxr, high quality) of `[samples, channels]` audio."""
    if orig_sr == target_sr:
        return audio
    import soxr

    out = soxr.resample(np.ascontiguousarray(audio, dtype=np.float32), orig_sr, target_sr, "HQ")
    return np.asarray(out, dtype=np.float32).reshape(-1, audio.shape[1])


def save_audio(path: str | os.PathLike, audio: np.ndarray, sample_rate: int,
               subtype: str = "PCM_16") -> None:
    """Writes `[samples]` or `[samples, channels]` float audio (format from the suffix).

    `subtype` "PCM_16" (default) clips to [-1, 1]; "FLOAT" writes float32 samples
    as they are (a vocoder's output, unnormalized). The file is written
    atomically: to a temporary file with the same suffix next to `path`, then
    renamed onto it, so a crash never leaves a truncated file
    (`audiolm_jax.files.atomic_path`).
    """
    path = Path(path)
    audio = np.asarray(audio, dtype=np.float32)
    if subtype != "FLOAT":
        audio = np.clip(audio, -1.0, 1.0)
    with atomic_path(path) as tmp:
        sf.write(tmp, audio, sample_rate, subtype=subtype)


def is_silent(audio: np.ndarray, threshold_db: float = -60.0) -> bool:
    """True when the RMS level is below `threshold_db` dBFS (digital silence or near it)."""
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    return rms <= 10.0 ** (threshold_db / 20.0)


def mono_at(audio: np.ndarray, sample_rate: int, expected_rate: int, what: str) -> np.ndarray:
    """`audio` ([samples] or [samples, channels], averaged) as float32 mono.

    Raises:
      ValueError: naming `what` (the model that needs `expected_rate`) when
        `sample_rate` differs: resample first.
    """
    if sample_rate != expected_rate:
        raise ValueError(f"audio at {sample_rate} Hz, but {what} takes {expected_rate} Hz: "
                         "resample it first (audiolm_jax.audio.io.resample)")
    audio = np.asarray(audio, np.float32)
    return audio.mean(axis=1) if audio.ndim == 2 else audio
