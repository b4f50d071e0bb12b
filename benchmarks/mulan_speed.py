r"""MuLan and melody-embedder training throughput, and what the global-batch similarity costs.

    python benchmarks/mulan_speed.py [--configs tiny base] [--batch tiny=32 base=2] \
        [--loss_batches 64 256 1024 4096] [--peak-tflops 989]

1. Train-step time and examples/s for each config (synthetic audio and
   captions of the config's window and caption length; compile excluded; best
   of `--repeats`), with the step's FLOPs from XLA's cost analysis.
2. The symmetric InfoNCE alone (forward + backward through the [N, N]
   similarity of N embeddings) as the global batch N grows: its FLOPs and time,
   against the per-example FLOPs of each config's step, i.e. the share of a
   step of global batch N that the similarity matrix costs.
3. The all-gather that global negatives need: the step compiled for 8 devices
   (dp rules) holds all-gathers of the [N, E] embeddings only; their bytes.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import jax.numpy as jnp
import numpy as np

from audiolm_jax.losses.contrastive import contrastive_loss
from audiolm_jax.models import melody as melody_lib
from audiolm_jax.models import mulan as mulan_lib
from audiolm_jax.training import mesh as mesh_lib
from audiolm_jax.training import state as state_lib
from audiolm_jax.training.loop import jit_train_step
from audiolm_jax.training.optimizers import make_optimizer


def load_config(family: str, name: str):
    module = __import__(f"configs.{family}.{name}", fromlist=["get_config"])
    return module.get_config()


def mulan_setup(config, batch: int):
    model = mulan_lib.MuLan(mulan_lib.build_config(config.model))
    cfg = model.config
    rng = np.random.default_rng(0)
    data = {"audio": 0.1 * rng.standard_normal((batch, cfg.audio.clip_samples, 1), np.float32),
            "mask": np.ones((batch, cfg.audio.clip_samples), bool),
            "text_ids": rng.integers(5, cfg.text.vocab_size, (batch, cfg.max_text_length),
                                     dtype=np.int32),
            "text_mask": np.ones((batch, cfg.max_text_length), np.int32)}
    return (mulan_lib.make_init_fn(model, make_optimizer(config.optimizer)),
            mulan_lib.make_train_step(model), data, cfg.embed_dim)


def melody_setup(config, batch: int):
    model = melody_lib.MelodyEmbedder(melody_lib.MelodyConfig(**config.model.to_dict()))
    n = model.config.clip_samples
    rng = np.random.default_rng(0)
    audio = lambda: 0.1 * rng.standard_normal((batch, n, 1), np.float32)
    data = {"audio_a": audio(), "audio_b": audio(), "mask_a": np.ones((batch, n), bool),
            "mask_b": np.ones((batch, n), bool)}
    return (melody_lib.make_init_fn(model, make_optimizer(config.optimizer)),
            melody_lib.make_train_step(model), data, model.config.embed_dim)


SETUPS = {"mulan": mulan_setup, "melody": melody_setup}


def compile_step(setup, config, batch: int, devices, shape=(1, 1, 1), rules="dp"):
    init_fn, train_step, data, embed_dim = setup(config, batch)
    mesh = mesh_lib.create_mesh(shape, devices)
    rules = mesh_lib.get_rules(rules)
    state, shardings = state_lib.create_sharded_state(init_fn, mesh, rules, jax.random.key(0))
    step = jit_train_step(train_step, shardings, mesh)
    data = mesh_lib.make_global_batch(data, mesh)
    with mesh_lib.sharding_context(mesh, rules):
        compiled = step.lower(state, data, jax.random.key(1)).compile()
    return compiled, state, data, mesh, rules, embed_dim


def time_step(family: str, name: str, batch: int, repeats: int) -> dict:
    config = load_config(family, name)
    compiled, state, data, mesh, rules, embed_dim = compile_step(
        SETUPS[family], config, batch, jax.devices()[:1])
    flops = float(compiled.cost_analysis().get("flops", 0.0))
    times = []
    with mesh_lib.sharding_context(mesh, rules):
        for _ in range(repeats + 1):
            start = time.perf_counter()
            state, metrics = compiled(state, data, jax.random.key(1))
            jax.block_until_ready(metrics)
            times.append(time.perf_counter() - start)
    best = min(times[1:])
    params = state_lib.count_params(state.params)
    return {"model": f"{family} {name}", "batch": batch, "params": params, "seconds": best,
            "examples_per_s": batch / best, "gflop_per_example": flops / batch / 1e9,
            "gflops": flops / best / 1e9, "embed_dim": embed_dim}


def time_loss(n: int, dim: int, repeats: int) -> tuple[float, float]:
    """FLOPs and seconds of value_and_grad of the symmetric InfoNCE on [n, dim] pairs."""
    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.standard_normal((n, dim), np.float32))
    b = jnp.asarray(rng.standard_normal((n, dim), np.float32))

    def loss(a, b):
        a = a / jnp.linalg.norm(a, axis=1, keepdims=True)
        b = b / jnp.linalg.norm(b, axis=1, keepdims=True)
        return contrastive_loss(a, b, jnp.float32(14.3))[0]

    fn = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    compiled = fn.lower(a, b).compile()
    flops = float(compiled.cost_analysis().get("flops", 0.0))
    jax.block_until_ready(compiled(a, b))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(a, b))
        times.append(time.perf_counter() - start)
    return flops, min(times)


def all_gather_bytes(family: str, name: str, batch: int) -> list[str]:
    """The all-gathers in the 8-device data-parallel step (shapes), from the compiled HLO."""
    config = load_config(family, name)
    compiled, *_ = compile_step(SETUPS[family], config, batch, jax.devices(), (8, 1, 1), "dp")
    hlo = compiled.as_text()
    return sorted(set(re.findall(r"= (f32\[[0-9,]+\]\S*) all-gather", hlo)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="+", default=["mulan:tiny", "mulan:base",
                                                         "melody:tiny", "melody:base"])
    parser.add_argument("--batch", nargs="*", default=["mulan:tiny=32", "mulan:base=2",
                                                       "melody:tiny=32", "melody:base=8"])
    parser.add_argument("--loss_batches", nargs="+", type=int, default=[64, 256, 1024, 4096])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peak-tflops", type=float, default=0.0,
                        help="accelerator peak, to print MFU")
    args = parser.parse_args()
    batches = dict(b.split("=") for b in args.batch)

    print(f"devices: {jax.devices()[0].platform} x {len(jax.devices())} (steps use 1)\n")
    rows = []
    for spec in args.configs:
        family, name = spec.split(":")
        rows.append(time_step(family, name, int(batches.get(spec, 8)), args.repeats))
    print("| model | params | batch | step s | examples/s | GFLOP/example | GFLOP/s |"
          + (" MFU |" if args.peak_tflops else ""))
    print("|---|---|---|---|---|---|---|" + ("---|" if args.peak_tflops else ""))
    for r in rows:
        mfu = (f" {r['gflops'] / 1e3 / args.peak_tflops:.1%} |" if args.peak_tflops else "")
        print(f"| {r['model']} | {r['params'] / 1e6:.1f} M | {r['batch']} | {r['seconds']:.3f} | "
              f"{r['examples_per_s']:.1f} | {r['gflop_per_example']:.2f} | {r['gflops']:.0f} |"
              + mfu)

    dim = rows[0]["embed_dim"]
    print(f"\nsymmetric InfoNCE over the global batch (embed dim {dim}), forward + backward:")
    header = "| global batch N | loss GFLOP | loss ms | " + " | ".join(
        f"share of a {r['model']} step" for r in rows) + " |"
    print(header + "\n|" + "---|" * (3 + len(rows)))
    for n in args.loss_batches:
        flops, seconds = time_loss(n, dim, args.repeats)
        shares = [flops / (flops + n * r["gflop_per_example"] * 1e9) for r in rows]
        print(f"| {n} | {flops / 1e9:.3f} | {seconds * 1e3:.1f} | "
              + " | ".join(f"{s:.2%}" for s in shares) + " |")

    first = args.configs[0].split(":")
    gathers = all_gather_bytes(first[0], first[1], 8)
    print(f"\nall-gathers in the 8-device dp step of {' '.join(first)} (batch 8): "
          f"{', '.join(gathers) or 'none'}")


if __name__ == "__main__":
    main()
