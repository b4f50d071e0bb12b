"""Multi-head attention with rotary position embeddings.

The attention itself is `jax.nn.dot_product_attention`, which picks the fused
cuDNN kernel on GPU and the XLA path elsewhere.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


def rotary_embedding(x: jax.Array, positions: jax.Array, base: float = 10_000.0) -> jax.Array:
    """Rotates feature pairs by position-dependent angles (RoPE, half-split layout).

    Args:
      x: [batch, length, heads, head_dim], head_dim even.
      positions: [batch, length] integer positions.

    Returns:
      x rotated, same shape and dtype.
    """
    half = x.shape[-1] // 2
    freqs = base ** (-jnp.arange(half, dtype=jnp.float32) / half)          # [half]
    angles = positions[..., None].astype(jnp.float32) * freqs              # [b, l, half]
    sin, cos = jnp.sin(angles)[:, :, None, :], jnp.cos(angles)[:, :, None, :]
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)


class MultiHeadAttention(nn.Module):
    """Self-attention with RoPE.

    Attributes:
      num_heads: attention heads.
      head_dim: features per head.
      causal: mask future positions.
      dtype: compute dtype (params stay float32).
    """

    num_heads: int
    head_dim: int
    causal: bool = False
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None,
                 positions: jax.Array | None = None) -> jax.Array:
        """Attends over the sequence.

        Args:
          x: [batch, length, embed].
          mask: [batch, length] bool, True where a key is valid (padding is False).
          positions: [batch, length] ints for RoPE; `arange(length)` when None.

        Returns:
          [batch, length, embed].
        """
        batch, length, embed = x.shape
        # Kernels are explicit params (not DenseGeneral) so their logical axes name
        # every dimension: [embed, 3, heads, kv] and [heads, kv, embed].
        init = nn.initializers.variance_scaling(1.0, "fan_in", "normal", in_axis=0,
                                                out_axis=(1, 2, 3))
        w_qkv = self.param("qkv", nn.with_logical_partitioning(init, ("embed", None, "heads", "kv")),
                           (embed, 3, self.num_heads, self.head_dim), jnp.float32)
        qkv = jnp.einsum("ble,ethd->blthd", x.astype(self.dtype), w_qkv.astype(self.dtype))
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]         # [b, l, heads, head_dim]
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(length)[None], (batch, length))
        q, k = rotary_embedding(q, positions), rotary_embedding(k, positions)
        key_mask = None if mask is None else mask[:, None, None, :]   # [b, 1, 1, l_k]
        out = jax.nn.dot_product_attention(q, k, v, mask=key_mask, is_causal=self.causal)
        out = nn.with_logical_constraint(out, ("batch", "length", "heads", "kv"))
        out_init = nn.initializers.variance_scaling(1.0, "fan_in", "normal", in_axis=(0, 1),
                                                    out_axis=2)
        w_out = self.param("out", nn.with_logical_partitioning(out_init, ("heads", "kv", "embed")),
                           (self.num_heads, self.head_dim, embed), jnp.float32)
        return jnp.einsum("blhd,hde->ble", out, w_out.astype(self.dtype))
