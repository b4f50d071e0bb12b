"""Pre-norm transformer blocks and stacks."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from audiolm_jax.layers.attention import MODE_TRAIN, CrossAttention, MultiHeadAttention
from audiolm_jax.layers.norms import RMSNorm, make_norm


def _whole_on_every_device(logical_axes: tuple, index: int) -> bool:
    """Whether dimension `index` of an array with `logical_axes` stays unsplit under the
    current rules and mesh: no mesh axis for it, or only mesh axes of size 1. A mesh
    axis with no current mesh counts as split (its size is unknown)."""
    mesh_axes = nn.logical_to_mesh_axes(logical_axes)[index]
    if mesh_axes is None:
        return True
    names = mesh_axes if isinstance(mesh_axes, tuple) else (mesh_axes,)
    sizes = dict(jax.sharding.get_abstract_mesh().shape)
    return bool(sizes) and all(sizes.get(name, 1) == 1 for name in names)


_WI_AXES = ("embed", None, "mlp")   # MlpBlock's input kernel [embed, width, hidden]


class MlpBlock(nn.Module):
    """Gated (SwiGLU) or plain GELU feed-forward. [b, l, embed] -> [b, l, embed].

    Attributes:
      hidden_dim: inner width.
      gated: SwiGLU (two input projections) rather than GELU.
      dtype: compute dtype.
      use_bias: biases on both projections (`wi_bias` [width, hidden], `wo`'s bias).
      exact_gelu: the erf GELU (PyTorch's `nn.GELU()` default, GPT-2-style models
        such as Bark) instead of the tanh approximation.
    """

    hidden_dim: int
    gated: bool = True
    dtype: jnp.dtype = jnp.float32
    use_bias: bool = False
    exact_gelu: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        embed = x.shape[-1]
        width = 2 if self.gated else 1
        init = nn.initializers.variance_scaling(1.0, "fan_in", "normal", in_axis=0,
                                                out_axis=(1, 2))
        w_in = self.param("wi", nn.with_logical_partitioning(init, _WI_AXES),
                          (embed, width, self.hidden_dim), jnp.float32)
        if _whole_on_every_device(_WI_AXES, 2):
            # One [tokens, embed] x [embed, width * hidden] matmul: XLA:CPU runs it and
            # its gradients without the layout copies that the [b, l, width, hidden]
            # einsum costs (the tiny Voicebox block, fwd + bwd: 82 -> 65 ms). The reshape
            # of the kernel would split a sharded `mlp` axis, so sharded runs keep the einsum.
            flat = x.reshape(-1, embed).astype(self.dtype) @ w_in.reshape(
                embed, width * self.hidden_dim).astype(self.dtype)
            h = flat.reshape(*x.shape[:-1], width, self.hidden_dim)
        else:
            h = jnp.einsum("ble,ewm->blwm", x.astype(self.dtype), w_in.astype(self.dtype))
        if self.use_bias:
            b_in = self.param("wi_bias", nn.with_logical_partitioning(nn.initializers.zeros,
                                                                      (None, "mlp")),
                              (width, self.hidden_dim), jnp.float32)
            h = h + b_in.astype(self.dtype)
        if self.gated:
            h = jax.nn.silu(h[..., 0, :]) * h[..., 1, :]
        else:
            h = jax.nn.gelu(h[..., 0, :], approximate=not self.exact_gelu)
        h = nn.with_logical_constraint(h, ("batch", "length", "mlp"))
        return nn.Dense(embed, use_bias=self.use_bias, dtype=self.dtype, name="wo",
                        kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                                                 ("mlp", "embed")),
                        bias_init=nn.with_logical_partitioning(nn.initializers.zeros,
                                                               ("embed",)))(h)


class TransformerBlock(nn.Module):
    """x + attn(norm(x)); [x + cross_attn(norm(x), context);] x + mlp(norm(x)).

    The defaults are the project's LLaMA-style block (RMSNorm, RoPE, SwiGLU, no
    biases); `norm="layer"`, `use_bias`, `gated=False` with `exact_gelu` and
    `attention_positions="none"` give a GPT-2-style block (Bark's).

    Attributes:
      num_heads, head_dim: attention shape.
      mlp_dim: feed-forward width.
      causal: causal attention (needed by the cached modes).
      dtype: compute dtype.
      attention_positions: see `MultiHeadAttention.positions`.
      norm: "rms" or "layer" (`layers.norms.make_norm`).
      use_bias: biases in the attention and feed-forward projections and, for
        `norm="layer"`, in the norms.
      gated: SwiGLU feed-forward rather than GELU.
      exact_gelu: erf GELU (see `MlpBlock`).
      norm_eps: the norms' epsilon (None: the norm's default).
      norm_bias: LayerNorm biases (None: `use_bias`); Bark's fine stage has them
        while its projections have none.
      cross_attention: a `CrossAttention` to a context between the self-attention and
        the feed-forward (`cross_norm`, `cross_attn`), as MusicGen's decoder has.
    """

    num_heads: int
    head_dim: int
    mlp_dim: int
    causal: bool = False
    dtype: jnp.dtype = jnp.float32
    attention_positions: str = "rope"
    norm: str = "rms"
    use_bias: bool = False
    gated: bool = True
    exact_gelu: bool = False
    norm_eps: float | None = None
    norm_bias: bool | None = None
    cross_attention: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None,
                 positions: jax.Array | None = None, *,
                 prefix_lengths: jax.Array | None = None,
                 mode: str = MODE_TRAIN, context: jax.Array | None = None,
                 context_mask: jax.Array | None = None) -> jax.Array:
        """x: [batch, length, embed]; mask: [batch, length] bool; positions: [batch, length]
        RoPE positions (`arange` when None). Returns x's shape.

        `prefix_lengths` ([batch] ints, prefix-LM mask) and `mode` (train / prefill /
        decode, with a KV cache in the `"cache"` collection) are passed to
        `MultiHeadAttention`; their defaults keep the plain full-sequence block.
        `context` [batch, context_length, context_dim] and `context_mask` [batch,
        context_length] feed the cross-attention (see `CrossAttention`: none in
        `MODE_DECODE`, where it reads its cache)."""
        norm_bias = self.use_bias if self.norm_bias is None else self.norm_bias
        norm = functools.partial(make_norm, self.norm, use_bias=norm_bias, eps=self.norm_eps,
                                 dtype=self.dtype)
        h = norm(name="attn_norm")(x)
        x = x + MultiHeadAttention(self.num_heads, self.head_dim, self.causal, self.dtype,
                                   positions=self.attention_positions, use_bias=self.use_bias,
                                   name="attn")(h, mask, positions,
                                                prefix_lengths=prefix_lengths, mode=mode)
        if self.cross_attention:
            h = norm(name="cross_norm")(x)
            x = x + CrossAttention(self.num_heads, self.head_dim, self.dtype,
                                   use_bias=self.use_bias, name="cross_attn")(
                h, context, context_mask, mode=mode)
        elif context is not None:
            raise ValueError("a context was given to a block without cross_attention")
        h = norm(name="mlp_norm")(x)
        x = x + MlpBlock(self.mlp_dim, gated=self.gated, dtype=self.dtype,
                         use_bias=self.use_bias, exact_gelu=self.exact_gelu, name="mlp")(h)
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
