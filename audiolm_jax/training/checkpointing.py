"""Orbax checkpoints: the train state, the data iterator's position and a model tag.

One checkpoint step holds three items:
  state  the train state pytree (sharded arrays; restored onto any mesh)
  data   the Grain iterator state, so a resumed run sees the same batches
  meta   {"model": ..., "step": ...}, to refuse a checkpoint of another model
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp

from audiolm_jax.families import canonical_model_name


class CheckpointMismatchError(ValueError):
    """The checkpoint on disk does not belong to the model being restored."""


class Checkpointer:
    """A `CheckpointManager` with async saves, keep-N and latest-step restore.

    Args:
      directory: where the step folders go (created).
      model_name: written into every checkpoint and checked on restore.
      save_every: save on steps divisible by this (a forced save ignores it).
      keep: how many recent checkpoints to keep.
      async_save: write in a background thread while training continues.
    """

    def __init__(self, directory: str | os.PathLike, model_name: str, save_every: int = 1000,
                 keep: int = 3, async_save: bool = True):
        self.directory = Path(directory).absolute()
        self.model_name = model_name
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, save_interval_steps=save_every, create=True,
            enable_async_checkpointing=async_save)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, data_state: dict | None = None,
             force: bool = False) -> bool:
        """Saves (asynchronously) if `step` is due or `force`; returns whether it saved."""
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(data_state or {}),
            meta=ocp.args.JsonSave({"model": self.model_name, "step": int(step)}),
        )
        return self.manager.save(step, args=args, force=force)

    def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict, int]:
        """Restores `step` (the latest when None) onto the shardings in `abstract_state`.

        Args:
          abstract_state: pytree of `jax.ShapeDtypeStruct` with `.sharding` set; the
            mesh may differ from the one the checkpoint was saved from.

        Returns:
          (state, data iterator state, step).
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        found = meta["meta"].get("model")
        if canonical_model_name(found) != canonical_model_name(self.model_name):
            raise CheckpointMismatchError(
                f"checkpoint {self.directory}/{step} holds model {found!r}, "
                f"not {self.model_name!r}")
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointMismatchError(
                f"checkpoint {self.directory}/{step} does not match this model's state "
                f"(different config?): {e}") from e
        logging.info("restored step %d from %s", step, self.directory)
        return restored["state"], dict(restored["data"] or {}), int(step)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
