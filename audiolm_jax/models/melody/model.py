"""Melody embedder: one vector per window that captures the notes, not the instrument.

MusicLM conditions on a melody (hummed, whistled or played) through tokens of
an embedding trained so that the same melody played by different instruments
lands in the same place. Here:

    audio [B, S] --semitone magnitudes (JAX, C2..C7)--> log relative to the frame's
      peak, standardized per frame
      --stack `frames_per_step` frames--> Dense --Transformer (RoPE over steps)-->
      mean pool --Dense--> L2 norm

trained with the symmetric InfoNCE of `audiolm_jax.models.mulan` on pairs of
renderings of one piece cropped at the same offset (the built-in music corpus
renders every melody with several instrumentations). Per-frame standardization
over the pitch axis removes loudness; what is left for the network to discount
is timbre (harmonic shape), chords, bass and drums.

Melody tokens (`audiolm_jax.tokenizers.mulan.MelodyTokenizer`) are residual-VQ
codes of the embeddings of windows slid along the audio: one token stack per
hop, a sequence MusicLM's later stages can follow.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from audiolm_jax.audio.pitch import relative_log_semitones, semitone_magnitude
from audiolm_jax.checks import check_divisible
from audiolm_jax.layers.linear import logical_dense
from audiolm_jax.layers.pooling import l2_normalize, mean_pool
from audiolm_jax.layers.transformer import Transformer
from audiolm_jax.losses.contrastive import contrastive_loss
from audiolm_jax.training.state import TrainState

MODEL_NAME = "melody"


@dataclasses.dataclass(frozen=True)
class MelodyConfig:
    """Front end, encoder and embedding.

    Attributes:
      sample_rate: audio is resampled to this.
      n_fft, hop_length, midi_low, midi_high: the semitone spectrogram
        (`audiolm_jax.audio.pitch.semitone_spectrogram`).
      frames_per_step: spectrogram frames stacked into one encoder step
        (4 x 32 ms = 128 ms, about a sixteenth note at 120 bpm).
      hidden_size, num_layers, num_heads, mlp_dim: transformer shape.
      embed_dim: the embedding.
      clip_seconds: the window one embedding covers.
      init_temperature: initial InfoNCE temperature (learned).
    """

    sample_rate: int = 16_000
    n_fft: int = 4096
    hop_length: int = 512
    midi_low: int = 36
    midi_high: int = 96
    frames_per_step: int = 4
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    mlp_dim: int = 1024
    embed_dim: int = 128
    clip_seconds: float = 4.0
    init_temperature: float = 0.1

    def __post_init__(self):
        check_divisible("MelodyConfig", "hidden_size", self.hidden_size, "num_heads",
                        self.num_heads)
        if self.clip_samples < self.frames_per_step * self.hop_length:
            raise ValueError(f"clip_seconds={self.clip_seconds} is shorter than one encoder "
                             f"step ({self.frames_per_step} frames of {self.hop_length})")

    @property
    def clip_samples(self) -> int:
        return int(round(self.clip_seconds * self.sample_rate))

    @property
    def num_pitches(self) -> int:
        return self.midi_high - self.midi_low + 1


def pitch_features(audio: jax.Array, mask: jax.Array | None, config: MelodyConfig
                   ) -> tuple[jax.Array, jax.Array]:
    """[B, S] audio -> (steps [B, T, frames_per_step * pitches], valid [B, T] bool).

    Each frame's semitone magnitudes are taken relative to its loudest semitone (in
    log, floored at -60 dB) and standardized over the pitch axis, so a loud and a
    soft rendering of a note give the same frame.
    """
    spec = relative_log_semitones(semitone_magnitude(
        audio, config.sample_rate, config.n_fft, config.hop_length, config.midi_low,
        config.midi_high))                                                  # [B, F, P]
    spec = spec - spec.mean(axis=-1, keepdims=True)
    spec = spec / jnp.sqrt(jnp.mean(spec * spec, axis=-1, keepdims=True) + 1e-6)
    batch, frames, pitches = spec.shape
    steps = frames // config.frames_per_step
    x = spec[:, :steps * config.frames_per_step].reshape(
        batch, steps, config.frames_per_step * pitches)
    if mask is None:
        return x, jnp.ones((batch, steps), bool)
    starts = jnp.arange(steps) * config.frames_per_step * config.hop_length
    return x, mask[:, starts]


class MelodyEmbedder(nn.Module):
    """[B, S] audio (+ [B, S] mask) -> [B, embed_dim] unit vectors."""

    config: MelodyConfig
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        cfg = self.config
        self.input_projection = logical_dense(cfg.hidden_size, (None, "embed"), "input_projection")
        self.encoder = Transformer(cfg.num_layers, cfg.num_heads,
                                   cfg.hidden_size // cfg.num_heads, cfg.mlp_dim,
                                   dtype=self.dtype, name="encoder")
        self.output_projection = logical_dense(cfg.embed_dim, ("embed", None), "output_projection")
        self.logit_scale = self.param("logit_scale", nn.initializers.constant(
            math.log(1.0 / cfg.init_temperature)), (), jnp.float32)

    def __call__(self, audio: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        x, valid = pitch_features(audio, mask, self.config)
        x = nn.with_logical_constraint(self.input_projection(x), ("batch", "length", "embed"))
        x = self.encoder(x, valid)
        return l2_normalize(self.output_projection(mean_pool(x.astype(jnp.float32), valid)))

    def scale(self) -> jax.Array:
        return jnp.minimum(jnp.exp(self.logit_scale), 100.0)

    def pair(self, audio_a, mask_a, audio_b, mask_b):
        """Embeddings of both sides of a pair batch and the logit scale."""
        return self(audio_a, mask_a), self(audio_b, mask_b), self.scale()


def make_init_fn(model: MelodyEmbedder, tx: optax.GradientTransformation):
    def init_fn(rng: jax.Array):
        audio = jnp.zeros((1, model.config.clip_samples), jnp.float32)
        params = model.init(rng, audio, None, audio, None, method=MelodyEmbedder.pair)["params"]
        return TrainState.create(params, tx)

    return init_fn


def batch_losses(model: MelodyEmbedder, params: Any, batch: dict) -> tuple[jax.Array, dict]:
    """Pair batch {"audio_a", "audio_b" [B, S, 1], "mask_a", "mask_b" [B, S]} -> (loss, metrics)."""
    a, b, scale = model.apply({"params": params}, batch["audio_a"][..., 0], batch["mask_a"],
                              batch["audio_b"][..., 0], batch["mask_b"], method=MelodyEmbedder.pair)
    a = nn.with_logical_constraint(a, ("batch", None))
    b = nn.with_logical_constraint(b, ("batch", None))
    loss, metrics = contrastive_loss(a, b, scale)
    return loss, {"loss": loss, **metrics}


def make_train_step(model: MelodyEmbedder):
    def train_step(state, batch: dict, rng: jax.Array):
        del rng
        grads, metrics = jax.grad(lambda p: batch_losses(model, p, batch), has_aux=True)(
            state.params)
        state = state.apply_gradients(grads)
        return state, {**metrics, "grad_norm": optax.tree.norm(grads)}

    return train_step
