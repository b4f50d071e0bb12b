"""Training and fine-tuning F5-TTS: the package's CFM loss, the state, the step.

The loss is the `f5-tts` package's `CFM.forward` (f5_tts/model/cfm.py):

- a random span of 70-100 % of each row's frames is masked (`span_mask`, the
  package's `mask_from_frac_lengths`): the network sees the mel outside it as
  its condition and must fill the span in;
- the optimal-transport path with sigma 0: `x_t = (1 - t) x0 + t x1`, x0
  Gaussian noise, t ~ U[0, 1) per row, target velocity `x1 - x0`;
- classifier-free guidance dropout: with probability 0.2 both the text and the
  audio condition are dropped, otherwise the audio condition alone with 0.3
  (so 44 % of examples lose the audio, 20 % the text);
- the loss is the squared error averaged over the masked frames' bins of the
  whole batch (`F.mse_loss(...)[rand_span_mask].mean()`): longer rows weigh more.

Two differences, both deliberate: the package draws the two drops once per
batch (Python's `random()`), here each row draws its own with the same
probabilities, which keeps the step a pure function of its rng and gives every
data-parallel shard the same mix; and the package's DiT has dropout 0.1 in
attention and feed-forward, which this DiT does not have (it is an inference
port; fine-tuning runs without dropout).

Batches (`train/f5tts.py` makes them): `audio` [b, samples] float32 at 24 kHz,
zero-padded; `text` [b, chars] int32 vocabulary ids, -1 padded; `frames` [b]
int32, each row's mel frames (`1 + samples // hop`). The log-mel is computed
inside the step with the model's vocos settings (floor 1e-5), and padded frames
are zeros, as the package's collate pads them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from audiolm_jax.audio.spectral import vocos_log_mel
from audiolm_jax.models.f5tts.model import DiT, F5Config
from audiolm_jax.training.optimizers import make_optimizer
from audiolm_jax.training.state import TrainState, initial_model_state, update_ema

# The package's CFM defaults.
FRAC_LENGTHS = (0.7, 1.0)
AUDIO_DROP_PROB = 0.3
COND_DROP_PROB = 0.2


def f5_config_from(config: ml_collections.ConfigDict) -> F5Config:
    return F5Config.from_dict(config.model.to_dict())


def build_model(config: ml_collections.ConfigDict) -> DiT:
    return DiT(f5_config_from(config), dtype=jnp.dtype(config.compute_dtype),
               remat=config.get("remat", False))


def mel_of(audio: jax.Array, cfg: F5Config) -> jax.Array:
    """[batch, samples] -> [batch, 1 + samples // hop, mel_dim]: the model's vocos log-mel."""
    return vocos_log_mel(audio, cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length,
                         n_mels=cfg.mel_dim, floor=cfg.mel_floor)


def span_mask(key: jax.Array, lengths: jax.Array, frames: int,
              frac_range: tuple[float, float] = FRAC_LENGTHS) -> jax.Array:
    """The package's `mask_from_frac_lengths`: per row, a span of `floor(frac * length)`
    frames (frac ~ U[frac_range]) starting at `floor((length - span) * u)`.

    Args:
      lengths: [batch] valid frames per row.
    Returns:
      [batch, frames] bool, True on the span (never past a row's length).
    """
    k_frac, k_start = jax.random.split(key)
    batch = lengths.shape[0]
    lengths = lengths.astype(jnp.int32)
    frac = jax.random.uniform(k_frac, (batch,), minval=frac_range[0], maxval=frac_range[1])
    span = jnp.floor(frac * lengths).astype(jnp.int32)
    start = jnp.floor((lengths - span) * jax.random.uniform(k_start, (batch,)))
    start = jnp.maximum(start.astype(jnp.int32), 0)
    pos = jnp.arange(frames)[None]
    return (pos >= start[:, None]) & (pos < (start + span)[:, None]) & (pos < lengths[:, None])


def condition_drops(key_audio: jax.Array, key_both: jax.Array, batch: int,
                    audio_drop_prob: float = AUDIO_DROP_PROB,
                    cond_drop_prob: float = COND_DROP_PROB) -> tuple[jax.Array, jax.Array]:
    """Per-row guidance dropout, the package's rule: ([batch] drop the audio condition,
    [batch] drop the text too). Both with `cond_drop_prob`, else the audio alone with
    `audio_drop_prob`."""
    drop_both = jax.random.uniform(key_both, (batch,)) < cond_drop_prob
    drop_audio = drop_both | (jax.random.uniform(key_audio, (batch,)) < audio_drop_prob)
    return drop_audio, drop_both


def cfm_loss(model: DiT, params: Any, mel: jax.Array, text: jax.Array, lengths: jax.Array,
             key: jax.Array, *, frac_range: tuple[float, float] = FRAC_LENGTHS,
             audio_drop_prob: float = AUDIO_DROP_PROB,
             cond_drop_prob: float = COND_DROP_PROB) -> tuple[jax.Array, dict]:
    """The package's `CFM.forward` loss (see the module doc).

    Args:
      mel: [batch, frames, mel_dim] x1, the log-mel (padded frames are zeroed here).
      text: [batch, chars] ids, -1 padded.
      lengths: [batch] valid frames per row.
      key: the span, noise, time and drops.

    Returns:
      (loss, metrics: `masked_fraction` of valid frames, `audio_dropped`,
      `text_dropped` fractions of rows).
    """
    batch, frames, _ = mel.shape
    k_span, k_noise, k_time, k_audio, k_both = jax.random.split(key, 5)
    valid = jnp.arange(frames)[None] < lengths[:, None]
    x1 = jnp.where(valid[..., None], mel.astype(jnp.float32), 0)
    span = span_mask(k_span, lengths, frames, frac_range)
    x0 = jax.random.normal(k_noise, x1.shape, jnp.float32)
    t = jax.random.uniform(k_time, (batch,))
    xt = (1 - t[:, None, None]) * x0 + t[:, None, None] * x1
    cond = jnp.where(span[..., None], 0, x1)
    drop_audio, drop_both = condition_drops(k_audio, k_both, batch, audio_drop_prob,
                                            cond_drop_prob)
    pred = model.apply({"params": params}, xt, cond, text, t, valid, drop_audio, drop_both)
    error = jnp.sum(jnp.square(pred - (x1 - x0)), axis=-1)                  # [b, frames]
    count = jnp.sum(span) * mel.shape[-1]
    loss = jnp.sum(jnp.where(span, error, 0)) / jnp.maximum(count, 1)
    metrics = {"masked_fraction": jnp.sum(span) / jnp.maximum(jnp.sum(valid), 1),
               "audio_dropped": jnp.mean(drop_audio), "text_dropped": jnp.mean(drop_both)}
    return loss, metrics


def _loss_kwargs(config: ml_collections.ConfigDict) -> dict:
    loss = config.get("loss", {})
    return dict(frac_range=tuple(loss.get("frac_lengths", FRAC_LENGTHS)),
                audio_drop_prob=loss.get("audio_drop_prob", AUDIO_DROP_PROB),
                cond_drop_prob=loss.get("cond_drop_prob", COND_DROP_PROB))


def make_init_fn(model: DiT, config: ml_collections.ConfigDict
                 ) -> Callable[[jax.Array], TrainState]:
    """PRNG key -> `TrainState` (params boxed with their logical axes). The DiT's
    params do not depend on the lengths, so it is initialized on a short input."""
    tx = make_optimizer(config.optimizer)

    def init_fn(rng: jax.Array) -> TrainState:
        x = jnp.zeros((1, 8, model.config.mel_dim), jnp.float32)
        params = model.init(rng, x, x, jnp.zeros((1, 4), jnp.int32), jnp.zeros((1,)))["params"]
        model_state = initial_model_state(params, config.get("ema_decay", 0.0))
        return TrainState.create(params, tx, model_state)

    return init_fn


def make_train_step(model: DiT, config: ml_collections.ConfigDict
                    ) -> Callable[[TrainState, dict, jax.Array], tuple[TrainState, dict]]:
    """`(state, batch, rng) -> (state, metrics)`; metrics `loss`, `grad_norm` and those of
    `cfm_loss`. Updates the weights' EMA when the state keeps one."""
    ema = config.get("ema_decay", 0.0)
    kwargs = _loss_kwargs(config)

    def train_step(state: TrainState, batch: dict, rng: jax.Array):
        rng = jax.random.fold_in(rng, state.step)
        mel = mel_of(batch["audio"], model.config)

        def loss(params):
            return cfm_loss(model, params, mel, batch["text"], batch["frames"], rng, **kwargs)

        (value, metrics), grads = jax.value_and_grad(loss, has_aux=True)(state.params)
        metrics = {**metrics, "loss": value, "grad_norm": optax.tree.norm(grads)}
        new_state = update_ema(state, state.apply_gradients(grads), ema)
        return new_state, metrics

    return train_step


def make_eval_loss(model: DiT, config: ml_collections.ConfigDict
                   ) -> Callable[[Any, dict], jax.Array]:
    """Jitted `(params, batch) -> loss` with fixed draws, so held-out losses of different
    steps compare like for like (the mean of 4 draws of span, noise and t; no drops)."""
    kwargs = {**_loss_kwargs(config), "audio_drop_prob": 0.0, "cond_drop_prob": 0.0}

    def eval_loss(params: Any, batch: dict) -> jax.Array:
        mel = mel_of(batch["audio"], model.config)
        values = [cfm_loss(model, params, mel, batch["text"], batch["frames"],
                           jax.random.key(seed), **kwargs)[0] for seed in range(4)]
        return jnp.mean(jnp.stack(values))

    return jax.jit(eval_loss)
