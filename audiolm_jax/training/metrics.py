"""Metric writers (JSONL + TensorBoard) and the non-finite check."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np


class NonFiniteError(FloatingPointError):
    """A metric became NaN or inf; the message names the step and the metric."""


def check_finite(metrics: dict[str, Any], step: int) -> None:
    for name, value in metrics.items():
        if not math.isfinite(float(value)):
            raise NonFiniteError(f"step {step}: metric {name!r} is {float(value)}; stopping "
                                 "(the last checkpoint before this step is intact)")


def to_python(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(np.asarray(v)) for k, v in metrics.items()}


class MetricWriter:
    """Appends `{"step": s, **metrics}` lines to `<workdir>/metrics.jsonl` and
    writes the same scalars as TensorBoard events under `<workdir>/tensorboard`.

    Only process 0 writes, so multi-host runs produce one log.
    """

    def __init__(self, workdir: str | os.PathLike, tensorboard: bool = True,
                 is_writer: bool = True):
        self.workdir = Path(workdir)
        self.is_writer = is_writer
        self._tb = None
        if not is_writer:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._jsonl = (self.workdir / "metrics.jsonl").open("a", encoding="utf-8")
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(self.workdir / "tensorboard"))

    def write(self, step: int, metrics: dict[str, float], prefix: str = "train") -> None:
        if not self.is_writer:
            return
        row = {"step": int(step), **{f"{prefix}/{k}": v for k, v in metrics.items()}}
        self._jsonl.write(json.dumps(row) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for name, value in metrics.items():
                self._tb.add_scalar(f"{prefix}/{name}", value, step)

    def close(self) -> None:
        if not self.is_writer:
            return
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


def read_metrics(workdir: str | os.PathLike) -> list[dict[str, float]]:
    """The rows of `<workdir>/metrics.jsonl`, in order.

    The file is appended to line by line (flushed each time), so a run killed
    mid-write can leave a partial last line: that line is skipped with a
    warning; a bad line anywhere else is an error naming it.
    """
    path = Path(workdir) / "metrics.jsonl"
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            if number == len(lines):
                logging.warning("%s: skipping a partial last line (the run was killed while "
                                "writing it): %.60s", path, line)
                break
            raise ValueError(f"{path} line {number} is not JSON: {e}") from e
    return rows
