"""The loop learns, logs, plots, and stops on NaN with the step and metric named."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audiolm_jax.training import loop as loop_lib
from audiolm_jax.training import mesh as mesh_lib
from audiolm_jax.training.metrics import NonFiniteError, read_metrics
from configs.mel_transformer import tiny
from train.mel_transformer import train_and_evaluate


class FixedBatch:
    """The same batch forever (for 'loss drops on a fixed batch')."""

    def __init__(self, batch):
        self.batch = batch

    def __next__(self):
        return self.batch

    def get_state(self):
        return {}

    def set_state(self, state):
        pass


def test_loss_drops_well_below_the_baseline_on_a_fixed_batch(tmp_path, audio_folder):
    c = tiny.get_config()
    c.model.update(embed_dim=64, num_layers=2, num_heads=4, mlp_dim=128)
    c.data.update(source="folder", folder=str(audio_folder), crop_seconds=0.5, batch_size=8)
    c.optimizer.update(warmup_steps=10, decay_steps=80, lr=3e-3)
    c.train.update(num_steps=80, save_every=20, keep_checkpoints=2, eval_every=40, log_every=1,
                   progress=False, profile_start=5, profile_steps=2)
    from audiolm_jax.data.builder import source_from_config
    from train.mel_transformer import make_pipeline

    batch = next(iter(make_pipeline(c, source_from_config(c.data))))
    result = train_and_evaluate(c, tmp_path, data_iter=FixedBatch(batch))
    first, last = result.history[0], result.history[-1]
    assert last["loss"] < 0.5 * first["loss"]
    assert last["loss"] < 0.8 * last["baseline_loss"]
    rows = read_metrics(tmp_path)
    assert any("eval/loss" in r for r in rows) and any("train/step_seconds" in r for r in rows)
    assert (tmp_path / "plots" / "loss.png").stat().st_size > 10_000
    assert (tmp_path / "plots" / "reconstruction_000080.png").is_file()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert json.loads((tmp_path / "summary.json").read_text())["last_step"] == 80
    # keep-N: saves at 20, 40, 60, 80 and only the newest two remain.
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == ["60", "80"]
    assert list((tmp_path / "profile").rglob("*.xplane.pb"))   # the profiler window ran


def test_nan_stops_with_step_and_metric_named(tmp_path):
    mesh = mesh_lib.create_mesh((1, 1, 1), jax.devices()[:1])

    def init_fn(rng):
        return {"w": jnp.ones(()), "step": jnp.zeros((), jnp.int32)}

    def train_step(state, batch, rng):
        # Blows up at the 3rd step.
        loss = jnp.where(state["step"] >= 2, jnp.nan, 1.0) * batch["x"].sum()
        return {"w": state["w"], "step": state["step"] + 1}, {"loss": loss}

    loop = loop_lib.LoopConfig(num_steps=10, save_every=100, progress=False)
    with pytest.raises(NonFiniteError, match=r"step 3: metric 'loss' is nan"):
        loop_lib.run(loop=loop, workdir=tmp_path, model_name="toy", mesh=mesh,
                     rules=mesh_lib.get_rules("dp"), init_fn=init_fn, train_step=train_step,
                     data_iter=FixedBatch({"x": np.ones((2, 3), np.float32)}))


def test_unknown_train_field_is_named():
    c = tiny.get_config()
    c.train.unlock()
    c.train.num_stepz = 3
    with pytest.raises(ValueError, match="num_stepz"):
        loop_lib.LoopConfig.from_config(c.train)


def test_train_phases_switch_at_their_start_and_after_a_resume(tmp_path):
    mesh = mesh_lib.create_mesh((1, 1, 1), jax.devices()[:1])

    def init_fn(rng):
        return {"total": jnp.zeros(()), "step": jnp.zeros((), jnp.int32)}

    def adds(amount):
        def train_step(state, batch, rng):
            return ({"total": state["total"] + amount, "step": state["step"] + 1},
                    {"loss": jnp.asarray(amount, jnp.float32)})
        return train_step

    phases = loop_lib.TrainPhases(((0, adds(1.0)), (3, adds(10.0))))
    assert [phases.index_at(s) for s in range(5)] == [0, 0, 0, 1, 1]
    common = dict(workdir=tmp_path, model_name="toy", mesh=mesh, rules=mesh_lib.get_rules("dp"),
                  init_fn=init_fn, train_step=phases,
                  data_iter=FixedBatch({"x": np.ones((2, 3), np.float32)}))
    first = loop_lib.run(loop=loop_lib.LoopConfig(num_steps=2, save_every=2, log_every=1,
                                                  progress=False), **common)
    assert [h["loss"] for h in first.history] == [1.0, 1.0]
    # Resumed at step 2: one more step of phase 0, then phase 1.
    second = loop_lib.run(loop=loop_lib.LoopConfig(num_steps=5, save_every=5, log_every=1,
                                                   progress=False), **common)
    assert [h["loss"] for h in second.history] == [1.0, 10.0, 10.0]
    assert float(second.state["total"]) == 23.0
    with pytest.raises(ValueError, match="must begin at 0"):
        loop_lib.TrainPhases(((1, adds(1.0)),))
    with pytest.raises(ValueError, match="increase"):
        loop_lib.TrainPhases(((0, adds(1.0)), (5, adds(2.0)), (5, adds(3.0))))


def test_frozen_subtrees_get_zero_updates_despite_weight_decay():
    """Zeroed gradients alone leave AdamW's decoupled weight decay shrinking a
    "frozen" tower; `apply_gradients(frozen=...)` zeroes the updates as well."""
    import optax

    from audiolm_jax.training.state import TrainState

    params = {"encoder": {"w": jnp.full((3,), 2.0)}, "head": {"w": jnp.full((3,), 2.0)}}
    grads = {"encoder": {"w": jnp.full((3,), 100.0)}, "head": {"w": jnp.full((3,), 1.0)}}
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(0.1, weight_decay=0.5))
    state = TrainState.create(params, tx)
    zeroed_grads_only = state.apply_gradients(
        {**grads, "encoder": jax.tree.map(jnp.zeros_like, grads["encoder"])})
    assert float(zeroed_grads_only.params["encoder"]["w"][0]) < 2.0     # decay still shrank it
    frozen = state.apply_gradients(grads, frozen={"encoder": jnp.asarray(True)})
    np.testing.assert_array_equal(frozen.params["encoder"]["w"], params["encoder"]["w"])
    # The frozen tower's huge gradient neither entered the clipping norm nor its moments.
    head_alone = TrainState.create({"head": params["head"]}, tx).apply_gradients(
        {"head": grads["head"]})
    np.testing.assert_allclose(frozen.params["head"]["w"], head_alone.params["head"]["w"])
    assert not np.asarray(frozen.opt_state[1][0].mu["encoder"]["w"]).any()
    thawed = state.apply_gradients(grads, frozen={"encoder": jnp.asarray(False)})
    assert float(thawed.params["encoder"]["w"][0]) < 2.0
    with pytest.raises(KeyError, match="'decoder'"):
        state.apply_gradients(grads, frozen={"decoder": True})


def test_half_size_export_and_warm_start_from_it(tmp_path):
    """A float16-stored export loads as float32, and `init_from` starts a run from it
    (a dict state's matching TrainState only); mismatched trees are named."""
    import optax

    from audiolm_jax.training.export import load_exported, repack_exported, save_exported
    from audiolm_jax.training.state import TrainState

    mesh = mesh_lib.create_mesh((1, 1, 1), jax.devices()[:1])
    w = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    save_exported(tmp_path / "full", "toy", {}, {"params": {"w": w, "n": np.arange(3)}})
    repack_exported(tmp_path / "full", tmp_path / "half")
    _, variables = load_exported(tmp_path / "half")
    assert variables["params"]["w"].dtype == jnp.float32
    assert jnp.issubdtype(variables["params"]["n"].dtype, jnp.integer)
    np.testing.assert_allclose(variables["params"]["w"], w, atol=1e-3)
    assert json.loads((tmp_path / "half" / "model.json").read_text())["storage_dtype"] == "float16"

    tx = optax.sgd(0.0)

    def init_fn(rng):
        return {"generator": TrainState.create({"w": jnp.zeros((3, 4)), "n": jnp.zeros(3, jnp.int32)}, tx),
                "discriminator": TrainState.create({"v": jnp.zeros(2)}, tx)}

    def train_step(state, batch, rng):
        return state, {"loss": jnp.sum(state["generator"].params["w"])}

    common = dict(model_name="toy", mesh=mesh, rules=mesh_lib.get_rules("dp"), init_fn=init_fn,
                  train_step=train_step, data_iter=FixedBatch({"x": np.ones((2, 3), np.float32)}))
    result = loop_lib.run(loop=loop_lib.LoopConfig(num_steps=1, log_every=1, progress=False,
                                                   init_from=str(tmp_path / "half")),
                          workdir=tmp_path / "run", **common)
    np.testing.assert_allclose(result.state["generator"].params["w"], w, atol=1e-3)
    save_exported(tmp_path / "other", "toy", {}, {"params": {"w": np.zeros((2, 2), np.float32)}})
    with pytest.raises(ValueError, match="do not match"):
        loop_lib.run(loop=loop_lib.LoopConfig(num_steps=1, progress=False,
                                              init_from=str(tmp_path / "other")),
                     workdir=tmp_path / "run2", **common)


def test_committed_weights_load_by_name(tmp_path, monkeypatch):
    from audiolm_jax import files
    from audiolm_jax.training.export import load_exported, save_exported

    save_exported(tmp_path / "toy_tiny", "toy", {"a": 1}, {"params": {"w": np.ones(2, np.float32)}})
    monkeypatch.setattr(files, "COMMITTED_WEIGHTS", tmp_path)
    config, variables = load_exported("toy_tiny")
    assert config == {"a": 1} and variables["params"]["w"].shape == (2,)
    with pytest.raises(FileNotFoundError, match="toy_small is not an exported model"):
        load_exported("toy_small")
