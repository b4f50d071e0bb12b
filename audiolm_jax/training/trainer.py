"""What every `train/<model>.py` does before and after its loop.

`prepare_run` creates the work directory, initializes multi-host JAX when the
config asks, writes `config.json`, builds the mesh and rules and checks that
the batch splits over them; `finish_run` warns about skipped files and writes
`summary.json`. Model-specific work (pipelines, init and step functions,
evaluation) stays in the trainer.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, NamedTuple

import jax

from audiolm_jax.training import loop as loop_lib
from audiolm_jax.training import mesh as mesh_lib


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
        (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
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
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
