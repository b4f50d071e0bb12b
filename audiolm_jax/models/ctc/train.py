"""Fine-tuning the CTC recognizer: the train state (from a pretrained encoder) and step."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from audiolm_jax.audio.fbank import stacked_features
from audiolm_jax.models.ctc.model import CTCRecognizer, ctc_loss
from audiolm_jax.training.state import TrainState, zero_subtrees


def make_init_fn(model: CTCRecognizer, tx: optax.GradientTransformation, pretrained: Any):
    """TrainState whose encoder params are the pretrained ones (boxes kept for sharding)."""
    def init_fn(rng):
        dim = model.encoder_config.feature_projection_input_dim
        params = model.init(rng, jnp.zeros((1, 8, dim)), jnp.ones((1, 8), bool))["params"]
        is_box = lambda x: isinstance(x, nn.meta.AxisMetadata)  # noqa: E731
        encoder = jax.tree.map(
            lambda box, value: box.replace_boxed(jnp.asarray(value)) if is_box(box)
            else jnp.asarray(value), params["encoder"], pretrained, is_leaf=is_box)
        return TrainState.create({**params, "encoder": encoder}, tx)
    return init_fn


def make_train_step(model: CTCRecognizer, freeze_encoder_steps: int):
    """(state, batch, rng) -> (state, metrics): CTC loss; the encoder is frozen for the
    first `freeze_encoder_steps` steps: its gradients and its updates are zeroed, so
    AdamW's weight decay does not shrink it either (`TrainState.apply_gradients`).

    Batch: `audio [B, S]`, `lengths [B]`, `labels [B, L]` phone ids, `label_valid [B, L]`.
    """
    fbank = model.encoder_config.fbank

    def train_step(state, batch, rng):
        del rng
        features, valid = stacked_features(batch["audio"], batch["lengths"], fbank)

        def loss_fn(params):
            logits = model.apply({"params": params}, features, valid)
            return ctc_loss(logits, valid, batch["labels"], batch["label_valid"])

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        frozen = {"encoder": state.step < freeze_encoder_steps}
        grad_norm = optax.tree.norm(zero_subtrees(grads, frozen))
        state = state.apply_gradients(grads, frozen=frozen)
        return state, {"loss": loss, "grad_norm": grad_norm,
                       "encoder_frozen": frozen["encoder"].astype(jnp.float32)}

    return train_step
