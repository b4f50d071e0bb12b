"""Self-supervised pretraining of the w2v-BERT encoder: span masking + masked prediction.

Three objectives, chosen by `PretrainConfig.objective`:

- **"w2v_bert"** (Chung et al. 2021). Span-masked frames enter the encoder as
  `masked_spec_embed`. A Gumbel-softmax quantizer (wav2vec 2.0's, one codebook)
  discretizes the unmasked feature projection into targets. The output of the
  first `contrastive_layers` Conformer layers (the *contrastive module*) must
  pick each masked frame's quantized vector out of `num_negatives` distractors
  from the same utterance (cosine similarity / temperature, InfoNCE), plus
  wav2vec 2.0's codebook-diversity penalty. The last layer (the *MLM module*)
  predicts the quantizer's code id of each masked frame (cross-entropy); the id
  is the quantizer's noise-free argmax, not the Gumbel sample (at the early
  high temperatures the sample is close to uniform noise, which the MLM module
  cannot learn from). Loss:
  `contrastive_weight * (L_contrastive + diversity_weight * L_diversity) +
  mlm_weight * L_mlm`; the paper weights both terms 1 and diversity 0.1.
- **"best_rq"** (Chiu et al. 2022). Targets come from a frozen random-projection
  quantizer: stacked filterbank frame -> fixed random projection ->
  L2-normalized -> nearest of `codebook_size` fixed random unit vectors. Masked
  input frames are replaced by Gaussian noise (std 0.1); the last layer
  predicts the target ids of masked frames. Nothing in the quantizer trains.
- **"kmeans"** (HuBERT's first iteration, Hsu et al. 2021). Targets are the ids
  of k-means clusters (`codebook_size` of them) of the stacked filterbank
  frames, fitted on the training data before pretraining starts
  (`train/w2v_bert.py` does this and keeps the centroids in the work
  directory); masked frames enter as `masked_spec_embed` and the last layer
  predicts the masked frames' cluster ids.

Masks: every valid frame starts a hidden span of `mask_span` frames with
probability `mask_start_prob` (wav2vec 2.0 / w2v-BERT: 0.065 and 10 frames, so
about half the frames are hidden).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from audiolm_jax.audio.fbank import stacked_features
from audiolm_jax.checks import check_choice
from audiolm_jax.layers.linear import logical_dense
from audiolm_jax.layers.masking import span_mask
from audiolm_jax.models.w2v_bert.model import W2vBert, W2vBertConfig
from audiolm_jax.quantization.gumbel import GumbelQuantizer
from audiolm_jax.quantization.kmeans import nearest_centroid
from audiolm_jax.training.state import TrainState

OBJECTIVES = ("w2v_bert", "best_rq", "kmeans")


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """Pretraining objective and its hyperparameters (see the module docstring)."""

    objective: str = "w2v_bert"
    mask_start_prob: float = 0.065
    mask_span: int = 10
    codebook_size: int = 1024
    # w2v-BERT: contrastive module depth, contrastive space, distractors, temperatures.
    contrastive_layers: int = 12
    codevector_dim: int = 768
    proj_dim: int = 768
    num_negatives: int = 100
    contrastive_temperature: float = 0.1
    diversity_weight: float = 0.1
    contrastive_weight: float = 1.0
    mlm_weight: float = 1.0
    gumbel_start: float = 2.0
    gumbel_end: float = 0.5
    gumbel_decay: float = 0.999995
    # BEST-RQ: random projection width, input noise, quantizer seed.
    best_rq_dim: int = 16
    best_rq_noise_std: float = 0.1
    best_rq_seed: int = 0

    def __post_init__(self):
        check_choice("PretrainConfig.objective", self.objective, OBJECTIVES)
        if not 0.0 < self.mask_start_prob < 1.0 or self.mask_span < 1:
            raise ValueError(f"mask_start_prob must be in (0, 1) and mask_span >= 1, got "
                             f"{self.mask_start_prob} and {self.mask_span}")

    def gumbel_temperature(self, step: jax.Array) -> jax.Array:
        """wav2vec 2.0's schedule: start * decay**step, floored at end."""
        return jnp.maximum(self.gumbel_end,
                           self.gumbel_start * self.gumbel_decay ** step.astype(jnp.float32))


def best_rq_targets(features: jax.Array, config: PretrainConfig) -> jax.Array:
    """BEST-RQ code ids of stacked filterbank frames: [B, F, D] -> [B, F] int32.

    The projection (Xavier-uniform) and codebook (unit Gaussian vectors) are drawn
    from `config.best_rq_seed` on every call: fixed, never trained, not saved.
    """
    key_p, key_c = jax.random.split(jax.random.key(config.best_rq_seed))
    projection = nn.initializers.xavier_uniform()(key_p, (features.shape[-1], config.best_rq_dim))
    codebook = jax.random.normal(key_c, (config.codebook_size, config.best_rq_dim))
    codebook = codebook / jnp.linalg.norm(codebook, axis=-1, keepdims=True)
    z = features.astype(jnp.float32) @ projection
    z = z / (jnp.linalg.norm(z, axis=-1, keepdims=True) + 1e-6)
    return jnp.argmax(z @ codebook.T, axis=-1).astype(jnp.int32)


class SemanticPretrainModel(nn.Module):
    """The encoder plus the heads its pretraining objective needs.

    Parameters live under `encoder` (a `W2vBert`, what the tokenizer and the
    exports use) and the heads (`mlm_head`; for w2v-BERT also `quantizer`,
    `project_q`, `project_hid`).
    """

    encoder_config: W2vBertConfig
    config: PretrainConfig
    remat: bool = False

    @nn.compact
    def __call__(self, features: jax.Array, valid: jax.Array, hidden: jax.Array,
                 rng: jax.Array | None = None, temperature: jax.Array | float = 1.0,
                 targets: jax.Array | None = None) -> dict[str, Any]:
        """Forward pass for the loss.

        Args:
          features: [B, F, D] stacked filterbank features (masking not yet applied).
          valid: [B, F] bool, frames inside the audio.
          hidden: [B, F] bool, frames to mask and predict.
          rng: noise for BEST-RQ's masked frames and the Gumbel sample (None: eval,
            BEST-RQ masks with zeros and the quantizer is deterministic).
          temperature: Gumbel-softmax temperature.
          targets: [B, F] cluster ids (the "kmeans" objective only).

        Returns:
          {"mlm_logits" [B, F, V], "targets" [B, F], "hidden_states"} plus, for
          w2v-BERT, "context" and "quantized" [B, F, proj_dim] and "code_probs".
        """
        cfg = self.config
        encoder = W2vBert(self.encoder_config, remat=self.remat, name="encoder")
        mlm_head = logical_dense(cfg.codebook_size, ("embed", "vocab"), "mlm_head")
        if cfg.objective == "kmeans":
            if targets is None:
                raise ValueError('the "kmeans" objective needs the target cluster ids')
            out = encoder(features, valid, time_mask=hidden)
            return {"mlm_logits": mlm_head(out["last_hidden_state"]).astype(jnp.float32),
                    "targets": targets, "hidden_states": out["hidden_states"]}
        if cfg.objective == "best_rq":
            targets = best_rq_targets(features, cfg)
            noise = (0.0 if rng is None else
                     cfg.best_rq_noise_std * jax.random.normal(rng, features.shape))
            masked = jnp.where(hidden[..., None], noise, features)
            out = encoder(masked, valid)
            return {"mlm_logits": mlm_head(out["last_hidden_state"]).astype(jnp.float32),
                    "targets": targets, "hidden_states": out["hidden_states"]}
        out = encoder(features, valid, time_mask=hidden)
        quantizer = GumbelQuantizer(cfg.codebook_size, cfg.codevector_dim, name="quantizer")
        q = quantizer(out["projected"], rng, temperature)
        quantized = logical_dense(cfg.proj_dim, (None, "embed"), "project_q")(q["codevectors"])
        context = logical_dense(cfg.proj_dim, ("embed", None), "project_hid")(
            out["hidden_states"][cfg.contrastive_layers])
        return {"mlm_logits": mlm_head(out["last_hidden_state"]).astype(jnp.float32),
                "targets": jax.lax.stop_gradient(q["ids"]), "sampled_ids": q["sampled_ids"],
                "context": context,
                "quantized": quantized, "code_probs": q["probs"],
                "hidden_states": out["hidden_states"]}


def sample_negatives(rng: jax.Array, valid: jax.Array, num: int) -> jax.Array:
    """[B, F, num] frame indices: for each frame, `num` other valid frames of its row.

    Drawn uniformly with replacement from the row's first `valid.sum()` frames,
    never the frame itself (valid frames are a prefix: rows are right-padded).
    """
    b, f = valid.shape
    count = jnp.maximum(valid.sum(axis=1), 2)[:, None, None]                # [B, 1, 1]
    u = jax.random.uniform(rng, (b, f, num))
    index = jnp.floor(u * (count - 1)).astype(jnp.int32)                    # [0, count - 2]
    own = jnp.arange(f)[None, :, None]
    return index + (index >= own)


def contrastive_loss(context: jax.Array, quantized: jax.Array, ids: jax.Array,
                     scored: jax.Array, negatives: jax.Array, temperature: float
                     ) -> tuple[jax.Array, jax.Array]:
    """wav2vec 2.0's InfoNCE over cosine similarities.

    Args:
      context, quantized: [B, F, P].
      ids: [B, F] code ids (a distractor with the positive's id is left out).
      scored: [B, F] float, 1 on the frames that count.
      negatives: [B, F, K] distractor frame indices.

    Returns:
      (mean loss over scored frames, accuracy of picking the positive).
    """
    gather = jax.vmap(lambda x, i: x[i])                                    # per row
    candidates = jnp.concatenate([quantized[:, :, None], gather(quantized, negatives)], axis=2)
    c = context / (jnp.linalg.norm(context, axis=-1, keepdims=True) + 1e-6)
    q = candidates / (jnp.linalg.norm(candidates, axis=-1, keepdims=True) + 1e-6)
    logits = jnp.einsum("bfp,bfkp->bfk", c, q).astype(jnp.float32) / temperature
    same = gather(ids, negatives) == ids[..., None]                        # [B, F, K]
    logits = logits.at[..., 1:].set(jnp.where(same, -1e9, logits[..., 1:]))
    loss = -jax.nn.log_softmax(logits, axis=-1)[..., 0]
    count = jnp.maximum(scored.sum(), 1.0)
    accuracy = (jnp.argmax(logits, axis=-1) == 0).astype(jnp.float32)
    return (loss * scored).sum() / count, (accuracy * scored).sum() / count


def pretrain_losses(out: dict[str, Any], valid: jax.Array, hidden: jax.Array,
                    config: PretrainConfig, negatives_rng: jax.Array) -> dict[str, jax.Array]:
    """Loss and metrics from `SemanticPretrainModel` outputs; see the module docstring."""
    scored = (hidden & valid).astype(jnp.float32)
    count = jnp.maximum(scored.sum(), 1.0)
    ce = optax.softmax_cross_entropy_with_integer_labels(out["mlm_logits"], out["targets"])
    mlm = (ce * scored).sum() / count
    mlm_acc = ((jnp.argmax(out["mlm_logits"], -1) == out["targets"]) * scored).sum() / count
    metrics = {"mlm_loss": mlm, "mlm_accuracy": mlm_acc,
               "masked_fraction": scored.sum() / jnp.maximum(valid.sum(), 1)}
    # Perplexity of the targets actually used (how many codes are alive).
    onehot = jax.nn.one_hot(out["targets"], config.codebook_size) * valid[..., None]
    usage = onehot.sum((0, 1)) / jnp.maximum(valid.sum(), 1)
    metrics["target_perplexity"] = jnp.exp(-jnp.sum(usage * jnp.log(usage + 1e-9)))
    if config.objective != "w2v_bert":
        return {"loss": config.mlm_weight * mlm, **metrics}
    negatives = sample_negatives(negatives_rng, valid, config.num_negatives)
    contrastive, c_acc = contrastive_loss(out["context"], out["quantized"], out["sampled_ids"],
                                          scored, negatives, config.contrastive_temperature)
    # Diversity: the batch-mean softmax over codes should use all of them.
    w = valid.astype(jnp.float32)[..., None]
    mean_probs = (out["code_probs"] * w).sum((0, 1)) / jnp.maximum(w.sum(), 1.0)
    perplexity = jnp.exp(-jnp.sum(mean_probs * jnp.log(mean_probs + 1e-9)))
    diversity = (config.codebook_size - perplexity) / config.codebook_size
    loss = (config.contrastive_weight * (contrastive + config.diversity_weight * diversity)
            + config.mlm_weight * mlm)
    return {"loss": loss, "contrastive_loss": contrastive, "contrastive_accuracy": c_acc,
            "diversity_loss": diversity, "code_perplexity": perplexity, **metrics}


def make_hidden_mask(rng: jax.Array, valid: jax.Array, config: PretrainConfig) -> jax.Array:
    """[B, F] bool: span mask restricted to valid frames."""
    return span_mask(rng, valid.shape, config.mask_start_prob, config.mask_span) & valid


def build_model(config: Any) -> SemanticPretrainModel:
    """From a trainer config's `model` block: `encoder` (W2vBertConfig fields) and `pretrain`."""
    m = config.model
    return SemanticPretrainModel(W2vBertConfig(**m.encoder.to_dict()),
                                 PretrainConfig(**m.pretrain.to_dict()),
                                 remat=m.get("remat", False))


def make_init_fn(model: SemanticPretrainModel, tx: optax.GradientTransformation,
                 num_frames: int = 16):
    """PRNG key -> TrainState with logically partitioned (boxed) params."""
    def init_fn(rng: jax.Array):
        dim = model.encoder_config.feature_projection_input_dim
        features = jnp.zeros((1, num_frames, dim), jnp.float32)
        valid = jnp.ones((1, num_frames), bool)
        targets = jnp.zeros((1, num_frames), jnp.int32)           # used by "kmeans" only
        params = model.init(rng, features, valid, ~valid, targets=targets)["params"]
        return TrainState.create(params, tx)

    return init_fn


def _featurize(model: SemanticPretrainModel, batch: dict) -> tuple[jax.Array, jax.Array]:
    """Pipeline batch {"audio" [B, T, 1], "mask" [B, T]} -> (features, valid frames)."""
    lengths = batch["mask"].sum(axis=-1)
    return stacked_features(batch["audio"][..., 0], lengths, model.encoder_config.fbank)


def kmeans_targets(features: jax.Array, centroids: jax.Array | None) -> jax.Array | None:
    """[B, F, D] stacked features -> [B, F] nearest-centroid ids (None without centroids)."""
    if centroids is None:
        return None
    flat = features.reshape(-1, features.shape[-1]).astype(jnp.float32)
    return nearest_centroid(flat, jnp.asarray(centroids)).reshape(features.shape[:2])


def make_train_step(model: SemanticPretrainModel, centroids: Any = None):
    """The pure train step: `(state, batch, rng) -> (state, metrics)`.

    `centroids` [codebook_size, D]: the target clusters of the "kmeans" objective.
    """
    cfg = model.config
    if (cfg.objective == "kmeans") != (centroids is not None):
        raise ValueError('target centroids are needed by, and only by, the "kmeans" objective')

    def train_step(state, batch: dict, rng: jax.Array):
        rng = jax.random.fold_in(rng, state.step)
        mask_rng, model_rng, negatives_rng = jax.random.split(rng, 3)
        features, valid = _featurize(model, batch)
        features = nn.with_logical_constraint(features, ("batch", "length", None))
        hidden = make_hidden_mask(mask_rng, valid, cfg)
        temperature = cfg.gumbel_temperature(state.step)
        targets = kmeans_targets(features, centroids)

        def loss_fn(params):
            out = model.apply({"params": params}, features, valid, hidden, model_rng,
                              temperature, targets)
            losses = pretrain_losses(out, valid, hidden, cfg, negatives_rng)
            return losses["loss"], losses

        grads, losses = jax.grad(loss_fn, has_aux=True)(state.params)
        state = state.apply_gradients(grads)
        return state, {**losses, "grad_norm": optax.tree.norm(grads),
                       "gumbel_temperature": temperature}

    return train_step


def evaluate_batch(model: SemanticPretrainModel, params: Any, batch: dict,
                   rng: jax.Array, centroids: Any = None) -> dict[str, jax.Array]:
    """Held-out losses with a fixed mask (`rng`), no noise and a deterministic quantizer."""
    mask_rng, negatives_rng = jax.random.split(rng)
    features, valid = _featurize(model, batch)
    hidden = make_hidden_mask(mask_rng, valid, model.config)
    out = model.apply({"params": params}, features, valid, hidden, None,
                      model.config.gumbel_end, kmeans_targets(features, centroids))
    return pretrain_losses(out, valid, hidden, model.config, negatives_rng)
