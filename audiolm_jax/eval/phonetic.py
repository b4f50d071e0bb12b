"""How much phonetic content discrete tokens carry: PNMI and purities (HuBERT, sec. IV-B).

Given frame-aligned phone labels and token ids (the same frames), build the
joint distribution p(phone, token) from counts and report:

- **PNMI**, phone-normalized mutual information `I(phone; token) / H(phone)`:
  the share of the phone label's uncertainty the token removes (1: the token
  determines the phone; 0: independent).
- **phone purity**: frame accuracy when each token predicts its most frequent
  phone, `sum_token max_phone p(phone, token)`.
- **cluster purity**: the same the other way, `sum_phone max_token p(phone, token)`.

Inputs are numpy (these are counts over a corpus, not part of a jitted step).
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class PhoneticScores:
    """pnmi, phone_purity, cluster_purity (all in [0, 1]); frames counted."""

    pnmi: float
    phone_purity: float
    cluster_purity: float
    num_frames: int


def joint_counts(phones: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """[num_phone_labels, num_token_ids] counts over the frames both arrays label.

    Args:
      phones: [frames] int phone ids >= 0.
      tokens: [frames] int token ids >= 0 (same frames).
    """
    phones, tokens = np.asarray(phones).ravel(), np.asarray(tokens).ravel()
    if phones.shape != tokens.shape:
        raise ValueError(f"phones and tokens must label the same frames, got {phones.shape} "
                         f"and {tokens.shape}")
    if phones.size == 0:
        raise ValueError("no frames to score")
    if phones.min() < 0 or tokens.min() < 0:
        raise ValueError("phone and token ids must be non-negative")
    counts = np.zeros((int(phones.max()) + 1, int(tokens.max()) + 1), np.int64)
    np.add.at(counts, (phones, tokens), 1)
    return counts


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-np.sum(p * np.log(p)))


def phonetic_scores(phones: np.ndarray, tokens: np.ndarray) -> PhoneticScores:
    """PNMI and purities of `tokens` against frame-aligned `phones` (see module doc)."""
    counts = joint_counts(phones, tokens)
    total = counts.sum()
    joint = counts / total
    p_phone, p_token = joint.sum(axis=1), joint.sum(axis=0)
    h_phone = _entropy(p_phone)
    nonzero = joint > 0
    mutual = float(np.sum(joint[nonzero] * np.log(
        joint[nonzero] / (p_phone[:, None] * p_token[None, :])[nonzero])))
    # One phone label: nothing to explain; call it fully explained.
    pnmi = mutual / h_phone if h_phone > 0 else 1.0
    return PhoneticScores(pnmi=float(np.clip(pnmi, 0.0, 1.0)),
                          phone_purity=float(joint.max(axis=0).sum()),
                          cluster_purity=float(joint.max(axis=1).sum()),
                          num_frames=int(total))


SILENCE = "sil"
_STRESS_MARKS = "ˈˌ"


def strip_stress(phoneme: str) -> str:
    """IPA phoneme without espeak's stress marks ("ˈoʊ" -> "oʊ"): one label per phone."""
    return phoneme.translate({ord(c): None for c in _STRESS_MARKS})


def frame_phone_labels(phonemes: list[str], starts: list[float], ends: list[float],
                       num_frames: int, frame_rate: float, vocab: dict[str, int]) -> np.ndarray:
    """Phone id of each frame: the phone whose [start, end) holds the frame's centre.

    Frames no phone covers (leading/trailing silence, pauses) get `SILENCE`.
    Unknown phones are added to `vocab` (so one vocabulary spans a corpus).

    Args:
      phonemes, starts, ends: [P] aligned phones and their times in seconds
        (the built-in speech corpus's `phonemes`, `phoneme_starts`, `phoneme_ends`).
      num_frames: frames to label.
      frame_rate: frames per second (frame i is centred at (i + 0.5) / frame_rate).
      vocab: phone -> id, extended in place.

    Returns:
      [num_frames] int32 phone ids.
    """
    if not len(phonemes) == len(starts) == len(ends):
        raise ValueError(f"phonemes, starts and ends differ in length: {len(phonemes)}, "
                         f"{len(starts)}, {len(ends)}")
    labels = np.full((num_frames,), vocab.setdefault(SILENCE, len(vocab)), np.int32)
    centres = (np.arange(num_frames) + 0.5) / frame_rate
    for phone, start, end in zip(phonemes, starts, ends):
        covered = (centres >= start) & (centres < end)
        labels[covered] = vocab.setdefault(strip_stress(phone), len(vocab))
    return labels
