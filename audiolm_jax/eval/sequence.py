"""Sequence metrics: edit distance and phoneme error rate."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def edit_distance(reference: Sequence[Any], hypothesis: Sequence[Any]) -> int:
    """Levenshtein distance (substitutions, insertions, deletions all cost 1)."""
    previous = list(range(len(hypothesis) + 1))
    for i, r in enumerate(reference, 1):
        current = [i] + [0] * len(hypothesis)
        for j, h in enumerate(hypothesis, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h))
        previous = current
    return previous[-1]


def per(references: Sequence[Sequence[str]], hypotheses: Sequence[Sequence[str]]) -> float:
    """Phoneme error rate: total edit distance / total reference phones (corpus level)."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    total = sum(len(r) for r in references)
    if total == 0:
        raise ValueError("the references hold no phones")
    return sum(edit_distance(r, h) for r, h in zip(references, hypotheses)) / total
