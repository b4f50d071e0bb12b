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
from audiolm_jax.sampling.autoregressive import GenerationOutput, generate


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

    @classmethod
    def from_hf(cls, data: dict[str, Any]) -> SemanticSettings:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})


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
