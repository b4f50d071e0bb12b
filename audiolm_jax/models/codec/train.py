"""Adversarial training of the codec: state, one jitted GAN step, evaluation.

The train state is a dict of three pytrees, so the shared loop
(`training.loop.run`) checkpoints, shards and restores it like any other:

    {"generator":     TrainState(params=codec params, model_state={"codebook": ...}),
     "discriminator": TrainState(params=discriminator params),
     "balancer":      LossBalancer state (EMA of each loss's gradient norm)}

One step (`make_train_step`) updates both players, EnCodec style:

1. Generator: reconstruction `y = codec(x)`. The balanced losses (time L1,
   multi-scale mel, hinge adversarial, feature matching) give one gradient with
   respect to `y` through `LossBalancer`; the quantizer's commitment loss adds
   its own cotangent; one backward pass through the codec gives the parameter
   gradient. The codebooks move by EMA (the `codebook` collection), not by
   gradients.
2. Discriminator: hinge loss on `x` against `stop_gradient(y)`.

During the first `quantizer_warmup_steps` the decoder reads the encoder's
latents unquantized and the codebooks stay as they are; k-means then
initializes them on latents that already carry the waveform rather than on
those of a random encoder. (The collapse this once seemed to prevent, every
frame on one code and a flat mel loss, came from PyTorch's conv init; see
`SEANetConfig.param_init`.)

Before `adversarial_start_step` only the reconstruction losses train the
generator and the discriminator is left alone: a codec from scratch first has
to learn to reconstruct at all. The two phases are separate jitted programs
(`make_train_phases`, run by the loop as `TrainPhases`) rather than a
`lax.cond` in one step, which cost 3.5x the step time on CPU.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from audiolm_jax import losses as losses_lib
from audiolm_jax.eval import audio_metrics
from audiolm_jax.models.codec.model import Codec, CodecConfig
from audiolm_jax.models.gan import players as gan_players
from audiolm_jax.models.gan.discriminators import (
    CombinedDiscriminator,
    MultiPeriodDiscriminator,
    MultiScaleSTFTDiscriminator,
)
from audiolm_jax.training import loop as loop_lib
from audiolm_jax.training.optimizers import make_optimizer
from audiolm_jax.training.state import TrainState

ADVERSARIAL_LOSSES = ("adv", "feat")


def codec_config_from(config: ml_collections.ConfigDict) -> CodecConfig:
    """The `CodecConfig` that a trainer config's `model` block describes."""
    return CodecConfig.from_dict(config.model.to_dict())


def build_codec(config: ml_collections.ConfigDict) -> Codec:
    return Codec(codec_config_from(config), dtype=jnp.dtype(config.compute_dtype))


def build_discriminator(config: ml_collections.ConfigDict) -> CombinedDiscriminator:
    """MS-STFT discriminator, plus the multi-period one when `periods` is non-empty."""
    d = config.discriminator
    dtype = jnp.dtype(config.compute_dtype)
    parts = [MultiScaleSTFTDiscriminator(n_ffts=tuple(d.stft_n_ffts), filters=d.stft_filters,
                                         dtype=dtype)]
    if d.periods:
        parts.append(MultiPeriodDiscriminator(periods=tuple(d.periods),
                                              channels=tuple(d.period_channels), dtype=dtype))
    return CombinedDiscriminator(tuple(parts))


def make_balancer(config: ml_collections.ConfigDict) -> losses_lib.LossBalancer:
    weights = dict(config.loss.weights)
    return losses_lib.LossBalancer(weights, balance_grads=config.loss.balance_grads,
                                   total_norm=config.loss.total_norm,
                                   ema_decay=config.loss.ema_decay)


def make_init_fn(codec: Codec, discriminator: CombinedDiscriminator,
                 config: ml_collections.ConfigDict) -> Callable[[jax.Array], dict]:
    """PRNG key -> the GAN state (params boxed with their logical axes)."""
    channels = codec.config.seanet.audio_channels
    crop = int(config.data.crop_seconds * codec.config.sample_rate)
    gen_tx = make_optimizer(config.optimizer)
    disc_tx = make_optimizer(config.discriminator_optimizer)
    balancer = make_balancer(config)

    def init_fn(rng: jax.Array) -> dict:
        k_gen, k_disc = jax.random.split(rng)
        audio = jnp.zeros((1, crop, channels), jnp.float32)
        variables = codec.init(k_gen, audio, train=False)
        disc_params = discriminator.init(k_disc, audio)["params"]
        return {
            "generator": TrainState.create(variables["params"], gen_tx,
                                           {"codebook": variables["codebook"]}),
            "discriminator": TrainState.create(disc_params, disc_tx),
            "balancer": balancer.init(),
        }

    return init_fn


def make_train_step(codec: Codec, discriminator: CombinedDiscriminator,
                    config: ml_collections.ConfigDict, *, adversarial: bool
                    ) -> Callable[[dict, dict, jax.Array], tuple[dict, dict]]:
    """One phase's pure GAN step: `(state, batch, rng) -> (state, metrics)`.

    `batch["audio"]` is [batch, samples, channels]. With `adversarial` the
    generator also gets the hinge and feature-matching losses and the
    discriminator is updated; without, only the reconstruction losses train the
    generator. Metrics: every loss, the balancer's gradient ratios,
    per-codebook perplexity, the discriminator loss, and `loss` (the mel loss,
    the number to watch). `make_train_phases` strings the two together.
    """
    balancer = make_balancer(config)
    sample_rate = codec.config.sample_rate
    mel_kwargs = dict(config.loss.mel)
    warmup = int(config.loss.get("quantizer_warmup_steps", 0))

    def reconstruction_losses(y: jax.Array, x: jax.Array) -> dict[str, jax.Array]:
        return {"l1": losses_lib.time_l1(y, x),
                "mel": losses_lib.multi_resolution_mel_loss(y, x, sample_rate, **mel_kwargs)}

    def generator_update(state: dict, x: jax.Array, rng: jax.Array, adversarial: bool):
        gen, disc = state["generator"], state["discriminator"]

        # Quantizer warm-up: the first steps train a plain autoencoder and leave
        # the codebooks untouched, so k-means initializes them on latents that
        # already carry information (see the module docstring).
        bypass = gen.step < warmup

        def forward(params):
            out, mutated = codec.apply(
                {"params": params, "codebook": gen.model_state["codebook"]}, x, train=True,
                rng=rng, mutable=["codebook"], bypass_quantizer=bypass)
            return (out.audio, out.commitment_loss), (out, mutated)

        (y, commitment), gen_vjp, (out, mutated) = jax.vjp(forward, gen.params, has_aux=True)
        codebook = jax.tree.map(lambda new, old: jnp.where(bypass, old, new),
                                mutated["codebook"], gen.model_state["codebook"])

        # The adversarial terms' gradients come from one discriminator pass on x and
        # on y, which also gives the discriminator's own update (models.gan.players).
        precomputed, disc_pass = {}, None
        if adversarial:
            disc_pass = gan_players.discriminator_pass(
                lambda p, a: discriminator.apply({"params": p}, a), disc.params, x, y)
            adv, _, grad_adv = disc_pass.generator_grad(
                lambda logits, feats: (losses_lib.hinge_generator_loss(logits), None))
            feat, _, grad_feat = disc_pass.generator_grad(
                lambda logits, feats: (losses_lib.feature_matching_loss(
                    disc_pass.real_features, feats), None))
            precomputed = {"adv": (adv, grad_adv), "feat": (feat, grad_feat)}

        # Before the adversarial phase the adversarial losses are absent, so
        # the balancer neither uses nor updates their gradient-norm averages.
        active = balancer if adversarial else losses_lib.LossBalancer(
            {k: v for k, v in balancer.weights.items() if k not in ADVERSARIAL_LOSSES},
            balancer.balance_grads, balancer.total_norm, balancer.ema_decay,
            balancer.per_batch_item, balancer.epsilon)
        sub_state = {key: {name: value for name, value in part.items() if name in active.weights}
                     for key, part in state["balancer"].items()}
        grad_y, sub_state, metrics = active.balanced_output_grad(
            lambda y_: reconstruction_losses(y_, x), y, sub_state, precomputed=precomputed)
        balancer_state = {key: {**state["balancer"][key], **sub_state[key]}
                          for key in state["balancer"]}
        (grads,) = gen_vjp((grad_y, jnp.ones_like(commitment)))
        gen = gen.apply_gradients(grads, model_state={"codebook": codebook})
        metrics = {**metrics, "commitment": commitment, "grad_norm": optax.tree.norm(grads),
                   "quantized": 1.0 - bypass.astype(jnp.float32),
                   "num_codebooks": out.num_active.astype(jnp.float32)}
        for i in range(out.perplexity.shape[0]):
            metrics[f"perplexity_{i}"] = out.perplexity[i]
        return {**state, "generator": gen, "balancer": balancer_state}, disc_pass, metrics

    def phase(adversarial: bool):
        def run(state: dict, x: jax.Array, rng: jax.Array):
            state, disc_pass, metrics = generator_update(state, x, rng, adversarial)
            if adversarial:
                disc = state["discriminator"]
                state = {**state,
                         "discriminator": disc.apply_gradients(disc_pass.discriminator_grads)}
                disc_loss = disc_pass.discriminator_loss
            else:
                disc_loss = jnp.zeros((), jnp.float32)
                for key in ("adv", "feat", "grad_norm_adv", "grad_norm_feat", "ratio_adv",
                            "ratio_feat", "scale_adv", "scale_feat"):
                    metrics[key] = jnp.zeros((), jnp.float32)
            return state, {**metrics, "disc_loss": disc_loss}
        return run

    def train_step(state: dict, batch: dict, rng: jax.Array) -> tuple[dict, dict]:
        rng = jax.random.fold_in(rng, state["generator"].step)
        state, metrics = phase(adversarial)(state, batch["audio"], rng)
        metrics["loss"] = metrics["mel"]
        metrics["adversarial"] = jnp.asarray(float(adversarial), jnp.float32)
        return state, metrics

    return train_step


def make_train_phases(codec: Codec, discriminator: CombinedDiscriminator,
                      config: ml_collections.ConfigDict) -> loop_lib.TrainPhases:
    """The run's phases: reconstruction only, then adversarial from
    `config.loss.adversarial_start_step` (one phase when that is 0, or when the
    adversarial phase never comes: it starts after the last step or its losses
    have no weight, and then the discriminator is never compiled)."""
    start = int(config.loss.adversarial_start_step)
    has_adversarial = (any(float(config.loss.weights.get(k, 0.0)) for k in ADVERSARIAL_LOSSES)
                       and start < int(config.train.num_steps))
    step = functools.partial(make_train_step, codec, discriminator, config)
    if not has_adversarial:
        return loop_lib.TrainPhases(((0, step(adversarial=False)),))
    if start <= 0:
        return loop_lib.TrainPhases(((0, step(adversarial=True)),))
    return loop_lib.TrainPhases(((0, step(adversarial=False)), (start, step(adversarial=True))))


def make_eval_step(codec: Codec) -> Callable[..., dict[str, jax.Array]]:
    """`(params, codebook, audio, num_quantizers) -> per-clip metrics and reconstruction`.

    Jitted; `num_quantizers` is static (one compile per bandwidth).
    """

    def eval_step(params: Any, codebook: Any, audio: jax.Array, num_quantizers: int):
        out = codec.apply({"params": params, "codebook": codebook}, audio, train=False,
                          num_quantizers=num_quantizers)
        return {"audio": out.audio,
                "mel_distance": audio_metrics.mel_distance(out.audio, audio,
                                                           codec.config.sample_rate),
                "si_snr": audio_metrics.si_snr(out.audio, audio),
                "perplexity": out.perplexity}

    return jax.jit(eval_step, static_argnums=3)
