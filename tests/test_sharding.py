"""The same train step under data-parallel, FSDP and tensor-parallel rules on 8
simulated devices gives the loss and updated params of a single device, and the
parameters really are split."""

import jax
import ml_collections
import numpy as np
import pytest

from audiolm_jax.models import mel_transformer as mt
from audiolm_jax.training import mesh as mesh_lib
from audiolm_jax.training import state as state_lib
from audiolm_jax.training.loop import jit_train_step
from audiolm_jax.training.optimizers import make_optimizer
from configs.mel_transformer import tiny


def small_config():
    c = tiny.get_config()
    c.model.update(embed_dim=32, num_layers=2, num_heads=4, mlp_dim=64, n_mels=16, n_fft=256,
                   hop_length=64)
    c.optimizer.update(warmup_steps=0, lr=1e-2)
    return c


def fixed_batch(batch=8, samples=4_000):
    rng = np.random.default_rng(0)
    t = np.arange(samples) / 24_000
    audio = np.stack([np.sin(2 * np.pi * (200 + 50 * i) * t) + 0.1 * rng.standard_normal(samples)
                      for i in range(batch)]).astype(np.float32)[..., None]
    mask = np.ones((batch, samples), bool)
    mask[0, 3_000:] = False
    return {"audio": 0.3 * audio, "mask": mask}


def one_step(config, mesh_shape, rules, devices, steps=2):
    mesh = mesh_lib.create_mesh(mesh_shape, devices)
    rules = mesh_lib.get_rules(rules)
    model = mt.build_model(config)
    init_fn = mt.make_init_fn(model, make_optimizer(config.optimizer))
    state, shardings = state_lib.create_sharded_state(init_fn, mesh, rules, jax.random.key(0))
    step = jit_train_step(mt.make_train_step(model, config), shardings, mesh)
    batch = mesh_lib.make_global_batch(fixed_batch(), mesh)
    losses, grads = [], []
    with mesh_lib.sharding_context(mesh, rules):
        for _ in range(steps):
            state, metrics = step(state, batch, jax.random.key(1))
            losses.append(float(metrics["loss"]))
            # The raw gradient's norm and the clipped gradient's direction: Adam's
            # first moment after step 1 is (1 - b1) * clip(g), linear in it.
            grads.append((float(metrics["grad_norm"]),
                          jax.device_get(first_moment(state))))
    return state, losses, grads


def first_moment(state):
    """Adam's `mu` (the optimizer is clip_by_global_norm -> adamw)."""
    return state.opt_state[1][0].mu


@pytest.fixture(scope="module")
def reference():
    return one_step(small_config(), (1, 1, 1), "dp", jax.devices()[:1])


CASES = {
    "dp": ((8, 1, 1), "dp"),
    "fsdp": ((1, 8, 1), "fsdp"),
    "tp": ((2, 1, 4), "tp"),
    "fsdp_tp": ((1, 2, 4), "fsdp_tp"),
}


@pytest.fixture(scope="module")
def mesh_run():
    """name -> (state, losses, gradients) of two steps on CASES[name], each run once per module:
    the layout checks below read the same states the equality checks do."""
    runs = {}

    def get(name):
        if name not in runs:
            shape, rules = CASES[name]
            runs[name] = one_step(small_config(), shape, rules, jax.devices())
        return runs[name]

    return get


@pytest.mark.parametrize("name", list(CASES))
def test_parallel_step_matches_single_device(reference, mesh_run, name):
    assert len(jax.devices()) == 8
    ref_state, ref_losses, ref_grads = reference
    state, losses, grads = mesh_run(name)
    np.testing.assert_allclose(losses, ref_losses, rtol=2e-5)
    for (path, ours), theirs in zip(jax.tree_util.tree_leaves_with_path(state.params),
                                    jax.tree.leaves(ref_state.params)):
        np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), atol=2e-5,
                                   err_msg=jax.tree_util.keystr(path))
    # The gradients themselves: Adam's first steps move each weight by about
    # lr * sign(g), so the params above would agree for a gradient off by any factor.
    # The raw norm pins the scale (a sum over devices instead of a mean is 8x) and the
    # first moment (linear in the clipped gradient) every element; measured: within
    # 1e-6 of each leaf's largest value on every mesh.
    b1 = small_config().optimizer.b1
    for step, ((norm, mu), (ref_norm, ref_mu)) in enumerate(zip(grads, ref_grads)):
        np.testing.assert_allclose(norm, ref_norm, rtol=2e-5, err_msg=f"grad norm, step {step}")
        for (path, ours), theirs in zip(jax.tree_util.tree_leaves_with_path(mu),
                                        jax.tree.leaves(ref_mu)):
            ours, theirs = np.asarray(ours) / (1 - b1), np.asarray(theirs) / (1 - b1)
            assert np.abs(theirs).max() > 0, jax.tree_util.keystr(path)
            np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4 * np.abs(theirs).max(),
                                       err_msg=f"step {step}{jax.tree_util.keystr(path)}")


def shard_shape(x):
    return x.addressable_shards[0].data.shape


def test_parameters_are_really_split(mesh_run):
    qkv = ("encoder", "layer_0", "attn", "qkv")    # [embed=32, 3, heads=4, kv=8]
    wi = ("encoder", "layer_0", "mlp", "wi")       # [embed=32, 2, mlp=64]

    def get(tree, path):
        for key in path:
            tree = tree[key]
        return tree

    state, _, _ = mesh_run("fsdp")     # (1, 8, 1)
    assert shard_shape(get(state.params, qkv)) == (4, 3, 4, 8)
    assert shard_shape(get(state.params, wi)) == (4, 2, 64)
    # Adam's moments follow the params' layout.
    mu = first_moment(state)
    assert shard_shape(get(mu, qkv)) == (4, 3, 4, 8)

    state, _, _ = mesh_run("tp")       # (2, 1, 4)
    assert shard_shape(get(state.params, qkv)) == (32, 3, 1, 8)
    assert shard_shape(get(state.params, wi)) == (32, 2, 16)

    state, _, _ = mesh_run("dp")       # (8, 1, 1)
    assert shard_shape(get(state.params, qkv)) == (32, 3, 4, 8)


def test_mesh_shape_errors_name_the_problem():
    with pytest.raises(ValueError, match="does not divide"):
        mesh_lib.resolve_mesh_shape({"data": -1, "fsdp": 3}, 8)
    with pytest.raises(ValueError, match="unknown mesh axes"):
        mesh_lib.resolve_mesh_shape({"dta": 2}, 8)
    with pytest.raises(ValueError, match="unknown sharding rules"):
        mesh_lib.get_rules("zero3")
    assert mesh_lib.resolve_mesh_shape(ml_collections.ConfigDict(
        {"data": -1, "fsdp": 2, "tensor": 2}).to_dict(), 8) == (2, 2, 2)


def test_feed_forward_takes_the_einsum_when_its_hidden_axis_is_split():
    # layers.transformer.MlpBlock computes its input projection as one flat matmul when
    # the `mlp` axis is whole on every device (faster on XLA:CPU) and as the einsum when
    # tensor parallelism splits it; both give the same values and gradients.
    import flax.linen as nn
    import jax.numpy as jnp

    from audiolm_jax.layers import transformer

    block = transformer.MlpBlock(hidden_dim=32)
    x = jax.random.normal(jax.random.key(0), (2, 6, 16))
    params = nn.unbox(block.init(jax.random.key(1), x))

    def value_and_grads():
        loss = lambda p, x: jnp.sum(jnp.sin(block.apply(p, x)))   # noqa: E731
        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(params, x)

    hidden = (transformer._WI_AXES, 2)
    assert transformer._whole_on_every_device(*hidden)              # no rules
    flat = value_and_grads()
    with mesh_lib.sharding_context(mesh_lib.create_mesh((len(jax.devices()), 1, 1)),
                                   mesh_lib.get_rules("tp")):
        assert transformer._whole_on_every_device(*hidden)          # a tensor axis of 1
    with nn.logical_axis_rules(mesh_lib.get_rules("tp")):
        assert not transformer._whole_on_every_device(*hidden)      # rules, no mesh
    mesh = mesh_lib.create_mesh((len(jax.devices()) // 2, 1, 2))
    with mesh_lib.sharding_context(mesh, mesh_lib.get_rules("tp")):
        assert not transformer._whole_on_every_device(*hidden)
        split = value_and_grads()
    for a, b in zip(jax.tree.leaves(flat), jax.tree.leaves(split)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
