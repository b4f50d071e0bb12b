"""A decoder-only token language model with a KV cache: the shared core of the
AudioLM / MusicLM / VALL-E stages.

    tokens [batch, length] -> embedding ("vocab", "embed")
      -> num_layers x pre-norm causal `TransformerBlock` (RoPE attention, SwiGLU MLP)
      -> final RMSNorm -> logits ("embed", "vocab") -> [batch, length, vocab] float32

Three ways to run the same parameters (see `audiolm_jax.layers.attention`):

    # Training / scoring: the whole sequence, no cache.
    logits = model.apply({"params": params}, tokens, lengths, prefix_lengths)

    # Generation: an empty cache, a prefill of the (right-padded) prompts, then one
    # token per row per step; each row continues from its own prompt length.
    cache = nn.unbox(model.init_cache(batch, max_length))
    logits, v = model.apply({"params": params, "cache": cache}, prompt, lengths,
                            prefix_lengths, method=Decoder.prefill, mutable=["cache"])
    next_logits = logits[jnp.arange(batch), lengths - 1]            # [batch, vocab]
    logits, v = model.apply({"params": params, "cache": v["cache"]}, next_token[:, None],
                            method=Decoder.decode, mutable=["cache"])

`prefill` and `decode` have static shapes, so each compiles once under `jit`. On
a mesh, the cache shards like the weights: build it with
`training.state.create_sharded_state(lambda: model.init_cache(batch, max_length),
mesh, rules)` (its arrays carry the logical axes `("cache_batch", "cache_length",
"cache_heads", "cache_kv")`, e.g. heads over `tensor` under the `tp` rules), and
run the steps inside `training.mesh.sharding_context(mesh, rules)`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from audiolm_jax.layers.attention import (
    MODE_DECODE,
    MODE_PREFILL,
    MODE_TRAIN,
    MODES,
    placeholder_context,
)
from audiolm_jax.layers.embeddings import sinusoidal_embedding
from audiolm_jax.layers.norms import make_norm
from audiolm_jax.layers.transformer import TransformerBlock


class Decoder(nn.Module):
    """Causal (or prefix-LM) token decoder with full-sequence, prefill and decode modes.

    The defaults are a LLaMA-style decoder (RoPE, RMSNorm, SwiGLU, no biases); with
    `position_embedding="learned"`, `norm="layer"`, `use_bias`, `gated=False` and
    `exact_gelu` it is GPT-2's (Bark's semantic and coarse stages); with
    `position_embedding="sinusoidal"`, `norm="layer"`, `norm_bias`, `gated=False`,
    `exact_gelu` and `cross_attention` it is MusicGen's.

    Attributes:
      vocab_size: token ids are in `[0, vocab_size)`; 0 means no embedding table
        (every call passes `embeddings`, e.g. `layers.streams.StreamDecoder`'s summed
        codebook embeddings).
      embed_dim: model width.
      num_layers: transformer blocks.
      num_heads, head_dim: attention shape (head_dim even, for RoPE).
      mlp_dim: feed-forward hidden width.
      remat: recompute each block's activations in the backward pass (full-sequence
        mode only; the cached modes are inference).
      dtype: compute and KV-cache dtype (params stay float32; logits are float32).
      output_vocab_size: logits per position (None: `vocab_size`).
      position_embedding: "rope" (rotary, in attention), "learned" (a
        `[max_length, embed]` table added to the token embeddings; positions past
        `max_length` are an error in the full-sequence and prefill modes) or
        "sinusoidal" (fixed fairseq sinusoids, cosines first, added likewise; any
        length).
      max_length: the learned table's length.
      norm, use_bias, gated, exact_gelu, norm_eps: the blocks' style
        (`layers.transformer.TransformerBlock`); the final norm follows `norm`.
      causal: False makes every position attend to every other (a non-causal
        encoder over the same blocks, e.g. Bark's fine stage); full-sequence mode only.
      norm_bias: the LayerNorms' biases (None: `use_bias`).
      cross_attention: each block attends to a `context` after its self-attention
        (`layers.attention.CrossAttention`); the cache then keeps the context's keys
        and values too (`init_cache(..., context_length, context_dim)`).
    """

    vocab_size: int
    embed_dim: int
    num_layers: int
    num_heads: int
    head_dim: int
    mlp_dim: int
    remat: bool = False
    dtype: jnp.dtype = jnp.float32
    output_vocab_size: int | None = None
    position_embedding: str = "rope"
    max_length: int = 0
    norm: str = "rms"
    use_bias: bool = False
    gated: bool = True
    exact_gelu: bool = False
    norm_eps: float | None = None
    causal: bool = True
    norm_bias: bool | None = None
    cross_attention: bool = False

    @nn.compact
    def __call__(self, tokens: jax.Array, lengths: jax.Array | None = None,
                 prefix_lengths: jax.Array | None = None,
                 positions: jax.Array | None = None, *,
                 mode: str = MODE_TRAIN, embeddings: jax.Array | None = None,
                 context: jax.Array | None = None,
                 context_mask: jax.Array | None = None) -> jax.Array:
        """Logits for every position.

        Args:
          tokens: [batch, length] int ids; length 1 in `MODE_DECODE`.
          lengths: [batch] ints, valid tokens per right-padded row (all when None);
            keys past a row's length are masked, and in `MODE_PREFILL` it is the
            row's cache index afterwards (where its generation continues).
          prefix_lengths: [batch] ints, bidirectional prefix per row (prefix-LM);
            causal when None. Not in `MODE_DECODE` (tokens after a prefill are causal;
            keep `prefix_lengths <= lengths`).
          positions: [batch, length] RoPE positions; `arange(length)` when None, and
            each row's cache index in `MODE_DECODE`.
          mode: `MODE_TRAIN`, `MODE_PREFILL` or `MODE_DECODE`; the cached modes need a
            `"cache"` collection (`init_cache`) and `mutable=["cache"]`.
          embeddings: [batch, length, embed_dim] input vectors used instead of the
            embeddings of `tokens` (which then only give the shape), e.g. sums of
            several tokens' embeddings (Bark's text + history context); learned
            or sinusoidal positions are still added.
          context: [batch, context_length, context_dim] states the blocks cross-attend
            to (`cross_attention` only; in `MODE_DECODE` they come from the cache).
          context_mask: [batch, context_length] bool, True where the context is valid.

        Returns:
          [batch, length, output vocabulary] float32 logits.
        """
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
        if mode != MODE_TRAIN and not self.causal:
            raise ValueError(f"mode {mode!r} needs a causal decoder (causal=True)")
        length = tokens.shape[1]
        if embeddings is None:
            if self.vocab_size <= 0:
                raise ValueError("a Decoder without an embedding table (vocab_size=0) needs "
                                 "`embeddings`")
            table = self.param(
                "embedding",
                nn.with_logical_partitioning(nn.initializers.normal(stddev=1.0),
                                             ("vocab", "embed")),
                (self.vocab_size, self.embed_dim), jnp.float32)
            x = jnp.take(table, tokens.astype(jnp.int32), axis=0).astype(self.dtype)
        else:
            if self.vocab_size > 0:   # the table exists (and is trained) whichever input is used
                self.param("embedding", nn.with_logical_partitioning(
                    nn.initializers.normal(stddev=1.0), ("vocab", "embed")),
                    (self.vocab_size, self.embed_dim), jnp.float32)
            if embeddings.shape != (*tokens.shape, self.embed_dim):
                raise ValueError(f"embeddings of shape {embeddings.shape} for tokens of shape "
                                 f"{tokens.shape}: expected {(*tokens.shape, self.embed_dim)}")
            x = embeddings.astype(self.dtype)
        if self.position_embedding in ("learned", "sinusoidal"):
            x = x + self._absolute_positions(tokens, lengths, positions, mode)
        elif self.position_embedding != "rope":
            raise ValueError(f"position_embedding must be 'rope', 'learned' or 'sinusoidal', "
                             f"got {self.position_embedding!r}")
        if (context is not None) != (self.cross_attention and mode != MODE_DECODE):
            raise ValueError("a context goes with cross_attention=True, in the train and "
                             "prefill modes (decode steps read it from the cache)")
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))   # [b, l, embed]
        mask = None
        if lengths is not None:
            if mode == MODE_DECODE:
                raise ValueError("MODE_DECODE takes no lengths: every row adds one token")
            mask = jnp.arange(length)[None, :] < jnp.asarray(lengths)[:, None]   # [b, l]
        remat = self.remat and mode == MODE_TRAIN
        block = nn.remat(TransformerBlock) if remat else TransformerBlock
        attention_positions = "rope" if self.position_embedding == "rope" else "none"
        for i in range(self.num_layers):
            layer = block(self.num_heads, self.head_dim, self.mlp_dim, causal=self.causal,
                          dtype=self.dtype, attention_positions=attention_positions,
                          norm=self.norm, use_bias=self.use_bias, gated=self.gated,
                          exact_gelu=self.exact_gelu, norm_eps=self.norm_eps,
                          norm_bias=self.norm_bias, cross_attention=self.cross_attention,
                          name=f"layer_{i}")
            if remat:   # jax.checkpoint traces keyword arguments: pass arrays only.
                x = layer(x, mask, positions, prefix_lengths=prefix_lengths, context=context,
                          context_mask=context_mask)
            else:
                x = layer(x, mask, positions, prefix_lengths=prefix_lengths, mode=mode,
                          context=context, context_mask=context_mask)
        norm_bias = self.use_bias if self.norm_bias is None else self.norm_bias
        x = make_norm(self.norm, use_bias=norm_bias, eps=self.norm_eps, dtype=self.dtype,
                      name="final_norm")(x)
        w_logits = self.param(
            "logits",
            nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("embed", "vocab")),
            (self.embed_dim, self.output_vocab_size or self.vocab_size), jnp.float32)
        logits = jnp.einsum("ble,ev->blv", x, w_logits.astype(self.dtype))
        logits = nn.with_logical_constraint(logits, ("batch", "length", "vocab"))
        return logits.astype(jnp.float32)

    def _absolute_positions(self, tokens: jax.Array, lengths: jax.Array | None,
                            positions: jax.Array | None, mode: str) -> jax.Array:
        """[batch, length, embed] position vectors added to the inputs: rows of the
        learned table, or sinusoids. In the cached modes the decoder keeps its own
        per-row position (`position_index` in the `"cache"` collection): a prefill sets
        it to the prompt lengths, a decode step reads it and advances it by one, as the
        attention layers do with their write index."""
        learned = self.position_embedding == "learned"
        if learned and self.max_length <= 0:
            raise ValueError("position_embedding='learned' needs max_length > 0")
        batch, length = tokens.shape
        if mode != MODE_TRAIN:
            index = self.variable("cache", "position_index", nn.with_logical_partitioning(
                jnp.zeros, ("cache_batch",)), (batch,), jnp.int32)
            if mode == MODE_PREFILL:
                index.value = (jnp.full((batch,), length, jnp.int32) if lengths is None
                               else jnp.asarray(lengths, jnp.int32))
            else:
                if positions is None:
                    positions = index.value[:, None]
                index.value = index.value + 1
        if positions is None:
            if learned and length > self.max_length:
                raise ValueError(f"{length} tokens do not fit the learned position table of "
                                 f"{self.max_length}")
            positions = jnp.broadcast_to(jnp.arange(length)[None], (batch, length))
        if not learned:
            return sinusoidal_embedding(positions, self.embed_dim, cos_first=True,
                                        tensor2tensor=True).astype(self.dtype)
        table = self.param(
            "position_embedding",
            nn.with_logical_partitioning(nn.initializers.normal(stddev=0.02), (None, "embed")),
            (self.max_length, self.embed_dim), jnp.float32)
        return jnp.take(table, positions, axis=0, mode="clip").astype(self.dtype)

    def prefill(self, tokens: jax.Array, lengths: jax.Array | None = None,
                prefix_lengths: jax.Array | None = None,
                embeddings: jax.Array | None = None, context: jax.Array | None = None,
                context_mask: jax.Array | None = None) -> jax.Array:
        """Runs right-padded prompts and writes them into the cache (slots
        `[0, length)`; any earlier content is forgotten).

        Args:
          tokens: [batch, length] prompt ids, `length <= max_length`.
          lengths: [batch] prompt lengths, each >= 1 (all `length` when None).
          prefix_lengths: [batch] bidirectional prefix per row (prefix-LM), <= lengths.
          embeddings: optional input vectors instead of the tokens' (see `__call__`).
          context, context_mask: the cross-attended states (`cross_attention` only),
            kept in the cache for the decode steps.

        Returns:
          [batch, length, vocab] float32 logits; row b's next-token logits are at
          `lengths[b] - 1`. Apply with `mutable=["cache"]`.
        """
        return self(tokens, lengths, prefix_lengths, mode=MODE_PREFILL, embeddings=embeddings,
                    context=context, context_mask=context_mask)

    def decode(self, tokens: jax.Array, positions: jax.Array | None = None) -> jax.Array:
        """One token per row: written at the row's cache index, attending to every
        token of the row so far; the index then advances by one.

        Args:
          tokens: [batch, 1] ids.
          positions: optional [batch, 1] RoPE positions (default: the cache index).

        Returns:
          [batch, 1, vocab] float32 logits. Apply with `mutable=["cache"]`.
        """
        return self(tokens, positions=positions, mode=MODE_DECODE)

    def init_cache(self, batch_size: int, max_length: int, context_length: int = 0,
                   context_dim: int | None = None) -> dict:
        """An empty cache for `batch_size` rows of up to `max_length` tokens (and, with
        `cross_attention`, a context of `context_length` states of `context_dim`
        features, default `embed_dim`).

        Call on the unbound module (no params needed, nothing is computed). Returns
        the `"cache"` collection with its arrays boxed in `nn.LogicallyPartitioned`
        like `init`'s params: `nn.unbox` it for plain arrays, or read its shardings
        with `nn.get_partition_spec` (`training.state.create_sharded_state` does both).
        Per layer: `cached_key`, `cached_value` [batch, max_length, heads, head_dim]
        in `dtype`, and `cache_index` [batch] int32 (zeros).
        """
        def make() -> dict:
            tokens = jnp.zeros((batch_size, max_length), jnp.int32)
            context = placeholder_context(self.cross_attention, batch_size, context_length,
                                          context_dim or self.embed_dim, self.dtype)
            return self.init(jax.random.key(0), tokens, mode=MODE_PREFILL,
                             context=context)["cache"]

        abstract = jax.eval_shape(make)
        return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), abstract)
