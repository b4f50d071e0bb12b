"""Pooling over time and normalization of pooled embeddings."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def mean_pool(hidden: jax.Array, mask: jax.Array) -> jax.Array:
    """Masked mean over tokens, as sentence-transformers' `Pooling(mode="mean")`.

    Args:
      hidden: [batch, length, hidden].
      mask: [batch, length] bool or 0/1, True on real tokens.

    Returns:
      [batch, hidden] float32 (a row with no real token gives zeros).
    """
    weights = mask.astype(jnp.float32)[..., None]
    total = jnp.sum(hidden.astype(jnp.float32) * weights, axis=1)
    # sentence-transformers clamps the count at 1e-9 rather than dividing by zero.
    return total / jnp.maximum(jnp.sum(weights, axis=1), 1e-9)


def l2_normalize(x: jax.Array) -> jax.Array:
    """Rows scaled to unit length. [..., E] -> [..., E]."""
    return x / jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True) + 1e-12)
