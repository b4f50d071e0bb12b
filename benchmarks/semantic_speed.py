r"""Semantic encoder speed: our jitted w2v-BERT vs `transformers.Wav2Vec2BertModel`, same weights.

    .venv/bin/python benchmarks/semantic_speed.py [--encoder base] [--seconds 10] \
        [--batch 1] [--repeats 5] [--train tiny base:2]

1. Forward throughput: a random-weight HF model of the chosen shape is
   converted with `audiolm_jax.convert.w2v_bert`; both run the same stacked
   filterbank features (HF in eval mode under `torch.inference_mode`, ours
   jitted), best of `--repeats`. Seconds of audio per second, the max abs
   difference of the outputs, FLOPs per second of audio (XLA's cost analysis of
   our forward) and the front end's own time (our JAX fbank vs HF's numpy
   `SeamlessM4TFeatureExtractor`).
2. Pretraining step time of `configs/w2v_bert/<name>.py` (its objective, the
   config's batch unless given as NAME:BATCH), with XLA's FLOP count of the step
   and the achieved FLOP/s. MFU needs a peak FLOP/s: pass `--peak-tflops` on an
   accelerator (e.g. 989 for an H100's dense bf16); on CPU it is not reported.
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

ENCODERS = {
    "tiny": dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                 intermediate_size=256, conv_depthwise_kernel_size=15),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072),
    "w2v-bert-2.0": dict(),     # transformers' defaults: 24 x 1024, 580 M params
}


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def flops_of(compiled) -> float:
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    return float(analysis.get("flops", float("nan")))


def forward_benchmark(args) -> None:
    import torch
    import transformers

    from audiolm_jax.audio.fbank import stacked_features
    from audiolm_jax.convert.w2v_bert import variables_from_state_dict
    from audiolm_jax.models.w2v_bert.model import W2vBert, W2vBertConfig

    torch.manual_seed(0)
    hf_config = transformers.Wav2Vec2BertConfig(**ENCODERS[args.encoder])
    reference = transformers.Wav2Vec2BertModel(hf_config).eval()
    config = W2vBertConfig.from_hf(hf_config)
    variables = jax.tree.map(jnp.asarray, variables_from_state_dict(
        {k: v.numpy() for k, v in reference.state_dict().items()}, config))
    params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables))
    samples = int(args.seconds * config.sample_rate)
    audio = 0.1 * np.random.default_rng(0).standard_normal((args.batch, samples)).astype(
        np.float32)

    front_end = jax.jit(lambda a: stacked_features(a, config=config.fbank)[0])
    features = np.asarray(front_end(audio))
    ours_front = best_time(lambda: front_end(audio).block_until_ready(), args.repeats)
    extractor = transformers.SeamlessM4TFeatureExtractor()
    hf_front = best_time(lambda: extractor(list(audio), sampling_rate=config.sample_rate,
                                           return_tensors="np"), max(1, args.repeats // 2))

    model = W2vBert(config)
    forward = jax.jit(lambda v, x: model.apply(v, x)["last_hidden_state"])
    compiled = forward.lower(variables, features).compile()
    flops = flops_of(compiled)
    ours = np.asarray(compiled(variables, features))
    ours_time = best_time(lambda: compiled(variables, features).block_until_ready(),
                          args.repeats)
    torch_features = torch.from_numpy(features)
    with torch.inference_mode():
        theirs = reference(torch_features).last_hidden_state.numpy()
        torch_time = best_time(lambda: reference(torch_features), args.repeats)
    audio_seconds = args.batch * args.seconds
    print(f"\n## Forward: {args.encoder} ({params / 1e6:.1f} M params, {config.num_hidden_layers}"
          f" x {config.hidden_size}), batch {args.batch} x {args.seconds:g} s, "
          f"{features.shape[1]} frames each; {jax.devices()[0].platform}, "
          f"torch {torch.__version__} with {torch.get_num_threads()} threads\n")
    print("| | ours (JAX) | transformers | ratio |\n|---|---:|---:|---:|")
    print(f"| encoder forward | {ours_time:.3f} s ({audio_seconds / ours_time:.1f} audio s/s) | "
          f"{torch_time:.3f} s ({audio_seconds / torch_time:.1f} audio s/s) | "
          f"{torch_time / ours_time:.2f}x |")
    print(f"| filterbank front end | {ours_front:.3f} s | {hf_front:.3f} s (numpy) | "
          f"{hf_front / ours_front:.1f}x |")
    print(f"\nmax |ours - transformers| = {np.abs(ours - theirs).max():.2e}; "
          f"{flops / audio_seconds / 1e9:.2f} GFLOP per second of audio (XLA cost analysis), "
          f"{flops / ours_time / 1e9:.1f} GFLOP/s achieved")


def train_benchmark(spec: str, args) -> None:
    import importlib

    from flax import linen as nn

    from audiolm_jax.models.w2v_bert import pretrain as sp
    from audiolm_jax.training.optimizers import make_optimizer
    from audiolm_jax.training.state import TrainState

    name, _, batch = spec.partition(":")
    config = importlib.import_module(f"configs.w2v_bert.{name}").get_config()
    batch_size = int(batch) if batch else config.data.batch_size
    samples = int(config.data.crop_seconds * config.model.encoder.sample_rate)
    model = sp.build_model(config)
    tx = make_optimizer(config.optimizer)
    boxed = sp.make_init_fn(model, tx)(jax.random.key(0))
    state = TrainState.create(nn.meta.unbox(boxed.params), tx)      # one device, unsharded
    rng = np.random.default_rng(0)
    batch = {"audio": 0.1 * rng.standard_normal((batch_size, samples, 1)).astype(np.float32),
             "mask": np.ones((batch_size, samples), bool)}
    step = jax.jit(sp.make_train_step(model), donate_argnums=0)
    compiled = step.lower(state, batch, jax.random.key(0)).compile()
    flops = flops_of(compiled)
    state, metrics = compiled(state, batch, jax.random.key(0))
    jax.block_until_ready(metrics)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        state, metrics = compiled(state, batch, jax.random.key(0))
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    seconds = min(times)
    params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
    line = (f"| {name} | {config.model.pretrain.objective} | {params / 1e6:.1f} M | "
            f"{batch_size} x {config.data.crop_seconds:g} s | "
            f"{seconds:.3f} s | {flops / 1e9:.1f} | {flops / seconds / 1e9:.1f} |")
    if args.peak_tflops:
        line += f" {flops / seconds / (args.peak_tflops * 1e12):.1%} |"
    print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", choices=list(ENCODERS), default="base")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--train", nargs="*", default=["tiny", "base:2"],
                        help="NAME[:BATCH]: time a pretraining step of configs/w2v_bert/NAME.py "
                             "(at BATCH examples instead of the config's)")
    parser.add_argument("--peak-tflops", type=float, default=0.0)
    args = parser.parse_args()
    forward_benchmark(args)
    if args.train:
        print("\n## Pretraining step\n")
        print("| config | objective | params | batch | step | GFLOP/step | GFLOP/s |" +
              (" MFU |" if args.peak_tflops else "") + "\n|---|---|---:|---|---:|---:|---:|" +
              ("---:|" if args.peak_tflops else ""))
        for name in args.train:
            train_benchmark(name, args)


if __name__ == "__main__":
    main()
