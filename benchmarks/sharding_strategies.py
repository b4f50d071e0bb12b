r"""One family's train step under each sharding rule table: memory per device and time.

    python benchmarks/sharding_strategies.py [--model voicebox] [--size tiny|base]
        [--batch 16] [--steps 10] [--memory-only] [--dtype float32|bfloat16]
    # simulated mesh on a CPU:
    XLA_FLAGS=--xla_force_host_platform_device_count=8 python benchmarks/sharding_strategies.py \
        --model voicebox --size base --batch 16 --memory-only

`--model` is any family of `benchmarks/device_suite.py` (default
`mel_transformer`); its step is the suite's (the trainer's own step on a
synthetic batch of the config's shape). For each strategy (`dp`, `fsdp`, `tp`,
`fsdp_tp` rule tables of `training/mesh.py`, on a mesh of this host's devices)
it prints the mesh, what one device holds of the train state (parameters +
optimizer), XLA's memory analysis of the compiled step per device (arguments and
temporaries; the outputs alias the donated state), the FLOPs each device
runs per step (`cost_analysis` of the partitioned program) and, unless
`--memory-only`, the median step time.

`--memory-only` compiles against the abstract state (`state.abstract_state`):
nothing is initialized or run, so `base` configs fit a laptop's memory. On
simulated CPU devices the times say little (all "devices" share the same cores);
the memory columns are exact for the compiled program.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # `python benchmarks/x.py`: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax

from audiolm_jax.training import mesh as mesh_lib
from audiolm_jax.training import state as state_lib
from audiolm_jax.training.loop import jit_train_step
from benchmarks import device_suite

MIB = 2 ** 20


def strategies(n: int) -> dict[str, tuple[tuple[int, int, int], str]]:
    """Rule table name -> (mesh shape (data, fsdp, tensor), rules) over `n` devices."""
    tensor = 2 if n % 2 == 0 and n > 1 else 1
    return {
        "dp": ((n, 1, 1), "dp"),
        "fsdp": ((1, n, 1), "fsdp"),
        "tp": ((n // tensor, 1, tensor), "tp"),
        "fsdp_tp": ((1, n // tensor, tensor), "fsdp_tp"),
    }


def state_bytes_per_device(abstract_state) -> int:
    """Bytes of one device's shard of every leaf (the largest shard where uneven)."""
    total = 0
    for leaf in jax.tree.leaves(abstract_state):
        shard = leaf.sharding.shard_shape(leaf.shape)
        size = 1
        for d in shard:
            size *= d
        total += size * leaf.dtype.itemsize
    return total


def measure(family: device_suite.FamilyStep, shape: tuple[int, int, int], rules_name: str,
            steps: int, memory_only: bool) -> dict:
    """Compiles (and unless `memory_only`, times) the family's step under one strategy."""
    mesh = mesh_lib.create_mesh(shape)
    rules = mesh_lib.get_rules(rules_name)
    rng = jax.random.key(0)
    abstract, shardings = state_lib.abstract_state(family.init_fn, mesh, rules, rng)
    batch_sharding = mesh_lib.batch_sharding(mesh)
    abstract_batch = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=batch_sharding), family.batch)
    step = jit_train_step(family.train_step, shardings, mesh)
    with mesh_lib.sharding_context(mesh, rules):
        compiled = step.lower(abstract, abstract_batch, jax.random.key(1)).compile()
    memory = compiled.memory_analysis()
    row = {"state_mib": state_bytes_per_device(abstract) / MIB,
           "flops": device_suite.flops_of(compiled), "ms": None,
           "argument_mib": None, "temp_mib": None}
    if memory is not None:
        row.update(argument_mib=memory.argument_size_in_bytes / MIB,
                   temp_mib=memory.temp_size_in_bytes / MIB)
    if not memory_only:
        state, _ = state_lib.create_sharded_state(family.init_fn, mesh, rules, rng)
        batch = mesh_lib.make_global_batch(family.batch, mesh)
        times = []
        with mesh_lib.sharding_context(mesh, rules):
            for i in range(device_suite.WARMUP_STEPS + steps):
                start = time.perf_counter()
                state, metrics = compiled(state, batch, jax.random.key(1))
                jax.block_until_ready((state, metrics))
                if i >= device_suite.WARMUP_STEPS:
                    times.append(time.perf_counter() - start)
        row["ms"] = 1e3 * statistics.median(times)
    return row


def _cell(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=device_suite.FAMILIES, default="mel_transformer")
    parser.add_argument("--size", choices=["tiny", "base"], default="tiny")
    parser.add_argument("--batch", type=int, default=None,
                        help="global batch (default: the config's data.batch_size)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                        help="compute dtype (parameters and optimizer stay float32)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--memory-only", action="store_true",
                        help="compile only: memory and FLOPs, no step is run")
    args = parser.parse_args(argv)

    family = device_suite.build_family(args.model, args.size, args.batch, args.dtype)
    n = len(jax.devices())
    lines = [f"{jax.devices()[0].platform} x {n}, {args.model}/{args.size}, batch "
             f"{family.examples}, {args.dtype} compute ({family.note or 'train step'})", "",
             "| strategy | mesh (data, fsdp, tensor) | state MiB / device | arguments MiB "
             "| temporaries MiB | GFLOP / device | step ms |",
             "|---|---|---:|---:|---:|---:|---:|"]
    print("\n".join(lines), flush=True)
    for name, (shape, rules_name) in strategies(n).items():
        if family.examples % (shape[0] * shape[1]):
            line = (f"| {name} | {shape} | batch {family.examples} does not split over "
                    f"{shape[0] * shape[1]} | | | | |")
        else:
            r = measure(family, shape, rules_name, args.steps, args.memory_only)
            gflop = None if r["flops"] is None else r["flops"] / 1e9
            line = (f"| {name} | {shape} | {r['state_mib']:.1f} | "
                    f"{_cell(r['argument_mib'], '.1f')} | {_cell(r['temp_mib'], '.1f')} | "
                    f"{_cell(gflop, '.1f')} | {_cell(r['ms'], '.1f')} |")
        lines.append(line)
        print(line, flush=True)
    return "\n".join(lines)


if __name__ == "__main__":
    main()
