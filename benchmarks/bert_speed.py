r"""BERT text encoder speed: our jitted `Bert` vs `transformers.BertModel`, same weights.

    .venv/bin/python benchmarks/bert_speed.py [--batch 32] [--length 32] [--repeats 10] \
        [--shapes minilm-l6 bert-base]

For each shape a random-weight (seeded) HF `BertModel` is converted with
`audiolm_jax.convert.bert.variables_from_state_dict`; both encode the same
padded batch of random ids (lengths spread over [length/4, length]). HF runs in
eval mode under `torch.no_grad` on CPU with torch's default threads, ours
jitted in float32 on the default JAX device (compile time excluded). Reports
the best of `--repeats` forward times, tokens per second (real and padded
tokens alike) and the max abs difference of the last hidden states on real
tokens, as a markdown table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import jax.numpy as jnp
import numpy as np

SHAPES = {
    # sentence-transformers/all-MiniLM-L6-v2 (22.7 M params)
    "minilm-l6": dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6,
                      num_attention_heads=12, intermediate_size=1536),
    # bert-base-uncased (109 M params)
    "bert-base": dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12,
                      num_attention_heads=12, intermediate_size=3072),
}


def _best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def run_shape(name: str, batch: int, length: int, repeats: int) -> dict:
    import torch
    import transformers

    from audiolm_jax.convert.bert import variables_from_state_dict
    from audiolm_jax.models.bert.model import Bert, BertConfig

    kwargs = SHAPES[name]
    torch.manual_seed(0)
    hf = transformers.BertModel(transformers.BertConfig(**kwargs)).eval()
    config = BertConfig.from_hf(hf.config)
    state = {k: v.numpy() for k, v in hf.state_dict().items()}
    variables = jax.tree.map(jnp.asarray, variables_from_state_dict(state, config))
    n_params = sum(int(np.size(x)) for x in jax.tree.leaves(variables))

    rng = np.random.default_rng(0)
    lengths = rng.integers(max(2, length // 4), length + 1, size=batch)
    lengths[0] = length
    mask = np.arange(length)[None, :] < lengths[:, None]
    ids = np.where(mask, rng.integers(1000, kwargs["vocab_size"], size=(batch, length)), 0)
    ids = ids.astype(np.int32)

    apply = jax.jit(lambda v, i, m: Bert(config).apply(v, i, m))
    ours = np.asarray(jax.block_until_ready(apply(variables, ids, mask)))   # compiles
    ours_s = _best_of(lambda: jax.block_until_ready(apply(variables, ids, mask)), repeats)

    ids_t, mask_t = torch.tensor(ids, dtype=torch.long), torch.tensor(mask, dtype=torch.long)

    def hf_forward():
        with torch.no_grad():
            return hf(input_ids=ids_t, attention_mask=mask_t).last_hidden_state

    ref = hf_forward().numpy()
    hf_s = _best_of(hf_forward, repeats)
    return {"shape": name, "params": n_params,
            "layers": f"{config.num_hidden_layers} x {config.hidden_size}",
            "ours_ms": 1e3 * ours_s, "hf_ms": 1e3 * hf_s,
            "ours_tok_s": batch * length / ours_s, "hf_tok_s": batch * length / hf_s,
            "max_diff": float(np.abs(ours - ref)[mask].max())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=32, help="tokens per row (padded)")
    parser.add_argument("--repeats", type=int, default=10, help="best of this many forwards")
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    args = parser.parse_args(argv)
    import torch

    print(f"batch {args.batch} x {args.length} tokens, best of {args.repeats}; "
          f"JAX {jax.__version__} on {jax.devices()[0].platform}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads)\n")
    print("| shape | layers | params | ours (ms) | transformers (ms) | speed-up | "
          "ours tok/s | transformers tok/s | max abs diff |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.shapes:
        r = run_shape(name, args.batch, args.length, args.repeats)
        print(f"| {r['shape']} | {r['layers']} | {r['params'] / 1e6:.1f} M | "
              f"{r['ours_ms']:.1f} | {r['hf_ms']:.1f} | {r['hf_ms'] / r['ours_ms']:.2f}x | "
              f"{r['ours_tok_s']:,.0f} | {r['hf_tok_s']:,.0f} | {r['max_diff']:.1e} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
