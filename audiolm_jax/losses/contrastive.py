"""Symmetric InfoNCE over a global batch (MuLan, the melody embedder)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def contrastive_loss(a: jax.Array, b: jax.Array, scale: jax.Array
                     ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Symmetric InfoNCE: row i of `a` should pick row i of `b` and vice versa.

    Args:
      a, b: [N, E] L2-normalized embeddings of the global batch (sharded over
        the batch axis is fine: the [N, N] product spans every device's rows).
      scale: the inverse temperature.

    Returns:
      (loss, {"loss_a2b", "loss_b2a", "accuracy_a2b", "accuracy_b2a", "temperature"}).
    """
    logits = scale * (a.astype(jnp.float32) @ b.astype(jnp.float32).T)       # [N, N]
    labels = jnp.arange(a.shape[0])
    a2b = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    b2a = optax.softmax_cross_entropy_with_integer_labels(logits.T, labels).mean()
    metrics = {"loss_a2b": a2b, "loss_b2a": b2a,
               "accuracy_a2b": jnp.mean(jnp.argmax(logits, axis=1) == labels),
               "accuracy_b2a": jnp.mean(jnp.argmax(logits, axis=0) == labels),
               "temperature": 1.0 / scale}
    return 0.5 * (a2b + b2a), metrics
