r"""Times one model's train step under each sharding rule table on this host's devices.

    python benchmarks/sharding_strategies.py [--size tiny|base] [--batch 16] [--steps 10]
    # simulated mesh on a CPU:
    XLA_FLAGS=--xla_force_host_platform_device_count=8 python benchmarks/sharding_strategies.py

For each strategy it prints the mesh, the median step time, the FLOPs each device
runs per step as XLA counts them (`cost_analysis` of the partitioned program),
the achieved TFLOP/s per device, and the parameter +
optimizer bytes each device holds. On simulated CPU devices the times say little
(all "devices" share the same cores); the memory column is exact everywhere.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import numpy as np

from audiolm_jax.models import mel_transformer as mt
from audiolm_jax.training import mesh as mesh_lib
from audiolm_jax.training import state as state_lib
from audiolm_jax.training.loop import jit_train_step
from audiolm_jax.training.optimizers import make_optimizer


def strategies(n: int) -> dict[str, tuple[tuple[int, int, int], str]]:
    tensor = 2 if n % 2 == 0 and n > 1 else 1
    return {
        "dp": ((n, 1, 1), "dp"),
        "fsdp": ((1, n, 1), "fsdp"),
        "tp": ((n // tensor, 1, tensor), "tp"),
        "fsdp_tp": ((1, n // tensor, tensor), "fsdp_tp"),
    }


def bytes_per_device(state) -> int:
    return sum(x.addressable_shards[0].data.nbytes for x in jax.tree.leaves(state))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["tiny", "base"], default="tiny")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=1.5, help="audio per example")
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    if args.size == "tiny":
        from configs.mel_transformer.tiny import get_config
    else:
        from configs.mel_transformer.base import get_config
    config = get_config()
    model = mt.build_model(config)
    init_fn = mt.make_init_fn(model, make_optimizer(config.optimizer))
    samples = int(args.seconds * config.model.sample_rate)
    rng = np.random.default_rng(0)
    local = {"audio": (0.1 * rng.standard_normal((args.batch, samples, 1))).astype(np.float32),
             "mask": np.ones((args.batch, samples), bool)}
    n = len(jax.devices())
    print(f"{jax.devices()[0].platform} x {n}, mel_transformer/{args.size}, "
          f"batch {args.batch} x {args.seconds} s")
    print(f"{'strategy':9s} {'mesh (d,f,t)':13s} {'step ms':>9s} {'GFLOP/dev':>10s} "
          f"{'TFLOP/s/dev':>12s} {'state MiB/dev':>14s}")
    for name, (shape, rules_name) in strategies(n).items():
        if args.batch % (shape[0] * shape[1]):
            print(f"{name:9s} skipped: batch {args.batch} not divisible by {shape[0] * shape[1]}")
            continue
        mesh = mesh_lib.create_mesh(shape)
        rules = mesh_lib.get_rules(rules_name)
        state, shardings = state_lib.create_sharded_state(init_fn, mesh, rules, jax.random.key(0))
        step = jit_train_step(mt.make_train_step(model, config), shardings, mesh)
        batch = mesh_lib.make_global_batch(local, mesh)
        key = jax.random.key(1)
        with mesh_lib.sharding_context(mesh, rules):
            compiled = step.lower(state, batch, key).compile()
            cost = compiled.cost_analysis()
            cost = cost[0] if isinstance(cost, list) else cost
            flops = float(cost.get("flops", float("nan")))
            state, metrics = step(state, batch, key)          # warm-up
            jax.block_until_ready(metrics)
            times = []
            for _ in range(args.steps):
                t0 = time.perf_counter()
                state, metrics = step(state, batch, key)
                jax.block_until_ready(metrics)
                times.append(time.perf_counter() - t0)
        ms = 1e3 * float(np.median(times))
        print(f"{name:9s} {str(shape):13s} {ms:9.1f} {flops / 1e9:10.2f} "
              f"{flops / (ms / 1e3) / 1e12:12.3f} {bytes_per_device(state) / 2**20:14.2f}")


if __name__ == "__main__":
    main()
