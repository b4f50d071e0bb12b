"""Pre-norm transformer blocks and stacks."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from audiolm_jax.layers.attention import MODE_TRAIN, MultiHeadAttention
from audiolm_jax.layers.norms import RMSNorm


class MlpBlock(nn.Module):
    """Gated (SwiGLU) or plain GELU feed-forward. [b, l, embed] -> [b, l, embed]."""

    hidden_dim: int
    gated: bool = True
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        embed = x.shape[-1]
        width = 2 if self.gated else 1
        init = nn.initializers.variance_scaling(1.0, "fan_in", "normal", in_axis=0,
                                                out_axis=(1, 2))
        w_in = self.param("wi", nn.with_logical_partitioning(init, ("embed", None, "mlp")),
                          (embed, width, self.hidden_dim), jnp.float32)
        h = jnp.einsum("ble,ewm->blwm", x.astype(self.dtype), w_in.astype(self.dtype))
        h = jax.nn.silu(h[..., 0, :]) * h[..., 1, :] if self.gated else jax.nn.gelu(h[..., 0, :])
        h = nn.with_logical_constraint(h, ("batch", "length", "mlp"))
        return nn.Dense(embed, use_bias=False, dtype=self.dtype, name="wo",
                        kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                                                 ("mlp", "embed")))(h)


class TransformerBlock(nn.Module):
    """x + attn(norm(x)); x + mlp(norm(x))."""

    num_heads: int
    head_dim: int
    mlp_dim: int
    causal: bool = False
    dtype: jnp.dtype = jnp.float32
    attention_positions: str = "rope"   # see MultiHeadAttention.positions

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None,
                 positions: jax.Array | None = None, *,
                 prefix_lengths: jax.Array | None = None,
                 mode: str = MODE_TRAIN) -> jax.Array:
        """x: [batch, length, embed]; mask: [batch, length] bool; positions: [batch, length]
        RoPE positions (`arange` when None). Returns x's shape.

        `prefix_lengths` ([batch] ints, prefix-LM mask) and `mode` (train / prefill /
        decode, with a KV cache in the `"cache"` collection) are passed to
        `MultiHeadAttention`; their defaults keep the plain full-sequence block."""
        h = RMSNorm(dtype=self.dtype, name="attn_norm")(x)
        x = x + MultiHeadAttention(self.num_heads, self.head_dim, self.causal, self.dtype,
                                   positions=self.attention_positions, name="attn")(h, mask, positions,
                                                prefix_lengths=prefix_lengths, mode=mode)
        h = RMSNorm(dtype=self.dtype, name="mlp_norm")(x)
        x = x + MlpBlock(self.mlp_dim, dtype=self.dtype, name="mlp")(h)
        return nn.with_logical_constraint(x, ("batch", "length", "embed"))


class Transformer(nn.Module):
    """A stack of `TransformerBlock`s and a final norm.

    Attributes:
      num_layers, num_heads, head_dim, mlp_dim, causal, dtype: block settings.
      remat: recompute each block's activations in the backward pass.
    """

    num_layers: int
    num_heads: int
    head_dim: int
    mlp_dim: int
    causal: bool = False
    remat: bool = False
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None,
                 positions: jax.Array | None = None) -> jax.Array:
        """[batch, length, embed] -> [batch, length, embed]; see `TransformerBlock`."""
        block = nn.remat(TransformerBlock) if self.remat else TransformerBlock
        for i in range(self.num_layers):
            x = block(self.num_heads, self.head_dim, self.mlp_dim, self.causal, self.dtype,
                      name=f"layer_{i}")(x, mask, positions)
        return RMSNorm(dtype=self.dtype, name="final_norm")(x)
