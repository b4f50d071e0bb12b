"""Conditional flow matching for Voicebox: training masks, the loss, and the sampler.

The optimal-transport path (Lipman et al. 2023) from noise x0 ~ N(0, I) at t = 0
to data x1 at t = 1:

    x_t = (1 - (1 - sigma_min) t) x0 + t x1,     u_t = x1 - (1 - sigma_min) x0

The network learns `v(x_t, context, phones, t) ~ u_t` on the frames the mask
hides; the context is x1 elsewhere. Sampling integrates `dx/dt = v` from t = 0
to 1 with the shared fixed-step solvers (`audiolm_jax.sampling.ode`), with
classifier-free guidance `v = (1 + alpha) v(cond) - alpha v(no cond)`, and
finally puts the known context back on the frames that were not generated.

Everything here works on normalized features (`normalize` / `denormalize`);
the public entry points in `inference.py` take and return real log-mels.

Masks are bool `[batch, frames]`, True = "generate this frame" (hidden from
the model, counted by the loss). `valid` is True on real (non-padding) frames.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from audiolm_jax.models.voicebox.model import VoiceboxConfig, VoiceboxTransformer
from audiolm_jax.sampling import ode


def normalize(x: jax.Array, config: VoiceboxConfig) -> jax.Array:
    """Features -> the flow's space: `(x - mean) / std` (scalars or per feature)."""
    mean, std = feature_statistics(config)
    return (x - mean) / std


def denormalize(x: jax.Array, config: VoiceboxConfig) -> jax.Array:
    mean, std = feature_statistics(config)
    return x * std + mean


def feature_statistics(config: VoiceboxConfig) -> tuple[jax.Array, jax.Array]:
    """(mean, std) as arrays that broadcast over [..., feature_dim]."""
    return (jnp.asarray(config.feature_mean, jnp.float32),
            jnp.asarray(config.feature_std, jnp.float32))


def span_mask(rng: jax.Array, lengths: jax.Array, frames: int,
              fraction: tuple[float, float]) -> jax.Array:
    """One contiguous span per row of `round(f * length)` frames, f ~ U(fraction), at a
    uniform start inside the row's valid frames. [batch] lengths -> [batch, frames] bool."""
    k_frac, k_start = jax.random.split(rng)
    lengths = lengths.astype(jnp.float32)
    f = jax.random.uniform(k_frac, lengths.shape, minval=fraction[0], maxval=fraction[1])
    span = jnp.clip(jnp.round(f * lengths), 1.0, jnp.maximum(lengths, 1.0))
    start = jnp.floor(jax.random.uniform(k_start, lengths.shape) * (lengths - span + 1.0))
    pos = jnp.arange(frames, dtype=jnp.float32)[None]
    return (pos >= start[:, None]) & (pos < (start + span)[:, None])


def random_frames_mask(rng: jax.Array, lengths: jax.Array, frames: int,
                       fraction: tuple[float, float]) -> jax.Array:
    """Each valid frame hidden independently with probability p ~ U(fraction) per row."""
    k_p, k_frames = jax.random.split(rng)
    p = jax.random.uniform(k_p, lengths.shape, minval=fraction[0], maxval=fraction[1])
    hidden = jax.random.uniform(k_frames, (lengths.shape[0], frames)) < p[:, None]
    return hidden & (jnp.arange(frames)[None] < lengths[:, None])


def prompt_mask(rng: jax.Array, lengths: jax.Array, frames: int, fraction: tuple[float, float],
                prompt_frames: jax.Array | None = None) -> jax.Array:
    """The zero-shot TTS shape: a prefix of the row is the context, the rest is generated.

    The prefix is `prompt_frames` where that is > 0 (an example made of two
    utterances, the first the prompt), else `round(f * length)` frames with
    f ~ U(fraction); at least one frame is generated. [batch] -> [batch, frames] bool.
    """
    lengths = lengths.astype(jnp.float32)
    f = jax.random.uniform(rng, lengths.shape, minval=fraction[0], maxval=fraction[1])
    prefix = jnp.round(f * lengths)
    if prompt_frames is not None:
        prefix = jnp.where(prompt_frames > 0, prompt_frames.astype(jnp.float32), prefix)
    prefix = jnp.clip(prefix, 0.0, lengths - 1.0)
    pos = jnp.arange(frames, dtype=jnp.float32)[None]
    return (pos >= prefix[:, None]) & (pos < lengths[:, None])


def training_mask(rng: jax.Array, valid: jax.Array, config: VoiceboxConfig,
                  prompt_frames: jax.Array | None = None) -> jax.Array:
    """Voicebox's training masks, one kind per row: a prompt mask (context prefix,
    generated suffix) with probability `p_prompt`, random frames with probability
    `p_random_frames`, one span otherwise.

    Args:
      valid: [batch, frames] bool.
      prompt_frames: [batch] int, the prompt's frames in a joined two-utterance
        example (0 elsewhere); None: no such examples.

    Returns:
      [batch, frames] bool, within `valid`, never empty on a non-empty row.
    """
    k_choice, k_span, k_random, k_prompt = jax.random.split(rng, 4)
    lengths = jnp.sum(valid, axis=-1)
    frames = valid.shape[1]
    u = jax.random.uniform(k_choice, lengths.shape)
    use_prompt = u < config.p_prompt
    use_random = (u >= config.p_prompt) & (u < config.p_prompt + config.p_random_frames)
    mask = jnp.where(use_random[:, None],
                     random_frames_mask(k_random, lengths, frames, config.random_frames_fraction),
                     span_mask(k_span, lengths, frames, config.span_fraction))
    mask = jnp.where(use_prompt[:, None],
                     prompt_mask(k_prompt, lengths, frames, config.prompt_fraction,
                                 prompt_frames), mask)
    # A random-frames draw can come out empty on a short row: hide its first frame then.
    empty = ~jnp.any(mask & valid, axis=-1, keepdims=True)
    first = jnp.arange(frames)[None] == 0
    return (mask | (empty & first)) & valid


def _masked_mean(values: jax.Array, weights: jax.Array) -> jax.Array:
    """Mean of [b, t, f] `values` over the frames where `weights` [b, t] is true."""
    weights = weights.astype(jnp.float32)
    per_frame = jnp.mean(values, axis=-1)
    return jnp.sum(per_frame * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def loss_fn(model: VoiceboxTransformer, params: Any, x1: jax.Array, phones: jax.Array,
            valid: jax.Array, rng: jax.Array, mask: jax.Array | None = None,
            prompt_frames: jax.Array | None = None
            ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The training loss of one batch (flow matching, or L1 for a regression model).

    Args:
      model: the network.
      params: its parameters.
      x1: [batch, frames, feature_dim] normalized features.
      phones: [batch, frames] int.
      valid: [batch, frames] bool.
      rng: draws the mask (unless given), the condition dropout, t and x0.
      mask: [batch, frames] bool frames to generate; `training_mask` when None.
      prompt_frames: [batch] int, see `training_mask`.

    Returns:
      (loss, metrics): the loss over masked valid frames; metrics `masked_fraction`
      and `uncond_fraction`.
    """
    cfg = model.config
    k_mask, k_drop, k_t, k_x0 = jax.random.split(rng, 4)
    if mask is None:
        mask = training_mask(k_mask, valid, cfg, prompt_frames)
    mask = mask & valid
    batch = x1.shape[0]
    drop = jax.random.uniform(k_drop, (batch,)) < cfg.p_uncond
    context = jnp.where(mask[..., None], 0.0, x1)
    if cfg.objective == "regression":
        prediction = model.apply({"params": params}, jnp.zeros_like(x1), context, phones,
                                 jnp.zeros((batch,)), valid, drop)
        loss = _masked_mean(jnp.abs(prediction - x1), mask)
    else:
        t = jax.random.uniform(k_t, (batch,))
        x0 = jax.random.normal(k_x0, x1.shape)
        s = (1.0 - (1.0 - cfg.sigma_min) * t)[:, None, None]
        x_t = s * x0 + t[:, None, None] * x1
        target = x1 - (1.0 - cfg.sigma_min) * x0
        velocity = model.apply({"params": params}, x_t, context, phones, t, valid, drop)
        loss = _masked_mean(jnp.square(velocity - target), mask)
    lengths = jnp.maximum(jnp.sum(valid, axis=-1), 1)
    metrics = {"masked_fraction": jnp.mean(jnp.sum(mask, axis=-1) / lengths),
               "uncond_fraction": jnp.mean(drop.astype(jnp.float32))}
    return loss, metrics


def guided_velocity(model: VoiceboxTransformer, params: Any, context: jax.Array,
                    phones: jax.Array, valid: jax.Array, guidance: float
                    ) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """`(x, t) -> v`: the conditional velocity, with classifier-free guidance
    `(1 + guidance) v_cond - guidance v_uncond` when `guidance != 0` (both halves in
    one batched call)."""
    batch = context.shape[0]

    def velocity(x: jax.Array, t: jax.Array) -> jax.Array:
        times = jnp.full((batch,), t, jnp.float32)
        if guidance == 0:
            return model.apply({"params": params}, x, context, phones, times, valid)
        both = lambda a: jnp.concatenate([a, a], axis=0)
        drop = jnp.concatenate([jnp.zeros((batch,), bool), jnp.ones((batch,), bool)])
        v = model.apply({"params": params}, both(x), both(context), both(phones), both(times),
                        both(valid), drop)
        v_cond, v_uncond = v[:batch], v[batch:]
        return (1.0 + guidance) * v_cond - guidance * v_uncond

    return velocity


def sample(model: VoiceboxTransformer, params: Any, context: jax.Array, mask: jax.Array,
           phones: jax.Array, valid: jax.Array, rng: jax.Array, *, num_steps: int = 8,
           method: str = "midpoint", guidance: float = 0.7, temperature: float = 1.0
           ) -> jax.Array:
    """Generates the masked frames (normalized features in, normalized features out).

    Args:
      context: [batch, frames, f] normalized features; its masked frames are ignored.
      mask: [batch, frames] bool, True on frames to generate.
      phones: [batch, frames] int (frame-aligned for the audio model).
      valid: [batch, frames] bool.
      rng: the starting noise.
      num_steps: solver steps; network passes = `ode.num_function_evals(method,
        num_steps)`, twice that with guidance (both halves in one batch).
      method: "euler" | "midpoint" | "heun" | "rk4".
      guidance: alpha of classifier-free guidance (0: none).
      temperature: scale of the starting noise.

    Returns:
      [batch, frames, f]: generated frames where `mask`, the context elsewhere,
      zeros on padding. A regression model predicts in one pass (no ODE).
    """
    cfg = model.config
    mask = mask & valid
    context = jnp.where(mask[..., None], 0.0, context)
    if cfg.objective == "regression":
        x1 = model.apply({"params": params}, jnp.zeros_like(context), context, phones,
                         jnp.zeros((context.shape[0],)), valid)
    else:
        x0 = temperature * jax.random.normal(rng, context.shape)
        velocity = guided_velocity(model, params, context, phones, valid, guidance)
        x1 = ode.odeint(velocity, x0, 0.0, 1.0, num_steps, method)
    out = jnp.where(mask[..., None], x1, context)
    return jnp.where(valid[..., None], out, 0.0)
