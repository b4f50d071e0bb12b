"""Multi-head attention with rotary position embeddings and an optional KV cache.

The attention itself is `jax.nn.dot_product_attention`, which picks the fused
cuDNN kernel on GPU and the XLA path elsewhere.

`MultiHeadAttention` runs in one of three modes (MaxText's train / prefill /
autoregressive split), chosen per call with `mode=`:

* `MODE_TRAIN` (default): the whole sequence at once, no cache. This is the
  original behaviour; existing callers and checkpoints are unaffected.
* `MODE_PREFILL`: the same attention over a (right-padded) prompt, which is
  also written into the `"cache"` collection, slots `[0, prompt_length)`; each
  row's write index becomes its own prompt length.
* `MODE_DECODE`: one new token per row, written at that row's index; it
  attends to every slot written so far, and the index advances by one.

The cache is static-shape, one set per attention layer:

    cached_key, cached_value: [batch, max_length, heads, head_dim], compute dtype,
        logical axes ("cache_batch", "cache_length", "cache_heads", "cache_kv");
    cache_index: [batch] int32, logical axes ("cache_batch",): the number of
        slots each row has filled (= the position of its next token).

Masks: causal, or prefix-LM (`prefix_lengths`: bidirectional within each row's
first `prefix_lengths[b]` positions, causal after them), both combined with key
padding (`mask`).

`CrossAttention` attends from the sequence to a fixed context (an encoder's
states, e.g. MusicGen's T5 text). In the cached modes it projects the context's
keys and values once, at the prefill, and keeps them in its own cache entries
(`cached_context_key`, `cached_context_value` [batch, context_length, heads,
head_dim] and `context_mask` [batch, context_length]); decode steps read them.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

MODE_TRAIN, MODE_PREFILL, MODE_DECODE = "train", "prefill", "decode"
MODES = (MODE_TRAIN, MODE_PREFILL, MODE_DECODE)
# How attention sees positions: rotary embeddings, a symmetric ALiBi bias (bidirectional
# models, e.g. Voicebox), or not at all (positions come from elsewhere).
POSITIONS = ("rope", "alibi", "none")
# Logical axes of the cached keys / values and of the per-row write index.
CACHE_AXES = ("cache_batch", "cache_length", "cache_heads", "cache_kv")
CACHE_INDEX_AXES = ("cache_batch",)


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


def alibi_slopes(num_heads: int) -> np.ndarray:
    """ALiBi's per-head slopes (Press et al. 2022): a geometric sequence from
    `2 ** (-8 / n)`, with the paper's interleaving when `num_heads` is not a power of 2.
    [num_heads] float32."""
    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    closest = 2 ** int(np.floor(np.log2(num_heads)))
    slopes = power_of_two(closest)
    if closest < num_heads:
        slopes += power_of_two(2 * closest)[0::2][:num_heads - closest]
    return np.asarray(slopes, np.float32)


def alibi_bias(num_heads: int, length: int) -> np.ndarray:
    """Symmetric (bidirectional) ALiBi bias `-slope_h * |i - j|`. [1, heads, length, length]."""
    distance = np.abs(np.arange(length)[:, None] - np.arange(length)[None, :])
    return (-alibi_slopes(num_heads)[:, None, None] * distance)[None].astype(np.float32)


def prefix_lm_mask(length: int, prefix_lengths: jax.Array,
                   key_mask: jax.Array | None = None) -> jax.Array:
    """Prefix-LM attention mask: query i sees key j if `j <= i` or `j < prefix_lengths[b]`.

    Args:
      length: sequence length l (static).
      prefix_lengths: [batch] ints, each row's bidirectional prefix (0: plain causal).
      key_mask: optional [batch, l] bool, True where a key is valid.

    Returns:
      [batch, 1, l, l] bool, True where attention is allowed.
    """
    pos = jnp.arange(length)
    allowed = (pos[None, None, :] <= pos[None, :, None]) | (
        pos[None, None, :] < jnp.asarray(prefix_lengths)[:, None, None])  # [b, l_q, l_k]
    if key_mask is not None:
        allowed = allowed & key_mask[:, None, :]
    return allowed[:, None]


def single_query_attention(q: jax.Array, keys: jax.Array, values: jax.Array,
                           key_mask: jax.Array) -> jax.Array:
    """Softmax attention of one query per row over a cache, as multiply-and-reduce.

    A decode step's attention has one query, so its matmuls are matrix-vector
    products whose cost is reading the cache. Written as elementwise products
    reduced over `head_dim` and then over the slots, XLA fuses each into one pass
    over the cache in its stored layout; `dot_product_attention` would first
    transpose the cache to `[b, heads, s, d]` (a copy of all of it, every step: on a
    CPU that cost more than the attention itself at a few hundred slots).

    Args:
      q: [batch, 1, heads, head_dim].
      keys, values: [batch, slots, heads, head_dim].
      key_mask: [batch, slots] bool, True where a slot may be attended.

    Returns:
      [batch, 1, heads, head_dim] in q's dtype (float32 inside).
    """
    scale = 1.0 / np.sqrt(q.shape[-1])
    scores = jnp.sum(q.astype(jnp.float32) * keys.astype(jnp.float32), axis=-1) * scale
    scores = jnp.where(key_mask[:, :, None], scores, jnp.finfo(jnp.float32).min)  # [b, s, h]
    weights = jax.nn.softmax(scores, axis=1)
    out = jnp.sum(weights[..., None] * values.astype(jnp.float32), axis=1)    # [b, h, d]
    return out[:, None].astype(q.dtype)


def output_projection(module: nn.Module, heads: jax.Array, embed: int, dtype: jnp.dtype,
                      use_bias: bool) -> jax.Array:
    """The heads back to the model width, in `module`'s scope: params `out` [heads, kv,
    embed] and, with `use_bias`, `out_bias` [embed]. [b, l, heads, kv] -> [b, l, embed]."""
    heads = nn.with_logical_constraint(heads, ("batch", "length", "heads", "kv"))
    init = nn.initializers.variance_scaling(1.0, "fan_in", "normal", in_axis=(0, 1), out_axis=2)
    w_out = module.param("out", nn.with_logical_partitioning(init, ("heads", "kv", "embed")),
                         (*heads.shape[2:], embed), jnp.float32)
    y = jnp.einsum("blhd,hde->ble", heads, w_out.astype(dtype))
    if use_bias:
        b_out = module.param("out_bias", nn.with_logical_partitioning(nn.initializers.zeros,
                                                                      ("embed",)),
                             (embed,), jnp.float32)
        y = y + b_out.astype(dtype)
    return y


class MultiHeadAttention(nn.Module):
    """Self-attention with RoPE, and a KV cache for incremental decoding.

    Attributes:
      num_heads: attention heads.
      head_dim: features per head.
      causal: mask future positions (required by the cached modes).
      dtype: compute dtype (params stay float32; the cache is kept in it).
      positions: "rope" (default), "alibi" (train mode, not causal: a symmetric
        distance bias per head) or "none" (in every mode: the positions come from
        elsewhere, e.g. learned absolute embeddings added to the input, as GPT-2
        and Bark do).
      use_bias: biases on the fused q/k/v projection (`qkv_bias` [3, heads, kv])
        and the output projection (`out_bias` [embed]), as GPT-2-style models have.
    """

    num_heads: int
    head_dim: int
    causal: bool = False
    dtype: jnp.dtype = jnp.float32
    positions: str = "rope"
    use_bias: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None,
                 positions: jax.Array | None = None, *,
                 prefix_lengths: jax.Array | None = None,
                 mode: str = MODE_TRAIN) -> jax.Array:
        """Attends over the sequence, or over the cache.

        Args:
          x: [batch, length, embed]; length 1 in `MODE_DECODE`.
          mask: [batch, length] bool, True where a key is valid (padding is False).
            In `MODE_PREFILL` prompts must be right-padded: row b's valid keys are its
            first `lengths[b] = mask[b].sum()` positions, and that is its cache index
            afterwards (all of `length` when None). Must be None in `MODE_DECODE`.
          positions: [batch, length] ints for RoPE; `arange(length)` when None, and in
            `MODE_DECODE` each row's cache index.
          prefix_lengths: [batch] ints; when given (needs `causal`), positions
            `< prefix_lengths[b]` attend to each other bidirectionally. Train and prefill
            only: after a prefill every later token is causal anyway, provided
            `prefix_lengths <= lengths`.
          mode: `MODE_TRAIN`, `MODE_PREFILL` or `MODE_DECODE` (see the module docstring);
            the cached modes need `mutable=["cache"]` and, outside `init`, a cache made
            by `init` in `MODE_PREFILL` on a [batch, max_length] input (see
            `Decoder.init_cache`).

        Returns:
          [batch, length, embed].
        """
        if mode not in MODES:
            raise ValueError(f"unknown attention mode {mode!r}; expected one of {MODES}")
        if mode != MODE_TRAIN and not self.causal:
            raise ValueError(f"mode {mode!r} needs a causal attention (causal=True)")
        if self.positions not in POSITIONS:
            raise ValueError(f"positions must be one of {POSITIONS}, got {self.positions!r}")
        if self.positions == "alibi" and (mode != MODE_TRAIN or self.causal):
            raise ValueError("positions='alibi' is for bidirectional attention in train mode "
                             "(no causal mask, no KV cache)")
        if prefix_lengths is not None and not self.causal:
            raise ValueError("prefix_lengths needs causal=True (bidirectional attention "
                             "already sees the whole sequence)")
        batch, length, embed = x.shape
        # Kernels are explicit params (not DenseGeneral) so their logical axes name
        # every dimension: [embed, 3, heads, kv] and [heads, kv, embed].
        init = nn.initializers.variance_scaling(1.0, "fan_in", "normal", in_axis=0,
                                                out_axis=(1, 2, 3))
        w_qkv = self.param("qkv", nn.with_logical_partitioning(init, ("embed", None, "heads", "kv")),
                           (embed, 3, self.num_heads, self.head_dim), jnp.float32)
        qkv = jnp.einsum("ble,ethd->blthd", x.astype(self.dtype), w_qkv.astype(self.dtype))
        if self.use_bias:
            b_qkv = self.param("qkv_bias", nn.with_logical_partitioning(
                nn.initializers.zeros, (None, "heads", "kv")),
                (3, self.num_heads, self.head_dim), jnp.float32)
            qkv = qkv + b_qkv.astype(self.dtype)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]         # [b, l, heads, head_dim]
        if mode == MODE_DECODE:
            out = self._decode(q, k, v, mask, positions, prefix_lengths)
        elif self.positions != "rope" and not self.causal:
            key_mask = None if mask is None else mask[:, None, None, :]   # [b, 1, 1, l_k]
            bias = None
            if self.positions == "alibi":
                bias = jnp.asarray(alibi_bias(self.num_heads, length), q.dtype)
            out = jax.nn.dot_product_attention(q, k, v, bias=bias, mask=key_mask)
        else:
            if self.positions == "rope":
                if positions is None:
                    positions = jnp.broadcast_to(jnp.arange(length)[None], (batch, length))
                q, k = rotary_embedding(q, positions), rotary_embedding(k, positions)
            if mode == MODE_PREFILL:
                self._prefill_cache(k, v, mask)
            key_mask = None if mask is None else mask[:, None, None, :]   # [b, 1, 1, l_k]
            if prefix_lengths is None:
                out = jax.nn.dot_product_attention(q, k, v, mask=key_mask, is_causal=self.causal)
            else:
                out = jax.nn.dot_product_attention(q, k, v,
                                                   mask=prefix_lm_mask(length, prefix_lengths, mask))
        return output_projection(self, out, embed, self.dtype, self.use_bias)

    def _cache_variables(self, batch: int, length: int) -> tuple[nn.Variable, ...]:
        """(cached_key, cached_value, cache_index); created here only under `init`, with
        `length` as the cache's max_length."""
        if not (self.has_variable("cache", "cached_key") or self.is_initializing()):
            raise ValueError("no KV cache: pass one in the 'cache' collection (made by `init` in "
                             "MODE_PREFILL on a [batch, max_length] input, e.g. "
                             "Decoder.init_cache) and apply with mutable=['cache']")
        shape = (batch, length, self.num_heads, self.head_dim)
        zeros = nn.with_logical_partitioning(jnp.zeros, CACHE_AXES)
        cached_key = self.variable("cache", "cached_key", zeros, shape, self.dtype)
        cached_value = self.variable("cache", "cached_value", zeros, shape, self.dtype)
        cache_index = self.variable("cache", "cache_index",
                                    nn.with_logical_partitioning(jnp.zeros, CACHE_INDEX_AXES),
                                    (batch,), jnp.int32)
        return cached_key, cached_value, cache_index

    def _prefill_cache(self, k: jax.Array, v: jax.Array, mask: jax.Array | None) -> None:
        """Writes a prompt's rotated keys and values into slots [0, length) and sets each
        row's index to its prompt length. k, v: [batch, length, heads, head_dim]."""
        batch, length = k.shape[:2]
        cached_key, cached_value, cache_index = self._cache_variables(batch, length)
        max_length = cached_key.value.shape[1]
        if length > max_length:
            raise ValueError(f"prompt of length {length} does not fit a cache of {max_length}")
        for var, new in ((cached_key, k), (cached_value, v)):
            full = jax.lax.dynamic_update_slice(var.value, new.astype(var.value.dtype),
                                                (0, 0, 0, 0))
            var.value = nn.with_logical_constraint(full, CACHE_AXES)
        lengths = (jnp.full((batch,), length, jnp.int32) if mask is None
                   else jnp.sum(mask, axis=-1, dtype=jnp.int32))
        cache_index.value = nn.with_logical_constraint(lengths, CACHE_INDEX_AXES)

    def _decode(self, q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None,
                positions: jax.Array | None, prefix_lengths: jax.Array | None) -> jax.Array:
        """One token per row against the cache. q, k, v: [batch, 1, heads, head_dim] (not
        yet rotated). Returns the attention output [batch, 1, heads, head_dim]."""
        batch, length = q.shape[:2]
        if length != 1:
            raise ValueError(f"MODE_DECODE takes one token per row, got length {length}")
        if mask is not None or prefix_lengths is not None:
            raise ValueError("MODE_DECODE takes no mask or prefix_lengths: the new token "
                             "attends causally to every slot its row has written")
        cached_key, cached_value, cache_index = self._cache_variables(batch, length)
        index = cache_index.value                                         # [b]
        if self.positions == "rope":
            if positions is None:
                positions = index[:, None]
            q, k = rotary_embedding(q, positions), rotary_embedding(k, positions)
        # Per-row write at slot index[b]: a scatter of one slot per row, which XLA does in
        # place inside the generation loop (an elementwise select over the whole cache
        # would read and write all of it every step: at 500 slots that cost more than the
        # weights). Rows are the scatter's batch dimension, so a batch- or head-sharded
        # cache stays local. A row whose cache is full (index == max_length) writes nothing.
        slots = jnp.arange(cached_key.value.shape[1])                     # [max_length]
        rows = jnp.arange(batch)
        for var, new in ((cached_key, k), (cached_value, v)):
            full = var.value.at[rows, index].set(new[:, 0].astype(var.value.dtype), mode="drop")
            var.value = nn.with_logical_constraint(full, CACHE_AXES)
        cache_index.value = nn.with_logical_constraint(index + 1, CACHE_INDEX_AXES)
        key_mask = slots[None, :] <= index[:, None]                       # [b, s]
        return single_query_attention(q, cached_key.value, cached_value.value, key_mask)


def placeholder_context(cross_attention: bool, batch_size: int, context_length: int,
                        context_dim: int, dtype: jnp.dtype) -> jax.Array | None:
    """The zero context [batch, context_length, context_dim] that sizes a cross-attending
    decoder's cache under `init` (None when the decoder does not cross-attend)."""
    if not cross_attention:
        return None
    if context_length <= 0:
        raise ValueError("a cross-attending decoder's cache needs context_length")
    return jnp.zeros((batch_size, context_length, context_dim), dtype)


class CrossAttention(nn.Module):
    """Attention from a sequence to a context: queries from `x`, keys and values from
    `context` (no positions; the context carries its own).

    Params: `q` [embed, heads, kv], `kv` [context_dim, 2, heads, kv], `out` [heads, kv,
    embed], and with `use_bias` `q_bias`, `kv_bias`, `out_bias`.

    A row whose context is entirely masked (e.g. the null condition of
    classifier-free guidance, whose context is zeros) attends uniformly over it:
    its output is the mean of the context's values, finite, never nan.

    Attributes:
      num_heads, head_dim: attention shape.
      dtype: compute dtype (and the cached context's).
      use_bias: biases on the projections.
    """

    num_heads: int
    head_dim: int
    dtype: jnp.dtype = jnp.float32
    use_bias: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array | None = None,
                 context_mask: jax.Array | None = None, *, mode: str = MODE_TRAIN) -> jax.Array:
        """Attends from `x` to the context.

        Args:
          x: [batch, length, embed].
          context: [batch, context_length, context_dim]; in `MODE_DECODE` it is read
            from the cache instead (pass None).
          context_mask: [batch, context_length] bool, True where a context entry is
            valid (all valid when None).
          mode: `MODE_TRAIN` (no cache), `MODE_PREFILL` (also writes the context's
            keys, values and mask into the `"cache"` collection) or `MODE_DECODE`.

        Returns:
          [batch, length, embed].
        """
        if mode not in MODES:
            raise ValueError(f"unknown attention mode {mode!r}; expected one of {MODES}")
        embed = x.shape[-1]
        init = nn.initializers.variance_scaling(1.0, "fan_in", "normal", in_axis=0,
                                                out_axis=(1, 2))
        w_q = self.param("q", nn.with_logical_partitioning(init, ("embed", "heads", "kv")),
                         (embed, self.num_heads, self.head_dim), jnp.float32)
        q = jnp.einsum("ble,ehd->blhd", x.astype(self.dtype), w_q.astype(self.dtype))
        if self.use_bias:
            q = q + self._bias("q_bias", (self.num_heads, self.head_dim), ("heads", "kv"))
        if mode == MODE_DECODE:
            if context is not None:
                raise ValueError("MODE_DECODE reads the context from the cache: pass none")
            key, value, mask = self._context_cache(x.shape[0], None)
            key, value, mask = key.value, value.value, mask.value
        else:
            if context is None:
                raise ValueError(f"CrossAttention in mode {mode!r} needs a context")
            kv_init = nn.initializers.variance_scaling(1.0, "fan_in", "normal", in_axis=0,
                                                       out_axis=(1, 2, 3))
            w_kv = self.param("kv", nn.with_logical_partitioning(
                kv_init, ("embed", None, "heads", "kv")),
                (context.shape[-1], 2, self.num_heads, self.head_dim), jnp.float32)
            kv = jnp.einsum("bce,ethd->bcthd", context.astype(self.dtype),
                            w_kv.astype(self.dtype))
            if self.use_bias:
                kv = kv + self._bias("kv_bias", (2, self.num_heads, self.head_dim),
                                     (None, "heads", "kv"))
            key, value = kv[:, :, 0], kv[:, :, 1]                   # [b, c, heads, kv]
            mask = (jnp.ones(context.shape[:2], bool) if context_mask is None
                    else jnp.asarray(context_mask).astype(bool))
            if mode == MODE_PREFILL:
                cached = self._context_cache(x.shape[0], context.shape[1])
                if cached[0].value.shape[1] != context.shape[1]:
                    raise ValueError(f"a context of {context.shape[1]} entries does not match "
                                     f"the cache's {cached[0].value.shape[1]}")
                for var, new in zip(cached, (key, value, mask)):
                    var.value = new.astype(var.value.dtype)
        out = jax.nn.dot_product_attention(q, key, value, mask=mask[:, None, None, :])
        return output_projection(self, out, embed, self.dtype, self.use_bias)

    def _bias(self, name: str, shape: tuple[int, ...], axes: tuple) -> jax.Array:
        return self.param(name, nn.with_logical_partitioning(nn.initializers.zeros, axes),
                          shape, jnp.float32).astype(self.dtype)

    def _context_cache(self, batch: int, length: int | None) -> tuple[nn.Variable, ...]:
        """(cached_context_key, cached_context_value, context_mask); created only under
        `init` (in `MODE_PREFILL`, with the context's length)."""
        if not (self.has_variable("cache", "cached_context_key") or self.is_initializing()):
            raise ValueError("no cached context: prefill first (the cache must come from "
                             "init_cache with the context's length)")
        if length is None:
            length = self.get_variable("cache", "cached_context_key").shape[1]
        shape = (batch, length, self.num_heads, self.head_dim)
        zeros = nn.with_logical_partitioning(jnp.zeros, CACHE_AXES)
        key = self.variable("cache", "cached_context_key", zeros, shape, self.dtype)
        value = self.variable("cache", "cached_context_value", zeros, shape, self.dtype)
        mask = self.variable("cache", "context_mask", nn.with_logical_partitioning(
            jnp.zeros, ("cache_batch", "cache_length")), (batch, length), bool)
        return key, value, mask
