"""wav2vec 2.0's Gumbel-softmax vector quantizer (w2v-BERT's contrastive targets)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from audiolm_jax.layers.linear import logical_dense


class GumbelQuantizer(nn.Module):
    """wav2vec 2.0's Gumbel-softmax vector quantizer with one codebook.

    Straight-through: the forward pass takes the hard one-hot, gradients flow
    through the soft sample.
    """

    codebook_size: int
    codevector_dim: int

    @nn.compact
    def __call__(self, x: jax.Array, rng: jax.Array | None, temperature: jax.Array
                 ) -> dict[str, jax.Array]:
        """[B, F, hidden] -> {"codevectors" [B, F, codevector_dim] (from the Gumbel sample when
        `rng` is given), "ids" [B, F] (argmax, noise-free), "sampled_ids", "probs"}."""
        # Unit-variance weights (wav2vec 2.0's init): logits start with std ~sqrt(hidden),
        # so each frame's code is decided by its input from the first step. With
        # LeCun init the logits start near zero, the Gumbel samples are uniform noise
        # and neither the contrastive nor the MLM module has a target to learn.
        logits = logical_dense(self.codebook_size, ("embed", "vocab"), "weight_proj",
                        kernel_init=nn.initializers.normal(1.0))(x)
        logits = logits.astype(jnp.float32)
        ids = jnp.argmax(logits, axis=-1)
        sampled = ids
        hard = jax.nn.one_hot(ids, self.codebook_size, dtype=jnp.float32)
        if rng is not None:
            gumbel = -jnp.log(-jnp.log(jax.random.uniform(rng, logits.shape, minval=1e-6,
                                                          maxval=1.0 - 1e-6)))
            soft = jax.nn.softmax((logits + gumbel) / temperature, axis=-1)
            sampled = jnp.argmax(soft, axis=-1)
            hard = jax.nn.one_hot(sampled, self.codebook_size, dtype=jnp.float32)
            hard = soft + jax.lax.stop_gradient(hard - soft)
        codebook = self.param("codevectors", nn.initializers.uniform(1.0),
                              (self.codebook_size, self.codevector_dim))
        return {"codevectors": hard @ codebook, "ids": ids.astype(jnp.int32),
                "sampled_ids": sampled.astype(jnp.int32),
                "probs": jax.nn.softmax(logits, axis=-1)}
