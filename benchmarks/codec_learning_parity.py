r"""Does our codec learn like the PyTorch reference? Same init, same batches, same recipe.

    .venv/bin/python benchmarks/codec_learning_parity.py --steps 150 --lr 1e-3

Builds a random-weight `transformers.EncodecModel` (tiny: 8 filters, 32-dim
latents, 1 LSTM layer), converts its weights with
`audiolm_jax.convert.encodec.variables_from_state_dict`, and trains both
SEANet autoencoders (quantizer left out) with time-domain L1 and Adam on the
same batches of the built-in speech corpus. Prints the mean L1 of each per
window of steps beside the L1 of a silent output. Matching curves rule out a
gradient bug in our layers: a recipe that learns slowly learns slowly in both.
(Both start from PyTorch's init here, which is what stalls them: the waveform
does not reach the latents. Our trainers default to `param_init="lecun"`; see
`SEANetConfig`.)
Needs the `test` extra (torch, transformers).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import jax.numpy as jnp
import numpy as np
import optax

from audiolm_jax.convert.encodec import variables_from_state_dict
from audiolm_jax.data.corpora import build_corpus
from audiolm_jax.data.pipeline import make_audio_pipeline
from audiolm_jax.data.sources import ManifestSource
from audiolm_jax.models.codec.model import CodecConfig
from audiolm_jax.models.codec.seanet import SEANetDecoder, SEANetEncoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop-seconds", type=float, default=0.5)
    parser.add_argument("--window", type=int, default=25, help="steps averaged per printed row")
    args = parser.parse_args()

    import torch
    from transformers import EncodecConfig, EncodecModel

    torch.set_num_threads(2)
    torch.manual_seed(0)
    reference = EncodecModel(EncodecConfig(num_filters=8, hidden_size=32, num_lstm_layers=1))
    config = CodecConfig.from_encodec_config(reference.config)
    variables = variables_from_state_dict(
        {k: t.detach().numpy() for k, t in reference.state_dict().items()}, config)
    encoder, decoder = SEANetEncoder(config.seanet), SEANetDecoder(config.seanet)
    params = {"encoder": variables["params"]["encoder"], "decoder": variables["params"]["decoder"]}
    optimizer = optax.adam(args.lr, b1=0.5, b2=0.9)
    opt_state = optimizer.init(params)

    def loss_fn(p, x):
        latents = encoder.apply({"params": p["encoder"]}, x)
        return jnp.mean(jnp.abs(decoder.apply({"params": p["decoder"]}, latents)[:, :x.shape[1]] - x))

    @jax.jit
    def jax_step(p, o, x):
        loss, grads = jax.value_and_grad(loss_fn)(p, x)
        updates, o = optimizer.update(grads, o, p)
        return optax.apply_updates(p, updates), o, loss

    torch_params = list(reference.encoder.parameters()) + list(reference.decoder.parameters())
    torch_opt = torch.optim.Adam(torch_params, lr=args.lr, betas=(0.5, 0.9))
    source = ManifestSource(build_corpus("speech", size="default"))
    batches = iter(make_audio_pipeline(source, sample_rate=config.sample_rate,
                                       crop_samples=int(args.crop_seconds * config.sample_rate),
                                       batch_size=args.batch, seed=0))
    curves: dict[str, list[float]] = {"jax": [], "torch": [], "silent": []}
    print(f"{'steps':>11s}  {'L1 jax':>8s}  {'L1 torch':>8s}  {'silent':>8s}")
    for i in range(args.steps):
        x = next(batches)["audio"]
        params, opt_state, loss = jax_step(params, opt_state, jnp.asarray(x))
        curves["jax"].append(float(loss))
        x_torch = torch.from_numpy(x.transpose(0, 2, 1).copy())
        torch_opt.zero_grad(set_to_none=True)
        recon = reference.decoder(reference.encoder(x_torch))[..., :x.shape[1]]
        torch_loss = (recon - x_torch).abs().mean()
        torch_loss.backward()
        torch_opt.step()
        curves["torch"].append(torch_loss.item())
        curves["silent"].append(float(np.abs(x).mean()))
        if (i + 1) % args.window == 0:
            window = slice(i + 1 - args.window, i + 1)
            row = [np.mean(curves[k][window]) for k in ("jax", "torch", "silent")]
            print(f"{i + 2 - args.window:5d}-{i + 1:<5d}  " + "  ".join(f"{v:8.4f}" for v in row),
                  flush=True)


if __name__ == "__main__":
    main()
