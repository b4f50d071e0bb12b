"""Bark's generation, stage by stage, under `jit` (in progress: the semantic stage).

The semantic stage (Hugging Face's `BarkSemanticModel.generate`, suno's
`generate_text_semantic`):

    context  = E[text + offset, padded to 256 with text_pad] + E[history, padded with
               semantic_pad]          (summed position by position: 256 vectors)
               then E[semantic_infer_token]             (position 256)
    each step: logits of the semantic ids [0, semantic_vocab_size) and of the EOS
               (`semantic_pad_token`); every other id masked. With `min_eos_p`, an
               EOS whose probability exceeds it is forced (HF's order: before any
               temperature or top-k).
    stop:      at EOS (kept, then EOS-padded, as HF returns it) or max_new_tokens.

The context runs as one prefill of the shared decoder (its `embeddings` input),
the tokens through `sampling.generate`'s one-token loop over the KV cache.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from audiolm_jax.layers.decoder import Decoder
from audiolm_jax.layers.streams import FLATTENED, StreamLayout
from audiolm_jax.sampling.autoregressive import GenerationOutput, generate
from audiolm_jax.sampling.streams import generate_streams


@dataclasses.dataclass(frozen=True)
class SemanticSettings:
    """The semantic stage's constants and limits (Hugging Face's
    `BarkSemanticGenerationConfig` fields; the defaults are Bark's)."""

    text_encoding_offset: int = 10_048
    text_pad_token: int = 129_595
    semantic_infer_token: int = 129_599
    semantic_vocab_size: int = 10_000
    semantic_pad_token: int = 10_000        # also the EOS
    max_input_semantic_length: int = 256
    max_new_tokens: int = 768
    min_eos_p: float | None = None


def semantic_context(text_ids: np.ndarray, text_lengths: np.ndarray | None,
                     history: np.ndarray | None, settings: SemanticSettings
                     ) -> tuple[np.ndarray, np.ndarray]:
    """The semantic stage's two 256-long id rows: text and history.

    Args:
      text_ids: [batch, n] tokenizer ids (no offset), right-padded.
      text_lengths: [batch] valid ids per row (None: all n).
      history: a voice prompt's semantic tokens [s] (shared by the batch), or None.

    Returns:
      (text [batch, L], history [batch, L]) int32 with L = max_input_semantic_length:
      text ids plus the offset, `text_pad_token` past each row's length (and cut at
      L); the last L history tokens, `semantic_pad_token` after them.

    Raises:
      ValueError: history ids outside the semantic vocabulary.
    """
    text_ids = np.asarray(text_ids, np.int64)
    batch, n = text_ids.shape
    length = settings.max_input_semantic_length
    lengths = np.full((batch,), n) if text_lengths is None else np.asarray(text_lengths)
    text = np.full((batch, length), settings.text_pad_token, np.int64)
    for row in range(batch):
        valid = text_ids[row, :min(int(lengths[row]), length)]
        text[row, :len(valid)] = valid + settings.text_encoding_offset
    hist = np.full((length,), settings.semantic_pad_token, np.int64)
    if history is not None:
        history = np.asarray(history, np.int64).reshape(-1)[-length:]
        if history.size and (history.min() < 0 or history.max() >= settings.semantic_vocab_size):
            raise ValueError(f"the voice prompt's semantic tokens must be in [0, "
                             f"{settings.semantic_vocab_size}), got [{history.min()}, "
                             f"{history.max()}]")
        hist[:len(history)] = history
    return text.astype(np.int32), np.broadcast_to(hist, (batch, length)).astype(np.int32)


def semantic_logits_mask(logits: jax.Array, settings: SemanticSettings) -> jax.Array:
    """[batch, vocab] -> the same with every id but the semantic ones and the EOS at
    -inf, and, with `min_eos_p`, everything but the EOS where its probability
    exceeds `min_eos_p`."""
    ids = jnp.arange(logits.shape[-1])
    eos = settings.semantic_pad_token
    allowed = (ids < settings.semantic_vocab_size) | (ids == eos)
    logits = jnp.where(allowed, logits, -jnp.inf)
    if settings.min_eos_p is not None:
        p_eos = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)[:, eos]
        force = (p_eos > settings.min_eos_p)[:, None]
        logits = jnp.where(force & (ids != eos), -jnp.inf, logits)
    return logits


def generate_semantic(decoder: Decoder, params: Any, text: jax.Array, history: jax.Array,
                      key: jax.Array, settings: SemanticSettings, *,
                      temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0
                      ) -> GenerationOutput:
    """Semantic tokens for each row's text (and voice history).

    Jit with `decoder`, `settings` and `top_k` static.

    Args:
      decoder: the semantic stage (`models.bark.causal_decoder`).
      params: its params.
      text, history: [batch, L] from `semantic_context`.
      key: PRNG key (unused when greedy).
      settings: the stage's constants.
      temperature, top_k, top_p: sampling (temperature 0: greedy, HF's
        `do_sample=False`).

    Returns:
      `GenerationOutput` whose `tokens` are [batch, max_new_tokens]: the generated
      ids, the EOS included, EOS-padded after it (HF's layout); `lengths` counts
      them with the EOS.
    """
    batch, length = text.shape
    table = params["embedding"]
    context = jnp.take(table, text, axis=0) + jnp.take(table, history, axis=0)   # [b, L, E]
    prompt = jnp.concatenate([jnp.zeros((batch, length), jnp.int32),
                              jnp.full((batch, 1), settings.semantic_infer_token, jnp.int32)],
                             axis=1)
    max_length = length + 1 + settings.max_new_tokens
    cache = decoder.init_cache(batch, max_length)

    def prefill_fn(cache, prompt, prompt_lengths):
        _, variables = decoder.apply({"params": params, "cache": cache}, prompt[:, :length],
                                     embeddings=context, method=Decoder.prefill,
                                     mutable=["cache"])
        return variables["cache"]

    def step_fn(cache, tokens, positions):
        logits, variables = decoder.apply({"params": params, "cache": cache}, tokens,
                                          method=Decoder.decode, mutable=["cache"])
        return semantic_logits_mask(logits[:, 0], settings), variables["cache"]

    out = generate(step_fn, cache, prompt, jnp.full((batch,), length + 1, jnp.int32),
                   settings.max_new_tokens, key, eos_id=settings.semantic_pad_token,
                   pad_id=settings.semantic_pad_token, temperature=temperature, top_k=top_k,
                   top_p=top_p, prefill_fn=prefill_fn)
    return out._replace(tokens=out.tokens[:, length + 1:], lengths=out.lengths - (length + 1))


# ----------------------------------------------------------------------------- coarse


@dataclasses.dataclass(frozen=True)
class CoarseSettings:
    """The coarse stage's constants (Hugging Face's `BarkCoarseGenerationConfig`, plus
    the semantic stage's ids and rate it reads; the defaults are Bark's)."""

    coarse_semantic_pad_token: int = 12_048
    coarse_infer_token: int = 12_050
    coarse_rate_hz: float = 75.0
    n_coarse_codebooks: int = 2
    max_coarse_input_length: int = 256
    max_coarse_history: int = 630
    sliding_window_len: int = 60
    semantic_rate_hz: float = 49.9
    semantic_vocab_size: int = 10_000
    semantic_pad_token: int = 10_000
    codebook_size: int = 1024

    @property
    def semantic_to_coarse_ratio(self) -> float:
        """Coarse tokens (both books, interleaved) per semantic token: 3.006 for Bark."""
        return self.coarse_rate_hz / self.semantic_rate_hz * self.n_coarse_codebooks

    @property
    def max_semantic_history(self) -> int:
        return int(np.floor(self.max_coarse_history / self.semantic_to_coarse_ratio))

    @property
    def max_prompt_length(self) -> int:
        """Semantic window + infer token + coarse history: every window's prompt fits."""
        return self.max_coarse_input_length + 1 + self.max_coarse_history


def coarse_histories(semantic_prompt: np.ndarray | None, coarse_prompt: np.ndarray | None,
                     settings: CoarseSettings) -> tuple[np.ndarray, np.ndarray]:
    """A voice prompt's (semantic history [s], flat coarse history [c]) as the coarse stage
    reads them (HF's `preprocess_histories`): book b's codes offset by `b *
    codebook_size`, interleaved frame by frame, shifted past the semantic ids, both
    trimmed to their aligned tails, and the last 2 coarse ids dropped (suno's
    time-alignment tweak). No prompt: two empty arrays."""
    if semantic_prompt is None or coarse_prompt is None:
        return np.zeros((0,), np.int64), np.zeros((0,), np.int64)
    semantic = np.asarray(semantic_prompt, np.int64).reshape(-1)
    coarse = np.asarray(coarse_prompt, np.int64)
    if coarse.ndim != 2 or coarse.shape[0] != settings.n_coarse_codebooks:
        raise ValueError(f"coarse_prompt must be [{settings.n_coarse_codebooks}, frames], got "
                         f"shape {coarse.shape}")
    offsets = np.arange(settings.n_coarse_codebooks)[:, None] * settings.codebook_size
    flat = (coarse + offsets).T.reshape(-1) + settings.semantic_vocab_size
    ratio = settings.semantic_to_coarse_ratio
    n_semantic = min(settings.max_semantic_history, len(semantic) - len(semantic) % 2,
                     int(np.floor(len(flat) / ratio)))
    n_coarse = int(round(n_semantic * ratio))
    semantic = semantic[len(semantic) - n_semantic:]
    flat = flat[len(flat) - n_coarse:][:-2]
    return semantic, flat


def coarse_output_lengths(semantic: np.ndarray, settings: CoarseSettings) -> np.ndarray:
    """[batch] coarse ids each row's semantic tokens (EOS-padded) call for:
    `round(floor(n * ratio / books) * books)`."""
    n = np.sum(np.asarray(semantic) != settings.semantic_pad_token, axis=1)
    books = settings.n_coarse_codebooks
    return np.round(np.floor(n * settings.semantic_to_coarse_ratio / books) * books).astype(int)


def coarse_logits_mask(logits: jax.Array, generated: jax.Array, settings: CoarseSettings
                       ) -> jax.Array:
    """Alternating books: an even step (`generated` ids so far in the window, [batch])
    keeps book 0's ids `[V_sem, V_sem + C)`, an odd one masks everything below
    `V_sem + C`. As Hugging Face's `AlternatingCodebooksLogitsProcessor`; suno's
    original also excludes the ids past book 1 (`>= V_sem + 2C`), which a trained
    model does not pick."""
    ids = jnp.arange(logits.shape[-1])[None, :]
    start = settings.semantic_vocab_size
    first = (generated % 2 == 0)[:, None]
    keep_first = (ids >= start) & (ids < start + settings.codebook_size)
    keep_second = ids >= start + settings.codebook_size
    return jnp.where(jnp.where(first, keep_first, keep_second), logits, -jnp.inf)


def coarse_layout(settings: CoarseSettings) -> StreamLayout:
    """The coarse stage's stream: books interleaved frame by frame (flattened), book b's
    code c at id `V_sem + b * C + c`."""
    books, size = settings.n_coarse_codebooks, settings.codebook_size
    return StreamLayout(FLATTENED, books, size, book_offsets=tuple(
        settings.semantic_vocab_size + b * size for b in range(books)))


def _coarse_window(decoder: Decoder, params: Any, prompt: jax.Array, prompt_length: jax.Array,
                   key: jax.Array, settings: CoarseSettings, temperature: float, top_k: int,
                   top_p: float) -> jax.Array:
    """One window: `prompt` [batch, max_prompt_length] right-padded, all rows
    `prompt_length` long -> the next `sliding_window_len` coarse ids [batch, window].

    The shared multi-stream loop (`sampling.streams.generate_streams`) over the
    flattened layout, the whole prompt (semantic window, infer token, coarse history)
    as its prefix; Bark's own alternating-books mask replaces the layout's."""
    batch, width = prompt.shape
    window = settings.sliding_window_len
    layout = coarse_layout(settings)
    frames = -(-window // layout.num_codebooks)
    lengths = jnp.full((batch,), prompt_length, jnp.int32)
    cache = decoder.init_cache(batch, width + layout.sequence_length(frames))

    def decode(cache, tokens):
        logits, variables = decoder.apply({"params": params, "cache": cache}, tokens,
                                          method=Decoder.decode, mutable=["cache"])
        return logits, variables["cache"]

    def prefill_fn(cache, prefix, prefix_lengths, steps, step_lengths):
        # All but the last prompt id in one pass, the last one as a decode step: the
        # computation Bark's coarse stage has always run (bit for bit).
        _, variables = decoder.apply({"params": params, "cache": cache}, prefix,
                                     prefix_lengths - 1, method=Decoder.prefill,
                                     mutable=["cache"])
        last = jnp.take_along_axis(prefix, prefix_lengths[:, None] - 1, axis=1)
        return decode(variables["cache"], last)

    def logits_fn(logits, step):            # [b, 1, V]; `step` ids generated so far
        generated = jnp.full((batch,), step, jnp.int32)
        return coarse_logits_mask(logits[:, 0], generated, settings)[:, None]

    out = generate_streams(prefill_fn, decode, cache, layout, prompt, lengths, frames, key,
                           temperature=temperature, top_k=top_k, top_p=top_p,
                           logits_fn=logits_fn)
    return layout.to_sequence(out.codes)[:, :window, 0]


_coarse_window_jit = jax.jit(_coarse_window, static_argnums=(0, 5, 6, 7, 8))


def generate_coarse(decoder: Decoder, params: Any, semantic: np.ndarray, key: jax.Array,
                    settings: CoarseSettings, *, semantic_prompt: np.ndarray | None = None,
                    coarse_prompt: np.ndarray | None = None, temperature: float = 0.0,
                    top_k: int = 0, top_p: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Coarse ids from semantic tokens, window by window (HF's `BarkCoarseModel.generate`).

    Each window prompts the stage with up to `max_coarse_input_length` semantic
    tokens around the current point (at most `max_semantic_history` behind it,
    `coarse_semantic_pad_token`-padded), the infer token and the last
    `max_coarse_history` coarse ids, and generates `sliding_window_len` more with
    a fresh KV cache. Every window compiles to one program: prompts are
    right-padded to `max_prompt_length`.

    Args:
      decoder, params: the coarse stage.
      semantic: [batch, n] semantic ids, EOS (`semantic_pad_token`)-padded.
      key: PRNG key (unused when greedy).
      settings: the stage's constants.
      semantic_prompt, coarse_prompt: a voice prompt's [s] and [books, frames].
      temperature, top_k, top_p: sampling (temperature 0: greedy).

    Returns:
      (coarse [batch, max(lengths)] flat interleaved ids as HF returns them:
      book b's code c is `V_sem + b * C + c`; lengths [batch], each row's valid ids).
    """
    semantic = np.asarray(semantic, np.int64)
    batch = semantic.shape[0]
    lengths = coarse_output_lengths(semantic, settings)
    total = int(lengths.max()) if batch else 0
    semantic = np.where(semantic == settings.semantic_pad_token,
                        settings.coarse_semantic_pad_token, semantic)
    semantic_history, coarse = coarse_histories(semantic_prompt, coarse_prompt, settings)
    semantic = np.concatenate([np.broadcast_to(semantic_history, (batch, len(semantic_history))),
                               semantic], axis=1)
    coarse = np.broadcast_to(coarse, (batch, len(coarse)))
    history_length = coarse.shape[1]
    ratio, width = settings.semantic_to_coarse_ratio, settings.max_prompt_length
    done = 0
    for window in range(int(np.ceil(total / settings.sliding_window_len))):
        index = len(semantic_history) + int(round(done / ratio))
        sem = semantic[:, max(0, index - settings.max_semantic_history):]
        sem = sem[:, :settings.max_coarse_input_length]
        sem = np.pad(sem, ((0, 0), (0, settings.max_coarse_input_length - sem.shape[1])),
                     constant_values=settings.coarse_semantic_pad_token)
        history = coarse[:, max(0, coarse.shape[1] - settings.max_coarse_history):]
        prompt = np.concatenate([sem, np.full((batch, 1), settings.coarse_infer_token),
                                 history], axis=1)
        length = prompt.shape[1]
        prompt = np.pad(prompt, ((0, 0), (0, width - length)))
        new = np.asarray(_coarse_window_jit(
            decoder, params, jnp.asarray(prompt, jnp.int32), jnp.asarray(length, jnp.int32),
            jax.random.fold_in(key, window), settings, temperature, top_k, top_p))
        take = min(settings.sliding_window_len, total - done)
        coarse = np.concatenate([coarse, new[:, :take]], axis=1)
        done = coarse.shape[1] - history_length
    return coarse[:, history_length:], lengths


# ----------------------------------------------------------------------------- fine


@dataclasses.dataclass(frozen=True)
class FineSettings:
    """The fine stage's constants (Hugging Face's `BarkFineGenerationConfig`, plus the
    ids it reads; the defaults are Bark's)."""

    max_fine_history_length: int = 512
    max_fine_input_length: int = 1024
    n_fine_codebooks: int = 8
    n_coarse_codebooks: int = 2
    codebook_size: int = 1024
    semantic_vocab_size: int = 10_000


def _fine_window(model: Any, params: Any, buffer: jax.Array, fill_from: jax.Array,
                 key: jax.Array, settings: FineSettings, temperature: float) -> jax.Array:
    """Fills books n_coarse.. of `buffer` [batch, window, books] from frame `fill_from`
    on, one book after the other (each sees the ones before it)."""
    frames = jnp.arange(buffer.shape[1])[None, :]
    for book in range(settings.n_coarse_codebooks, settings.n_fine_codebooks):
        logits = model.apply({"params": params}, buffer, book)[..., :settings.codebook_size]
        if temperature > 0:
            codes = jax.random.categorical(jax.random.fold_in(key, book), logits / temperature)
        else:
            codes = jnp.argmax(logits, axis=-1)
        codes = jnp.where(frames >= fill_from, codes.astype(buffer.dtype), buffer[..., book])
        buffer = buffer.at[..., book].set(codes)
    return buffer


_fine_window_jit = jax.jit(_fine_window, static_argnums=(0, 5, 6))


def generate_fine(model: Any, params: Any, coarse: np.ndarray, key: jax.Array,
                  settings: FineSettings, *, fine_prompt: np.ndarray | None = None,
                  temperature: float = 0.0) -> np.ndarray:
    """All books from the coarse ones (HF's `BarkFineModel.generate`).

    The coarse books are padded with the filler id `codebook_size` in the fine
    books, a voice prompt's last `max_fine_history_length` frames go in front,
    and windows of `max_fine_input_length` frames, `max_fine_history_length`
    apart, fill the fine books one after the other (later windows overwrite the
    overlap, as Bark does). Each window is one compiled program.

    Args:
      model, params: the fine stage (`models.bark.BarkFine`).
      coarse: [batch, books_coarse * frames] the coarse stage's flat interleaved ids.
      key: PRNG key (unused when greedy).
      settings: the stage's constants.
      fine_prompt: a voice prompt's [n_fine_codebooks, frames] codes.
      temperature: 0 (default) is greedy; Hugging Face's default of 1.0 also
        means greedy there, not here.

    Returns:
      [batch, n_fine_codebooks, frames] codes in [0, codebook_size) (HF's layout).
    """
    coarse = np.asarray(coarse, np.int64)
    batch = coarse.shape[0]
    codes = coarse.reshape(batch, -1, settings.n_coarse_codebooks)
    codes = np.mod(codes - settings.semantic_vocab_size, settings.codebook_size)
    frames = codes.shape[1]
    books, filler = settings.n_fine_codebooks, settings.codebook_size
    codes = np.pad(codes, ((0, 0), (0, 0), (0, books - settings.n_coarse_codebooks)),
                   constant_values=filler)
    history = 0
    if fine_prompt is not None:
        prompt = np.asarray(fine_prompt, np.int64)
        if prompt.ndim != 2 or prompt.shape[0] != books:
            raise ValueError(f"fine_prompt must be [{books}, frames], got shape {prompt.shape}")
        prompt = prompt.T[-settings.max_fine_history_length:]
        history = len(prompt)
        codes = np.concatenate([np.broadcast_to(prompt, (batch, *prompt.shape)), codes], axis=1)
    window, hop = settings.max_fine_input_length, settings.max_fine_history_length
    remove = max(0, window - codes.shape[1])
    codes = np.pad(codes, ((0, 0), (0, remove), (0, 0)), constant_values=filler)
    loops = max(0, int(np.ceil((frames - (window - history)) / hop))) + 1
    for n in range(loops):
        start = min(n * hop, codes.shape[1] - window)
        fill_start = min(history + n * hop, codes.shape[1] - hop)
        buffer = jnp.asarray(codes[:, start:start + window], jnp.int32)
        buffer = np.asarray(_fine_window_jit(
            model, params, buffer, jnp.asarray(fill_start - start), jax.random.fold_in(key, n),
            settings, float(temperature)))
        codes[:, fill_start:start + window] = buffer[:, fill_start - start:]
    codes = codes[:, history:codes.shape[1] - remove]
    return np.transpose(codes, (0, 2, 1))
