"""What every `train/<model>.py` does before and after its loop.

`prepare_run` creates the work directory, initializes multi-host JAX when the
config asks, writes `config.json`, builds the mesh and rules and checks that
the batch splits over them; `finish_run` warns about skipped files and writes
`summary.json`; `write_loss_plot` draws chosen metrics from `metrics.jsonl`;
`main` is every trainer's command line (`--config`, `--workdir`, overrides).
Model-specific work (pipelines, init and step functions, evaluation) stays in
the trainer, which keeps the Flax examples' shape:

    def train_and_evaluate(config, workdir) -> result: ...

    if __name__ == "__main__":
        trainer_lib.main(train_and_evaluate, report)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jax
from absl import app, flags
from ml_collections import config_flags

from audiolm_jax.eval.plots import plot_curves
from audiolm_jax.files import write_text_atomic
from audiolm_jax.training import loop as loop_lib
from audiolm_jax.training import mesh as mesh_lib
from audiolm_jax.training.metrics import read_metrics


class RunSetup(NamedTuple):
    workdir: Path
    mesh: jax.sharding.Mesh
    rules: list
    loop: loop_lib.LoopConfig


def prepare_run(config: Any, workdir: str | Path) -> RunSetup:
    """Work directory, distributed init, `config.json`, mesh, rules and loop settings.

    Raises:
      ValueError: naming `data.batch_size` when the data*fsdp mesh does not divide it.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    mesh_lib.maybe_initialize_distributed(config)
    if jax.process_index() == 0:
        write_text_atomic(workdir / "config.json", config.to_json_best_effort(indent=2))
    mesh = mesh_lib.create_mesh(dict(config.mesh.shape))
    rules = mesh_lib.get_rules(config.mesh.rules)
    divisor = mesh_lib.global_batch_size_divisor(mesh)
    if config.data.batch_size % divisor:
        raise ValueError(f"data.batch_size={config.data.batch_size} is not divisible by the "
                         f"data*fsdp mesh size {divisor}")
    return RunSetup(workdir, mesh, rules, loop_lib.LoopConfig.from_config(config.train))


def finish_run(workdir: Path, result: loop_lib.LoopResult, report: Any) -> None:
    """Warns about files the pipeline skipped; writes `summary.json` (process 0)."""
    if report.count:
        logging.warning("the pipeline skipped %d bad files", report.count)
    if jax.process_index() != 0:
        return
    summary = {"last_step": result.last_step, "interrupted": result.interrupted,
               "bad_files": report.files}
    if result.history:
        summary["final_train"] = result.history[-1]
    write_text_atomic(workdir / "summary.json", json.dumps(summary, indent=2))


def write_loss_plot(workdir: Path, curves: Mapping[str, str], *, ylabel: str, title: str,
                    name: str = "losses.png") -> Path | None:
    """Plots metrics from `workdir/metrics.jsonl` to `workdir/plots/<name>`.

    Args:
      curves: legend label -> metric key (e.g. `{"train: InfoNCE": "train/loss"}`);
        a key no row has is left out.

    Returns:
      The PNG's path, or None when no curve has a point.
    """
    rows = read_metrics(workdir)
    points = {label: ([r["step"] for r in rows if key in r], [r[key] for r in rows if key in r])
              for label, key in curves.items()}
    points = {label: xy for label, xy in points.items() if xy[0]}
    if not points:
        return None
    path = workdir / "plots" / name
    plot_curves(points, path, ylabel=ylabel, title=title)
    return path


def report_train_loss(result: loop_lib.LoopResult, config: Any, workdir: Path) -> str:
    """The one-line summary most trainers print: the last step and its train loss."""
    del config
    if not result.history:
        return f"nothing to train: already at step {result.last_step}; outputs in {workdir}"
    return (f"step {result.last_step}: train loss {result.history[-1]['loss']:.4f}; outputs in "
            f"{workdir}")


def main(train_and_evaluate: Callable[[Any, str], Any],
         report: Callable[[Any, Any, Path], str] | None = None) -> None:
    """The command line of a `train/<family>.py`.

    Defines `--config` (an `ml_collections` file; any field can be overridden
    as `--config.a.b=value`, and a typo is an error) and `--workdir`, runs
    `train_and_evaluate(config, workdir)` and prints `report(result, config,
    workdir)`. Flags are defined here, not at import, so scripts stay importable.
    """
    config_flags.DEFINE_config_file("config", None, "Path to a config file.", lock_config=True)
    flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and plots go.")

    def run(argv: list[str]) -> None:
        del argv
        FLAGS = flags.FLAGS
        if FLAGS.config is None or FLAGS.workdir is None:
            raise app.UsageError("--config and --workdir are required")
        logging.getLogger().setLevel(logging.INFO)
        result = train_and_evaluate(FLAGS.config, FLAGS.workdir)
        if report is not None:
            print(report(result, FLAGS.config, Path(FLAGS.workdir)))

    app.run(run)
