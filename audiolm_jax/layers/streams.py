"""Multi-codebook token streams as one decoder sequence: the layouts and the decoder.

A residual-VQ codec gives K codes per frame. A decoder-only LM reads them as one
sequence of *steps* `[batch, steps, heads]`, in one of three layouts:

* `flattened` (AudioLM's coarse / fine stages, Bark's coarse stage): frame t's K
  codes sit at steps `t*K .. t*K + K - 1`, one code per step (`heads = 1`), book
  q's ids shifted by `book_offsets[q]` into one shared vocabulary.
  Steps = K * frames.
* `delayed` (MusicGen): book q lags `delays[q]` frames (default q), so step s
  holds book q's frame `s - delays[q]` and `pad_id` where there is none; one step
  embeds the sum of its K codes and K heads predict the next step.
  Steps = frames + max(delays).
* `parallel`: the delayed layout without delays: step t is frame t.

`StreamLayout.to_sequence` / `from_sequence` convert (exact inverses on codes);
`StreamLayout.step_frames` says which (frame, book) each head of a step holds,
which is all the generation loop (`sampling.streams`) needs to know.

`StreamDecoder` is the shared `layers.decoder.Decoder` over such a sequence,
after a conditioning prefix (text or semantic tokens): `[prefix; steps]`. A
flattened stream shares the decoder's one vocabulary with its prefix (Bark's
coarse stage reads semantic ids, an infer token and coarse ids from one table);
a delayed or parallel one embeds its steps with `MultiCodebookEmbedding` and its
prefix with its own table (or takes prefix embeddings), and reads K heads.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from audiolm_jax.layers.attention import MODE_DECODE, MODE_PREFILL, MODE_TRAIN, placeholder_context
from audiolm_jax.layers.decoder import Decoder
from audiolm_jax.layers.embeddings import (
    MultiCodebookEmbedding,
    apply_delay_pattern,
    revert_delay_pattern,
)

FLATTENED, DELAYED, PARALLEL = "flattened", "delayed", "parallel"
LAYOUTS = (FLATTENED, DELAYED, PARALLEL)


@dataclasses.dataclass(frozen=True)
class StreamLayout:
    """How K codebook streams become one decoder sequence (hashable: a static jit arg).

    Attributes:
      kind: "flattened", "delayed" or "parallel".
      num_codebooks: K.
      codebook_size: C, codes per book are `[0, C)`.
      book_offsets: flattened only: book q's code c is sequence id `c +
        book_offsets[q]` (default: no offset). Bark's coarse stage: `(V_sem, V_sem + C)`.
      delays: delayed only: per-book delays (default `0 .. K-1`).
      pad_id: the code for "no code" (before a delayed book starts, after a row's
        end); default C, i.e. the first special id of `MultiCodebookEmbedding`.
    """

    kind: str
    num_codebooks: int
    codebook_size: int
    book_offsets: tuple[int, ...] | None = None
    delays: tuple[int, ...] | None = None
    pad_id: int | None = None

    def __post_init__(self):
        if self.kind not in LAYOUTS:
            raise ValueError(f"StreamLayout: kind {self.kind!r}, expected one of {LAYOUTS}")
        if self.book_offsets is not None and (
                self.kind != FLATTENED or len(self.book_offsets) != self.num_codebooks):
            raise ValueError(f"StreamLayout: book_offsets {self.book_offsets} need the "
                             f"flattened layout and {self.num_codebooks} entries")
        if self.delays is not None and (self.kind != DELAYED
                                        or len(self.delays) != self.num_codebooks
                                        or min(self.delays) < 0):
            raise ValueError(f"StreamLayout: delays {self.delays} need the delayed layout and "
                             f"{self.num_codebooks} non-negative entries")

    # ------------------------------------------------------------------ shape facts

    @property
    def heads(self) -> int:
        """Codes per step (and output heads): 1 flattened, K otherwise."""
        return 1 if self.kind == FLATTENED else self.num_codebooks

    @property
    def offsets(self) -> tuple[int, ...]:
        """Per-book id offsets in the sequence (zeros unless flattened with offsets)."""
        return self.book_offsets or (0,) * self.num_codebooks

    @property
    def book_delays(self) -> tuple[int, ...]:
        """Per-book delays in steps (zeros unless delayed)."""
        if self.kind != DELAYED:
            return (0,) * self.num_codebooks
        return self.delays or tuple(range(self.num_codebooks))

    @property
    def pad(self) -> int:
        return self.codebook_size if self.pad_id is None else self.pad_id

    def sequence_length(self, frames):
        """Steps holding `frames` frames (int or int array)."""
        if self.kind == FLATTENED:
            return frames * self.num_codebooks
        return frames + max(self.book_delays)

    def known_steps(self, frames):
        """Steps fully determined by the first `frames` frames (a prompt's prefill)."""
        return frames * self.num_codebooks if self.kind == FLATTENED else frames

    def step_frames(self, step) -> tuple[jax.Array, jax.Array]:
        """(frames [heads], books [heads]) int32: head h of sequence step `step` (an int
        or traced scalar) holds code `books[h]` of frame `frames[h]` (negative: a
        delayed book's leading pad)."""
        step = jnp.asarray(step, jnp.int32)
        if self.kind == FLATTENED:
            k = self.num_codebooks
            return (step // k)[None], (step % k)[None]
        books = jnp.arange(self.num_codebooks, dtype=jnp.int32)
        return step - jnp.asarray(self.book_delays, jnp.int32), books

    # ------------------------------------------------------------------ conversions

    def to_sequence(self, codes: jax.Array) -> jax.Array:
        """[batch, frames, K] codes -> [batch, steps, heads] sequence ids."""
        if codes.shape[-1] != self.num_codebooks:
            raise ValueError(f"codes {codes.shape}: expected {self.num_codebooks} codebooks last")
        codes = codes.astype(jnp.int32)
        if self.kind == FLATTENED:
            flat = codes + jnp.asarray(self.offsets, jnp.int32)
            return flat.reshape(*codes.shape[:-2], -1, 1)
        if self.kind == DELAYED:
            return apply_delay_pattern(codes, self.pad, self.book_delays)
        return codes

    def from_sequence(self, seq: jax.Array) -> jax.Array:
        """[batch, steps, heads] -> [batch, frames, K]; `from_sequence(to_sequence(c)) == c`
        exactly, and `to_sequence(from_sequence(s)) == s` for every s that has `pad_id`
        where the delay pattern puts it. A flattened length must be a multiple of K."""
        seq = seq.astype(jnp.int32)
        if self.kind == FLATTENED:
            k = self.num_codebooks
            if seq.shape[-2] % k:
                raise ValueError(f"{seq.shape[-2]} flattened steps are not whole frames of {k}")
            codes = seq[..., 0].reshape(*seq.shape[:-2], -1, k)
            return codes - jnp.asarray(self.offsets, jnp.int32)
        if self.kind == DELAYED:
            return revert_delay_pattern(seq, self.book_delays)
        return seq

    def logits_to_frames(self, logits: jax.Array) -> jax.Array:
        """Per-step logits [batch, steps, heads, vocab] -> per-code [batch, frames, K,
        vocab]: entry (t, q) scores frame t's code of book q (offsets not removed)."""
        if self.kind == FLATTENED:
            return logits.reshape(logits.shape[0], -1, self.num_codebooks, logits.shape[-1])
        if self.kind == DELAYED:
            delays = self.book_delays
            frames = logits.shape[1] - max(delays)
            return jnp.stack([logits[:, d:d + frames, q] for q, d in enumerate(delays)], axis=2)
        return logits

    def with_prefix(self, prefix: jax.Array, codes: jax.Array) -> jax.Array:
        """Flattened only: `[prefix; to_sequence(codes)]` as one id row [batch, P + K*frames]
        (the prefix's ids live in the same vocabulary, e.g. Bark's semantic ids)."""
        if self.kind != FLATTENED:
            raise ValueError("with_prefix joins id rows: only the flattened layout has one; "
                             "StreamDecoder embeds a delayed or parallel stream's prefix apart")
        return jnp.concatenate([prefix.astype(jnp.int32), self.to_sequence(codes)[..., 0]], 1)


def place_after(prefix: jax.Array, prefix_lengths: jax.Array | None,
                steps: jax.Array) -> jax.Array:
    """Joins right-padded prefixes and steps into right-padded rows: row b is
    `prefix[b, :prefix_lengths[b]]`, then `steps[b]`, then padding. [b, P, ...] and
    [b, S, ...] -> [b, P + S, ...]."""
    joined = jnp.concatenate([prefix, steps.astype(prefix.dtype)], axis=1)
    if prefix_lengths is None or steps.shape[1] == 0:
        return joined
    width = prefix.shape[1]
    i = jnp.arange(joined.shape[1])[None, :]                                  # [1, P + S]
    lengths = jnp.asarray(prefix_lengths, jnp.int32)[:, None]                 # [b, 1]
    # Position i of row b reads the prefix below the row's length, else step i - length.
    source = jnp.where(i < lengths, i, jnp.minimum(width + i - lengths, joined.shape[1] - 1))
    source = source.reshape(*source.shape, *([1] * (joined.ndim - 2)))
    return jnp.take_along_axis(joined, jnp.broadcast_to(source, (joined.shape[0], *source.shape[1:])),
                               axis=1)


class StreamDecoder(nn.Module):
    """The shared `Decoder` over `[prefix; layout steps]`, with per-code logits.

    Params: `decoder` (the `Decoder`: blocks, final norm, the head `[embed, heads *
    vocab]` read as `heads` heads; its `embedding` table is the sequence vocabulary
    when flattened), and when delayed or parallel `codebooks` (the
    `MultiCodebookEmbedding` `[K, vocab, embed]`) and, with `prefix_vocab_size`,
    `prefix_embedding` `[prefix_vocab, embed]`. Logical axes are the `Decoder`'s;
    the cache is its cache, under `decoder`.

    Attributes:
      layout: the `StreamLayout`.
      vocab_size: flattened: the one sequence vocabulary (prefix ids included);
        otherwise ids per book, `codebook_size` codes plus specials (pad, EOS, ...).
      prefix_vocab_size: delayed / parallel: the prefix's own id table (0: prefixes
        come as embeddings).
      causal: False reads the whole sequence both ways (no shift, no cache: the
        logits of a code are read at its own step, Bark's fine stage's manner).
      output_vocab_size: logits per head (None: `vocab_size`); MusicGen embeds a pad
        id past its codes but predicts codes only.
      embed_dim, num_layers, num_heads, head_dim, mlp_dim, dtype, remat,
      position_embedding, max_length, norm, use_bias, gated, exact_gelu, norm_eps,
      norm_bias, cross_attention: the `Decoder`'s (`max_length` counts prefix and
        steps); with `cross_attention` every entry point takes a `context` and
        `context_mask` (MusicGen's text states).
    """

    layout: StreamLayout
    vocab_size: int
    embed_dim: int
    num_layers: int
    num_heads: int
    head_dim: int
    mlp_dim: int
    prefix_vocab_size: int = 0
    causal: bool = True
    dtype: jnp.dtype = jnp.float32
    remat: bool = False
    position_embedding: str = "rope"
    max_length: int = 0
    norm: str = "rms"
    use_bias: bool = False
    gated: bool = True
    exact_gelu: bool = False
    norm_eps: float | None = None
    output_vocab_size: int | None = None
    norm_bias: bool | None = None
    cross_attention: bool = False

    @property
    def head_vocab_size(self) -> int:
        return self.output_vocab_size or self.vocab_size

    def setup(self):
        flat = self.layout.kind == FLATTENED
        self.decoder = Decoder(
            vocab_size=self.vocab_size if flat else 0, embed_dim=self.embed_dim,
            num_layers=self.num_layers, num_heads=self.num_heads, head_dim=self.head_dim,
            mlp_dim=self.mlp_dim, remat=self.remat, dtype=self.dtype,
            output_vocab_size=self.layout.heads * self.head_vocab_size,
            position_embedding=self.position_embedding, max_length=self.max_length,
            norm=self.norm, use_bias=self.use_bias, gated=self.gated,
            exact_gelu=self.exact_gelu, norm_eps=self.norm_eps, causal=self.causal,
            norm_bias=self.norm_bias, cross_attention=self.cross_attention)
        if not flat:
            self.codebooks = MultiCodebookEmbedding(
                self.layout.num_codebooks, self.layout.codebook_size, self.embed_dim,
                num_special_tokens=self.vocab_size - self.layout.codebook_size,
                dtype=self.dtype)
            if self.prefix_vocab_size:
                self.prefix_embedding = self.param(
                    "prefix_embedding", nn.with_logical_partitioning(
                        nn.initializers.normal(stddev=1.0), ("vocab", "embed")),
                    (self.prefix_vocab_size, self.embed_dim), jnp.float32)

    # ------------------------------------------------------------------ internals

    def embed_steps(self, steps: jax.Array) -> jax.Array:
        """Delayed / parallel: [batch, S, heads] ids -> [batch, S, embed], the summed
        codebook embeddings the decoder reads (e.g. MusicGen's all-pad start step as
        the prefix)."""
        return self.codebooks(steps)

    def _run(self, prefix, prefix_lengths, prefix_embeddings, steps, step_lengths, mode,
             context=None, context_mask=None):
        """[prefix; steps] right-padded through the decoder -> [b, P + S, heads, vocab]."""
        cross = {"context": context, "context_mask": context_mask}
        batch = steps.shape[0]
        lengths = None
        if prefix_lengths is not None or step_lengths is not None:
            p = prefix.shape[1] if prefix is not None else prefix_embeddings.shape[1]
            lengths = ((p if prefix_lengths is None else jnp.asarray(prefix_lengths))
                       + (steps.shape[1] if step_lengths is None else jnp.asarray(step_lengths)))
            lengths = jnp.broadcast_to(jnp.asarray(lengths, jnp.int32), (batch,))
        if self.layout.kind == FLATTENED:
            if prefix is None:
                raise ValueError("a flattened stream's prefix is ids in the sequence vocabulary")
            ids = place_after(prefix.astype(jnp.int32), prefix_lengths, steps[..., 0])
            logits = self.decoder(ids, lengths, mode=mode, **cross)
        else:
            if prefix_embeddings is None:
                if prefix is None or not self.prefix_vocab_size:
                    raise ValueError("a delayed or parallel stream needs prefix_embeddings, or "
                                     "prefix ids and prefix_vocab_size > 0")
                prefix_embeddings = jnp.take(self.prefix_embedding, prefix.astype(jnp.int32),
                                             axis=0)
            x = place_after(prefix_embeddings.astype(self.dtype), prefix_lengths,
                            self.codebooks(steps))
            x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
            tokens = jnp.zeros(x.shape[:2], jnp.int32)            # shape only
            logits = self.decoder(tokens, lengths, mode=mode, embeddings=x, **cross)
        logits = logits.reshape(*logits.shape[:2], self.layout.heads, self.head_vocab_size)
        return nn.with_logical_constraint(logits, ("batch", "length", "codebooks", "vocab"))

    # ------------------------------------------------------------------ entry points

    def __call__(self, codes: jax.Array, prefix: jax.Array | None = None,
                 prefix_embeddings: jax.Array | None = None, context: jax.Array | None = None,
                 context_mask: jax.Array | None = None) -> jax.Array:
        """Teacher-forced logits of every code.

        Args:
          codes: [batch, frames, K] codes (flattened: without offsets).
          prefix: [batch, P] ids, P >= 1 when causal (the prefix's last step predicts
            the first code: with no conditioning, one BOS id).
          prefix_embeddings: [batch, P, embed] instead of prefix ids (delayed / parallel).
          context, context_mask: cross-attended states [batch, C, context_dim] and their
            validity [batch, C] (`cross_attention` only).

        Returns:
          [batch, frames, K, vocab] float32: entry (t, q) scores frame t's code of book q
          (flattened: over the sequence vocabulary, i.e. with the book's offset) given
          everything before it in the layout's order (causal), or given everything
          (non-causal).
        """
        seq = self.layout.to_sequence(codes)                            # [b, S, H]
        p = prefix.shape[1] if prefix is not None else prefix_embeddings.shape[1]
        if self.causal:
            if p < 1:
                raise ValueError("a causal StreamDecoder needs a prefix of >= 1 step (e.g. BOS)")
            logits = self._run(prefix, None, prefix_embeddings, seq[:, :-1], None, MODE_TRAIN,
                               context, context_mask)
            logits = logits[:, p - 1:]                                  # predicts steps 0..S-1
        else:
            logits = self._run(prefix, None, prefix_embeddings, seq, None, MODE_TRAIN,
                               context, context_mask)[:, p:]
        return self.layout.logits_to_frames(logits)

    def prefill(self, prefix: jax.Array | None, prefix_lengths: jax.Array | None,
                steps: jax.Array, step_lengths: jax.Array | None = None,
                prefix_embeddings: jax.Array | None = None, context: jax.Array | None = None,
                context_mask: jax.Array | None = None) -> jax.Array:
        """Writes each row's `[prefix; steps]` into the cache; returns the next step's
        logits.

        Args:
          prefix: [batch, P] ids (or `prefix_embeddings` [batch, P, embed]).
          prefix_lengths: [batch] valid prefix per row (right-padded; None: all P).
          steps: [batch, S, heads] prompt steps (`layout.to_sequence` of prompt frames;
            S may be 0).
          step_lengths: [batch] valid steps per row (None: all S).
          context, context_mask: the cross-attended states, kept in the cache.

        Returns:
          [batch, heads, vocab] float32 logits of each row's next step. Apply with
          `mutable=["cache"]`.
        """
        logits = self._run(prefix, prefix_lengths, prefix_embeddings, steps, step_lengths,
                           MODE_PREFILL, context, context_mask)
        batch, width = logits.shape[:2]
        p = prefix.shape[1] if prefix is not None else prefix_embeddings.shape[1]
        lengths = ((p if prefix_lengths is None else jnp.asarray(prefix_lengths))
                   + (steps.shape[1] if step_lengths is None else jnp.asarray(step_lengths)))
        last = jnp.broadcast_to(jnp.asarray(lengths, jnp.int32) - 1, (batch,))
        return logits[jnp.arange(batch), last]

    def decode(self, step: jax.Array) -> jax.Array:
        """One step per row: [batch, heads] ids -> [batch, heads, vocab] float32 logits of
        the step after it. Apply with `mutable=["cache"]`."""
        step = step[:, None, :]                                           # [b, 1, H]
        if self.layout.kind == FLATTENED:
            logits = self.decoder(step[..., 0], mode=MODE_DECODE)
        else:
            x = self.codebooks(step)
            logits = self.decoder(jnp.zeros(x.shape[:2], jnp.int32), mode=MODE_DECODE,
                                  embeddings=x)
        return logits.reshape(step.shape[0], self.layout.heads, self.head_vocab_size)

    def init_cache(self, batch_size: int, max_length: int, context_length: int = 0,
                   context_dim: int | None = None) -> dict:
        """An empty cache (boxed, like `Decoder.init_cache`) for `max_length` positions
        (prefix and steps together) and, with `cross_attention`, a context of
        `context_length` states of `context_dim` features (default `embed_dim`)."""
        def make() -> dict:
            steps = jnp.zeros((batch_size, max_length - 1, self.layout.heads), jnp.int32)
            context = placeholder_context(self.cross_attention, batch_size, context_length,
                                          context_dim or self.embed_dim, self.dtype)
            if self.layout.kind != FLATTENED and not self.prefix_vocab_size:
                embeds = jnp.zeros((batch_size, 1, self.embed_dim), self.dtype)
                return self.init(jax.random.key(0), None, None, steps, None, embeds, context,
                                 method=StreamDecoder.prefill)["cache"]
            prefix = jnp.zeros((batch_size, 1), jnp.int32)
            return self.init(jax.random.key(0), prefix, None, steps, context=context,
                             method=StreamDecoder.prefill)["cache"]

        abstract = jax.eval_shape(make)
        return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), abstract)
