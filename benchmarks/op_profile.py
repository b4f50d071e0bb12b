r"""Where a compiled JAX program spends its time, by source scope: profile before optimizing.

    from benchmarks.op_profile import op_profile
    compiled = jax.jit(step).lower(*args).compile()
    print(op_profile(compiled, *args, runs=3, depth=3))

Runs the compiled program under `jax.profiler.trace` (a Perfetto trace), sums
each HLO instruction's measured time over `runs` calls, and maps every
instruction back to the source that made it through its `op_name` metadata in
the optimized HLO (`compiled.as_text()`): the module path
(`layer_0/mlp/...`), whether it is forward or backward (`transpose(jvp(...))`
in the name), and the primitive (`dot_general`, `conv_general_dilated`,
`transpose`, ...). Instructions that XLA created itself (layout copies) carry
the metadata of the op they serve.

Made for XLA:CPU, whose trace events carry the instruction names; on a GPU the
kernels' events name the kernels, so most of the time lands in the "no HLO
instruction" line. The table groups by `scope` (the first `depth` module names) and primitive and
gives milliseconds per call and the share of the summed op time. On a CPU the
thunk executor runs independent ops on several threads, so the sum can exceed
the wall time of a call; the shares are what to read.

`python benchmarks/op_profile.py --demo` profiles the tiny Voicebox train step.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/x.py`: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax

_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*[^\n]*?metadata=\{([^}]*)\}",
                          re.M)
_OP_NAME = re.compile(r'op_name="([^"]*)"')


def instruction_sources(hlo_text: str) -> dict[str, str]:
    """HLO instruction name -> its `op_name` metadata (the source's name stack)."""
    sources = {}
    for name, metadata in _INSTRUCTION.findall(hlo_text):
        found = _OP_NAME.search(metadata)
        if found:
            sources[name] = found.group(1)
    return sources


def split_source(op_name: str, depth: int) -> tuple[str, str, str]:
    """`jit(f)/transpose(jvp(Model))/layer_0/mlp/dot_general` -> ("layer_0/mlp", "bwd",
    "dot_general"): scope (first `depth` module names), pass, primitive."""
    parts = op_name.split("/")
    backward = any(p.startswith("transpose(") for p in parts)
    modules = [p for p in parts[1:-1] if "(" not in p and "[" not in p]
    return "/".join(modules[:depth]) or "(top)", "bwd" if backward else "fwd", parts[-1]


def trace_durations(fn: Any, args: tuple, runs: int) -> dict[str, float]:
    """Event name -> total microseconds over `runs` calls of `fn(*args)`."""
    jax.block_until_ready(fn(*args))
    with tempfile.TemporaryDirectory() as logdir:
        with jax.profiler.trace(logdir, create_perfetto_trace=True):
            for _ in range(runs):
                jax.block_until_ready(fn(*args))
        traces = glob.glob(f"{logdir}/**/*.trace.json.gz", recursive=True)
        if not traces:
            raise RuntimeError(f"jax.profiler wrote no Perfetto trace under {logdir}")
        events = json.load(gzip.open(traces[0]))["traceEvents"]
    totals: dict[str, float] = collections.Counter()
    for event in events:
        if event.get("ph") == "X" and "dur" in event:
            totals[event["name"]] += float(event["dur"])
    return totals


def op_profile(compiled: Any, *args: Any, runs: int = 3, depth: int = 2, top: int = 25,
               by_primitive: bool = True) -> str:
    """A markdown table of where `compiled(*args)` spends its time (see the module doc).

    Args:
      compiled: a `jax.stages.Compiled` (its `as_text()` gives the instruction names).
      args: its arguments (a donating program must be given fresh copies each call:
        wrap it in a function that copies them and pass that instead).
      runs: calls to trace.
      depth: module names kept in the scope.
      top: rows shown (the rest are summed into one).
      by_primitive: also split rows by primitive and pass.
    """
    sources = instruction_sources(compiled.as_text())
    durations = trace_durations(compiled, args, runs)
    groups: dict[tuple, float] = collections.Counter()
    unmatched = 0.0
    for name, micros in durations.items():
        if name not in sources:
            if name[:1] != "$" and "::" not in name:   # Python frames, runtime spans
                unmatched += micros / runs
            continue
        scope, direction, primitive = split_source(sources[name], depth)
        key = (scope, direction, primitive) if by_primitive else (scope,)
        groups[key] += micros / runs
    total = sum(groups.values())
    rows = sorted(groups.items(), key=lambda kv: -kv[1])
    header = ("| scope | pass | primitive | ms / call | share |\n|---|---|---|---:|---:|"
              if by_primitive else "| scope | ms / call | share |\n|---|---:|---:|")
    lines = [header]
    for key, micros in rows[:top]:
        lines.append("| " + " | ".join(key) + f" | {micros / 1e3:.1f} | {micros / total:.1%} |")
    rest = sum(m for _, m in rows[top:])
    if rest:
        blanks = " | |" if by_primitive else ""
        lines.append(f"| ({len(rows) - top} more){blanks} | {rest / 1e3:.1f} | {rest / total:.1%} |")
    lines.append(f"\nsummed op time {total / 1e3:.1f} ms per call ({runs} calls traced); "
                 f"{unmatched / 1e3:.1f} ms in trace events that name no HLO instruction")
    return "\n".join(lines)


def _demo(depth: int) -> str:
    """The tiny Voicebox audio model's train step (batch 4 x 512 frames), as
    `benchmarks/voicebox_speed.py` times it."""
    import flax.linen as nn
    import jax.numpy as jnp

    from audiolm_jax.models.voicebox import flow
    from audiolm_jax.models.voicebox.model import VoiceboxConfig, VoiceboxTransformer
    from audiolm_jax.training.optimizers import make_optimizer
    from audiolm_jax.training.state import TrainState
    from benchmarks import voicebox_speed

    config = voicebox_speed.load_config(argparse.Namespace(
        size="tiny", width=0, heads=0, depth=0, positions=""))
    cfg = VoiceboxConfig.from_dict(config.model.to_dict())
    model = VoiceboxTransformer(cfg)
    inputs = voicebox_speed.make_inputs(cfg, 4, 512)
    x1, phones, valid, mask = (jnp.asarray(inputs[k]) for k in ("x1", "phones", "valid", "mask"))
    params = nn.unbox(model.init(jax.random.key(0), x1[:1], x1[:1], phones[:1],
                                 jnp.zeros((1,)), valid[:1])["params"])
    state = TrainState.create(params, make_optimizer(config.optimizer))

    def step(state, rng):
        def loss(p):
            return flow.loss_fn(model, p, x1, phones, valid, rng, mask=mask)

        (value, _), grads = jax.value_and_grad(loss, has_aux=True)(state.params)
        return state.apply_gradients(grads), value

    compiled = jax.jit(step).lower(state, jax.random.key(1)).compile()
    return op_profile(compiled, state, jax.random.key(1), depth=depth)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", action="store_true", help="profile the tiny Voicebox step")
    parser.add_argument("--depth", type=int, default=2)
    options = parser.parse_args()
    if not options.demo:
        parser.error("import op_profile, or pass --demo")
    print(_demo(options.depth))
