"""Adversarial training of the Vocos vocoder: state, the jitted GAN steps, evaluation.

The train state is a dict the shared loop checkpoints, shards and restores:

    {"generator":     TrainState(params=Vocos params),
     "discriminator": TrainState(params={"mpd": ..., "mrd": ..., "stft": ...})}

One step, as the `vocos` package trains (its `VocosExp`), on a batch of crops:

1. Features `mel_features(x)` of the real audio, computed inside the step.
2. Generator: `y = Vocos(features)`; loss = `mel_weight * |logmel(y) - logmel(x)|_1`
   + per discriminator group g: `w_g * (hinge_gen(D_g(y)) + feature_matching(D_g))`.
3. Discriminators: hinge loss on `x` against `stop_gradient(y)`, summed over groups.

Both players take their gradients from the same discriminator parameters, so
each discriminator runs once on `x` and once on `y` per step
(`models.gan.players`), not four times.

Discriminator groups (any subset, by config weight): HiFi-GAN's multi-period
("mpd"), the DAC-style multi-resolution one the `vocos` package uses ("mrd"),
and EnCodec's multi-scale STFT one ("stft"). Before
`loss.adversarial_start_step` only the mel loss trains the generator and the
discriminators are not compiled; the two phases are separate jitted programs
(`training.loop.TrainPhases`), as for the codec.
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
from audiolm_jax.models.gan import players as gan_players
from audiolm_jax.models.gan.discriminators import (
    MultiPeriodDiscriminator,
    MultiResolutionDiscriminator,
    MultiScaleSTFTDiscriminator,
)
from audiolm_jax.models.vocoder.model import Vocos, VocosConfig, mel_features
from audiolm_jax.training import loop as loop_lib
from audiolm_jax.training.optimizers import make_optimizer
from audiolm_jax.training.state import TrainState

GROUPS = ("mpd", "mrd", "stft")


def vocos_config_from(config: ml_collections.ConfigDict) -> VocosConfig:
    """The `VocosConfig` of a trainer config's `model` block."""
    return VocosConfig.from_dict(config.model.to_dict())


def build_vocos(config: ml_collections.ConfigDict) -> Vocos:
    return Vocos(vocos_config_from(config), dtype=jnp.dtype(config.compute_dtype))


def active_groups(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The discriminator groups with a non-zero loss weight, in `GROUPS` order."""
    weights = config.loss.adversarial_weights
    unknown = sorted(set(weights) - set(GROUPS))
    if unknown:
        raise ValueError(f"loss.adversarial_weights has unknown groups {unknown}; known: {GROUPS}")
    return tuple(g for g in GROUPS if float(weights.get(g, 0.0)) > 0)


def build_discriminators(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """One multi-discriminator per active group, from `config.discriminator`."""
    d, dtype = config.discriminator, jnp.dtype(config.compute_dtype)
    make = {
        "mpd": lambda: MultiPeriodDiscriminator(periods=tuple(d.periods),
                                                channels=tuple(d.period_channels), dtype=dtype),
        "mrd": lambda: MultiResolutionDiscriminator(window_lengths=tuple(d.mrd_window_lengths),
                                                    channels=d.mrd_channels, dtype=dtype),
        "stft": lambda: MultiScaleSTFTDiscriminator(n_ffts=tuple(d.stft_n_ffts),
                                                    filters=d.stft_filters, dtype=dtype),
    }
    return {group: make[group]() for group in active_groups(config)}


def crop_samples(config: ml_collections.ConfigDict) -> int:
    """Training crop length: `data.crop_seconds`, rounded down to whole hops so that
    features and decoded audio line up sample for sample."""
    cfg = vocos_config_from(config)
    hops = int(config.data.crop_seconds * cfg.sample_rate) // cfg.istft_hop_length
    if hops < 4:
        raise ValueError(f"data.crop_seconds={config.data.crop_seconds} is under 4 hops of "
                         f"{cfg.istft_hop_length} samples")
    return hops * cfg.istft_hop_length


def make_init_fn(vocos: Vocos, discriminators: dict[str, Any],
                 config: ml_collections.ConfigDict) -> Callable[[jax.Array], dict]:
    """PRNG key -> the GAN state (params boxed with their logical axes)."""
    cfg = vocos.config
    samples = crop_samples(config)
    gen_tx = make_optimizer(config.optimizer)
    disc_tx = make_optimizer(config.discriminator_optimizer)

    def init_fn(rng: jax.Array) -> dict:
        k_gen, k_disc = jax.random.split(rng)
        audio = jnp.zeros((1, samples, 1), jnp.float32)
        features = jnp.zeros((1, cfg.num_frames(samples), cfg.input_channels), jnp.float32)
        params = vocos.init(k_gen, features)["params"]
        keys = jax.random.split(k_disc, max(len(discriminators), 1))
        disc_params = {g: d.init(k, audio)["params"]
                       for (g, d), k in zip(discriminators.items(), keys)}
        return {"generator": TrainState.create(params, gen_tx),
                "discriminator": TrainState.create(disc_params, disc_tx)}

    return init_fn


def _hinge_and_feature_matching(fake_logits: list, fake_features: list, real_features: list
                                ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """The generator's loss against one discriminator group: `(adv + feat, (adv, feat))`."""
    adv = losses_lib.hinge_generator_loss(fake_logits)
    feat = losses_lib.feature_matching_loss(real_features, fake_features)
    return adv + feat, (adv, feat)


def make_gradient_fn(vocos: Vocos, discriminators: dict[str, Any],
                     config: ml_collections.ConfigDict, *, adversarial: bool
                     ) -> Callable[[dict, jax.Array], tuple[Any, dict, dict]]:
    """`(state, audio [b, samples, 1]) -> (generator grads, discriminator grads, metrics)`.

    The generator's loss is `mel_weight * mel + sum_g w_g * (adv_g + feat_g)`; each
    discriminator group's is the hinge loss on the real audio against the generated
    audio. Each group's discriminator runs once on the real and once on the
    generated audio for both players (`models.gan.players`), and the generator
    runs forward once and back once.
    """
    cfg = vocos.config
    mel_weight = float(config.loss.mel_weight)
    weights = {g: float(config.loss.adversarial_weights[g]) for g in discriminators}

    def gradients(state: dict, x: jax.Array) -> tuple[Any, dict, dict]:
        gen, disc = state["generator"], state["discriminator"]
        features = mel_features(x, cfg)

        def generate(params):
            y = vocos.apply({"params": params}, features)                 # [b, samples]
            return y, jnp.mean(jnp.abs(mel_features(y, cfg) - features))

        (y, mel), generator_vjp = jax.vjp(generate, gen.params)
        metrics = {"mel": mel}
        total = mel_weight * mel
        y_grad = jnp.zeros_like(y)
        disc_grads = {}
        if adversarial:
            for group, d in discriminators.items():
                out = gan_players.discriminator_pass(
                    lambda p, a, d=d: d.apply({"params": p}, a), disc.params[group], x,
                    y[..., None])
                loss, terms, fake_grad = out.generator_grad(
                    lambda logits, feats, out=out: _hinge_and_feature_matching(
                        logits, feats, out.real_features))
                y_grad = y_grad + weights[group] * fake_grad[..., 0]
                total = total + weights[group] * loss
                disc_grads[group] = out.discriminator_grads
                metrics[f"adv_{group}"], metrics[f"feat_{group}"] = terms
                metrics[f"disc_{group}"] = out.discriminator_loss
        (gen_grads,) = generator_vjp((y_grad, jnp.asarray(mel_weight, mel.dtype)))
        metrics["generator_loss"] = total
        return gen_grads, disc_grads, metrics

    return gradients


def make_train_step(vocos: Vocos, discriminators: dict[str, Any],
                    config: ml_collections.ConfigDict, *, adversarial: bool
                    ) -> Callable[[dict, dict, jax.Array], tuple[dict, dict]]:
    """One phase's pure GAN step: `(state, batch, rng) -> (state, metrics)`.

    `batch["audio"]` is [batch, samples, 1] with `samples = crop_samples(config)`.
    Metrics: `mel` (the reconstruction L1 in log-mel, also `loss`), per group
    `adv_<g>`, `feat_<g>`, `disc_<g>`, and `grad_norm`. Both players update from
    the same discriminator parameters (`make_gradient_fn`).
    """
    gradients = make_gradient_fn(vocos, discriminators, config, adversarial=adversarial)

    def train_step(state: dict, batch: dict, rng: jax.Array) -> tuple[dict, dict]:
        del rng   # the vocoder's step draws nothing
        gen_grads, disc_grads, metrics = gradients(state, batch["audio"])
        metrics["grad_norm"] = optax.tree.norm(gen_grads)
        state = {**state, "generator": state["generator"].apply_gradients(gen_grads)}
        if adversarial:
            state["discriminator"] = state["discriminator"].apply_gradients(disc_grads)
        else:   # the same metric keys in both phases, so the logs line up
            for group in discriminators:
                for key in ("adv", "feat", "disc"):
                    metrics[f"{key}_{group}"] = jnp.zeros((), jnp.float32)
        metrics["loss"] = metrics["mel"]
        metrics["adversarial"] = jnp.asarray(float(adversarial), jnp.float32)
        return state, metrics

    return train_step


def make_train_phases(vocos: Vocos, discriminators: dict[str, Any],
                      config: ml_collections.ConfigDict) -> loop_lib.TrainPhases:
    """Mel-only, then adversarial from `loss.adversarial_start_step` (one phase when
    that is 0, when no group has weight, or when the phase would start past the end)."""
    start = int(config.loss.adversarial_start_step)
    step = functools.partial(make_train_step, vocos, discriminators, config)
    if not discriminators or start >= int(config.train.num_steps):
        return loop_lib.TrainPhases(((0, step(adversarial=False)),))
    if start <= 0:
        return loop_lib.TrainPhases(((0, step(adversarial=True)),))
    return loop_lib.TrainPhases(((0, step(adversarial=False)), (start, step(adversarial=True))))


def make_eval_step(vocos: Vocos) -> Callable[[Any, jax.Array], dict[str, jax.Array]]:
    """Jitted `(params, audio [b, samples, 1]) -> {"audio", "mel_l1", "mel_distance"}`:
    resynthesis from the audio's own features; `mel_l1` in the vocoder's own log-mel,
    `mel_distance` the project's multi-resolution metric (per clip)."""
    cfg = vocos.config

    def eval_step(params: Any, audio: jax.Array) -> dict[str, jax.Array]:
        features = mel_features(audio, cfg)
        y = vocos.apply({"params": params}, features)
        n = min(y.shape[-1], audio.shape[1])
        reference = audio[:, :n]
        y = y[:, :n, None]
        return {"audio": y,
                "mel_l1": jnp.mean(jnp.abs(mel_features(y, cfg) - mel_features(reference, cfg)),
                                   axis=(1, 2)),
                "mel_distance": audio_metrics.mel_distance(y, reference, cfg.sample_rate)}

    return jax.jit(eval_step)
