"""Frame validity from sample masks, and wav2vec-style span masking."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def frame_validity(sample_mask: jax.Array, hop_length: int, num_frames: int) -> jax.Array:
    """[batch, samples] bool -> [batch, frames] bool: a frame is valid if its centre is."""
    centres = jnp.minimum(jnp.arange(num_frames) * hop_length, sample_mask.shape[1] - 1)
    return sample_mask[:, centres]


def span_mask(rng: jax.Array, shape: tuple[int, int], start_prob: float,
              span: int) -> jax.Array:
    """wav2vec-style span masking: each frame starts a hidden span with `start_prob`.

    Returns:
      [batch, frames] bool, True where hidden.
    """
    starts = jax.random.bernoulli(rng, start_prob, shape).astype(jnp.int32)
    # Frame t is hidden if a span started in (t - span, t]: a windowed sum via cumsum.
    csum = jnp.cumsum(starts, axis=1)
    shifted = jnp.pad(csum, ((0, 0), (span, 0)))[:, : shape[1]]
    return (csum - shifted) > 0
