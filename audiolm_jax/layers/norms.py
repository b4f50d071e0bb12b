"""Normalization layers with logically partitioned parameters."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class RMSNorm(nn.Module):
    """Root-mean-square layer norm over the last axis; statistics in float32.

    Attributes:
      eps: added to the mean square.
      dtype: output dtype.
    """

    eps: float = 1e-6
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """[..., embed] -> [..., embed]."""
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                           (x.shape[-1],), jnp.float32)
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
        return (y * scale).astype(self.dtype)


class LayerNorm(nn.Module):
    """Layer norm over the last axis with logically partitioned `scale` (and `bias`);
    statistics in float32. `use_bias=False` is the bias-free LayerNorm of GPT-2-style
    models configured without biases (Bark's `bias=False`).

    Attributes:
      eps: added to the variance.
      use_bias: learn an additive bias.
      dtype: output dtype.
    """

    eps: float = 1e-5
    use_bias: bool = True
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """[..., embed] -> [..., embed]."""
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                           (x.shape[-1],), jnp.float32)
        x32 = x.astype(jnp.float32)
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.eps) * scale
        if self.use_bias:
            y = y + self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros,
                                                                    ("embed",)),
                               (x.shape[-1],), jnp.float32)
        return y.astype(self.dtype)


NORMS = ("rms", "layer")


def make_norm(kind: str, *, use_bias: bool = True, eps: float | None = None,
              dtype: jnp.dtype = jnp.float32, name: str | None = None) -> nn.Module:
    """"rms" (`RMSNorm`, eps 1e-6 by default) or "layer" (`LayerNorm`, eps 1e-5)."""
    if kind == "rms":
        return RMSNorm(eps=1e-6 if eps is None else eps, dtype=dtype, name=name)
    if kind == "layer":
        return LayerNorm(eps=1e-5 if eps is None else eps, use_bias=use_bias, dtype=dtype,
                         name=name)
    raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")
