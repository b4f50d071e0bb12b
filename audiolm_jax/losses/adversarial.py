"""Adversarial losses: hinge losses and feature matching over discriminator outputs.

They take the `(logits, features)` lists returned by
`models.gan.discriminators`. Pure functions computed in float32, returning a
float32 scalar.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# ------------------------------------------------------------------ adversarial


def _as_list(logits: jax.Array | Sequence[jax.Array]) -> list[jax.Array]:
    return [logits] if isinstance(logits, jax.Array | np.ndarray) else list(logits)


def hinge_discriminator_loss(real_logits: jax.Array | Sequence[jax.Array],
                             fake_logits: jax.Array | Sequence[jax.Array]) -> jax.Array:
    """Hinge loss of the discriminator, averaged over sub-discriminators.

    `1/K sum_k [mean(relu(1 - D_k(x))) + mean(relu(1 + D_k(G(z))))]`.

    Args:
      real_logits, fake_logits: one array (any shape) per sub-discriminator,
        or a single array; fakes should be `stop_gradient`-ed by the caller
        (or produced from a fixed generator output).

    Returns:
      float32 scalar.
    """
    real, fake = _as_list(real_logits), _as_list(fake_logits)
    if len(real) != len(fake) or not real:
        raise ValueError(f"got {len(real)} real and {len(fake)} fake logit arrays")
    per_disc = [jnp.mean(jax.nn.relu(1.0 - r.astype(jnp.float32))) +
                jnp.mean(jax.nn.relu(1.0 + f.astype(jnp.float32))) for r, f in zip(real, fake)]
    return sum(per_disc) / len(per_disc)


def hinge_generator_loss(fake_logits: jax.Array | Sequence[jax.Array],
                         clipped: bool = True) -> jax.Array:
    """Adversarial loss of the generator, averaged over sub-discriminators.

    Args:
      fake_logits: one array per sub-discriminator (or a single array).
      clipped: `mean(relu(1 - D_k))`, the EnCodec paper's form (no gradient once
        a fake is scored above the margin); False gives `-mean(D_k)`, the
        classic hinge-GAN generator loss that audiocraft's "hinge" uses.

    Returns:
      float32 scalar.
    """
    fake = [f.astype(jnp.float32) for f in _as_list(fake_logits)]
    if clipped:
        per_disc = [jnp.mean(jax.nn.relu(1.0 - f)) for f in fake]
    else:
        per_disc = [-jnp.mean(f) for f in fake]
    return sum(per_disc) / len(per_disc)


def feature_matching_loss(real_feats: Sequence[Any], fake_feats: Sequence[Any],
                          eps: float = 1e-8) -> jax.Array:
    """Relative L1 feature matching (EnCodec).

    `1/(K L) sum_k sum_l mean|D_k^l(x) - D_k^l(G(z))| / (mean|D_k^l(x)| + eps)`:
    dividing each layer's L1 by the mean magnitude of its real activations
    keeps layers of different scales on an equal footing.

    Args:
      real_feats, fake_feats: per sub-discriminator, a list of layer
        activations (the `features` output of a discriminator); a flat list of
        arrays is taken as one sub-discriminator. Shapes must match pairwise.
      eps: keeps the ratio finite for an all-zero real activation.

    Returns:
      float32 scalar: mean over layers, then over sub-discriminators.
    """
    if real_feats and isinstance(real_feats[0], jax.Array | np.ndarray):
        real_feats, fake_feats = [real_feats], [fake_feats]
    if len(real_feats) != len(fake_feats) or not real_feats:
        raise ValueError(f"got {len(real_feats)} real and {len(fake_feats)} fake feature lists")
    per_disc = []
    for real_layers, fake_layers in zip(real_feats, fake_feats):
        if len(real_layers) != len(fake_layers) or not real_layers:
            raise ValueError("real and fake feature lists differ in length or are empty")
        terms = []
        for r, f in zip(real_layers, fake_layers):
            if r.shape != f.shape:
                raise ValueError(f"feature shapes differ: {r.shape} vs {f.shape}")
            r, f = r.astype(jnp.float32), f.astype(jnp.float32)
            terms.append(jnp.mean(jnp.abs(r - f)) / (jnp.mean(jnp.abs(r)) + eps))
        per_disc.append(sum(terms) / len(terms))
    return sum(per_disc) / len(per_disc)
