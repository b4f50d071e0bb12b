"""Orbax checkpoints that survive preemption, many hosts and damaged files.

One checkpoint step holds four things:
  state           the train state pytree (sharded arrays; restored onto any mesh)
  iterators       one JSON file per process with that process's data-iterator
                  position (`process_<i>-of-<n>.json`), so every host resumes on
                  its own next batch even when the hosts' shards skipped
                  different numbers of bad files
  meta            {"model": ..., "step": ..., "process_count": ...}
  integrity.json  every file of the step with its size and SHA-256, written by
                  process 0 once Orbax has finalized the step

Saving refuses a non-finite state (`NonFiniteStateError` names the step and
the first bad leaf), so a blown-up state never replaces the last good step.
Restoring walks the kept steps from the newest: a step whose files are
missing, truncated or changed (checked against `integrity.json`), or that
Orbax cannot read, is skipped with a warning naming the step and the file,
and the newest intact step is restored. A step killed mid-save (`kill -9`
during an async save) never became a step: Orbax writes into a temporary
folder and renames it only when every process has committed.

Hashing costs one read of the checkpoint per save (about a second per GB),
on process 0, while the next steps run; it is what catches silent damage that
Orbax's own reader does not (a garbled data chunk can restore without error).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from audiolm_jax.families import canonical_model_name
from audiolm_jax.files import write_json_atomic, write_text_atomic
from audiolm_jax.training.metrics import NonFiniteError

INTEGRITY_FILE = "integrity.json"


class CheckpointMismatchError(ValueError):
    """The checkpoint on disk does not belong to the model being restored."""


class DamagedCheckpointError(RuntimeError):
    """A checkpoint step has a missing, truncated or changed file, or cannot be read."""


class NoIntactCheckpointError(FileNotFoundError):
    """Every kept checkpoint step is damaged; the message lists each step and why."""


class NonFiniteStateError(NonFiniteError):
    """A state about to be saved holds NaN or inf; the message names the step and leaf."""


# ----------------------------------------------------------------------------
# Finiteness of a whole state


@jax.jit
def _leaf_is_finite(leaves: list[jax.Array]) -> jax.Array:
    """[num leaves] bool: whether each (floating) leaf is entirely finite."""
    return jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])


def _is_float(x: Any) -> bool:
    dtype = getattr(x, "dtype", None)
    if dtype is None or jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return False
    return bool(jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.complexfloating))


def first_nonfinite_leaf(tree: Any) -> str | None:
    """The path (e.g. "opt_state/0/mu/encoder/kernel") of the first floating leaf of
    `tree` holding NaN or inf, or None when every leaf is finite.

    One jitted reduction over all leaves (sharded leaves stay sharded; only a
    bool per leaf comes back to the host), so it is cheap next to a save.
    """
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    floats = [(path, leaf) for path, leaf in flat if _is_float(leaf)]
    if not floats:
        return None
    ok = np.asarray(jax.device_get(_leaf_is_finite([leaf for _, leaf in floats])))
    for (path, _), finite in zip(floats, ok):
        if not finite:
            return "/".join(_key_name(k) for k in path)
    return None


def _key_name(key: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


# ----------------------------------------------------------------------------
# One JSON item per process: each host's data-iterator position


@dataclasses.dataclass
class ProcessStateSave(ocp.args.CheckpointArgs):
    """This process's iterator state (captured when `save` is called)."""

    state: dict


@dataclasses.dataclass
class ProcessStateRestore(ocp.args.CheckpointArgs):
    pass


def _process_file(directory: epath.Path) -> epath.Path:
    return epath.Path(directory) / f"process_{jax.process_index()}-of-{jax.process_count()}.json"


class ProcessStateHandler(ocp.CheckpointHandler):
    """Writes `process_<i>-of-<n>.json` from every process (Grain's own handler does
    the same, but needs the live iterator; this one takes the state captured at
    the save call, so an async save can never record a later position)."""

    def save(self, directory: epath.Path, args: ProcessStateSave) -> None:
        write_text_atomic(Path(_process_file(directory)), json.dumps(args.state, indent=1))

    def restore(self, directory: epath.Path, args: ProcessStateRestore | None = None) -> dict:
        path = Path(_process_file(directory))
        if not path.is_file():
            saved = sorted(p.name for p in Path(directory).glob("process_*.json"))
            raise CheckpointMismatchError(
                f"{directory} has no data-iterator state for process {jax.process_index()} of "
                f"{jax.process_count()} (it has {saved}): the checkpoint was written by another "
                "number of processes, and the hosts' data positions cannot be mapped onto this "
                "one; resume with the same number of processes")
        return json.loads(path.read_text(encoding="utf-8"))

    def metadata(self, directory: epath.Path) -> None:
        return None

    def structure(self, directory: epath.Path) -> None:
        return None

    def finalize(self, directory: epath.Path) -> None:
        pass

    def close(self) -> None:
        pass


ocp.args.register_with_handler(ProcessStateHandler, for_save=True)(ProcessStateSave)
ocp.args.register_with_handler(ProcessStateHandler, for_restore=True)(ProcessStateRestore)


# ----------------------------------------------------------------------------
# Integrity manifests


def _file_digest(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_integrity(step_dir: Path) -> Path:
    """Writes `step_dir/integrity.json`: size and SHA-256 of every other file."""
    files = {}
    for path in sorted(p for p in step_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(step_dir).as_posix()
        if rel == INTEGRITY_FILE or ".tmp" in path.name:
            continue
        files[rel] = {"bytes": path.stat().st_size, "sha256": _file_digest(path)}
    return write_json_atomic(step_dir / INTEGRITY_FILE, {"files": files}, indent=1)


def verify_integrity(step_dir: Path) -> str | None:
    """Why `step_dir` is damaged ("state/d/ab12 is truncated (5 of 2824 bytes)"), or None
    when every file listed in its `integrity.json` is present and unchanged (or it has
    no integrity.json: a step written before manifests existed)."""
    manifest_path = step_dir / INTEGRITY_FILE
    if not manifest_path.is_file():
        return None
    try:
        files = json.loads(manifest_path.read_text())["files"]
    except (ValueError, KeyError, UnicodeDecodeError) as e:
        return f"{INTEGRITY_FILE} is unreadable ({e})"
    for rel, want in files.items():
        path = step_dir / rel
        if not path.is_file():
            return f"{rel} is missing"
        size = path.stat().st_size
        if size != want["bytes"]:
            what = "truncated" if size < want["bytes"] else "longer than written"
            return f"{rel} is {what} ({size} of {want['bytes']} bytes)"
        if _file_digest(path) != want["sha256"]:
            return f"{rel} has changed since it was written (SHA-256 differs)"
    return None


# ----------------------------------------------------------------------------


class Checkpointer:
    """A `CheckpointManager` with async saves, keep-N, integrity checks and fallback restore.

    Args:
      directory: where the step folders go (created).
      model_name: written into every checkpoint and checked on restore.
      save_every: save on steps divisible by this (a forced save ignores it).
      keep: how many recent checkpoints to keep (the fallbacks when the newest is damaged).
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
        self._is_primary = jax.process_index() == 0

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def reached_preemption(self, step: int) -> bool:
        """True on every process at the same step once any host got SIGTERM (multi-host
        runs under `jax.distributed`; always False on one process)."""
        return bool(self.manager.reached_preemption(step))

    def save(self, step: int, state: Any, data_state: dict | None = None,
             force: bool = False) -> bool:
        """Saves (asynchronously) if `step` is due or `force`; returns whether it saved.

        Args:
          data_state: this process's data-iterator state (each process passes its own).

        Raises:
          NonFiniteStateError: `state` holds NaN or inf (nothing is written).
        """
        if not (force or self.manager.should_save(step)):
            return False
        bad = first_nonfinite_leaf(state)
        if bad is not None:
            raise NonFiniteStateError(
                f"step {step}: the train state is not finite at {bad!r}; not saving it "
                f"(the newest checkpoint in {self.directory}, step {self.latest_step()}, is "
                "the last good one)")
        self._write_pending_integrity()
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            iterators=ProcessStateSave(dict(data_state or {})),
            meta=ocp.args.JsonSave({"model": self.model_name, "step": int(step),
                                    "process_count": jax.process_count()}),
        )
        return self.manager.save(step, args=args, force=True)

    def _write_pending_integrity(self) -> None:
        """Manifests for every finalized step that lacks one (after the previous async
        save has finished, which `CheckpointManager.save` waits for anyway)."""
        self.manager.wait_until_finished()
        if not self._is_primary:
            return
        for step in self.manager.all_steps():
            step_dir = self.directory / str(step)
            if step_dir.is_dir() and not (step_dir / INTEGRITY_FILE).exists():
                write_integrity(step_dir)

    def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict, int]:
        """Restores `step`, or the newest intact kept step, onto `abstract_state`'s shardings.

        Args:
          abstract_state: pytree of `jax.ShapeDtypeStruct` with `.sharding` set; the
            mesh may differ from the one the checkpoint was saved from.
          step: a given step (no fallback), or None for the newest intact one.

        Returns:
          (state, this process's data-iterator state, step).

        Raises:
          FileNotFoundError: no checkpoint at all.
          NoIntactCheckpointError: every kept step is damaged (each one named).
          CheckpointMismatchError: another model, or a state of another shape.
        """
        steps = [step] if step is not None else sorted(self.manager.all_steps(), reverse=True)
        if not steps:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        damaged, damaged_steps = [], []
        for candidate in steps:
            try:
                restored = self._restore_step(candidate, abstract_state)
            except DamagedCheckpointError as e:
                damaged.append(str(e))
                damaged_steps.append(candidate)
                older = [s for s in steps if s < candidate]
                logging.warning("%s; %s", e, f"falling back to step {older[0]}" if older
                                else "no older step is kept")
                continue
            self._set_aside(damaged_steps)
            return restored
        raise NoIntactCheckpointError(
            f"no intact checkpoint in {self.directory}: " + "; ".join(damaged)
            + ". Delete the damaged step folders to start over, or restore a copy.")

    def _set_aside(self, steps: list[int]) -> None:
        """Renames damaged steps newer than the restored one to `<step>.damaged`, so the
        resumed run can save those steps again and the files stay for inspection."""
        if not steps:
            return
        if self._is_primary:
            for step in steps:
                source = self.directory / str(step)
                target = self.directory / f"{step}.damaged"
                suffix = 1
                while target.exists():
                    target = self.directory / f"{step}.damaged{suffix}"
                    suffix += 1
                source.rename(target)
                logging.warning("moved the damaged checkpoint step %d to %s", step, target)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("audiolm_jax: damaged checkpoints set aside")
        self.manager.reload()

    def _restore_step(self, step: int, abstract_state: Any) -> tuple[Any, dict, int]:
        step_dir = self.directory / str(step)
        problem = verify_integrity(step_dir)
        if problem is not None:
            raise DamagedCheckpointError(f"checkpoint step {step} in {self.directory} is damaged: {problem}")
        verified = (step_dir / INTEGRITY_FILE).is_file()
        try:
            meta = self.manager.restore(step, args=ocp.args.Composite(
                meta=ocp.args.JsonRestore()))["meta"]
        except Exception as e:  # noqa: BLE001 - any failure to read is damage
            raise DamagedCheckpointError(
                f"checkpoint step {step} in {self.directory} is damaged: meta is unreadable "
                f"({type(e).__name__}: {_short(e)})") from e
        found = meta.get("model")
        if canonical_model_name(found) != canonical_model_name(self.model_name):
            raise CheckpointMismatchError(
                f"checkpoint {step_dir} holds model {found!r}, not {self.model_name!r}")
        has_iterators = (step_dir / "iterators").is_dir()
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if has_iterators:
            items["iterators"] = ProcessStateRestore()
        elif (step_dir / "data").is_dir():  # written before per-process iterator states
            if jax.process_count() > 1:
                raise CheckpointMismatchError(
                    f"checkpoint {step_dir} holds one data-iterator state for all processes "
                    "(an older format); a multi-process run cannot resume from it")
            items["data"] = ocp.args.JsonRestore()
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        except CheckpointMismatchError:
            raise
        except Exception as e:  # noqa: BLE001
            if verified:  # the files are as written: the state's structure differs
                raise CheckpointMismatchError(
                    f"checkpoint {step_dir} does not match this model's state (different "
                    f"config?): {_short(e)}") from e
            raise DamagedCheckpointError(
                f"checkpoint step {step} in {self.directory} cannot be restored ({type(e).__name__}: {_short(e)}; "
                "damaged, or a different config)") from e
        data_state = restored.get("iterators") if has_iterators else restored.get("data")
        logging.info("restored step %d from %s", step, self.directory)
        return restored["state"], dict(data_state or {}), int(step)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        """Waits for an in-flight save, writes its integrity manifest, closes."""
        try:
            self._write_pending_integrity()
        finally:
            self.manager.close()


def _short(error: BaseException, limit: int = 400) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[:limit] + " ..."
