"""Training Voicebox's two networks: the features of a batch, the state, the step.

`config.kind` picks the network:

* "audio": frames are mel frames. The step computes the vocos-style log-mel of
  `batch["audio"]` inside `jit` (`audio.spectral.vocos_log_mel` with the
  `config.mel` settings, the vocoder's), so the model learns exactly what the
  vocoder decodes; the condition is `batch["frame_phones"]`.
* "duration": frames are phones. The features are `log(1 + duration)` of
  `batch["durations"]` (frames per phone); the condition is `batch["phones"]`.

Both use `flow.loss_fn`: flow matching, or L1 regression for the baseline
(`model.objective`).

With `config.ema_decay > 0` the state keeps an exponential moving average of
the weights in `model_state["ema"]`; evaluation and the export use it
(`training.state.inference_params`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from audiolm_jax.audio.spectral import vocos_log_mel
from audiolm_jax.models.vocoder.model import LOG_FLOOR
from audiolm_jax.models.voicebox import flow
from audiolm_jax.models.voicebox.model import VoiceboxConfig, VoiceboxTransformer
from audiolm_jax.training.optimizers import make_optimizer
from audiolm_jax.training.state import TrainState, initial_model_state, update_ema

KINDS = ("audio", "duration")


def voicebox_config_from(config: ml_collections.ConfigDict) -> VoiceboxConfig:
    return VoiceboxConfig.from_dict(config.model.to_dict())


def build_model(config: ml_collections.ConfigDict) -> VoiceboxTransformer:
    if config.kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {config.kind!r}")
    return VoiceboxTransformer(voicebox_config_from(config),
                               dtype=jnp.dtype(config.compute_dtype), remat=config.remat)


def mel_of(audio: jax.Array, mel: ml_collections.ConfigDict | dict) -> jax.Array:
    """[batch, samples] -> [batch, frames, n_mels]: the log-mel the vocoder decodes."""
    return vocos_log_mel(audio, mel["sample_rate"], mel["n_fft"], mel["hop_length"],
                         mel["n_mels"], padding="center",
                         floor=mel.get("log_floor", LOG_FLOOR))


def log_durations(durations: jax.Array) -> jax.Array:
    """Frames per phone -> the duration model's feature `log(1 + d)`, [b, p] -> [b, p, 1]."""
    return jnp.log1p(durations.astype(jnp.float32))[..., None]


def batch_features(batch: dict, config: ml_collections.ConfigDict
                   ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(features x1 (not normalized) [b, t, f], condition ids [b, t], valid [b, t]) of a
    batch of `data.aligned` examples, for `config.kind`."""
    if config.kind == "audio":
        return mel_of(batch["audio"], config.mel), batch["frame_phones"], batch["frame_valid"]
    return log_durations(batch["durations"]), batch["phones"], batch["phone_valid"]


def prompt_frames_of(batch: dict, config: ml_collections.ConfigDict) -> jax.Array | None:
    """[b] frames of a joined example's prompt utterance (audio model), else None."""
    if config.kind == "audio" and "prompt_frames" in batch:
        return batch["prompt_frames"]
    return None


def make_init_fn(model: VoiceboxTransformer, config: ml_collections.ConfigDict
                 ) -> Callable[[jax.Array], TrainState]:
    tx = make_optimizer(config.optimizer)
    frames = config.data.max_frames if config.kind == "audio" else config.data.max_phones

    def init_fn(rng: jax.Array) -> TrainState:
        f = model.config.feature_dim
        x = jnp.zeros((1, frames, f), jnp.float32)
        params = model.init(rng, x, x, jnp.zeros((1, frames), jnp.int32), jnp.zeros((1,)),
                            jnp.ones((1, frames), bool))["params"]
        model_state = initial_model_state(params, config.get("ema_decay", 0.0))
        return TrainState.create(params, tx, model_state)

    return init_fn


def make_train_step(model: VoiceboxTransformer, config: ml_collections.ConfigDict
                    ) -> Callable[[TrainState, dict, jax.Array], tuple[TrainState, dict]]:
    """`(state, batch, rng) -> (state, metrics)`; metrics `loss`, `grad_norm`,
    `masked_fraction`, `uncond_fraction`. Updates the weights' EMA when the state
    keeps one."""
    ema = config.get("ema_decay", 0.0)

    def train_step(state: TrainState, batch: dict, rng: jax.Array):
        rng = jax.random.fold_in(rng, state.step)
        x1, cond, valid = batch_features(batch, config)
        x1 = flow.normalize(x1, model.config)
        prompt_frames = prompt_frames_of(batch, config)

        def loss(params):
            return flow.loss_fn(model, params, x1, cond, valid, rng,
                                prompt_frames=prompt_frames)

        (value, metrics), grads = jax.value_and_grad(loss, has_aux=True)(state.params)
        metrics = {**metrics, "loss": value, "grad_norm": optax.tree.norm(grads)}
        new_state = update_ema(state, state.apply_gradients(grads), ema)
        return new_state, metrics

    return train_step


def make_eval_loss(model: VoiceboxTransformer, config: ml_collections.ConfigDict
                   ) -> Callable[[Any, dict], jax.Array]:
    """Jitted `(params, batch) -> loss` with fixed draws (masks, t, noise), so held-out
    losses of different steps compare like for like."""

    def eval_loss(params: Any, batch: dict) -> jax.Array:
        x1, cond, valid = batch_features(batch, config)
        x1 = flow.normalize(x1, model.config)
        losses = []
        for seed in range(4):   # average a few draws: one draw of t is noisy
            value, _ = flow.loss_fn(model, params, x1, cond, valid, jax.random.key(seed))
            losses.append(value)
        return jnp.mean(jnp.stack(losses))

    return jax.jit(eval_loss)
