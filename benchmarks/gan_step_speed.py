r"""The full adversarial training step of the tiny vocoder and the tiny codec: ms and GFLOP.

    python benchmarks/gan_step_speed.py [--only vocoder,codec] [--repeats 5] [--out FILE]

Rows, each timed on the same random batch (the min of `--repeats` steps after
a compiling one; the vocoder's batch 8 x 8192 samples, the codec's as its
tiny config):

* `two updates`: the step written as two updates, as the `vocos` package and
  audiocraft write it: the generator's update runs each discriminator on the
  fake and the real audio, then the discriminator's update runs it on both
  again (four forwards, three backwards).
* `one pass`: the library's step (`models.gan.players`): each discriminator
  runs once on the real and once on the fake audio, differentiated for both
  players. Same losses and gradients (tests/test_vocoder_training.py,
  tests/test_codec_training.py).
* vocoder only: `one pass, 3 MRD windows`: the library's step with vocos's
  three multi-resolution windows (2048, 1024, 512), for the cost of the
  tiny config's choice of two (2048, 512); and `mel loss only`, the floor.

GFLOP is XLA's count of the compiled step. Run it on an idle machine: a
training beside it halves every number.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import jax.numpy as jnp

from audiolm_jax import losses as losses_lib
from audiolm_jax.files import write_text_atomic
from audiolm_jax.models.codec import train as codec_gan
from audiolm_jax.models.vocoder import mel_features
from audiolm_jax.models.vocoder import train as vocoder_gan


def two_update_vocoder_step(vocos, discriminators, config):
    """The vocoder's step as two updates (four discriminator forwards per group)."""
    cfg = vocos.config
    mel_weight = float(config.loss.mel_weight)
    weights = {g: float(config.loss.adversarial_weights[g]) for g in discriminators}

    def step(state, batch, rng):
        x = batch["audio"]
        gen, disc = state["generator"], state["discriminator"]
        features = mel_features(x, cfg)

        def gen_loss(params):
            y = vocos.apply({"params": params}, features)
            total = mel_weight * jnp.mean(jnp.abs(mel_features(y, cfg) - features))
            for group, d in discriminators.items():
                fake_logits, fake_feats = d.apply({"params": disc.params[group]}, y[..., None])
                _, real_feats = d.apply({"params": disc.params[group]}, x)
                total += weights[group] * (
                    losses_lib.hinge_generator_loss(fake_logits)
                    + losses_lib.feature_matching_loss(jax.lax.stop_gradient(real_feats),
                                                       fake_feats))
            return total, y

        (total, y), grads = jax.value_and_grad(gen_loss, has_aux=True)(gen.params)
        y = jax.lax.stop_gradient(y)[..., None]

        def disc_loss(params):
            return sum(losses_lib.hinge_discriminator_loss(
                d.apply({"params": params[g]}, x)[0], d.apply({"params": params[g]}, y)[0])
                for g, d in discriminators.items())

        d_loss, d_grads = jax.value_and_grad(disc_loss)(disc.params)
        state = {"generator": gen.apply_gradients(grads),
                 "discriminator": disc.apply_gradients(d_grads)}
        return state, {"loss": total, "disc": d_loss}

    return step


def two_update_codec_step(codec, discriminator, config):
    """The codec's step as two updates: the balancer's adversarial losses run the
    discriminator on y and on x, then the discriminator's update on both again."""
    balancer = codec_gan.make_balancer(config)
    sample_rate = codec.config.sample_rate
    mel_kwargs = dict(config.loss.mel)

    def step(state, batch, rng):
        x = batch["audio"]
        gen, disc = state["generator"], state["discriminator"]

        def forward(params):
            out, mutated = codec.apply(
                {"params": params, "codebook": gen.model_state["codebook"]}, x, train=True,
                rng=rng, mutable=["codebook"])
            return (out.audio, out.commitment_loss), mutated

        (y, commitment), gen_vjp, mutated = jax.vjp(forward, gen.params, has_aux=True)

        def losses(y_):
            fake_logits, fake_feats = discriminator.apply({"params": disc.params}, y_)
            _, real_feats = discriminator.apply({"params": disc.params}, x)
            return {"l1": losses_lib.time_l1(y_, x),
                    "mel": losses_lib.multi_resolution_mel_loss(y_, x, sample_rate, **mel_kwargs),
                    "adv": losses_lib.hinge_generator_loss(fake_logits),
                    "feat": losses_lib.feature_matching_loss(
                        jax.lax.stop_gradient(real_feats), fake_feats)}

        grad_y, bal_state, metrics = balancer.balanced_output_grad(losses, y, state["balancer"])
        (grads,) = gen_vjp((grad_y, jnp.ones_like(commitment)))
        y = jax.lax.stop_gradient(y)
        d_loss, d_grads = jax.value_and_grad(lambda p: losses_lib.hinge_discriminator_loss(
            discriminator.apply({"params": p}, x)[0],
            discriminator.apply({"params": p}, y)[0]))(disc.params)
        state = {"generator": gen.apply_gradients(grads, model_state=mutated),
                 "discriminator": disc.apply_gradients(d_grads), "balancer": bal_state}
        return state, {"loss": metrics["mel"], "disc": d_loss}

    return step


def time_step(step, state, batch, repeats: int) -> tuple[float, float]:
    """(min seconds over `repeats` steps, XLA GFLOP) of a jitted step."""
    rng = jax.random.key(1)
    compiled = jax.jit(step, donate_argnums=0).lower(state, batch, rng).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    state, metrics = compiled(state, batch, rng)
    jax.block_until_ready(metrics)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        state, metrics = compiled(state, batch, rng)
        jax.block_until_ready(metrics)
        best = min(best, time.perf_counter() - start)
    return best, float(cost.get("flops", float("nan"))) / 1e9


def vocoder_rows(repeats: int) -> list[tuple[str, float, float]]:
    from configs.vocoder import tiny

    def setup(windows=None):
        config = tiny.get_config()
        if windows:
            config.discriminator.mrd_window_lengths = windows
        vocos = vocoder_gan.build_vocos(config)
        discs = vocoder_gan.build_discriminators(config)
        init = jax.jit(vocoder_gan.make_init_fn(vocos, discs, config))
        samples = vocoder_gan.crop_samples(config)
        audio = 0.1 * jax.random.normal(jax.random.key(2), (config.data.batch_size, samples, 1))
        return config, vocos, discs, init, {"audio": audio}

    rows = []
    config, vocos, discs, init, batch = setup()
    windows = tuple(config.discriminator.mrd_window_lengths)
    label = f"{len(windows)} MRD windows {windows}"
    for name, step in (
            ("mel loss only", vocoder_gan.make_train_step(vocos, discs, config,
                                                           adversarial=False)),
            (f"two updates, {label}", two_update_vocoder_step(vocos, discs, config)),
            (f"one pass, {label}", vocoder_gan.make_train_step(vocos, discs, config,
                                                               adversarial=True))):
        rows.append((f"vocoder tiny: {name}", *time_step(step, init(jax.random.key(0)), batch,
                                                         repeats)))
        print(rows[-1], flush=True)
    config, vocos, discs, init, batch = setup((2048, 1024, 512))
    for name, step in (
            ("two updates, 3 MRD windows (2048, 1024, 512)",
             two_update_vocoder_step(vocos, discs, config)),
            ("one pass, 3 MRD windows (2048, 1024, 512)",
             vocoder_gan.make_train_step(vocos, discs, config, adversarial=True))):
        rows.append((f"vocoder tiny: {name}", *time_step(step, init(jax.random.key(0)), batch,
                                                         repeats)))
        print(rows[-1], flush=True)
    return rows


def codec_rows(repeats: int) -> list[tuple[str, float, float]]:
    from configs.codec import tiny

    config = tiny.get_config()
    codec, disc = codec_gan.build_codec(config), codec_gan.build_discriminator(config)
    init = jax.jit(codec_gan.make_init_fn(codec, disc, config))
    samples = int(config.data.crop_seconds * codec.config.sample_rate)
    batch = {"audio": 0.1 * jax.random.normal(
        jax.random.key(2), (config.data.batch_size, samples, config.model.seanet.audio_channels))}
    rows = []
    for name, step in (("two updates", two_update_codec_step(codec, disc, config)),
                       ("one pass", codec_gan.make_train_step(codec, disc, config,
                                                              adversarial=True))):
        rows.append((f"codec tiny: {name}", *time_step(step, init(jax.random.key(0)), batch,
                                                       repeats)))
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="vocoder,codec")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="", help="also write the table to this file")
    args = parser.parse_args()
    rows = []
    for name in args.only.split(","):
        rows += {"vocoder": vocoder_rows, "codec": codec_rows}[name](args.repeats)
    lines = ["| step | ms | XLA GFLOP | GFLOP/s |", "|---|---:|---:|---:|"]
    lines += [f"| {name} | {1e3 * t:.0f} | {flops:.1f} | {flops / t:.0f} |"
              for name, t, flops in rows]
    table = "\n".join(lines)
    print(f"\njax {jax.__version__}, {jax.devices()[0].platform}; min of {args.repeats} steps\n")
    print(table)
    if args.out:
        write_text_atomic(Path(args.out), table + "\n")


if __name__ == "__main__":
    main()
