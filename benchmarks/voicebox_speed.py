r"""Voicebox's audio model in JAX against voicebox-pytorch at the same shape: training and sampling.

    python benchmarks/voicebox_speed.py [--size tiny|base] [--depth N] [--width D] [--heads H]
        [--batch 4] [--frames 512] [--repeats 3] [--passes 2,8,32] [--only train,sample]
        [--guidance 0.7] [--positions alibi|rope] [--dtype float32|bfloat16]
        [--torch-attention flash|einsum] [--threads N] [--peak-tflops T] [--jax-only]
        [--out FILE]

The torch side (lucidrains' `voicebox-pytorch==0.5.0`) runs in its own venv, made
once with

    bash benchmarks/peers/voicebox/install.sh

(torch 2.13.0, numpy, packaging, einops, beartype, torchdiffeq 0.2.5, torchode
1.0.1 from `benchmarks/peers/voicebox/requirements.txt`, then `voicebox-pytorch
==0.5.0 --no-deps`: its declared dependencies import fairseq, broken on Python
3.11, and wandb, and none of them runs here; `peers/voicebox/voicebox_torch.py`
stubs those imports and says how). This script writes the inputs and a JSON spec
to a temporary folder, runs `voicebox_torch.py` with that venv's python
(`--peers-python`) and reads its timings back, so the project's venv never holds
the package. `--jax-only` needs none of it.

The shape is `configs/voicebox/{tiny,base}.py`'s audio model (tiny 4 x 256, 4 heads;
base the paper's 24 x 1024, 16 heads; head dim 64, MLP 4 x width, mel 100 bins,
conv position embedding kernel 31 in 16 groups, phone embedding 64 / 256, ALiBi),
`--depth/--width/--heads` override it (`--size base --depth 4` is base's width on
a CPU). Both sides see the same inputs: `--batch` rows of `--frames` random
normalized mel frames, frame-aligned phone ids (128 phones), every frame valid,
and one span mask per row of 70-100 % of the frames (the paper's) as the frames
to generate, the rest the audio context.

Rows, each the min of `--repeats` runs after a warm-up (JAX compiles there):

* `train step`: forward, backward and the optimizer update of the masked
  flow-matching loss with condition dropout (p 0.2): ours `flow.loss_fn` under
  `value_and_grad` and the config's optimizer (`training.optimizers`: global-norm
  clipping then AdamW) in one `jit` with the state donated, no weights EMA and no
  log-mel (the trainer computes it from audio inside its step); theirs
  `ConditionalFlowMatcherWrapper.forward`, `backward`, `clip_grad_norm_`,
  `torch.optim.AdamW` with the same betas, eps, weight decay and clip.
* `sample`, per `--passes` count: the whole ODE integration with classifier-free
  guidance `--guidance` (ours `(1 + a) v_cond - a v_uncond`, theirs `cond_scale = 1 +
  a`: the same combination). Passes count both halves of the guidance (see
  docs/voicebox.md, "Steps, network passes and guidance"): a count divisible by 4 is
  passes / 4 midpoint steps, otherwise passes / 2 Euler steps (2 passes: one Euler
  step). Ours: `flow.sample` under `jit` (`lax.scan` over the steps, both halves as
  one batch of 2B); theirs: `sample(..., steps=steps + 1)` through torchdiffeq's
  fixed-grid solver, each guided evaluation two calls of batch B. RTF = seconds /
  seconds of audio of one row (`frames x hop / sample_rate` of the config's mel:
  256 / 24 kHz), the wall time of the whole batch: divide by `--batch` for the
  throughput's.

GFLOP: ours XLA's cost analysis of the compiled train step, and of one compiled
guided velocity call times the evaluations for a sample (XLA counts every op,
elementwise included); theirs `torch.utils.flop_counter.FlopCounterMode` over one
forward + backward, and over one guided evaluation times the evaluations (matmuls,
convolutions and attention only; `voicebox_torch.count_flops` closes two gaps of
the counter: no formula for the CPU flash attention kernel, and a grouped
convolution's backward counted as if dense, 17x too high here). MFU
(`--peak-tflops`, the device's peak) = each side's FLOPs / its seconds / peak.

On a CPU that other processes share, run with `OMP_WAIT_POLICY=PASSIVE` (the torch
side inherits the environment): torch's OpenMP threads spin at their barriers,
and with the cores oversubscribed a 2-thread float32 matmul here ran 10x slower
than with 1 thread (8 against 95 GFLOP/s; 90 with the passive policy), which made
the torch rows 20-40x slower. JAX's thread pool did not show it. On an idle
machine leave the default.

Differences that stay (voicebox-pytorch 0.5.0's design, not settings):

* Time conditioning: theirs is a learned-frequency sinusoid -> Linear(dim, 4 dim)
  -> SiLU feeding adaptive RMSNorms (a gamma and a beta Linear(4 dim, dim) per norm,
  two norms per block); ours a fixed sinusoid -> MLP added to every frame once.
  Those Linears run once per row, not per frame: few FLOPs (see Parameters).
* Positions in attention: theirs always rotary (theta 50 000); ours ALiBi by
  config (`--positions rope` runs ours with rotary instead).
* Feed-forward: theirs GEGLU with biases, ours SwiGLU without; `ff_mult = 1.5 x
  mlp_ratio` gives theirs the same inner width (4 x width) and matmul FLOPs.
* Attention kernel: theirs `F.scaled_dot_product_attention` (`attn_flash=True`;
  `--torch-attention einsum` for the package's default einsum path); ours
  `jax.nn.dot_product_attention` (XLA's). Both get the all-valid key mask,
  except theirs in sampling (its `sample` passes none).
* U-Net skips: 0.5.0's `VoiceBox` never turns them on; the torch side rebuilds
  its transformer with the package's `use_unet_skip_connection=True` (theirs
  scales the skip by 2^-0.5, free).
* Guidance: ours runs both halves as one batch of 2B, theirs two calls of B.
* Phone conditioning: the same frame-aligned ids into an embedding; theirs goes
  in as `semantic_token_ids` (0.5.0's `sample` needs a duration predictor to take
  `phoneme_ids`), and its unconditional id is an extra row of the table (ours id 0).
* The loss: theirs the mean over rows of each row's masked mean, ours the masked
  mean over the batch; ours also puts the context back on unmasked frames after
  sampling. Their output projection has no bias, ours does.
* Parameters: printed for both. Theirs holds the adaptive norms' Linears, per
  row, not per frame, in FLOPs, but weights all the same: at 24 x 1024 theirs has
  838 M (403 M of them those Linears) against our 432 M, and its AdamW update walks
  all of them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # `python benchmarks/x.py`: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from audiolm_jax.files import write_text_atomic
from audiolm_jax.models.voicebox import flow
from audiolm_jax.models.voicebox.model import VoiceboxConfig, VoiceboxTransformer
from audiolm_jax.sampling import ode
from audiolm_jax.training.optimizers import make_optimizer
from audiolm_jax.training.state import TrainState

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT / "benchmarks" / "peers" / "voicebox"
NUM_PHONES = 128


def load_config(args: argparse.Namespace):
    """The size's ConfigDict with the shape overrides applied."""
    from configs.voicebox import base, tiny

    c = {"tiny": tiny, "base": base}[args.size].get_config()
    m = c.model
    if args.width:
        m.dim = args.width
        m.num_heads = args.heads or max(1, args.width // 64)
    elif args.heads:
        m.num_heads = args.heads
    if args.depth:
        m.num_layers = args.depth
    if args.positions:
        m.attention_positions = args.positions
    m.num_phones = NUM_PHONES
    return c


def solver_runs(passes: list[int], guidance: float) -> list[dict]:
    """Each pass count as (method, steps, evals): midpoint where it divides, else Euler."""
    halves = 2 if guidance else 1
    runs = []
    for p in passes:
        if p % halves:
            raise SystemExit(f"--passes {p}: with guidance every evaluation is 2 passes")
        evals = p // halves
        method = "midpoint" if evals % 2 == 0 else "euler"
        steps = evals // ode.NFE_PER_STEP[method]
        runs.append(dict(passes=p, method=method, steps=steps, evals=evals))
    return runs


def make_inputs(cfg: VoiceboxConfig, batch: int, frames: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    valid = np.ones((batch, frames), bool)
    lengths = jnp.full((batch,), frames)
    mask = flow.span_mask(jax.random.key(1), lengths, frames, cfg.span_fraction)
    return {"x1": rng.standard_normal((batch, frames, cfg.feature_dim)).astype(np.float32),
            "phones": rng.integers(1, cfg.num_phones, (batch, frames)).astype(np.int32),
            "valid": valid, "mask": np.asarray(mask)}


def flops_of(compiled) -> float | None:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    return float(cost["flops"]) if cost and "flops" in cost else None


def best_of(fn, repeats: int) -> float:
    fn()                                   # warm-up (JAX compiles here, if not before)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def time_jax(c, model: VoiceboxTransformer, inputs: dict, args, runs: list[dict]) -> dict:
    """{'params', 'train': {seconds, flops}, 'sample': [run + {seconds, flops}]}."""
    x1, phones, valid, mask = (jnp.asarray(inputs[k]) for k in ("x1", "phones", "valid", "mask"))
    params = nn.unbox(model.init(jax.random.key(0), x1[:1], x1[:1], phones[:1],
                                 jnp.zeros((1,)), valid[:1])["params"])
    out = {"params": sum(p.size for p in jax.tree.leaves(params))}

    if "train" in args.only:
        tx = make_optimizer(c.optimizer)

        def train_step(state, x1, phones, valid, mask, rng):
            rng = jax.random.fold_in(rng, state.step)

            def loss(p):
                return flow.loss_fn(model, p, x1, phones, valid, rng, mask=mask)

            (value, _), grads = jax.value_and_grad(loss, has_aux=True)(state.params)
            return state.apply_gradients(grads), value

        state = TrainState.create(jax.tree.map(jnp.copy, params), tx)
        rng = jax.random.key(2)
        start = time.perf_counter()
        step = jax.jit(train_step, donate_argnums=0).lower(
            state, x1, phones, valid, mask, rng).compile()
        compile_s = time.perf_counter() - start
        holder = [state]

        def run_step():
            holder[0], loss = step(holder[0], x1, phones, valid, mask, rng)
            jax.block_until_ready((holder[0], loss))

        out["train"] = {"seconds": best_of(run_step, args.repeats), "flops": flops_of(step),
                        "compile_s": compile_s}
        del holder

    if "sample" in args.only:
        g = args.guidance
        velocity = jax.jit(lambda p, x, ctx, ph, v: flow.guided_velocity(
            model, p, ctx, ph, v, g)(x, jnp.float32(0.5)))
        per_eval = flops_of(velocity.lower(params, x1, x1, phones, valid).compile())
        out["sample"] = []
        for run in runs:
            fn = jax.jit(lambda p, ctx, m, ph, v, key, run=run: flow.sample(
                model, p, ctx, m, ph, v, key, num_steps=run["steps"], method=run["method"],
                guidance=g))
            key = jax.random.key(3)
            start = time.perf_counter()
            compiled = fn.lower(params, x1, mask, phones, valid, key).compile()
            compile_s = time.perf_counter() - start

            def sample(compiled=compiled, key=key):
                jax.block_until_ready(compiled(params, x1, mask, phones, valid, key))

            out["sample"].append({**run, "seconds": best_of(sample, args.repeats),
                                  "flops": None if per_eval is None else per_eval * run["evals"],
                                  "compile_s": compile_s})
    return out


def time_torch(c, inputs: dict, args, runs: list[dict]) -> dict:
    """Runs peers/voicebox/voicebox_torch.py in the peers venv; its JSON result."""
    python = Path(args.peers_python)
    if not python.exists():
        raise SystemExit(f"no peers venv at {python}: run `bash {PEERS / 'install.sh'}` "
                         "(or pass --jax-only)")
    m, o = c.model, c.optimizer
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(os.path.join(tmp, "inputs.npz"), **inputs)
        spec = dict(dim=m.dim, depth=m.num_layers, heads=m.num_heads, mlp_ratio=m.mlp_ratio,
                    num_phones=m.num_phones, feature_dim=m.feature_dim,
                    phone_embed_dim=m.phone_embed_dim, conv_kernel=m.conv_pos_kernel,
                    conv_groups=m.conv_pos_groups, sigma_min=m.sigma_min, p_uncond=m.p_uncond,
                    flash=args.torch_attention == "flash", device=args.torch_device,
                    dtype=args.dtype, threads=args.threads, repeats=args.repeats,
                    flops=True, guidance=args.guidance, only=args.only, sample_runs=runs,
                    optimizer=dict(lr=float(o.lr), b1=float(o.get("b1", 0.9)),
                                   b2=float(o.get("b2", 0.98)), eps=float(o.get("eps", 1e-8)),
                                   weight_decay=float(o.get("weight_decay", 0.01)),
                                   clip=float(o.get("grad_clip_norm", 1.0))),
                    inputs=os.path.join(tmp, "inputs.npz"))
        with open(os.path.join(tmp, "spec.json"), "w") as f:
            json.dump(spec, f)
        subprocess.run([str(python), str(PEERS / "voicebox_torch.py"), "--spec",
                        os.path.join(tmp, "spec.json"), "--out", os.path.join(tmp, "out.json")],
                       check=True)
        with open(os.path.join(tmp, "out.json")) as f:
            return json.load(f)


def table(ours: dict, theirs: dict | None, audio_s: float, peak: float) -> str:
    def cell(value, fmt):
        return "-" if value is None else format(value, fmt)

    header = ("| row | solver | passes | JAX ms | torch ms | speed-up (torch / JAX) | "
              "JAX GFLOP | torch GFLOP | JAX RTF | torch RTF |")
    rule = "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    if peak:
        header += " JAX MFU | torch MFU |"
        rule += "---:|---:|"
    rows = []
    if "train" in ours:
        rows.append(("train step (fwd + bwd + AdamW)", "-", "-", ours["train"],
                     theirs["train"] if theirs else None, False))
    for i, run in enumerate(ours.get("sample", [])):
        rows.append(("sample", f"{run['steps']} {run['method']}", str(run["passes"]), run,
                     theirs["sample"][i] if theirs else None, True))
    lines = [header, rule]
    for name, solver, passes, a, b, rtf in rows:
        t_a, t_b = a["seconds"], (b["seconds"] if b else None)
        f_a, f_b = a.get("flops"), (b.get("flops") if b else None)
        line = (f"| {name} | {solver} | {passes} | {t_a * 1e3:,.1f} | "
                f"{cell(t_b and t_b * 1e3, ',.1f')} | {cell(t_b and t_b / t_a, '.2f')} | "
                f"{cell(f_a and f_a / 1e9, ',.2f')} | {cell(f_b and f_b / 1e9, ',.2f')} | "
                f"{cell(t_a / audio_s if rtf else None, '.3f')} | "
                f"{cell(t_b / audio_s if rtf and t_b else None, '.3f')} |")
        if peak:
            mfu = lambda f, t: "-" if not (f and t) else f"{100 * f / t / (peak * 1e12):.1f}%"
            line += f" {mfu(f_a, t_a)} | {mfu(f_b, t_b)} |"
        lines.append(line)
    return "\n".join(lines)


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("tiny", "base"), default="tiny")
    parser.add_argument("--depth", type=int, default=0, help="layers (even), over the size's")
    parser.add_argument("--width", type=int, default=0,
                        help="model width over the size's (heads: width / 64 unless --heads)")
    parser.add_argument("--heads", type=int, default=0)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--frames", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--passes", default="2,8,32",
                        help="network passes per sample, guidance halves included")
    parser.add_argument("--only", default="train,sample", help="train, sample or both")
    parser.add_argument("--guidance", type=float, default=0.7,
                        help="alpha of Voicebox's guidance (theirs: cond_scale = 1 + alpha)")
    parser.add_argument("--positions", choices=("alibi", "rope"), default="",
                        help="our attention positions (default: the config's, ALiBi; "
                             "theirs is always rotary)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="compute dtype of both (torch: autocast)")
    parser.add_argument("--torch-attention", choices=("flash", "einsum"), default="flash",
                        help="theirs: F.scaled_dot_product_attention or the einsum path")
    parser.add_argument("--torch-device", default="cpu")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch threads")
    parser.add_argument("--peak-tflops", type=float, default=0.0,
                        help="the device's peak TFLOP/s, for MFU columns")
    parser.add_argument("--jax-only", action="store_true", help="no torch side (no peers venv)")
    parser.add_argument("--peers-python", default=str(PEERS / ".venv" / "bin" / "python"))
    parser.add_argument("--out", help="also write the table here")
    args = parser.parse_args(argv)
    args.only = [s for s in args.only.split(",") if s]
    if not set(args.only) <= {"train", "sample"} or not args.only:
        parser.error(f"--only takes train and/or sample, got {args.only}")

    c = load_config(args)
    c.compute_dtype = args.dtype
    cfg = VoiceboxConfig.from_dict(c.model.to_dict())
    model = VoiceboxTransformer(cfg, dtype=jnp.dtype(args.dtype), remat=c.remat)
    runs = solver_runs([int(p) for p in args.passes.split(",") if p], args.guidance)
    inputs = make_inputs(cfg, args.batch, args.frames)
    audio_s = args.frames * c.mel.hop_length / c.mel.sample_rate

    ours = time_jax(c, model, inputs, args, runs)
    print(f"JAX done: {json.dumps(ours)}", flush=True)
    theirs = None
    if not args.jax_only:
        theirs = time_torch(c, inputs, args, runs)
        print(f"torch done: {json.dumps(theirs)}", flush=True)

    text = table(ours, theirs, audio_s, args.peak_tflops)
    torch_note = ("" if theirs is None else
                  f", torch {theirs['torch']} ({theirs['device']}, {theirs['threads']} threads, "
                  f"attention {args.torch_attention}, {theirs['params'] / 1e6:.2f} M params)")
    print(f"\nVoicebox audio model {cfg.num_layers} x {cfg.dim}, {cfg.num_heads} heads "
          f"({args.size}); batch {args.batch} x {args.frames} frames "
          f"({audio_s:.2f} s of audio a row); {args.dtype}; guidance {args.guidance:g}; "
          f"min of {args.repeats}\njax {jax.__version__} ({jax.devices()[0].platform}, "
          f"{cfg.attention_positions}, {ours['params'] / 1e6:.2f} M params){torch_note}\n")
    print(text)
    if args.out:
        write_text_atomic(Path(args.out), text + "\n")
    return text


if __name__ == "__main__":
    main()
