r"""MusicGen generation in JAX against transformers with identical random weights.

    python benchmarks/musicgen_speed.py [--size small|tiny] [--seconds 2] [--batches 1,4]
        [--rtf-seconds 10] [--repeats 2] [--threads 2] [--out FILE]

A `transformers.MusicgenForConditionalGeneration` of musicgen-small's shape (T5-base
text encoder, 24 x 1024 decoder with 16 heads, 4 books of 2048 codes, EnCodec 32 kHz)
is built with random weights and converted (`convert.musicgen.musicgen_params`,
`convert.encodec.encodec_from_state`). Both sides run the whole text-to-audio call
with MusicGen's defaults: sampling with top-k 250, temperature 1, classifier-free
guidance 3 (the null pass batched beside each row), then the codec's decode.

Rows per batch size: seconds for `--seconds` of audio (the min of `--repeats` runs
after a warm-up; JAX compiles there, once per shape), generated frames per second
(batch x frames / seconds; each frame is 4 codes, i.e. one decoder step of the delay
pattern per row), the real-time factor, and the JAX speed-up. The `--rtf-seconds`
row is batch 1 at that length. Codes differ between the two (each side samples with
its own random numbers); greedy equality is tested in tests/test_musicgen.py.

The decoder FLOPs per step come from XLA's cost analysis of one compiled guided
decode step (both passes). "GB / step" is what a decode step must read at least:
the decoder's weights (not the text encoder's, nor the cross-attention's key and
value projections, whose outputs are cached at the prefill) and the self- and
cross-attention caches at their static size; "JAX GB/s" divides it by the JAX
seconds per step (text encoding and the codec's decode included, so a little
low), and with `--peak-gbps` (the device's memory bandwidth) "bandwidth use" is
their ratio: the figure to watch on an accelerator, where a batch-1 step is
bound by reading the weights.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python benchmarks/x.py`: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import jax.numpy as jnp
import numpy as np

from audiolm_jax.files import write_text_atomic

SIZES = {
    # facebook/musicgen-small: T5-base (12 x 768) and a 24 x 1024 decoder.
    "small": dict(text=dict(d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12,
                            vocab_size=32128),
                  decoder=dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                               ffn_dim=4096)),
    "tiny": dict(text=dict(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                           vocab_size=100),
                 decoder=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                              ffn_dim=128)),
}
CODEC = dict(model_type="encodec", sampling_rate=32_000, num_filters=64, codebook_size=2048,
             codebook_dim=128, hidden_size=128, upsampling_ratios=[8, 5, 4, 4],
             target_bandwidths=[2.2], use_causal_conv=False, normalize=False,
             pad_mode="reflect", use_conv_shortcut=False, num_lstm_layers=2)
TEXT_TOKENS = 12


def build(size: str):
    """(transformers model, our pipeline) with the same random weights."""
    import torch
    import transformers

    from audiolm_jax.convert.encodec import encodec_from_state
    from audiolm_jax.convert.musicgen import musicgen_params
    from audiolm_jax.models.musicgen.model import MusicGenConfig
    from audiolm_jax.models.musicgen.pipeline import MusicGenPipeline

    torch.manual_seed(0)
    s = SIZES[size]
    config = transformers.MusicgenConfig(
        text_encoder=dict(model_type="t5", **s["text"]), audio_encoder=CODEC,
        decoder=dict(vocab_size=2048, num_codebooks=4, **s["decoder"]))
    model = transformers.MusicgenForConditionalGeneration(config).eval()
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    ours = MusicGenConfig.from_hf(config.to_dict())
    params = jax.tree.map(jnp.asarray, musicgen_params(state, ours))
    codec_config, codec_variables = encodec_from_state(state, config.audio_encoder.to_dict(),
                                                       prefix="audio_encoder.")
    pipe = MusicGenPipeline(ours, params, codec_config, jax.tree.map(jnp.asarray,
                                                                     codec_variables))
    return model, pipe


def time_min(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def step_flops(pipe, batch: int) -> float:
    """XLA's FLOPs of one guided decode step (2 * batch rows) at the cache's full size."""
    from audiolm_jax.models.musicgen.model import MusicGen

    cache = jax.tree.map(jnp.zeros_like, __import__("flax").linen.unbox(
        pipe.model.init_cache(2 * batch, 100, TEXT_TOKENS)))
    step = jnp.zeros((2 * batch, 4), jnp.int32)
    fn = jax.jit(lambda p, c, s: pipe.model.apply({"params": p, "cache": c}, s,
                                                  method=MusicGen.decode, mutable=["cache"]))
    cost = fn.lower(pipe.params, cache, step).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost.get("flops", 0.0))


def bytes_per_step(pipe, rows: int, slots: int, context: int) -> float:
    """Bytes a guided decode step reads at least: decoder weights and the caches."""
    params = {k: v for k, v in pipe.params.items() if k not in ("text_encoder",
                                                               "text_projection")}
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    weights = sum(leaf.size * leaf.dtype.itemsize for path, leaf in flat
                  if not (len(path) >= 2 and getattr(path[-2], "key", None) == "cross_attn"
                          and getattr(path[-1], "key", None) == "kv"))
    c = pipe.config
    per_slot = 2 * c.embed_dim * 4 * c.num_layers            # keys and values, float32
    return float(weights + rows * (slots + context) * per_slot)


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--batches", default="1,4")
    parser.add_argument("--rtf-seconds", type=float, default=10.0, help="0 skips the row")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--peak-gbps", type=float, default=0.0,
                        help="the device's memory bandwidth, for a utilisation column")
    parser.add_argument("--out", help="also write the table here")
    args = parser.parse_args(argv)

    import torch

    from audiolm_jax.models.musicgen.generation import SamplingSettings

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    model, pipe = build(args.size)
    print(f"built and converted {args.size} in {time.perf_counter() - start:.0f} s")
    settings = SamplingSettings()                      # guidance 3, top-k 250, temperature 1
    rows = ["| batch | audio (s) | transformers (s) | JAX (s) | transformers frames/s | "
            "JAX frames/s | speed-up | JAX RTF | GFLOP / step | GB / step | JAX GB/s |"
            + (" bandwidth use |" if args.peak_gbps else ""),
            "|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if args.peak_gbps else "")]
    runs = [(int(b), args.seconds) for b in args.batches.split(",")]
    if args.rtf_seconds > 0:
        runs.append((1, args.rtf_seconds))
    for batch, seconds in runs:
        frames = pipe.frames_for(seconds)
        ids = np.random.default_rng(0).integers(2, 100, (batch, TEXT_TOKENS)).astype(np.int32)
        mask = np.ones_like(ids)

        def ours(ids=ids, mask=mask, frames=frames):
            codes = pipe.generate_codes(ids, mask, frames, settings, progress=False)
            return pipe.decode(codes)

        def reference(ids=ids, mask=mask, frames=frames):
            with torch.no_grad():
                return model.generate(input_ids=torch.tensor(ids, dtype=torch.long),
                                      attention_mask=torch.tensor(mask), do_sample=True,
                                      top_k=250, guidance_scale=3.0,
                                      max_new_tokens=frames + 3)

        ours()                                          # compiles
        jax_s = time_min(ours, args.repeats)
        ref_s = time_min(reference, max(1, args.repeats - 1))
        flops = step_flops(pipe, batch)
        steps = frames + 3
        moved = bytes_per_step(pipe, 2 * batch, steps + 1, TEXT_TOKENS)
        rate = moved * steps / jax_s / 1e9
        row = (f"| {batch} | {seconds:g} | {ref_s:.1f} | {jax_s:.1f} | "
               f"{batch * frames / ref_s:.1f} | {batch * frames / jax_s:.1f} | "
               f"{ref_s / jax_s:.2f}x | {jax_s / seconds:.2f} | {flops / 1e9:.2f} | "
               f"{moved / 1e9:.2f} | {rate:.1f} |"
               + (f" {rate / args.peak_gbps:.0%} |" if args.peak_gbps else ""))
        print(row, f"({steps} steps)", flush=True)
        rows.append(row)
    table = "\n".join(rows)
    print(table)
    if args.out:
        write_text_atomic(Path(args.out), table + "\n")
    return table


if __name__ == "__main__":
    main()
