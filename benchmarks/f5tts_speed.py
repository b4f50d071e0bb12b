r"""F5-TTS sampling in JAX against the `f5-tts` package with identical random weights.

    python benchmarks/f5tts_speed.py [--dim 1024 --depth 22 --heads 16] [--seconds 5]
        [--prompt-seconds 3] [--steps 8,16,32] [--compare-steps 32] [--repeats 3]
        [--threads 2] [--out FILE]

The package's `DiT` (f5-tts 1.1.22, installed with `pip install --no-deps`) is
built at the given shape (default F5TTS_v1_Base: 1024 wide, 22 blocks, 16 heads,
text 512 over 4 ConvNeXt-V2 blocks, 2545 characters) with every weight random,
and converted (`convert.f5tts.dit_params`). One utterance: a `--prompt-seconds`
reference mel and `--seconds` of new speech (frames at 93.75 a second), 15
characters a second of text. Both sides sample with the released defaults:
Euler, classifier-free guidance 2 (both passes as one doubled batch), sway -1,
the EPSS grid where one exists (16 steps), from the same starting noise.

Rows, each the min of `--repeats` runs after a warm-up (JAX compiles there, once
per shape: `sample(..., bucket=...)` would share it across durations):

* JAX `sample` (`jit` over the whole ODE loop, `lax.scan` over the steps) at
  every `--steps` count: seconds, real-time factor (seconds / seconds of new
  speech; mel only, no vocoder) and FLOPs.
* the package's `CFM.sample` at `--compare-steps` counts (same steps): its
  seconds and the speed-up; the two mels are checked equal (max abs difference
  printed; float32 on both sides, so it is rounding, about 1e-4 at full width).

FLOPs come from XLA's cost analysis of one compiled guided velocity call (the
doubled batch) times the evaluations, plus the text embedding once; per second
of speech they are divided by `--seconds`. XLA counts every op (elementwise
included), not only matmuls.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import sys
import time
import types
from pathlib import Path

if __package__ in (None, ""):  # `python benchmarks/x.py`: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import jax.numpy as jnp
import numpy as np

from audiolm_jax.convert.f5tts import dit_params
from audiolm_jax.files import write_text_atomic
from audiolm_jax.models.f5tts import DiT, sample
from audiolm_jax.models.f5tts.sampling import sample_info

FRAMES_PER_SECOND = 24_000 / 256
CHARS_PER_SECOND = 15


def import_reference():
    """The package's `(DiT, CFM)` without its trainer's imports (accelerate, wandb,
    datasets): `f5_tts.model` is registered as an empty package and only
    `backbones.dit` and `cfm` are imported; rjieba / pypinyin (Chinese text only) are
    stubbed when missing."""
    spec = importlib.util.find_spec("f5_tts")
    if spec is None:
        raise SystemExit("the reference needs `pip install --no-deps f5-tts==1.1.22` "
                         "(and x-transformers, torchdiffeq)")
    location = spec.submodule_search_locations[0]
    # cfm.py imports torchaudio, whose C++ extension fails to load beside the CPU torch
    # the test extra pins; its pure-torch transforms work with a stub in its place.
    if "torchaudio._extension" not in sys.modules:
        shim = types.ModuleType("torchaudio._extension")
        shim._IS_TORCHAUDIO_EXT_AVAILABLE = False
        shim.fail_if_no_align = lambda fn: fn
        shim.__spec__ = importlib.machinery.ModuleSpec("torchaudio._extension", None)
        sys.modules["torchaudio._extension"] = shim
    for name in ("rjieba", "pypinyin"):
        if name not in sys.modules and importlib.util.find_spec(name) is None:
            stub = types.ModuleType(name)
            stub.cut = stub.Style = stub.lazy_pinyin = None
            sys.modules[name] = stub
    if "f5_tts.model" not in sys.modules:
        package = types.ModuleType("f5_tts.model")
        package.__path__ = [f"{location}/model"]
        sys.modules["f5_tts.model"] = package
    from f5_tts.model.backbones.dit import DiT as RefDiT
    from f5_tts.model.cfm import CFM

    return RefDiT, CFM


def build(args):
    """(the package's DiT with random weights, our config, our params)."""
    import torch

    ref_dit, _ = import_reference()
    torch.manual_seed(0)
    reference = ref_dit(dim=args.dim, depth=args.depth, heads=args.heads, dim_head=64,
                        ff_mult=2, mel_dim=100, text_num_embeds=args.vocab,
                        text_dim=args.text_dim, conv_layers=args.conv_layers,
                        text_mask_padding=True, dropout=0.0)
    with torch.no_grad():   # every weight random (the zero-initialized ones too), O(1) scales
        for name, p in reference.named_parameters():
            if name.endswith("text_embed.text_embed.weight"):
                p.copy_(torch.randn_like(p))
            elif p.ndim > 1 and "grn" not in name:
                p.copy_(torch.randn_like(p) / p[0].numel() ** 0.5)
            else:
                p.copy_(torch.randn_like(p) * 0.1 + (1.0 if name.endswith("norm.weight") else 0))
    reference.eval()
    config, params = dit_params(reference.state_dict())
    return reference, config, jax.tree.map(jnp.asarray, params)


def best_of(fn, repeats: int) -> tuple[float, object]:
    fn()                                   # warm-up (JAX compiles here)
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def flops_per_run(model: DiT, params, cond, text, frames: int, evals: int) -> float | None:
    """XLA's FLOPs of the text embeddings (both, once) plus `evals` guided velocity
    calls on the doubled batch."""
    def cost(fn, *args):
        analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
        analysis = analysis[0] if isinstance(analysis, list | tuple) else analysis
        return float(analysis["flops"]) if analysis and "flops" in analysis else None

    v = {"params": params}
    x = jnp.zeros((2, frames, cond.shape[-1]))
    emb = jnp.zeros((2, frames, model.config.text_dim))
    velocity = cost(lambda v, x, e: model.apply(v, x, x, e, jnp.float32(0.5),
                                                method=DiT.velocity), v, x, emb)
    embed = cost(lambda v, t: model.apply(v, t, frames, method=DiT.embed_text), v,
                 jnp.asarray(text))
    if velocity is None or embed is None:
        return None
    return evals * velocity + 2 * embed


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--depth", type=int, default=22)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--text-dim", type=int, default=512)
    parser.add_argument("--conv-layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=2545)
    parser.add_argument("--seconds", type=float, default=5.0, help="new speech")
    parser.add_argument("--prompt-seconds", type=float, default=3.0)
    parser.add_argument("--steps", default="8,16,32", help="JAX rows")
    parser.add_argument("--compare-steps", default="32",
                        help="step counts also run through the package ('' for none)")
    parser.add_argument("--cfg", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    _, cfm_cls = import_reference()
    reference, config, params = build(args)
    model = DiT(config)
    cfm = cfm_cls(reference, num_channels=100, mel_spec_kwargs=dict(n_mel_channels=100)).eval()
    print(f"DiT {config.depth} x {config.dim}: "
          f"{sum(p.numel() for p in reference.parameters()) / 1e6:.0f} M params", flush=True)

    rng = np.random.default_rng(0)
    prompt = round(args.prompt_seconds * FRAMES_PER_SECOND)
    frames = prompt + round(args.seconds * FRAMES_PER_SECOND)
    chars = round((args.prompt_seconds + args.seconds) * CHARS_PER_SECOND)
    cond = rng.standard_normal((1, prompt, 100)).astype(np.float32)
    text = rng.integers(0, config.text_num_embeds, (1, chars)).astype(np.int32)
    torch.manual_seed(7)                     # the package's noise for seed 7
    noise = torch.randn(frames, 100).numpy()[None]
    compare = {int(s) for s in args.compare_steps.split(",") if s}

    rows = []
    for steps in [int(s) for s in args.steps.split(",")]:
        info = sample_info(steps, args.cfg)

        def ours(steps=steps):
            out, _ = sample(model, params, cond, text, frames, steps=steps,
                            cfg_strength=args.cfg, noise=noise)
            return np.asarray(jax.block_until_ready(out))

        t_ours, mel = best_of(ours, args.repeats)
        flops = flops_per_run(model, params, cond, text, frames, info.function_evals)
        t_theirs, note = None, ""
        if steps in compare:
            def theirs(steps=steps):
                with torch.inference_mode():
                    out, _ = cfm.sample(torch.from_numpy(cond), torch.from_numpy(text), frames,
                                        steps=steps, cfg_strength=args.cfg,
                                        sway_sampling_coef=-1.0, seed=7)
                return out.numpy()

            t_theirs, expected = best_of(theirs, args.repeats)
            note = f"max abs mel difference {np.abs(mel - expected).max():.1e}"
        rows.append((steps, info.passes, t_ours, t_theirs, flops, note))
        print(rows[-1], flush=True)

    lines = ["| steps | network passes | JAX s | package s | speed-up | JAX RTF | package RTF "
             "| GFLOP / run | GFLOP / s of speech | note |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for steps, passes, ours, theirs, flops, note in rows:
        theirs_cells = ("-", "-", "-") if theirs is None else (
            f"{theirs:.2f}", f"{theirs / ours:.2f}", f"{theirs / args.seconds:.3f}")
        gflops = "n/a" if flops is None else f"{flops / 1e9:,.0f}"
        per_second = "n/a" if flops is None else f"{flops / 1e9 / args.seconds:,.0f}"
        lines.append(f"| {steps} | {passes} | {ours:.2f} | {theirs_cells[0]} | "
                     f"{theirs_cells[1]} | {ours / args.seconds:.3f} | {theirs_cells[2]} | "
                     f"{gflops} | {per_second} | {note} |")
    table = "\n".join(lines)
    print(f"\njax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__} "
          f"({torch.get_num_threads()} threads); DiT {config.depth} x {config.dim}; "
          f"{args.prompt_seconds:g} s prompt + {args.seconds:g} s new speech ({frames} frames, "
          f"{chars} characters); guidance {args.cfg:g}; min of {args.repeats}\n")
    print(table)
    if args.out:
        write_text_atomic(Path(args.out), table + "\n")


if __name__ == "__main__":
    main()
