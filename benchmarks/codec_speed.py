r"""JAX codec vs PyTorch (Hugging Face EnCodec) on the same CPU, same weights.

    python benchmarks/codec_speed.py [--config small|encodec24k] [--seconds 10]
        [--batch 8] [--train-seconds 1.0] [--repeats 5] [--threads 2]

Two measurements, each JAX and torch interleaved repeat by repeat (the min of
the repeats is reported, so a shared machine's noise hits both alike):

* inference: encode + decode of `--seconds` of mono audio (batch 1) at
  `--bandwidth` kbit/s. Torch runs `transformers.EncodecModel.encode/decode`
  with random weights (codebooks included); our `Codec` runs the jitted
  `encode` + `decode` with those weights converted by
  `audiolm_jax.convert.encodec.variables_from_state_dict`. The codes and the
  decoded audio are compared before timing. Real-time factor = audio seconds
  per wall-clock second.
* train step: the SEANet autoencoder alone (encoder -> decoder, no quantizer),
  L1 reconstruction loss, Adam, on `--batch` x `--train-seconds` of audio:
  jitted with donated params/optimizer state here, forward + backward +
  `torch.optim.Adam.step()` there (the encoder and decoder of the same
  `EncodecModel`, same weights).

Huge pages: by default the script re-executes itself with
`GLIBC_TUNABLES=glibc.malloc.hugetlb=1` (pass `--no-hugepages` to skip).
Both frameworks allocate their large buffers with malloc, which for such
sizes maps fresh pages per call; on a VM each first touch of a 4 KiB page is a
costly fault. XLA allocates one ~1.2 GB temp buffer per SEANet train step:
~300-460 k minor faults and ~1.5 s of system time per step, against ~2 k
faults with transparent huge pages for malloc. It applies to torch alike
(same process), so the comparison stays fair; set it for real training too.

FLOPs are XLA's count for the compiled JAX programs (`cost_analysis`); the
achieved GFLOP/s of both sides divide that count by their own times.

Configs: `encodec24k` is EnCodec 24 kHz (32 filters, ratios 8/5/4/2, 2-layer
LSTMs; 14.9 M SEANet params); `small` is the same without the LSTMs (6.4 M
params; Hugging Face cannot build zero LSTM layers, so its LSTM modules are
swapped for identities, which is what our `num_lstm_layers=0` computes).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import jax.numpy as jnp
import numpy as np
import optax

from audiolm_jax.convert.encodec import variables_from_state_dict
from audiolm_jax.models.codec.model import Codec, CodecConfig
from audiolm_jax.models.codec.seanet import SEANetDecoder, SEANetEncoder

CONFIGS = {"small": 0, "encodec24k": 2}  # name -> LSTM layers; the rest is EnCodec 24 kHz


# ----------------------------------------------------------------------------- models


def build_torch(name: str, seed: int = 0):
    """A random-weight `EncodecModel` (codebooks randomized too, so codes are not all 0)."""
    import torch
    from transformers import EncodecConfig, EncodecModel
    from transformers.models.encodec import modeling_encodec as me

    lstm_layers = CONFIGS[name]
    torch.manual_seed(seed)
    model = EncodecModel(EncodecConfig(num_lstm_layers=max(lstm_layers, 1))).eval()
    if lstm_layers == 0:
        for part in (model.encoder, model.decoder):
            for i, layer in enumerate(part.layers):
                if isinstance(layer, me.EncodecLSTM):
                    part.layers[i] = torch.nn.Identity()
    with torch.no_grad():
        for layer in model.quantizer.layers:
            layer.codebook.embed.normal_()
            layer.codebook.inited.fill_(True)
    config = CodecConfig.from_encodec_config(model.config)
    config = dataclasses.replace(
        config, seanet=dataclasses.replace(config.seanet, num_lstm_layers=lstm_layers))
    return model, config


def convert(model, config: CodecConfig) -> dict:
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    return jax.tree.map(jnp.asarray, variables_from_state_dict(state, config))


def timed(fn, repeats: int) -> float:
    """Min wall time of `repeats` calls of fn (which must block until done)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def interleaved(fns: dict, repeats: int) -> dict[str, float]:
    """Min time of each fn, alternating between them repeat by repeat."""
    best = {k: float("inf") for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            best[k] = min(best[k], timed(fn, 1))
    return best


def flops_of(compiled) -> float:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    return float(cost.get("flops", float("nan")))


# ----------------------------------------------------------------------------- inference


def bench_inference(args, torch_model, config: CodecConfig, variables: dict) -> dict:
    import torch

    n_q = config.num_quantizers_for(args.bandwidth)
    samples = int(args.seconds * config.sample_rate)
    audio = (0.1 * np.random.default_rng(0).standard_normal((1, samples, 1))).astype(np.float32)
    codec = Codec(config)

    @jax.jit
    def roundtrip(variables, audio):
        codes, scale = codec.apply(variables, audio, n_q, method=Codec.encode)
        return codes, codec.apply(variables, codes, scale, method=Codec.decode)

    x_jax = jnp.asarray(audio)
    x_torch = torch.from_numpy(audio.transpose(0, 2, 1).copy())

    def run_torch():
        with torch.inference_mode():
            enc = torch_model.encode(x_torch, bandwidth=args.bandwidth)
            return enc.audio_codes, torch_model.decode(enc.audio_codes, enc.audio_scales)[0]

    compiled = roundtrip.lower(variables, x_jax).compile()
    codes, recon = jax.block_until_ready(compiled(variables, x_jax))
    ref_codes, ref_recon = run_torch()
    ref_codes = ref_codes[0].numpy().transpose(0, 2, 1)  # [chunk, batch, n_q, frames] -> ours
    ref_recon = ref_recon.numpy().transpose(0, 2, 1)
    times = interleaved({"jax": lambda: jax.block_until_ready(compiled(variables, x_jax)),
                         "torch": run_torch}, args.repeats)
    return dict(times=times, flops=flops_of(compiled), audio_s=args.seconds, n_q=n_q,
                code_match=float(np.mean(np.asarray(codes) == ref_codes)),
                max_diff=float(np.abs(np.asarray(recon) - ref_recon).max()))


# ----------------------------------------------------------------------------- train step


def bench_train(args, torch_model, config: CodecConfig, variables: dict) -> dict:
    import torch

    samples = int(args.train_seconds * config.sample_rate)
    audio = (0.1 * np.random.default_rng(1).standard_normal((args.batch, samples, 1))
             ).astype(np.float32)
    encoder, decoder = SEANetEncoder(config.seanet), SEANetDecoder(config.seanet)
    optimizer = optax.adam(1e-4)

    def loss_fn(params, x):
        latents = encoder.apply({"params": params["encoder"]}, x)
        recon = decoder.apply({"params": params["decoder"]}, latents)[:, :x.shape[1]]
        return jnp.mean(jnp.abs(recon - x))

    def step(params, opt_state, x):
        loss, grads = jax.value_and_grad(loss_fn)(params, x)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    params = jax.tree.map(jnp.array, variables["params"])  # copies: donated below
    state = {"params": params, "opt": optimizer.init(params)}
    x_jax = jnp.asarray(audio)
    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(state["params"], state["opt"],
                                                          x_jax).compile()

    def run_jax():
        state["params"], state["opt"], loss = compiled(state["params"], state["opt"], x_jax)
        return loss.block_until_ready()

    t_encoder, t_decoder = torch_model.encoder.train(), torch_model.decoder.train()
    t_params = list(t_encoder.parameters()) + list(t_decoder.parameters())
    t_opt = torch.optim.Adam(t_params, lr=1e-4)
    x_torch = torch.from_numpy(audio.transpose(0, 2, 1).copy())

    def run_torch():
        t_opt.zero_grad(set_to_none=True)
        recon = t_decoder(t_encoder(x_torch))[..., :samples]
        loss = (recon - x_torch).abs().mean()
        loss.backward()
        t_opt.step()
        return loss.item()

    losses = (float(run_jax()), run_torch())  # warm-up; same weights -> same first loss
    times = interleaved({"jax": run_jax, "torch": run_torch}, args.repeats)
    n_params = sum(p.size for p in jax.tree.leaves(params))
    return dict(times=times, flops=flops_of(compiled), audio_s=args.batch * args.train_seconds,
                first_losses=losses, params=n_params)


# ----------------------------------------------------------------------------- main


def report(title: str, result: dict, extra: str) -> None:
    t = result["times"]
    flops = result["flops"]
    print(f"\n{title}  ({extra})")
    print(f"  {'':6s} {'seconds':>9s} {'x real time':>12s} {'GFLOP/s':>9s}")
    for side in ("jax", "torch"):
        print(f"  {side:6s} {t[side]:9.3f} {result['audio_s'] / t[side]:12.1f} "
              f"{flops / t[side] / 1e9:9.1f}")
    print(f"  torch / jax time ratio: {t['torch'] / t['jax']:.2f} (> 1: JAX is faster); "
          f"XLA FLOPs: {flops / 1e9:.1f} G")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=list(CONFIGS), default="small")
    parser.add_argument("--seconds", type=float, default=10.0, help="inference audio length")
    parser.add_argument("--bandwidth", type=float, default=6.0, help="inference kbit/s")
    parser.add_argument("--batch", type=int, default=8, help="train batch")
    parser.add_argument("--train-seconds", type=float, default=1.0, help="per train example")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--skip", choices=["inference", "train"], default=None)
    parser.add_argument("--no-hugepages", action="store_true",
                        help="do not re-run with GLIBC_TUNABLES=glibc.malloc.hugetlb=1")
    args = parser.parse_args()
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if not args.no_hugepages and "glibc.malloc.hugetlb" not in tunables:
        env = dict(os.environ, GLIBC_TUNABLES=":".join(
            t for t in (tunables, "glibc.malloc.hugetlb=1") if t))
        os.execve(sys.executable, [sys.executable, *sys.argv], env)  # malloc reads it at start

    import torch
    import transformers

    torch.set_num_threads(args.threads)
    print(f"jax {jax.__version__} ({jax.devices()[0].platform}, {os.cpu_count()} CPUs), "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"transformers {transformers.__version__}")
    print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r} "
          f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')!r}")
    torch_model, config = build_torch(args.config)
    variables = convert(torch_model, config)
    if args.skip != "inference":
        r = bench_inference(args, torch_model, config, variables)
        report(f"inference [{args.config}]: encode + decode of {args.seconds:g} s, batch 1",
               r, f"{r['n_q']} codebooks; codes equal to torch's: {100 * r['code_match']:.2f}%, "
               f"max |audio diff| {r['max_diff']:.1e}")
    if args.skip != "train":
        r = bench_train(args, torch_model, config, variables)
        report(f"train step [{args.config}]: SEANet autoencoder, {r['params'] / 1e6:.1f} M params, "
               f"batch {args.batch} x {args.train_seconds:g} s, L1 + Adam", r,
               f"first loss jax {r['first_losses'][0]:.6f} / torch {r['first_losses'][1]:.6f}")


if __name__ == "__main__":
    main()
