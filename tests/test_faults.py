"""Fault injection: preemption of one host of two, kill -9 during an async save,
a non-finite state on a save step, damaged checkpoint files. docs/training.md's
fault table points at these tests."""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf
from test_training_loop import FixedBatch

from audiolm_jax.training import loop as loop_lib
from audiolm_jax.training import mesh as mesh_lib
from audiolm_jax.training.checkpointing import (
    Checkpointer,
    NoIntactCheckpointError,
    NonFiniteStateError,
    first_nonfinite_leaf,
)

WORKER = Path(__file__).with_name("fault_worker.py")


def _worker_env():
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)   # the worker sets its own device count (4)
    return env


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _run_pair(workdir, folder, out_dir, tag, sigterm_after=None):
    """Runs the two processes of one multi-host job; returns their JSON reports."""
    port = _free_port()
    procs = []
    for pid in (0, 1):
        cmd = [sys.executable, str(WORKER), "multihost", "--process-id", str(pid), "--port",
               str(port), "--workdir", str(workdir), "--folder", str(folder),
               "--out", str(out_dir / f"{tag}{pid}.json")]
        if sigterm_after is not None and pid == 1:
            cmd += ["--sigterm-after", str(sigterm_after)]
        procs.append(subprocess.Popen(cmd, env=_worker_env(), stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    logs = [p.communicate(timeout=240)[0] for p in procs]
    for pid, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"process {pid} of {tag} exited {p.returncode}:\n{log[-3000:]}"
    return [json.loads((out_dir / f"{tag}{pid}.json").read_text()) for pid in (0, 1)]


def test_sigterm_to_one_of_two_hosts_saves_one_step_and_resumes_the_same_run(tmp_path):
    """Two processes under jax.distributed (4 CPU devices each). Process 0's shard holds
    three undecodable files, so the two shards skip different numbers of files: a
    single shared iterator state would resume one of them on the wrong batch."""
    folder = tmp_path / "folder"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(16):
        path = folder / f"c{i:02d}.wav"
        if i in (0, 4, 8):              # sorted index i -> shard i % 2 = process 0
            path.write_bytes(b"RIFF not really a wav file" * 8)
        else:
            sf.write(path, (0.1 * (1 + i % 5) * rng.standard_normal(2000)).astype(np.float32),
                     8000)
    straight = _run_pair(tmp_path / "straight", folder, tmp_path, "straight")
    assert [r["last_step"] for r in straight] == [200, 200]
    assert len(straight[0]["bad_files"]) == 3 and straight[1]["bad_files"] == []
    # Eval data: the same host arrays on both are replicated; per-process ones refused.
    assert [r["replicated_sum"] for r in straight] == [15.0, 15.0]
    assert all("per-process arrays differ between processes" in r["refused"] for r in straight)

    first = _run_pair(tmp_path / "resumed", folder, tmp_path, "first", sigterm_after=4)
    # Both hosts stopped at the same step (the preemption sync point), saved it, exited 0.
    assert first[0]["interrupted"] and first[1]["interrupted"]
    stop = first[0]["last_step"]
    assert first[1]["last_step"] == stop and 4 <= stop < 200
    assert sorted(int(p.name) for p in (tmp_path / "resumed" / "checkpoints").iterdir()
                  if p.name.isdigit()) == [stop]
    assert sorted(p.name for p in (tmp_path / "resumed" / "checkpoints" / str(stop)
                                   / "iterators").glob("*.json")) == [
        "process_0-of-2.json", "process_1-of-2.json"]

    second = _run_pair(tmp_path / "resumed", folder, tmp_path, "second")
    for pid in (0, 1):
        assert second[pid]["start_step"] == stop and second[pid]["last_step"] == 200
        # The same per-process batches, in order, as the uninterrupted run ...
        assert first[pid]["batches"] + second[pid]["batches"] == straight[pid]["batches"]
        # ... and the same loss curve.
        losses = {**first[pid]["losses"], **second[pid]["losses"]}
        np.testing.assert_allclose([losses[k] for k in sorted(losses, key=int)],
                                   [straight[pid]["losses"][k]
                                    for k in sorted(straight[pid]["losses"], key=int)],
                                   rtol=1e-6)


def _toy(tmp_path, num_steps, save_every=1, blow_up_at=None, async_checkpoints=True):
    """A one-device toy run whose state after step s is {"w": s * ones}."""
    mesh = mesh_lib.create_mesh((1, 1, 1), jax.devices()[:1])

    def init_fn(rng):
        return {"w": jnp.zeros((4,)), "opt": {"mu": jnp.zeros((4,))},
                "step": jnp.zeros((), jnp.int32)}

    def train_step(state, batch, rng):
        step = state["step"] + 1
        mu = state["opt"]["mu"]
        if blow_up_at is not None:   # the optimizer state blows up; the loss stays finite
            mu = jnp.where(step >= blow_up_at, jnp.inf, mu)
        return ({"w": state["w"] + 1.0, "opt": {"mu": mu}, "step": step},
                {"loss": jnp.sum(state["w"]) * 0.0 + 1.0})

    class Counter:
        def __init__(self):
            self.position = 0

        def __next__(self):
            self.position += 1
            return {"x": np.ones((1, 1), np.float32)}

        def get_state(self):
            return {"position": self.position}

        def set_state(self, state):
            self.position = state["position"]

    data = Counter()
    result = loop_lib.run(
        loop=loop_lib.LoopConfig(num_steps=num_steps, save_every=save_every, log_every=1,
                                 keep_checkpoints=3, progress=False,
                                 async_checkpoints=async_checkpoints),
        workdir=tmp_path, model_name="toy", mesh=mesh, rules=mesh_lib.get_rules("dp"),
        init_fn=init_fn, train_step=train_step, data_iter=data)
    return result, data


def test_kill_9_during_an_async_save_resumes_from_the_last_complete_step(tmp_path):
    workdir, steps_file = tmp_path / "run", tmp_path / "steps.jsonl"
    checkpoints = workdir / "checkpoints"
    killed_in_flight = False
    for _attempt in range(3):   # the save must still be in flight when the kill lands
        proc = subprocess.Popen([sys.executable, str(WORKER), "kill9", "--workdir", str(workdir),
                                 "--out", str(steps_file), "--num-steps", "1000"],
                                env=_worker_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.005)
            done = steps_file.read_text().count("\n") if steps_file.exists() else 0
            if done >= 3 and checkpoints.is_dir() and any(
                    "tmp" in p.name for p in checkpoints.iterdir()):
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL, "the worker ended before it was killed"
        if any("tmp" in p.name for p in checkpoints.iterdir()):
            killed_in_flight = True
            break
    assert killed_in_flight, "three kills all landed between saves"
    complete = max(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit())
    abstract = {"big": jax.ShapeDtypeStruct((16 * 1024 * 1024,), jnp.float32,
                                            sharding=jax.sharding.SingleDeviceSharding(
                                                jax.devices()[0])),
                "step": jax.ShapeDtypeStruct((), jnp.int32, sharding=jax.sharding.
                                             SingleDeviceSharding(jax.devices()[0]))}
    ckpt = Checkpointer(checkpoints, "toy")
    state, _, step = ckpt.restore(abstract)
    ckpt.close()
    assert step == complete and int(state["step"]) == complete
    assert float(state["big"].min()) == float(state["big"].max()) == complete
    # And the run itself resumes there and saves again over the half-written step.
    proc = subprocess.run([sys.executable, str(WORKER), "kill9", "--workdir", str(workdir),
                           "--out", str(tmp_path / "resumed.jsonl"),
                           "--num-steps", str(complete + 2)],
                          env=_worker_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    resumed = [json.loads(line)["step"] for line in (tmp_path / "resumed.jsonl").read_text().splitlines()]
    assert resumed == [complete + 1, complete + 2]


def test_a_non_finite_state_is_never_saved_and_the_last_good_step_restores(tmp_path):
    with pytest.raises(NonFiniteStateError, match=r"step 4: the train state is not finite at "
                       r"'opt/mu'.*step 3, is the last good one"):
        _toy(tmp_path, num_steps=8, save_every=1, blow_up_at=4)
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [1, 2, 3]                       # nothing at 4; the async save of 3 finished
    assert all((tmp_path / "checkpoints" / str(s) / "integrity.json").is_file() for s in steps)
    result, data = _toy(tmp_path, num_steps=3)      # resumes the intact step 3
    assert result.start_step == 3 and data.position == 3
    assert float(result.state["w"][0]) == 3.0


def test_first_nonfinite_leaf_names_the_path():
    tree = {"a": jnp.ones(3), "b": [jnp.zeros(2), jnp.array([1.0, jnp.nan])],
            "n": jnp.arange(3), "k": jax.random.key(0)}
    assert first_nonfinite_leaf(tree) == "b/1"
    assert first_nonfinite_leaf({"a": jnp.ones(3), "n": jnp.arange(3)}) is None


def _damage(step_dir: Path, how: str) -> str:
    """Damages the largest array chunk of a step (or its metadata); returns the file."""
    chunks = sorted((p for p in (step_dir / "state").rglob("*") if p.is_file()
                     and "/d/" in p.as_posix()), key=lambda p: p.stat().st_size)
    target = chunks[-1] if how != "metadata" else step_dir / "state" / "_METADATA"
    data = target.read_bytes()
    if how == "truncated":
        target.write_bytes(data[:len(data) // 2])
    elif how in ("garbled", "metadata"):
        middle = len(data) // 2
        target.write_bytes(data[:middle] + bytes(b ^ 0x5A for b in data[middle:middle + 16])
                           + data[middle + 16:])
    elif how == "missing":
        target.unlink()
    return target.relative_to(step_dir).as_posix()


@pytest.mark.parametrize("how", ["truncated", "garbled", "missing", "metadata"])
def test_a_damaged_latest_step_falls_back_to_the_newest_intact_one(tmp_path, caplog, how):
    _toy(tmp_path, num_steps=3)
    damaged_file = _damage(tmp_path / "checkpoints" / "3", how)
    with caplog.at_level(logging.WARNING):
        result, data = _toy(tmp_path, num_steps=5)
    warning = "\n".join(r.getMessage() for r in caplog.records)
    assert f"checkpoint step 3 in {tmp_path / 'checkpoints'} is damaged: {damaged_file}" in warning
    assert "falling back to step 2" in warning
    # Restored at position 2, then three more batches.
    assert result.start_step == 2 and data.position == 5 and float(result.state["w"][0]) == 5.0
    # The damaged step was set aside for inspection, and saved again by the resumed run.
    assert (tmp_path / "checkpoints" / "3.damaged").is_dir()
    assert (tmp_path / "checkpoints" / "3" / "integrity.json").is_file()


def test_no_intact_step_is_a_clear_error(tmp_path):
    _toy(tmp_path, num_steps=2)
    for step in (1, 2):
        _damage(tmp_path / "checkpoints" / str(step), "truncated")
    with pytest.raises(NoIntactCheckpointError, match=r"no intact checkpoint in .*step 2 .*"
                       r"truncated.*step 1 .*truncated"):
        _toy(tmp_path, num_steps=4)


def test_metric_history_is_one_row_per_log_window(tmp_path):
    mesh = mesh_lib.create_mesh((1, 1, 1), jax.devices()[:1])

    def train_step(state, batch, rng):
        return {"step": state["step"] + 1}, {"loss": state["step"].astype(jnp.float32) + 1.0}

    result = loop_lib.run(
        loop=loop_lib.LoopConfig(num_steps=25, save_every=100, log_every=10, progress=False),
        workdir=tmp_path, model_name="toy", mesh=mesh, rules=mesh_lib.get_rules("dp"),
        init_fn=lambda rng: {"step": jnp.zeros((), jnp.int32)}, train_step=train_step,
        data_iter=FixedBatch({"x": np.ones((1, 1), np.float32)}))
    # Window means of losses 1..10, 11..20 and 21..25; nothing per step is kept.
    assert result.history == [{"step": 10, "loss": 5.5}, {"step": 20, "loss": 15.5},
                              {"step": 25, "loss": 23.0}]
