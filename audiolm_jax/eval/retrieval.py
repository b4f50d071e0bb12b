"""Cross-modal retrieval metrics: Recall@k, mean average precision, and their chance levels.

A retrieval run is a [queries, candidates] similarity matrix and a boolean
matrix of which candidates are relevant to each query (for caption -> clip,
the caption's own clip; for melody retrieval, every other rendering of the
same melody). Ties are broken against the relevant items, so a constant
similarity scores as badly as it can, never by luck.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _ranks(similarity: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """[Q, C] -> [Q, C] 1-based rank of every candidate (relevant ones last among equals)."""
    # Sort by descending similarity; among equal scores put irrelevant items first.
    order = np.lexsort((relevant, -similarity), axis=1)
    ranks = np.empty_like(order)
    rows = np.arange(similarity.shape[0])[:, None]
    ranks[rows, order] = np.arange(1, similarity.shape[1] + 1)[None, :]
    return ranks


def retrieval_metrics(similarity: np.ndarray, relevant: np.ndarray,
                      ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Recall@k (a relevant item in the top k), mAP and median rank of the first hit.

    Args:
      similarity: [Q, C] scores, higher is closer.
      relevant: [Q, C] bool; every query needs at least one relevant candidate.

    Returns:
      {"R@1": ..., "R@5": ..., "R@10": ..., "mAP": ..., "median_rank": ...}.
    """
    similarity = np.asarray(similarity, np.float64)
    relevant = np.asarray(relevant, bool)
    if similarity.shape != relevant.shape or similarity.ndim != 2:
        raise ValueError(f"similarity {similarity.shape} and relevant {relevant.shape} must be "
                         "the same [queries, candidates] shape")
    hits = relevant.sum(axis=1)
    if np.any(hits == 0):
        raise ValueError(f"queries {np.flatnonzero(hits == 0)[:5].tolist()} have no relevant "
                         "candidate")
    ranks = _ranks(similarity, relevant)
    relevant_ranks = np.where(relevant, ranks, np.inf)
    first = relevant_ranks.min(axis=1)
    out = {f"R@{k}": float(np.mean(first <= k)) for k in ks}
    # AP: mean over relevant items of (relevant items ranked at or above it) / its rank.
    sorted_ranks = np.sort(relevant_ranks, axis=1)
    position = np.arange(1, similarity.shape[1] + 1)[None, :]
    precision = np.where(np.isfinite(sorted_ranks), position / sorted_ranks, 0.0)
    out["mAP"] = float(np.mean(precision.sum(axis=1) / hits))
    out["median_rank"] = float(np.median(first))
    return out


def chance_metrics(relevant: np.ndarray, ks: Sequence[int] = (1, 5, 10), trials: int = 200,
                   seed: int = 0) -> dict[str, float]:
    """The metrics of random rankings, averaged over `trials` seeded draws."""
    rng = np.random.default_rng(seed)
    relevant = np.asarray(relevant, bool)
    runs = [retrieval_metrics(rng.random(relevant.shape), relevant, ks) for _ in range(trials)]
    return {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}


def metrics_table(rows: dict[str, dict[str, float]], ks: Sequence[int] = (1, 5, 10)) -> str:
    """A markdown table with one row per method."""
    columns = [f"R@{k}" for k in ks] + ["mAP", "median_rank"]
    lines = ["| method | " + " | ".join(c.replace("_", " ") for c in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for name, m in rows.items():
        cells = [f"{m[c]:.0f}" if c == "median_rank" else f"{m[c]:.3f}" for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
