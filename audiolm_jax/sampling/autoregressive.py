"""Model-agnostic autoregressive generation over a static-shape token buffer.

The model is a one-token decode callable

    step_fn(cache, tokens [b, 1], positions [b, 1]) -> (logits [b, vocab], cache)

that consumes the token at `positions` and returns the logits for the *next*
position (a KV-cache transformer, an RNN, a bigram table with `cache=None`...).
`generate` runs it in one `lax.while_loop` and stops as soon as every row is
finished, so it compiles once per (batch, prompt length, max_new_tokens).

Prompts of different lengths are right-padded, `prompt [b, P]` with
`prompt_lengths [b]`, so every row's tokens sit at their natural positions
`0, 1, ...` (no left-padding offsets for RoPE or the cache to undo). By default
the prompt is fed token by token through `step_fn` (the "prefill" is just
teacher forcing): at each step every row feeds the token at its current
position; a row whose next position is still inside its prompt keeps its
prompt token, and from its own length on it keeps the sampled one. This is
simple and exact (each row sees exactly what it would see alone) but costs one
step per prompt token. A model with a parallel prefill passes `prefill_fn`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

# Imported under another name: `repetition_penalty` is also `generate`'s keyword argument.
from audiolm_jax.sampling.logits import _is_static, sample_token
from audiolm_jax.sampling.logits import repetition_penalty as apply_repetition_penalty

StepFn = Callable[[Any, jax.Array, jax.Array], tuple[jax.Array, Any]]
PrefillFn = Callable[[Any, jax.Array, jax.Array], Any]


class GenerationOutput(NamedTuple):
    """What `generate` returns.

    Attributes:
      tokens: [batch, P + max_new_tokens] int32: each row's prompt, its generated
        tokens (EOS included) and `pad_id` after them.
      lengths: [batch] int32 valid tokens per row, `prompt_lengths + generated`.
      steps: scalar int32, `step_fn` calls made (less than the bound when every
        row stopped early).
      cache: the final cache.
    """

    tokens: jax.Array
    lengths: jax.Array
    steps: jax.Array
    cache: Any


class _State(NamedTuple):
    step: jax.Array          # [] loop iterations so far
    cur: jax.Array           # [b] position of the token each row feeds next
    tokens: jax.Array        # [b, P + N] the buffer
    generated: jax.Array     # [b] tokens sampled so far (EOS included)
    done: jax.Array          # [b] EOS emitted or budget spent
    cache: Any


def generate(step_fn: StepFn, cache: Any, prompt: jax.Array, prompt_lengths: jax.Array,
             max_new_tokens: int, key: jax.Array, *, eos_id: int | None = None,
             pad_id: int = 0, temperature: jax.Array | float = 1.0, top_k: int = 0,
             top_p: jax.Array | float = 1.0, min_p: jax.Array | float = 0.0,
             repetition_penalty: jax.Array | float = 1.0,
             prefill_fn: PrefillFn | None = None) -> GenerationOutput:
    """Samples up to `max_new_tokens` tokens after each row's prompt.

    Every row generates at most `max_new_tokens` tokens starting at its own
    length, and stops after emitting `eos_id`; afterwards it only holds
    `pad_id`. EOS ids inside a prompt are teacher-forced and do not stop a row.
    The loop ends when every row has stopped.

    Without `prefill_fn` all rows move in lockstep, so `positions` is the same
    for every row at each step. With `prefill_fn(cache, prompt, prompt_lengths)
    -> cache`, which must consume each row's prompt tokens at positions
    `0 .. prompt_lengths - 2` (all but the last), the loop starts each row at
    its last prompt token, and `positions` then differs across rows.

    A finished row keeps re-feeding its last token at its last position (its
    output is discarded), so a KV cache sees an idempotent rewrite and positions
    never run past the buffer.

    Usable under `jax.jit` with `step_fn`, `prefill_fn`, `max_new_tokens`,
    `eos_id` and `top_k` static, e.g.
    `jax.jit(generate, static_argnums=(0, 4), static_argnames=("eos_id", "top_k"))`.

    Args:
      step_fn: one-token decode, see the module docstring.
      cache: initial cache pytree (`None` for a cache-free model); its shapes and
        dtypes must not change from step to step.
      prompt: [batch, P] int, right-padded (values past a row's length are ignored).
      prompt_lengths: [batch] int in [1, P]: every row needs at least one prompt
        token (e.g. BOS) to condition its first step.
      max_new_tokens: static N.
      key: PRNG key; step s uses `fold_in(key, s)`.
      eos_id: static end-of-sequence id, or None to always generate N tokens.
      pad_id: filler after a row's end.
      temperature, top_k, top_p, min_p: see `sample_token` (temperature 0: greedy).
      repetition_penalty: CTRL penalty over each row's tokens so far (prompt
        included); 1 disables.
      prefill_fn: optional parallel prefill, see above.

    Returns:
      `GenerationOutput(tokens [b, P + N], lengths [b], steps [], cache)`.
    """
    batch, prompt_len = prompt.shape
    total = prompt_len + max_new_tokens
    prompt_lengths = jnp.asarray(prompt_lengths, jnp.int32)
    positions = jnp.arange(total, dtype=jnp.int32)[None, :]                 # [1, S]
    rows = jnp.arange(batch)

    # The buffer starts as the prompts with pad_id everywhere past each length.
    buffer = jnp.pad(prompt.astype(jnp.int32), ((0, 0), (0, max_new_tokens)),
                     constant_values=pad_id)
    buffer = jnp.where(positions < prompt_lengths[:, None], buffer, pad_id)

    if prefill_fn is None:
        cur = jnp.zeros((batch,), jnp.int32)
    else:
        cache = prefill_fn(cache, prompt, prompt_lengths)
        cur = prompt_lengths - 1

    def cond(state: _State) -> jax.Array:
        # `total` bounds the worst case (a full-length prompt without prefill
        # needs P - 1 + N steps); the all-done test is the early exit.
        return (state.step < total) & ~jnp.all(state.done)

    def body(state: _State) -> _State:
        fed = jnp.take_along_axis(state.tokens, state.cur[:, None], axis=1)   # [b, 1]
        logits, cache = step_fn(state.cache, fed, state.cur[:, None])
        if not _is_static(repetition_penalty, 1.0):
            seen = positions <= state.cur[:, None]                           # prompt + generated
            logits = apply_repetition_penalty(logits, state.tokens, repetition_penalty, seen)
        sampled = sample_token(jax.random.fold_in(key, state.step), logits,
                               temperature, top_k, top_p, min_p)
        active = ~state.done
        target = state.cur + 1                                                # [b]
        emit = active & (target >= prompt_lengths)         # past the prompt: sample
        # Teacher-forced rows rewrite their own prompt token, finished rows write nothing
        # (an out-of-range index with mode="drop").
        teacher = jnp.take_along_axis(state.tokens, jnp.minimum(target, total - 1)[:, None],
                                      axis=1)[:, 0]
        new = jnp.where(emit, sampled, teacher)
        index = jnp.where(active, target, total)
        tokens = state.tokens.at[rows, index].set(new, mode="drop")
        generated = state.generated + emit.astype(jnp.int32)
        done = state.done | (generated >= max_new_tokens)
        if eos_id is not None:
            done = done | (emit & (sampled == eos_id))
        cur = jnp.where(active, target, state.cur)
        return _State(state.step + 1, cur, tokens, generated, done, cache)

    generated = jnp.zeros((batch,), jnp.int32)
    init = _State(jnp.zeros((), jnp.int32), cur, buffer, generated,
                  generated >= max_new_tokens, cache)
    final = jax.lax.while_loop(cond, body, init)
    return GenerationOutput(final.tokens, prompt_lengths + final.generated, final.step,
                            final.cache)

