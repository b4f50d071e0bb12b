"""The step loop every trainer shares.

A trainer supplies an `init_fn` (PRNG key -> state pytree with logically
annotated params), a pure `train_step(state, batch, rng) -> (state, metrics)`
(or `TrainPhases` of them, for recipes that change step function at set steps)
and a data iterator; the loop does the rest: sharded init or restore, the
jitted step with explicit shardings and donated state, lagged metric fetching
(the host never waits on the step it just dispatched), JSONL/TensorBoard
logging of per-window means (running sums: host memory stays bounded), NaN/inf
detection, async Orbax checkpoints with each process's data-iterator position
(a non-finite state is never saved; a damaged newest step falls back to an
older one), SIGTERM handling that stops every host at the same step, a
progress bar, an optional profiler window and periodic evaluation.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import jax
import numpy as np
from tqdm.auto import tqdm

from audiolm_jax.training import mesh as mesh_lib
from audiolm_jax.training import state as state_lib
from audiolm_jax.training.checkpointing import Checkpointer
from audiolm_jax.training.metrics import MetricWriter, check_finite, to_python


class DataIterator(Protocol):
    """What the loop needs of a data iterator (a Grain `DatasetIterator` is one)."""

    def __next__(self) -> Any: ...
    def get_state(self) -> dict: ...
    def set_state(self, state: dict) -> None: ...


@dataclasses.dataclass
class LoopConfig:
    """Step-loop settings (the `train` block of a config).

    Attributes:
      num_steps: total number of updates of the run (resumes count from the checkpoint).
      log_every: write metrics every this many steps.
      save_every: checkpoint every this many steps (and at the end / on SIGTERM).
      keep_checkpoints: how many checkpoints to keep.
      eval_every: call `eval_fn` every this many steps (0: only at the end).
      seed: PRNG seed of init and of the step's randomness.
      profile_start: first step of a `jax.profiler` trace window (-1: none).
      profile_steps: length of that window.
      async_checkpoints: save in the background.
      progress: show a progress bar.
      init_from: an export directory (`training.export`) whose params replace the
        fresh initialization of the matching parameter tree (a warm start: the
        optimizer, schedule and step start over); ignored when resuming.
    """

    num_steps: int
    log_every: int = 10
    save_every: int = 500
    keep_checkpoints: int = 3
    eval_every: int = 0
    seed: int = 0
    profile_start: int = -1
    profile_steps: int = 5
    async_checkpoints: bool = True
    progress: bool = True
    init_from: str = ""

    @classmethod
    def from_config(cls, config: Any) -> LoopConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(config.keys()) - names
        if unknown:
            raise ValueError(f"unknown train.* fields {sorted(unknown)}; known: {sorted(names)}")
        return cls(**{k: config[k] for k in config.keys()})


@dataclasses.dataclass
class LoopResult:
    """What `run` hands back.

    Attributes:
      state: the final train state.
      history: one row per log window of this invocation, `{"step": last step of
        the window, **the window's mean of each metric}` (bounded: the loop keeps
        running sums, never every step's metrics).
      start_step, last_step: the step this invocation started from and reached.
      interrupted: stopped early by SIGTERM / a synchronized preemption (saved).
    """

    state: Any
    history: list[dict[str, float]]
    start_step: int
    last_step: int
    interrupted: bool


class MetricWindow:
    """Running sums of the metrics of the steps since the last log line."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0

    def add(self, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            self.sums[name] = self.sums.get(name, 0.0) + value
        self.count += 1

    def pop_means(self) -> dict[str, float]:
        means = {name: total / self.count for name, total in self.sums.items()}
        self.sums, self.count = {}, 0
        return means


class _StopRequest:
    """Whether to save and stop after a step, the same answer on every process.

    On one process a SIGTERM handler sets a flag. Under `jax.distributed` with
    several processes the signal goes to one host only, so instead the loop asks
    Orbax (`CheckpointManager.reached_preemption`), whose answer comes from
    JAX's preemption sync service: every process sees True at the same step, so
    all of them save that step and leave the loop together instead of the
    signalled host leaving while the others wait in a collective. (No Python
    handler is installed then: it would replace the service's own.)
    """

    def __init__(self, checkpointer: Checkpointer) -> None:
        self.checkpointer = checkpointer
        self.multi_process = jax.process_count() > 1
        self.raised = False
        self._previous: Any = None

    def __enter__(self) -> _StopRequest:
        if not self.multi_process:
            try:
                self._previous = signal.signal(signal.SIGTERM, self._handle)
            except ValueError:  # not the main thread: no signal handling
                self._previous = None
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        logging.warning("SIGTERM received: saving a checkpoint and stopping")
        self.raised = True

    def after(self, step: int) -> bool:
        """Called once per step, with the same step, on every process."""
        if self.multi_process and not self.raised and self.checkpointer.reached_preemption(step):
            logging.warning("preemption: every process saves step %d and stops", step)
            self.raised = True
        return self.raised

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


@dataclasses.dataclass(frozen=True)
class TrainPhases:
    """Step functions that take over at set steps: `TrainPhases(((0, f), (900, g)))`.

    Step `s` (counting from 0, before its update) runs the phase with the
    largest start <= s. Each phase is jitted the first time it runs, so a run
    that never reaches a phase never compiles it. This is how a GAN turns its
    adversarial losses on late; a `lax.cond` over both phases inside one jitted
    step is the other way, and on CPU it made the codec's step 3.5x slower
    (0.32 -> 1.1 s with configs/codec/tiny.py) even while only the cheap branch
    ran: the conditional keeps XLA from updating the state in place.

    Attributes:
      phases: ((first step, train_step), ...), the first starting at 0.
    """

    phases: tuple[tuple[int, Callable[[Any, Any, jax.Array], tuple[Any, dict]]], ...]

    def __post_init__(self):
        starts = [start for start, _ in self.phases]
        if not starts or starts[0] != 0 or starts != sorted(set(starts)):
            raise ValueError(f"TrainPhases: phase starts must begin at 0 and increase, got {starts}")

    def index_at(self, step: int) -> int:
        """The phase that runs step `step`."""
        return max(i for i, (start, _) in enumerate(self.phases) if start <= step)


def jit_train_step(train_step: Callable, state_shardings: Any, mesh: jax.sharding.Mesh
                   ) -> Callable:
    """`train_step` under `jit`: state in/out in its own layout (donated, updated in
    place), the batch split over data+fsdp, the rng and the metrics replicated."""
    replicated = mesh_lib.replicated(mesh)
    return jax.jit(train_step,
                   in_shardings=(state_shardings, mesh_lib.batch_sharding(mesh), replicated),
                   out_shardings=(state_shardings, replicated), donate_argnums=(0,))


def run(*, loop: LoopConfig, workdir: str | Path, model_name: str, mesh: jax.sharding.Mesh,
        rules: mesh_lib.Rules, init_fn: Callable[[jax.Array], Any],
        train_step: Callable[[Any, Any, jax.Array], tuple[Any, dict]] | TrainPhases,
        data_iter: DataIterator,
        eval_fn: Callable[[Any, int], dict[str, float]] | None = None,
        on_step: Callable[[int, dict[str, float]], None] | None = None,
        post_init: Callable[[Any, Any], Any] | None = None) -> LoopResult:
    """Trains until `loop.num_steps`, resuming from the latest checkpoint in `workdir`.

    Args:
      init_fn: PRNG key -> state pytree (params may be `nn.LogicallyPartitioned`).
      train_step: `(state, global batch, rng) -> (state, scalar metrics)`; pure. The
        rng is the same every step: fold in `state.step` for per-step randomness,
        so a resumed run draws the same numbers. `TrainPhases` switch step
        functions at set steps (every phase keeps the state's structure).
      data_iter: yields this process's share of each batch as numpy pytrees.
      eval_fn: `(state, step) -> metrics`, run every `eval_every` steps and at the end.
      on_step: host callback with each step's fetched metrics (tests, custom logs).
      post_init: `(fresh state, its shardings) -> state`, applied once to a freshly
        initialized state and never to a restored one (e.g. to start a tower from
        imported weights without baking them into the jitted init).

    Returns:
      LoopResult with the final state and the metric history of this invocation.
    """
    workdir = Path(workdir)
    is_main = jax.process_index() == 0
    writer = MetricWriter(workdir, is_writer=is_main)
    ckpt = Checkpointer(workdir / "checkpoints", model_name, save_every=loop.save_every,
                        keep=loop.keep_checkpoints, async_save=loop.async_checkpoints)
    init_rng, step_rng = jax.random.split(jax.random.key(loop.seed))

    abstract, shardings = state_lib.abstract_state(init_fn, mesh, rules, init_rng)
    start_step = 0
    if ckpt.latest_step() is not None:
        try:
            state, data_state, start_step = ckpt.restore(abstract)
        except BaseException:
            ckpt.close()
            writer.close()
            raise
        if data_state:
            data_iter.set_state(data_state)
        logging.info("resuming from step %d", start_step)
    else:
        state, _ = state_lib.create_sharded_state(init_fn, mesh, rules, init_rng)
        if post_init is not None:
            state = post_init(state, shardings)
        if loop.init_from:
            state = state_lib.warm_start(state, shardings, loop.init_from)
    logging.info("parameters: %s", f"{state_lib.count_params(state_lib.params_of(state)):,}")

    phases = train_step if isinstance(train_step, TrainPhases) else TrainPhases(
        ((0, train_step),))
    compiled: dict[int, Callable] = {}

    def step_fn_at(step: int) -> Callable:
        index = phases.index_at(step)
        if index not in compiled:
            if index:
                logging.info("step %d: phase %d of %d starts", step, index + 1,
                             len(phases.phases))
            compiled[index] = jit_train_step(phases.phases[index][1], shardings, mesh)
        return compiled[index]

    history: list[dict[str, float]] = []
    window = MetricWindow()
    pending: tuple[int, Any] | None = None  # (step, its metrics still on device)
    bar = tqdm(total=loop.num_steps, initial=start_step, disable=not (loop.progress and is_main),
               desc=model_name, dynamic_ncols=True)
    step_times: collections.deque[float] = collections.deque(maxlen=max(loop.log_every, 1))
    profiling = False

    last_fetch = [time.perf_counter()]

    def log_window(s: int) -> None:
        if not window.count:
            return
        means = window.pop_means()
        history.append({"step": s, **means})
        seconds = float(np.median(step_times))
        writer.write(s, {**means, "step_seconds": seconds})
        bar.set_postfix(loss=f"{means.get('loss', float('nan')):.4f}", step_s=f"{seconds:.3f}")

    def finish(pending_item: tuple[int, Any]) -> None:
        """Fetches a dispatched step's metrics, checks them, adds them to the window."""
        s, device_metrics = pending_item
        metrics = to_python(jax.device_get(device_metrics))
        # Steady-state step time: the interval between consecutive fetches (the
        # first one includes compilation).
        now = time.perf_counter()
        step_times.append(now - last_fetch[0])
        last_fetch[0] = now
        check_finite(metrics, s)
        window.add(metrics)
        if on_step is not None:
            on_step(s, metrics)
        if s % loop.log_every == 0 or s == loop.num_steps:
            log_window(s)

    step = start_step
    interrupted = False
    # Every exit path (the end, a preemption, a NaN, any exception) closes the
    # checkpointer, which waits for an in-flight async save of an earlier step.
    try:
        with _StopRequest(ckpt) as stop, mesh_lib.sharding_context(mesh, rules):
            while step < loop.num_steps:
                if step == loop.profile_start and is_main:
                    jax.profiler.start_trace(str(workdir / "profile"))
                    profiling = True
                batch = mesh_lib.make_global_batch(next(data_iter), mesh)
                state, device_metrics = step_fn_at(step)(state, batch, step_rng)
                step += 1
                if pending is not None:
                    finish(pending)
                pending = (step, device_metrics)
                bar.update(1)
                if profiling and step >= loop.profile_start + loop.profile_steps:
                    jax.block_until_ready(state)
                    jax.profiler.stop_trace()
                    profiling = False
                stopping = stop.after(step)
                if step % loop.save_every == 0 or stopping:
                    # Check this step's metrics before it can become a checkpoint (the
                    # checkpointer then checks the whole state), so a NaN step never
                    # replaces the last good one.
                    finish(pending)
                    pending = None
                    ckpt.save(step, state, data_iter.get_state(), force=True)
                if eval_fn is not None and loop.eval_every and step % loop.eval_every == 0:
                    writer.write(step, eval_fn(state, step), prefix="eval")
                if stopping:
                    interrupted = True
                    break
            if pending is not None:
                finish(pending)
                pending = None
            log_window(step)
        if not interrupted:
            if ckpt.latest_step() != step:
                ckpt.save(step, state, data_iter.get_state(), force=True)
            if eval_fn is not None and (not loop.eval_every or step % loop.eval_every):
                writer.write(step, eval_fn(state, step), prefix="eval")
    finally:
        if profiling:
            jax.profiler.stop_trace()
        bar.close()
        try:
            ckpt.close()
        finally:
            writer.close()
    return LoopResult(state=state, history=history, start_step=start_step, last_step=step,
                      interrupted=interrupted)
