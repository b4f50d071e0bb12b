"""Figures written by trainers: spectrogram panels and learning curves (PNG)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from audiolm_jax.files import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on training machines
    import matplotlib.pyplot as plt

    return plt


def plot_spectrograms(panels: Sequence[tuple[str, np.ndarray]], path: str | os.PathLike,
                      title: str | None = None, frames_per_second: float | None = None) -> None:
    """Stacks `[frames, bins]` spectrograms vertically, one shared colour scale.

    Args:
      panels: (label, [frames, bins] array) pairs, e.g. ground truth and decoded.
      path: PNG file to write.
      frames_per_second: label the x axis in seconds when given.
    """
    plt = _pyplot()
    arrays = [np.asarray(a, np.float32) for _, a in panels]
    vmin = min(float(np.percentile(a, 1)) for a in arrays)
    vmax = max(float(np.percentile(a, 99.5)) for a in arrays)
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 2.4 * len(panels)), squeeze=False,
                             layout="constrained")
    for ax, (label, _), array in zip(axes[:, 0], panels, arrays):
        extent = None
        if frames_per_second:
            extent = (0, array.shape[0] / frames_per_second, 0, array.shape[1])
        im = ax.imshow(array.T, origin="lower", aspect="auto", vmin=vmin, vmax=vmax,
                       cmap="magma", extent=extent, interpolation="nearest")
        ax.set_ylabel("mel bin")
        ax.set_title(label, fontsize=10, loc="left")
    axes[-1, 0].set_xlabel("seconds" if frames_per_second else "frame")
    fig.colorbar(im, ax=axes[:, 0].tolist(), shrink=0.8, label="value")
    if title:
        fig.suptitle(title)
    _save(fig, path)


def plot_curves(curves: dict[str, tuple[Sequence[float], Sequence[float]]],
                path: str | os.PathLike, ylabel: str = "loss", title: str | None = None) -> None:
    """Line plot of named (steps, values) curves."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, (steps, values) in curves.items():
        ax.plot(steps, values, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    _save(fig, path)


def _save(fig, path: str | os.PathLike) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:   # no half-written PNG if the run dies mid-save
        fig.savefig(tmp, dpi=110)
    fig.clf()
    import matplotlib.pyplot as plt

    plt.close(fig)
