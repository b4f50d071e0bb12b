"""A process of the fault-injection tests (tests/test_faults.py), run with subprocess.

    python tests/fault_worker.py multihost --process-id 0 --port P --workdir W --folder F \
        --out out0.json [--sigterm-after N]
    python tests/fault_worker.py kill9 --workdir W --out steps.jsonl --num-steps 1000

`multihost`: one of two processes under `jax.distributed` (4 simulated CPU
devices each, one 8-device data-parallel mesh) training a toy regression on a
real Grain pipeline over an audio folder, each process reading its own shard.
With `--sigterm-after N` the process sends itself a real SIGTERM after its
N-th batch. Writes {"start_step", "last_step", "interrupted", "losses",
"batches" (a hash of each local batch)} to `--out`.

`kill9`: one process training a state of ~64 MB with an asynchronous save
every step, printing each step it finished; the test kills it with SIGKILL
while a save is in flight.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
import time
from pathlib import Path

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=4")
os.environ["JAX_PLATFORMS"] = "cpu"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

CROP = 256


class Recording:
    """Wraps a data iterator: hashes every local batch; optionally SIGTERMs this process."""

    def __init__(self, inner, sigterm_after: int | None):
        self.inner, self.sigterm_after, self.batches = inner, sigterm_after, []

    def __next__(self):
        batch = next(self.inner)
        self.batches.append(hashlib.sha1(batch["audio"].tobytes()).hexdigest()[:12])
        if self.sigterm_after == len(self.batches):
            os.kill(os.getpid(), signal.SIGTERM)
        if self.sigterm_after is not None and len(self.batches) >= self.sigterm_after:
            # The preemption service agrees on a sync step asynchronously (RPCs to
            # the coordinator); on a loaded CPU that takes a while, and the toy
            # steps take milliseconds. Slow this host down (the other waits in
            # the collectives) so the run cannot end before the sync point.
            time.sleep(0.05)
        return batch

    def get_state(self):
        return self.inner.get_state()

    def set_state(self, state):
        self.inner.set_state(state)


def regression(tx):
    """A toy model whose loss depends on every example: predict each crop's RMS."""

    def init_fn(rng):
        params = {"w": 0.01 * jax.random.normal(rng, (CROP,)), "b": jnp.zeros(())}
        return {"params": params, "opt": tx.init(params), "step": jnp.zeros((), jnp.int32)}

    def train_step(state, batch, rng):
        x = batch["audio"][..., 0]
        target = jnp.sqrt(jnp.mean(x * x, axis=-1))

        def loss_fn(params):
            return jnp.mean((jnp.abs(x) @ params["w"] + params["b"] - target) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(state["params"])
        updates, opt = tx.update(grads, state["opt"], state["params"])
        return ({"params": optax.apply_updates(state["params"], updates), "opt": opt,
                 "step": state["step"] + 1}, {"loss": loss})

    return init_fn, train_step


def multihost(args) -> None:
    jax.distributed.initialize(f"localhost:{args.port}", num_processes=2,
                               process_id=args.process_id)
    from audiolm_jax.data.pipeline import make_audio_pipeline
    from audiolm_jax.data.sources import AudioFolderSource
    from audiolm_jax.training import loop as loop_lib
    from audiolm_jax.training import mesh as mesh_lib

    assert jax.process_count() == 2 and len(jax.devices()) == 8
    mesh = mesh_lib.create_mesh((8, 1, 1), jax.devices())
    source = AudioFolderSource(args.folder, check_headers=False)
    pipeline = make_audio_pipeline(source, sample_rate=8_000, crop_samples=CROP, batch_size=4,
                                   seed=3, num_threads=1)
    data = Recording(iter(pipeline), args.sigterm_after)
    losses = {}
    init_fn, train_step = regression(optax.adam(3e-2))
    result = loop_lib.run(
        loop=loop_lib.LoopConfig(num_steps=args.num_steps, save_every=10_000, log_every=1,
                                 progress=False),
        workdir=args.workdir, model_name="toy", mesh=mesh, rules=mesh_lib.get_rules("dp"),
        init_fn=init_fn, train_step=train_step, data_iter=data,
        on_step=lambda s, m: losses.__setitem__(s, m["loss"]))
    # Eval data must be the same on every host: identical arrays are replicated,
    # process-dependent ones refused.
    same = mesh_lib.replicate_host_arrays({"x": np.arange(6.0)}, mesh, "the same arrays")
    try:
        mesh_lib.replicate_host_arrays({"x": np.full(6, float(jax.process_index()))}, mesh,
                                       "per-process arrays")
        refused = ""
    except ValueError as e:
        refused = str(e)
    Path(args.out).write_text(json.dumps({
        "replicated_sum": float(jax.jit(lambda t: t["x"].sum())(same)),
        "refused": refused,
        "start_step": result.start_step, "last_step": result.last_step,
        "interrupted": result.interrupted, "losses": losses, "batches": data.batches,
        "bad_files": sorted(pipeline.report.files)}))


def kill9(args) -> None:
    from audiolm_jax.training import loop as loop_lib
    from audiolm_jax.training import mesh as mesh_lib

    mesh = mesh_lib.create_mesh((1, 1, 1), jax.devices()[:1])

    def init_fn(rng):
        return {"big": jnp.zeros((16 * 1024 * 1024,)), "step": jnp.zeros((), jnp.int32)}

    def train_step(state, batch, rng):  # after step s every element equals s
        return {"big": state["big"] + 1.0, "step": state["step"] + 1}, {"loss": state["big"][0]}

    class Ones:
        def __next__(self):
            return {"x": np.ones((1, 1), np.float32)}

        def get_state(self):
            return {}

        def set_state(self, state):
            pass

    out = open(args.out, "a")  # noqa: SIM115 - one line per step, flushed

    def on_step(step, metrics):
        out.write(json.dumps({"step": step}) + "\n")
        out.flush()

    loop_lib.run(loop=loop_lib.LoopConfig(num_steps=args.num_steps, save_every=1, keep_checkpoints=3,
                                          log_every=1, progress=False),
                 workdir=args.workdir, model_name="toy", mesh=mesh,
                 rules=mesh_lib.get_rules("dp"), init_fn=init_fn, train_step=train_step,
                 data_iter=Ones(), on_step=on_step)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["multihost", "kill9"])
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--folder")
    parser.add_argument("--out", required=True)
    parser.add_argument("--num-steps", type=int, default=200)
    parser.add_argument("--sigterm-after", type=int)
    args = parser.parse_args()
    (multihost if args.mode == "multihost" else kill9)(args)


if __name__ == "__main__":
    main()
