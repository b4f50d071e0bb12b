"""MuLan: a two-tower contrastive model that puts music and its description in one space.

    audio [B, S] --log-mel--> patches --Transformer--> mean pool --Dense--> L2 norm  (a)
    text ids [B, L] --BERT--> masked mean pool --Dense--> L2 norm                    (t)
    loss = symmetric InfoNCE over exp(logit_scale) * a @ t.T

The audio tower is an AST/ViT-style transformer over non-overlapping log-mel
patches (`patch_frames` x `patch_mels`); patches are ordered time-major, RoPE
encodes the patch's time index and a learned embedding its frequency band, so
the tower runs on any number of time patches. The text tower is a
BERT-architecture encoder (`audiolm_jax.models.bert`) that can start from an
imported Hugging Face checkpoint (`python -m audiolm_jax.convert bert`) and be
frozen, as MuLan did with its pretrained BERT.

Negatives come from the global batch: the similarity matrix is one `[N, N]`
product of the batch-sharded embeddings, so under `jit` with data-parallel or
FSDP sharding XLA all-gathers the (small) embeddings and every example is
contrasted with every device's examples. A test checks that 8 simulated
devices give the single-device loss.

MuLan (Huang et al., 2022) and MusicLM (Agostinelli et al., 2023).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from audiolm_jax.audio.spectral import log_mel_spectrogram
from audiolm_jax.checks import check_divisible
from audiolm_jax.layers.linear import logical_dense
from audiolm_jax.layers.pooling import l2_normalize, mean_pool
from audiolm_jax.layers.transformer import Transformer
from audiolm_jax.losses.contrastive import contrastive_loss
from audiolm_jax.models.bert.model import Bert, BertConfig
from audiolm_jax.training.state import TrainState

MODEL_NAME = "mulan"


@dataclasses.dataclass(frozen=True)
class AudioTowerConfig:
    """The audio tower: log-mel front end, patching and transformer.

    Attributes:
      sample_rate: audio is resampled to this before the tower.
      n_fft, hop_length, n_mels: log-mel front end (16 kHz, 25 ms / 10 ms, 128 bands).
      patch_frames, patch_mels: patch size in frames x mel bands.
      hidden_size, num_layers, num_heads, mlp_dim: transformer shape.
      clip_seconds: the window the tower sees; longer audio is embedded window
        by window and averaged, shorter audio is refused.
    """

    sample_rate: int = 16_000
    n_fft: int = 400
    hop_length: int = 160
    n_mels: int = 128
    patch_frames: int = 16
    patch_mels: int = 16
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    clip_seconds: float = 10.0

    def __post_init__(self):
        if self.n_mels % self.patch_mels:
            raise ValueError(f"n_mels={self.n_mels} must be a multiple of patch_mels="
                             f"{self.patch_mels}")
        check_divisible("AudioTowerConfig", "hidden_size", self.hidden_size, "num_heads",
                        self.num_heads)
        if self.clip_samples < self.patch_frames * self.hop_length:
            raise ValueError(f"clip_seconds={self.clip_seconds} is shorter than one patch "
                             f"({self.patch_frames} frames)")

    @property
    def clip_samples(self) -> int:
        return int(round(self.clip_seconds * self.sample_rate))


@dataclasses.dataclass(frozen=True)
class MuLanConfig:
    """Both towers and the shared space.

    Attributes:
      audio: the audio tower.
      text: the BERT text tower.
      embed_dim: the shared space (MuLan: 128).
      max_text_length: tokens per caption, [CLS] and [SEP] included; longer
        captions are truncated with a warning.
      init_temperature: initial softmax temperature (CLIP: 0.07); learned after.
      max_logit_scale: exp(logit_scale) is clipped here (CLIP: 100).
    """

    audio: AudioTowerConfig
    text: BertConfig
    embed_dim: int = 128
    max_text_length: int = 64
    init_temperature: float = 0.07
    max_logit_scale: float = 100.0

    def __post_init__(self):
        if self.max_text_length > self.text.max_position_embeddings:
            raise ValueError(f"max_text_length={self.max_text_length} exceeds the text tower's "
                             f"max_position_embeddings={self.text.max_position_embeddings}")

    def to_dict(self) -> dict:
        return {"audio": dataclasses.asdict(self.audio), "text": self.text.to_dict(),
                "embed_dim": self.embed_dim, "max_text_length": self.max_text_length,
                "init_temperature": self.init_temperature,
                "max_logit_scale": self.max_logit_scale}

    @classmethod
    def from_dict(cls, d: dict) -> MuLanConfig:
        d = dict(d)
        return cls(audio=AudioTowerConfig(**d.pop("audio")), text=BertConfig(**d.pop("text")),
                   **d)


def log_mel_patches(audio: jax.Array, mask: jax.Array | None, config: AudioTowerConfig
                    ) -> tuple[jax.Array, jax.Array, int]:
    """Audio -> flattened log-mel patches.

    Args:
      audio: [B, S] at `config.sample_rate`.
      mask: [B, S] bool (False on padding) or None.

    Returns:
      (patches [B, T' * F', patch_frames * patch_mels], valid [B, T' * F'] bool,
      F' = bands per time step). Trailing frames that do not fill a patch are dropped.
    """
    # A matmul DFT: an FFT would make XLA all-gather the batch's frames (see `stft`).
    mel = log_mel_spectrogram(audio, config.sample_rate, n_fft=config.n_fft,
                              hop_length=config.hop_length, n_mels=config.n_mels, dft="matmul")
    batch, frames, _ = mel.shape
    pf, pm = config.patch_frames, config.patch_mels
    steps, bands = frames // pf, config.n_mels // pm
    if steps < 1:
        raise ValueError(f"{audio.shape[-1]} samples give {frames} frames, fewer than one "
                         f"patch ({pf} frames)")
    # [B, T', pf, F', pm] -> [B, T', F', pf * pm]: time-major patch order.
    patches = mel[:, :steps * pf].reshape(batch, steps, pf, bands, pm)
    patches = patches.transpose(0, 1, 3, 2, 4).reshape(batch, steps * bands, pf * pm)
    if mask is None:
        valid = jnp.ones((batch, steps * bands), bool)
    else:
        # A patch is valid when the audio under its first frame is.
        starts = jnp.arange(steps) * pf * config.hop_length
        valid = jnp.repeat(mask[:, starts], bands, axis=1)
    return patches, valid, bands


class AudioTower(nn.Module):
    """Log-mel patch transformer. [B, S] audio -> [B, hidden] pooled features."""

    config: AudioTowerConfig
    dtype: jnp.dtype = jnp.float32
    remat: bool = False

    @nn.compact
    def __call__(self, audio: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        cfg = self.config
        patches, valid, bands = log_mel_patches(audio, mask, cfg)
        # Log-mel values sit around -11..+5; a fixed affine puts them near unit scale
        # before the patch projection (AST normalizes with dataset statistics likewise).
        x = logical_dense(cfg.hidden_size, (None, "embed"), "patch_embed")((patches + 4.0) / 4.0)
        band_embed = self.param(
            "band_embed", nn.with_logical_partitioning(nn.initializers.normal(0.02),
                                                       (None, "embed")),
            (bands, cfg.hidden_size), jnp.float32)
        steps = patches.shape[1] // bands
        x = x + jnp.tile(band_embed, (steps, 1))[None]
        positions = jnp.broadcast_to(jnp.repeat(jnp.arange(steps), bands)[None], valid.shape)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
        x = Transformer(cfg.num_layers, cfg.num_heads, cfg.hidden_size // cfg.num_heads,
                        cfg.mlp_dim, remat=self.remat, dtype=self.dtype, name="transformer")(
                            x, valid, positions)
        return mean_pool(x.astype(jnp.float32), valid)


class MuLan(nn.Module):
    """Audio and text towers with projections into the shared, L2-normalized space.

    Attributes:
      freeze_text: stop gradients at the text tower's output, so a frozen
        (imported) tower costs no backward pass. Pair it with `with_frozen`,
        which keeps weight decay from moving the frozen weights.
    """

    config: MuLanConfig
    dtype: jnp.dtype = jnp.float32
    remat: bool = False
    freeze_text: bool = False

    def setup(self):
        cfg = self.config
        self.audio_tower = AudioTower(cfg.audio, self.dtype, self.remat)
        self.text_tower = Bert(cfg.text, dtype=self.dtype)
        self.audio_projection = logical_dense(cfg.embed_dim, ("embed", None), "audio_projection")
        self.text_projection = logical_dense(cfg.embed_dim, ("embed", None), "text_projection")
        self.logit_scale = self.param("logit_scale", nn.initializers.constant(
            math.log(1.0 / cfg.init_temperature)), (), jnp.float32)

    def embed_audio(self, audio: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """[B, S] audio (one window each) -> [B, embed_dim] unit vectors."""
        return l2_normalize(self.audio_projection(self.audio_tower(audio, mask)))

    def embed_text(self, ids: jax.Array, mask: jax.Array) -> jax.Array:
        """[B, L] token ids, [B, L] bool mask -> [B, embed_dim] unit vectors."""
        hidden = self.text_tower(ids, mask)
        if self.freeze_text:
            hidden = jax.lax.stop_gradient(hidden)
        return l2_normalize(self.text_projection(mean_pool(hidden.astype(jnp.float32), mask)))

    def scale(self) -> jax.Array:
        """exp(logit_scale), clipped at `max_logit_scale`."""
        return jnp.minimum(jnp.exp(self.logit_scale), self.config.max_logit_scale)

    def __call__(self, audio: jax.Array, audio_mask: jax.Array | None, ids: jax.Array,
                 text_mask: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Returns (audio embeddings [B, E], text embeddings [B, E], logit scale [])."""
        return self.embed_audio(audio, audio_mask), self.embed_text(ids, text_mask), self.scale()


# ----------------------------------------------------------------------------- training


def build_config(model: Any, text: BertConfig | None = None) -> MuLanConfig:
    """From a trainer config's `model` block; `text` (an imported tower's config) wins."""
    text = text or BertConfig(**model.text.to_dict())
    return MuLanConfig(audio=AudioTowerConfig(**model.audio.to_dict()), text=text,
                       embed_dim=model.embed_dim, max_text_length=model.max_text_length,
                       init_temperature=model.init_temperature)


def _zero_text_tower(path: tuple, update: jax.Array) -> jax.Array:
    return jnp.zeros_like(update) if getattr(path[0], "key", None) == "text_tower" else update


def with_frozen(tx: optax.GradientTransformation, freeze_text: bool
                ) -> optax.GradientTransformation:
    """`tx` whose updates to the text tower's params are zero when `freeze_text`.

    The text projection and the temperature always train. Zeroing the updates
    (rather than `optax.multi_transform`) keeps the optimizer state a plain
    pytree that the sharding and checkpoint code handle like any other; the
    cost is the frozen tower's (unused) Adam moments.
    """
    if not freeze_text:
        return tx

    def update(updates, state, params=None):
        updates, state = tx.update(updates, state, params)
        return jax.tree_util.tree_map_with_path(_zero_text_tower, updates), state

    return optax.GradientTransformation(tx.init, update)


def make_init_fn(model: MuLan, tx: optax.GradientTransformation, freeze_text: bool = False):
    """PRNG key -> TrainState with logically partitioned params."""
    cfg = model.config
    tx = with_frozen(tx, freeze_text)   # once: the state's static tx must be one object

    def init_fn(rng: jax.Array):
        audio = jnp.zeros((1, cfg.audio.clip_samples), jnp.float32)
        ids = jnp.zeros((1, cfg.max_text_length), jnp.int32)
        params = model.init(rng, audio, None, ids, jnp.ones_like(ids, bool))["params"]
        return TrainState.create(params, tx)

    return init_fn


def batch_losses(model: MuLan, params: Any, batch: dict) -> tuple[jax.Array, dict]:
    """Pipeline batch {"audio" [B, S, 1], "mask" [B, S], "text_ids" [B, L], "text_mask"
    [B, L]} -> (loss, metrics)."""
    a, t, scale = model.apply({"params": params}, batch["audio"][..., 0], batch["mask"],
                              batch["text_ids"], batch["text_mask"].astype(bool))
    a = nn.with_logical_constraint(a, ("batch", None))
    t = nn.with_logical_constraint(t, ("batch", None))
    loss, metrics = contrastive_loss(a, t, scale)
    return loss, {"loss": loss, **metrics}


def make_train_step(model: MuLan):
    """The pure train step: `(state, batch, rng) -> (state, metrics)`."""

    def train_step(state, batch: dict, rng: jax.Array):
        del rng  # no dropout or masking: the step is deterministic
        grads, metrics = jax.grad(lambda p: batch_losses(model, p, batch), has_aux=True)(
            state.params)
        state = state.apply_gradients(grads)
        return state, {**metrics, "grad_norm": optax.tree.norm(grads)}

    return train_step


def window_starts(num_samples: int, window: int, hop: int | None = None) -> np.ndarray:
    """Start samples of the windows that embed a clip: `hop` apart (default: `window`),
    the last one flush with the end so no audio is dropped.

    Raises:
      ValueError: when the clip is shorter than one window.
    """
    if num_samples < window:
        raise ValueError(f"clip of {num_samples} samples is shorter than the tower's window "
                         f"of {window} samples")
    hop = hop or window
    starts = list(range(0, num_samples - window + 1, hop))
    if starts[-1] != num_samples - window:
        starts.append(num_samples - window)
    return np.asarray(starts)
