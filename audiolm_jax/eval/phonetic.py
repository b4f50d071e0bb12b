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
