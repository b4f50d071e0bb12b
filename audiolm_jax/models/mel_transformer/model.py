"""Masked log-mel transformer: the project's smallest model.

Spans of log-mel frames are hidden (replaced by a learned mask vector) and a
bidirectional transformer reconstructs them; the loss is the L1 error on the
hidden frames. It is the warm-up for w2v-BERT's masked prediction and the model
that exercises the whole training stack (mesh, FSDP/TP rules, checkpoints,
data) in seconds on a CPU.

Each step also reports `baseline_loss`: the L1 error of the trivial predictor
that fills every hidden frame with the mean of the clip's visible frames. A
model that learned something beats it by a wide margin.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from audiolm_jax.audio import spectral
from audiolm_jax.layers.masking import frame_validity, span_mask
from audiolm_jax.layers.transformer import Transformer
from audiolm_jax.training.state import TrainState


class MelTransformer(nn.Module):
    """Reconstructs hidden log-mel frames.

    Attributes:
      n_mels: mel bins (input and output features).
      embed_dim, num_layers, num_heads, mlp_dim: transformer size.
      dtype: compute dtype.
    """

    n_mels: int = 80
    embed_dim: int = 256
    num_layers: int = 4
    num_heads: int = 4
    mlp_dim: int = 1024
    remat: bool = False
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, mel: jax.Array, hidden: jax.Array, valid: jax.Array) -> jax.Array:
        """Predicts every frame.

        Args:
          mel: [batch, frames, n_mels] normalized log-mel.
          hidden: [batch, frames] bool, True where the frame is masked out.
          valid: [batch, frames] bool, False on padding.

        Returns:
          [batch, frames, n_mels] float32 predictions.
        """
        init = nn.initializers.lecun_normal()
        x = nn.Dense(self.embed_dim, dtype=self.dtype, name="in_proj",
                     kernel_init=nn.with_logical_partitioning(init, (None, "embed")),
                     bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)))(mel)
        mask_embedding = self.param(
            "mask_embedding", nn.with_logical_partitioning(nn.initializers.normal(0.02), ("embed",)),
            (self.embed_dim,), jnp.float32)
        x = jnp.where(hidden[..., None], mask_embedding.astype(x.dtype), x)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
        x = Transformer(self.num_layers, self.num_heads, self.embed_dim // self.num_heads,
                        self.mlp_dim, causal=False, remat=self.remat, dtype=self.dtype,
                        name="encoder")(x, valid)
        out = nn.Dense(self.n_mels, dtype=self.dtype, name="out_proj",
                       kernel_init=nn.with_logical_partitioning(init, ("embed", None)),
                       bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (None,)))(x)
        return out.astype(jnp.float32)


def features(audio: jax.Array, config: Any) -> jax.Array:
    """[batch, samples] waveform -> [batch, frames, n_mels] normalized log-mel."""
    mel = spectral.log_mel_spectrogram(audio, config.sample_rate, n_fft=config.n_fft,
                                       hop_length=config.hop_length, n_mels=config.n_mels)
    return (mel - config.mel_mean) / config.mel_std


def reconstruction_losses(pred: jax.Array, target: jax.Array, hidden: jax.Array,
                          valid: jax.Array) -> dict[str, jax.Array]:
    """L1 on hidden valid frames, and the same for the visible-mean baseline.

    Args:
      pred, target: [batch, frames, n_mels].
      hidden, valid: [batch, frames] bool.
    """
    scored = (hidden & valid).astype(jnp.float32)[..., None]        # [b, t, 1]
    visible = ((~hidden) & valid).astype(jnp.float32)[..., None]
    denom = jnp.maximum(scored.sum() * target.shape[-1], 1.0)
    loss = jnp.sum(jnp.abs(pred - target) * scored) / denom
    clip_mean = (target * visible).sum(1, keepdims=True) / jnp.maximum(visible.sum(1, keepdims=True), 1.0)
    baseline = jnp.sum(jnp.abs(clip_mean - target) * scored) / denom
    return {"loss": loss, "baseline_loss": baseline,
            "hidden_fraction": scored.sum() / jnp.maximum(valid.sum(), 1)}


def build_model(config: Any) -> MelTransformer:
    m = config.model
    return MelTransformer(n_mels=m.n_mels, embed_dim=m.embed_dim, num_layers=m.num_layers,
                          num_heads=m.num_heads, mlp_dim=m.mlp_dim, remat=m.get("remat", False),
                          dtype=jnp.dtype(m.get("dtype", "float32")))


def make_init_fn(model: MelTransformer, tx: optax.GradientTransformation,
                 num_frames: int = 16) -> Callable[[jax.Array], TrainState]:
    """PRNG key -> TrainState with logically partitioned (boxed) params."""

    def init_fn(rng: jax.Array) -> TrainState:
        mel = jnp.zeros((1, num_frames, model.n_mels), jnp.float32)
        flags = jnp.zeros((1, num_frames), bool)
        params = model.init(rng, mel, flags, ~flags)["params"]
        return TrainState.create(params, tx)

    return init_fn


def make_train_step(model: MelTransformer, config: Any
                    ) -> Callable[[TrainState, dict, jax.Array], tuple[TrainState, dict]]:
    """The pure train step: `(state, batch, rng) -> (state, metrics)`.

    `batch` holds `audio` [batch, samples, 1] and `mask` [batch, samples] bool.
    """
    m = config.model

    def train_step(state: TrainState, batch: dict, rng: jax.Array):
        rng = jax.random.fold_in(rng, state.step)
        mel = features(batch["audio"][..., 0], m)
        mel = nn.with_logical_constraint(mel, ("batch", "length", None))
        valid = frame_validity(batch["mask"], m.hop_length, mel.shape[1])
        hidden = span_mask(rng, valid.shape, m.mask_start_prob, m.mask_span) & valid

        def loss_fn(params):
            pred = model.apply({"params": params}, mel, hidden, valid)
            losses = reconstruction_losses(pred, mel, hidden, valid)
            return losses["loss"], losses

        grads, losses = jax.grad(loss_fn, has_aux=True)(state.params)
        state = state.apply_gradients(grads)
        return state, {**losses, "grad_norm": optax.tree.norm(grads)}

    return train_step


def reconstruct(model: MelTransformer, params: Any, audio: jax.Array, mask: jax.Array,
                rng: jax.Array, config: Any) -> dict[str, jax.Array]:
    """Hides spans of `audio`'s log-mel and fills them in (for plots and eval).

    Returns:
      dict of `mel` (target), `hidden`, `valid`, `pred` (model output where hidden,
      target elsewhere) and the losses.
    """
    m = config.model
    mel = features(audio[..., 0], m)
    valid = frame_validity(mask, m.hop_length, mel.shape[1])
    hidden = span_mask(rng, valid.shape, m.mask_start_prob, m.mask_span) & valid
    pred = model.apply({"params": params}, mel, hidden, valid)
    filled = jnp.where(hidden[..., None], pred, mel)
    return {"mel": mel, "hidden": hidden, "valid": valid, "pred": filled,
            **reconstruction_losses(pred, mel, hidden, valid)}
