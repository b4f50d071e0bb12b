"""CTC forced alignment: where each phone of a known transcript sits in a recording.

Given the recognizer's per-frame log-posteriors and the transcript's phones,
the Viterbi path through the CTC trellis (the phones interleaved with
optional blanks, each phone held for one or more frames) is the most likely
segmentation that spells exactly the transcript. A phone starts at the first
frame its state is entered; it lasts until the next phone starts (blank
frames after a phone belong to it), so the phones tile the span from the
first phone's start to the last one's end.

    alignment = align(recognizer, audio, 24_000, phonemes)   # or text=...
    alignment.starts, alignment.ends                         # seconds
    alignment.score                                          # mean log-posterior per frame

`score` is the average log-probability per frame along the path. A transcript
that does not match the audio forces improbable frames and scores low;
`AlignmentError` is raised below `min_score`, naming it.

The trellis is tiny (frames x (2 * phones + 1) states), so the dynamic program
runs in numpy; the recognizer itself runs jitted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from audiolm_jax.models.ctc.model import BLANK, PhonemeRecognizer, normalize_phones

# Mean log-posterior per frame below which a transcript is taken not to match the
# audio. Calibrated for the committed recognizer (weights/ctc_tiny) by
# benchmarks/aligner_boundaries.py on the 6 held-out speakers: own transcripts score
# -0.22 / -0.12 / -0.06 (5th pct / median / 95th), another utterance's -3.89 / -1.81 /
# -1.32 (fewest errors at -0.74, none refused or accepted); on flite's unseen `awb`
# voice own transcripts score -0.57 to -0.20 and others' -2.18 to -1.45. -1.0 keeps a
# margin on both sides for voices further from the training data.
DEFAULT_MIN_SCORE = -1.0


class AlignmentError(ValueError):
    """The transcript cannot be aligned to the audio (unknown phones, too short audio,
    or a score below the threshold)."""


@dataclasses.dataclass(frozen=True)
class Alignment:
    """Phones with times in seconds (within the analysed audio).

    Attributes:
      phonemes: [P] the aligned phones as given (stress marks kept: the recognizer
        matches them stress-free, a TTS model may want the stress).
      starts, ends: [P] seconds; `ends[i] == starts[i + 1]`.
      score: mean log-posterior per frame of the best path.
      frame_seconds: the recognizer's frame hop.
    """

    phonemes: list[str]
    starts: np.ndarray
    ends: np.ndarray
    score: float
    frame_seconds: float

    def as_record_fields(self) -> dict:
        """The manifest fields of `audiolm_jax.data.aligned`."""
        return {"phonemes": list(self.phonemes), "phoneme_starts": self.starts.tolist(),
                "phoneme_ends": self.ends.tolist()}


def viterbi(log_probs: np.ndarray, labels: Sequence[int]) -> tuple[np.ndarray, float]:
    """Best CTC path that spells `labels`.

    Args:
      log_probs: [T, V] log-posteriors (blank = id 0).
      labels: [L] label ids (no blanks), L >= 1.

    Returns:
      (first frame of each label [L] int, total log-probability of the path).

    Raises:
      AlignmentError: when T is too short to spell the labels (a repeated label
        needs a blank frame between its copies).
    """
    log_probs = np.asarray(log_probs, np.float64)
    labels = np.asarray(labels, np.int64)
    frames, num = log_probs.shape[0], len(labels)
    if num == 0:
        raise AlignmentError("nothing to align: the transcript has no phones")
    needed = num + int(np.sum(labels[1:] == labels[:-1]))
    if frames < needed:
        raise AlignmentError(f"{frames} recognizer frames cannot hold {num} phones "
                             f"({needed} frames needed): the audio is too short")
    # States: 0 = blank, 1 = labels[0], 2 = blank, 3 = labels[1], ..., 2L = blank.
    states = np.zeros(2 * num + 1, np.int64)
    states[1::2] = labels
    emit = log_probs[:, states]                                      # [T, S]
    size = len(states)
    # From s-2 (skipping a blank) only into a label that differs from the one before.
    skip = np.zeros(size, bool)
    skip[3::2] = labels[1:] != labels[:-1]
    score = np.full(size, -np.inf)
    score[:2] = emit[0, :2]
    back = np.zeros((frames, size), np.int8)       # 0: stay, 1: from s-1, 2: from s-2
    for t in range(1, frames):
        stay = score
        step = np.concatenate([[-np.inf], score[:-1]])
        jump = np.where(skip, np.concatenate([[-np.inf, -np.inf], score[:-2]]), -np.inf)
        choices = np.stack([stay, step, jump])
        back[t] = np.argmax(choices, axis=0)
        score = choices.max(axis=0) + emit[t]
    end = size - 1 if score[-1] >= score[-2] else size - 2
    total = float(score[end])
    path = np.zeros(frames, np.int64)
    path[-1] = end
    for t in range(frames - 1, 0, -1):
        path[t - 1] = path[t] - back[t, path[t]]
    starts = np.zeros(num, np.int64)
    for k in range(num):
        starts[k] = int(np.argmax(path == 2 * k + 1))
    return starts, total


def align(recognizer: PhonemeRecognizer, audio: np.ndarray, sample_rate: int,
          phonemes: Sequence[str] | None = None, text: str | None = None,
          voice: str = "en-us", min_score: float = DEFAULT_MIN_SCORE) -> Alignment:
    """Aligns a transcript (phonemes, or text to phonemize) to one recording.

    Args:
      recognizer: a trained CTC phoneme recognizer.
      audio: [samples] or [samples, channels] at `sample_rate` (resampled here).
      phonemes: the transcript's phones (stress marks are dropped); or
      text: phonemized with espeak-ng's `voice`.
      min_score: see the module docstring; None accepts any score.

    Returns:
      The `Alignment`; its last phone ends where the last aligned frame ends.

    Raises:
      AlignmentError: naming unknown phones, too short audio, or a low score.
    """
    from audiolm_jax.audio.io import is_silent

    if (phonemes is None) == (text is None):
        raise ValueError("pass exactly one of phonemes= and text=")
    if text is not None:
        from audiolm_jax.text.phonemizer import phonemize

        phonemes = [p for p in phonemize(text, voice=voice) if p != "|"]
        if not phonemes:
            raise AlignmentError(f"espeak ({voice}) makes no phones of the transcript "
                                 f"{text!r}: nothing to align")
    phonemes = list(phonemes)
    phones = normalize_phones(phonemes)
    index = {p: i + 1 for i, p in enumerate(recognizer.phones)}
    unknown = sorted({p for p in phones if p not in index})
    if unknown:
        raise AlignmentError(f"phones {unknown} are not in the recognizer's inventory")
    mono = recognizer.at_rate(audio, sample_rate)
    if is_silent(mono):
        raise AlignmentError("the audio is silent (below -60 dBFS): nothing to align")
    logits = recognizer.logits(mono)
    log_probs = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
    starts, total = viterbi(log_probs, [index[p] for p in phones])
    frame_seconds = recognizer.model.encoder_config.fbank.samples_per_frame / \
        recognizer.sample_rate
    score = total / len(log_probs)
    if min_score is not None and score < min_score:
        raise AlignmentError(f"the transcript does not match the audio: alignment score "
                             f"{score:.2f} per frame is below {min_score:.2f}")
    # The last phone ends after its own frames and the blanks that follow it, up to the
    # last frame where the path sits on it or on its trailing blank while the recognizer
    # hears speech; we take the end of its last non-blank frame.
    best = log_probs.argmax(axis=-1)
    speech_frames = np.flatnonzero(best != BLANK)
    last = max(int(starts[-1]), int(speech_frames[-1]) if len(speech_frames) else 0)
    start_s = starts * frame_seconds
    end_s = np.append(start_s[1:], (last + 1) * frame_seconds)
    return Alignment(phonemes, start_s, end_s, float(score), frame_seconds)


def boundary_errors(predicted_starts: Sequence[float], reference_starts: Sequence[float]
                    ) -> np.ndarray:
    """|predicted - reference| phone start times (seconds), phone by phone."""
    predicted, reference = np.asarray(predicted_starts), np.asarray(reference_starts)
    if predicted.shape != reference.shape:
        raise ValueError(f"{predicted.shape} predicted starts against {reference.shape} "
                         "reference starts")
    return np.abs(predicted - reference)
