"""Fine-tuning MusicGen: per-book cross-entropy along the delay pattern, T5 frozen.

The loss is transformers' (`MusicgenForCausalLM.forward` with labels) and
audiocraft's: the cross-entropy of every book's code at every real frame given
the delayed steps before it, averaged over the frames of each book and then over
the books. The text encoder stays frozen (audiocraft's default): its gradients
and updates are zeroed by `TrainState.apply_gradients(frozen=...)`.

Batches: `codes` [b, T, K] int32 codec codes (anything past a row's end, e.g.
the pad id), `frames` [b] int32 real frames per row, `text_ids` [b, C] int32
and `text_mask` [b, C] (T5 ids of the captions).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from audiolm_jax.models.musicgen.model import MusicGen, MusicGenConfig
from audiolm_jax.training.optimizers import make_optimizer
from audiolm_jax.training.state import TrainState

FROZEN = {"text_encoder": True}


def build_model(config: ml_collections.ConfigDict) -> MusicGen:
    """The `MusicGen` of a trainer config (`configs/musicgen/`)."""
    return MusicGen(MusicGenConfig(**config.model.to_dict()),
                    dtype=jnp.dtype(config.get("compute_dtype", "float32")),
                    remat=config.get("remat", False))


def codebook_loss(logits: jax.Array, codes: jax.Array, frames: jax.Array
                  ) -> tuple[jax.Array, dict]:
    """Mean over books of each book's mean cross-entropy on the real frames.

    Args:
      logits: [b, T, K, C] teacher-forced logits (`MusicGen.logits`).
      codes: [b, T, K] targets; frames: [b] real frames per row.

    Returns:
      (loss, {"book_loss": [K]}).
    """
    valid = jnp.arange(codes.shape[1])[None, :] < frames[:, None]            # [b, T]
    safe = jnp.where(valid[..., None], codes, 0)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), safe)
    weights = valid[..., None].astype(jnp.float32)                            # [b, T, 1]
    per_book = jnp.sum(ce * weights, axis=(0, 1)) / jnp.maximum(jnp.sum(weights, (0, 1)), 1.0)
    return jnp.mean(per_book), {"book_loss": per_book}


def loss_fn(model: MusicGen, params: Any, batch: dict) -> tuple[jax.Array, dict]:
    logits = model.apply({"params": params}, batch["codes"], batch["text_ids"],
                         batch["text_mask"])
    return codebook_loss(logits, batch["codes"], batch["frames"])


def make_init_fn(model: MusicGen, config: ml_collections.ConfigDict
                 ) -> Callable[[jax.Array], TrainState]:
    """PRNG key -> `TrainState` (params boxed with their logical axes)."""
    tx = make_optimizer(config.optimizer)
    c: MusicGenConfig = model.config

    def init_fn(rng: jax.Array) -> TrainState:
        codes = jnp.zeros((1, 2, c.num_codebooks), jnp.int32)
        text = jnp.ones((1, 3), jnp.int32)
        params = model.init(rng, codes, text, jnp.ones((1, 3), bool))["params"]
        return TrainState.create(params, tx)

    return init_fn


def make_train_step(model: MusicGen, config: ml_collections.ConfigDict
                    ) -> Callable[[TrainState, dict, jax.Array], tuple[TrainState, dict]]:
    """`(state, batch, rng) -> (state, metrics)`; metrics `loss`, `grad_norm`, `book_loss`.
    The text encoder is frozen unless `config.train_text_encoder`."""
    frozen = {} if config.get("train_text_encoder", False) else FROZEN

    def train_step(state: TrainState, batch: dict, rng: jax.Array):
        del rng                                          # deterministic: no dropout here
        (value, metrics), grads = jax.value_and_grad(
            lambda p: loss_fn(model, p, batch), has_aux=True)(state.params)
        metrics = {**metrics, "loss": value, "grad_norm": optax.tree.norm(grads)}
        return state.apply_gradients(grads, frozen=frozen), metrics

    return train_step
