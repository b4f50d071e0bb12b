r"""Bark's stages in JAX against `transformers` with identical weights: prefill and decoding.

    python benchmarks/bark_speed.py [--size small|tiny] [--new-tokens 64] [--prompt 8] [--batches 1,8]
        [--repeats 3] [--threads 2] [--out FILE]

Stages of `suno/bark-small`'s shape (768 wide, 12 layers, 12 heads; `--size
tiny` for a quick look) with random weights, built in `transformers`
(`BarkSemanticModel`, `BarkCoarseModel`, `BarkFineModel`) and converted
(`convert.bark`). Rows, each the min of `--repeats` interleaved runs:

* `prefill`: the semantic stage over its 257-position context, the coarse
  stage over a full window prompt (256 + 1 + 630 ids), the fine stage over one
  1024-frame window for one book (it never decodes).
* `decode`: greedy decoding of `--new-tokens` tokens after a `--prompt`-id
  prompt (8: the time is the decoding's, not the prompt's prefill) with the KV
  cache, at each batch size: ours `sampling.generate` over
  `Decoder.decode` under `jit` (compiled once before timing); theirs
  `model.generate(do_sample=False)` with its dynamic cache. Tokens/s counts
  every row's tokens. Both produce the same tokens (checked).

GFLOP per decoded token is `2 x` the stage's matmul parameters (embeddings
excluded) plus the attention over the context, at the mid-point of the run.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import jax.numpy as jnp
import numpy as np

from audiolm_jax.convert.bark import causal_stage_params, fine_stage_params
from audiolm_jax.files import write_text_atomic
from audiolm_jax.layers.decoder import Decoder
from audiolm_jax.models.bark import BarkFine, BarkStageConfig, causal_decoder
from audiolm_jax.sampling.autoregressive import generate

SIZES = {"small": dict(hidden_size=768, num_layers=12, num_heads=12, block_size=1024),
         "tiny": dict(hidden_size=64, num_layers=2, num_heads=4, block_size=1024)}
VOCAB = {"semantic": (129_600, 10_048), "coarse": (12_096, 12_096), "fine": (1_056, 1_056)}


def build(stage: str, size: str):
    import torch
    import transformers

    dims = SIZES[size]
    v_in, v_out = VOCAB[stage]
    kwargs = dict(dims, input_vocab_size=v_in, output_vocab_size=v_out, bias=False)
    torch.manual_seed(0)
    if stage == "fine":
        kwargs.update(n_codes_total=8, n_codes_given=1)
        reference = transformers.BarkFineModel(transformers.BarkFineConfig(**kwargs)).eval()
        config = BarkStageConfig(**kwargs)
        return reference, config, fine_stage_params(reference.state_dict(), config)
    cls = transformers.BarkSemanticModel if stage == "semantic" else transformers.BarkCoarseModel
    config_cls = (transformers.BarkSemanticConfig if stage == "semantic"
                  else transformers.BarkCoarseConfig)
    reference = cls(config_cls(**kwargs)).eval()
    config = BarkStageConfig(**kwargs)
    return reference, config, causal_stage_params(reference.state_dict(), config)


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def compare(ours, theirs, repeats: int) -> tuple[float, float]:
    """(our, their) min seconds, each warmed up once first (compiling ours)."""
    import torch

    with torch.no_grad():
        ours(), theirs()
        return best_of(ours, repeats), best_of(theirs, repeats)


def prefill_row(stage: str, reference, config: BarkStageConfig, params, rng,
                repeats: int) -> tuple:
    """One full-sequence pass: the fine stage's 1024-frame window for one book, or a
    causal stage's longest prompt (the semantic context, a coarse window)."""
    import torch

    if stage == "fine":
        codes = rng.integers(0, 1024, (1, 1024, 8))
        model = BarkFine(config)
        run = jax.jit(lambda p, c: model.apply({"params": p}, c, 2))   # weights as arguments
        codes_j, codes_t = jnp.asarray(codes), torch.from_numpy(codes)
        ours, theirs = compare(lambda: jax.block_until_ready(run(params, codes_j)),
                               lambda: reference(codebook_idx=2, input_ids=codes_t), repeats)
        return stage, "prefill 1024 frames, one book", 1, ours, theirs, ""
    decoder = causal_decoder(config)
    length = 257 if stage == "semantic" else 887
    tokens = rng.integers(0, min(config.input_vocab_size, 10_000), (1, length))
    forward = jax.jit(lambda p, t: decoder.apply({"params": p}, t))
    tokens_j, tokens_t = jnp.asarray(tokens), torch.from_numpy(tokens)
    ours, theirs = compare(lambda: jax.block_until_ready(forward(params, tokens_j)),
                           lambda: reference(input_ids=tokens_t), repeats)
    return stage, f"prefill {length} ids", 1, ours, theirs, ""


def decode_row(stage: str, reference, config: BarkStageConfig, params, rng, batch: int,
               args: argparse.Namespace) -> tuple:
    """Greedy decoding of `args.new_tokens` after an `args.prompt`-id prompt, both sides."""
    import torch
    import transformers

    decoder = causal_decoder(config)
    n, plen = args.new_tokens, args.prompt
    prompt = rng.integers(0, min(config.input_vocab_size, 10_000), (batch, plen))

    @jax.jit
    def run(weights, cache, prompt):
        # The weights are an argument (not constants folded into the program).
        def step_fn(cache, tokens, positions):
            logits, v = decoder.apply({"params": weights, "cache": cache}, tokens,
                                      method=Decoder.decode, mutable=["cache"])
            return logits[:, 0], v["cache"]

        def prefill_fn(cache, prompt, lengths):
            _, v = decoder.apply({"params": weights, "cache": cache}, prompt, lengths - 1,
                                 method=Decoder.prefill, mutable=["cache"])
            return v["cache"]

        return generate(step_fn, cache, prompt, jnp.full((batch,), plen), n,
                        jax.random.key(0), temperature=0.0, prefill_fn=prefill_fn).tokens

    cache, prompt_j = decoder.init_cache(batch, plen + n), jnp.asarray(prompt)
    # The stages' own `generate` runs Bark's pipeline; the plain causal-LM loop is
    # their parent's.
    hf_generate = functools.partial(transformers.GenerationMixin.generate, reference,
                                    torch.from_numpy(prompt), max_new_tokens=n,
                                    min_new_tokens=n, do_sample=False, pad_token_id=0)
    ours, theirs = compare(lambda: jax.block_until_ready(run(params, cache, prompt_j)),
                           hf_generate, args.repeats)
    out = np.asarray(run(params, cache, prompt_j))
    with torch.no_grad():
        expected = hf_generate().numpy()
    same = float(np.mean(out[:, plen:] == expected[:, plen:]))
    flops = decode_flops(config, plen + n // 2) / 1e9
    return (stage, f"decode {n} tokens (GFLOP/token {flops:.2f})", batch, ours, theirs,
            f"{same:.0%} same tokens")


def decode_flops(config: BarkStageConfig, context: int) -> float:
    """Matmul FLOPs of one decoded token: weights (12 E^2 per layer + the head) and
    attention scores and values over `context` keys."""
    e = config.hidden_size
    weights = config.num_layers * 12 * e * e + e * config.output_vocab_size
    return 2.0 * weights + 4.0 * config.num_layers * context * e


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prompt", type=int, default=8, help="prompt ids before decoding")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    rows = []
    rng = np.random.default_rng(0)
    for stage in ("semantic", "coarse", "fine"):
        reference, config, params = build(stage, args.size)
        print(f"{stage}: {sum(p.numel() for p in reference.parameters()) / 1e6:.0f} M params",
              flush=True)
        rows.append(prefill_row(stage, reference, config, params, rng, args.repeats))
        print(rows[-1], flush=True)
        for batch in batches if stage != "fine" else ():   # the fine stage never decodes
            rows.append(decode_row(stage, reference, config, params, rng, batch, args))
            print(rows[-1], flush=True)

    lines = ["| stage | what | batch | JAX ms | transformers ms | speed-up | JAX tokens/s "
             "| transformers tokens/s | note |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for stage, what, batch, ours, theirs, note in rows:
        rate = ""
        if what.startswith("decode"):
            count = batch * args.new_tokens
            rate = f"{count / ours:.0f} | {count / theirs:.0f}"
        else:
            rate = "- | -"
        lines.append(f"| {stage} | {what} | {batch} | {1e3 * ours:.0f} | {1e3 * theirs:.0f} | "
                     f"{theirs / ours:.2f} | {rate} | {note} |")
    table = "\n".join(lines)
    print(f"\njax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__} "
          f"({torch.get_num_threads()} threads); {args.size} stages; min of {args.repeats}\n")
    print(table)
    if args.out:
        write_text_atomic(Path(args.out), table + "\n")


if __name__ == "__main__":
    main()
