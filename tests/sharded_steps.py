"""Train steps on a (simulated) mesh, for the tests that compare meshes with one device."""

from __future__ import annotations

from typing import Any

import jax

from audiolm_jax.training import mesh as mesh_lib
from audiolm_jax.training import state as state_lib
from audiolm_jax.training.loop import jit_train_step


def run_steps(init_fn: Any, train_step: Any, rules_name: str, mesh_shape: tuple, devices: list,
              batch: dict, steps: int) -> tuple[Any, list[dict]]:
    """`steps` jitted train steps on one batch, the state made and sharded on the mesh
    by the named rules; returns (final state, per-step metrics), on the host."""
    mesh = mesh_lib.create_mesh(mesh_shape, devices)
    rules = mesh_lib.get_rules(rules_name)
    state, shardings = state_lib.create_sharded_state(init_fn, mesh, rules, jax.random.key(0))
    step = jit_train_step(train_step, shardings, mesh)
    data = mesh_lib.make_global_batch(batch, mesh)
    history = []
    with mesh_lib.sharding_context(mesh, rules):
        for _ in range(steps):
            state, metrics = step(state, data, jax.random.key(3))
            history.append(jax.device_get(metrics))
    return jax.device_get(state), history
