"""Logits processors and token sampling, all `jit`-able.

Every function takes `[batch, vocab]` float logits and returns the same shape
(float32), with removed tokens set to `-inf`. Knobs that change shapes (`top_k`)
are static Python ints; every other knob (temperature, top_p, min_p, penalty,
guidance scale) may be a traced scalar or a `[batch]` array of per-row values,
so one compiled sampler serves requests with different settings. Setting a knob
to its neutral value (`temperature=1`, `top_k=0`, `top_p=1`, `min_p=0`,
`penalty=1`, `scale=1`) leaves the distribution unchanged; when that neutral
value is a Python number the step is skipped at trace time (no sort for top-p).

The usual order, and the one `sample_token` uses, is HF's: classifier-free
guidance, repetition penalty, temperature, then the truncations top-k, top-p,
min-p.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

NEG_INF = -jnp.inf


def _per_row(value: jax.Array | float) -> jax.Array:
    """A scalar or [batch] knob as float32 broadcastable against [batch, vocab]."""
    value = jnp.asarray(value, jnp.float32)
    return value[:, None] if value.ndim == 1 else value


def _is_static(value, neutral: float) -> bool:
    """True when `value` is a Python number equal to `neutral` (a trace-time no-op)."""
    return isinstance(value, int | float) and float(value) == neutral


def apply_temperature(logits: jax.Array, temperature: jax.Array | float) -> jax.Array:
    """logits / temperature; temperature 0 means greedy.

    At temperature 0 every token but the argmax (the first one on ties, so the
    result is deterministic) is set to -inf, and sampling returns the argmax.

    Args:
      logits: [batch, vocab].
      temperature: scalar or [batch], >= 0.

    Returns:
      [batch, vocab] float32.
    """
    logits = logits.astype(jnp.float32)
    if _is_static(temperature, 1.0):
        return logits
    temperature = _per_row(temperature)
    greedy = jax.nn.one_hot(jnp.argmax(logits, axis=-1), logits.shape[-1], dtype=jnp.bool_)
    greedy = jnp.where(greedy, logits, NEG_INF)
    # The max() keeps the unused branch finite, so no inf/nan is computed at t = 0.
    scaled = logits / jnp.maximum(temperature, 1e-6)
    return jnp.where(temperature > 0, scaled, greedy)


def top_k_filter(logits: jax.Array, k: int) -> jax.Array:
    """Keeps exactly the k largest logits per row (ties broken by lower index).

    Args:
      logits: [batch, vocab].
      k: static int; 0 (or >= vocab) keeps everything.

    Returns:
      [batch, vocab] float32, all but k entries -inf.
    """
    logits = logits.astype(jnp.float32)
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    # Scattering the top-k indices (rather than thresholding at the k-th value)
    # keeps exactly k tokens even when logits tie.
    _, idx = jax.lax.top_k(logits, k)                                   # [b, k]
    rows = jnp.arange(logits.shape[0])[:, None]
    keep = jnp.zeros(logits.shape, jnp.bool_).at[rows, idx].set(True)
    return jnp.where(keep, logits, NEG_INF)


def top_p_filter(logits: jax.Array, top_p: jax.Array | float) -> jax.Array:
    """Nucleus filtering: keeps the smallest set of most likely tokens with mass >= top_p.

    Token i of the sorted (descending) order is kept when the mass of the tokens
    before it is < top_p; the most likely token is always kept, so top_p = 0
    is greedy. top_p >= 1 keeps everything (explicitly, so rounding in the
    cumulative sum cannot drop the tail).

    Args:
      logits: [batch, vocab].
      top_p: scalar or [batch] in [0, 1].

    Returns:
      [batch, vocab] float32.
    """
    logits = logits.astype(jnp.float32)
    if _is_static(top_p, 1.0) or (isinstance(top_p, int | float) and top_p > 1.0):
        return logits
    top_p = _per_row(top_p)
    order = jnp.argsort(logits, axis=-1, descending=True)               # [b, V]
    sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs                    # exclusive cumsum
    keep_sorted = (mass_before < top_p).at[:, 0].set(True)
    # Back to vocabulary order by scattering through the permutation (exact, ties included).
    rows = jnp.arange(logits.shape[0])[:, None]
    keep = jnp.zeros(logits.shape, jnp.bool_).at[rows, order].set(keep_sorted)
    keep = keep | (top_p >= 1.0)
    return jnp.where(keep, logits, NEG_INF)


def min_p_filter(logits: jax.Array, min_p: jax.Array | float) -> jax.Array:
    """Keeps tokens whose probability is >= min_p times the most likely token's.

    `logits [batch, vocab]`, `min_p` a scalar or `[batch]` in [0, 1] -> `[batch, vocab]`
    float32. Compared in log space (`logit - max_logit >= log(min_p)`), so no softmax
    is needed and min_p = 0 (log = -inf) keeps everything. The argmax always survives.
    """
    logits = logits.astype(jnp.float32)
    if _is_static(min_p, 0.0):
        return logits
    min_p = _per_row(min_p)
    top = jnp.max(logits, axis=-1, keepdims=True)
    keep = (logits - top) >= jnp.log(min_p)
    return jnp.where(keep, logits, NEG_INF)


def repetition_penalty(logits: jax.Array, history: jax.Array, penalty: jax.Array | float,
                       history_mask: jax.Array | None = None) -> jax.Array:
    """CTRL-style penalty on tokens already in `history`.

    A seen token's logit is divided by `penalty` when positive and multiplied by
    it when negative, so penalty > 1 always makes it less likely (plain division
    would make a negative logit *more* likely). Each token counts once however
    often it appears.

    Args:
      logits: [batch, vocab].
      history: [batch, length] int token ids; ids outside [0, vocab) are ignored.
      penalty: scalar or [batch], >= 1 discourages repetition; 1 is a no-op.
      history_mask: optional [batch, length] bool, True where `history` is valid.

    Returns:
      [batch, vocab] float32.
    """
    logits = logits.astype(jnp.float32)
    if _is_static(penalty, 1.0):
        return logits
    batch, vocab = logits.shape
    history = history.astype(jnp.int32)
    valid = (history >= 0) & (history < vocab)
    if history_mask is not None:
        valid = valid & history_mask
    rows = jnp.arange(batch)[:, None]
    # Counting with scatter-add (not scatter-set of booleans, whose winner among
    # duplicate indices is unspecified) and clipping the index (negative ids would wrap).
    counts = jnp.zeros((batch, vocab), jnp.int32).at[rows, jnp.clip(history, 0, vocab - 1)].add(
        valid.astype(jnp.int32))
    penalty = _per_row(penalty)
    penalized = jnp.where(logits > 0, logits / penalty, logits * penalty)
    return jnp.where(counts > 0, penalized, logits)


def classifier_free_guidance(cond_logits: jax.Array, uncond_logits: jax.Array,
                             scale: jax.Array | float, space: str = "log_probs") -> jax.Array:
    """`uncond + scale * (cond - uncond)`, on log-probabilities or on raw logits.

    On log-probabilities (the default) the result is independent of each model's
    arbitrary per-row logit offset; scale 1 returns `log_softmax(cond)`, scale 0
    `log_softmax(uncond)`. `space="logits"` mixes the raw logits instead, as
    transformers' `ClassifierFreeGuidanceLogitsProcessor` (MusicGen) does: the same
    sampled tokens whenever the two rows' logits share an offset, and the logits a
    transformers user compares against. Either way a token removed (-inf) in either
    input stays removed rather than becoming nan (inf - inf).

    Args:
      cond_logits, uncond_logits: [batch, vocab] (or [..., vocab]).
      scale: scalar or [batch] guidance scale (MusicGen uses 3).
      space: "log_probs" or "logits".

    Returns:
      [batch, vocab] float32 guided scores (not normalized for scale != 1).
    """
    if space not in ("log_probs", "logits"):
        raise ValueError(f"space must be 'log_probs' or 'logits', got {space!r}")
    cond, uncond = cond_logits.astype(jnp.float32), uncond_logits.astype(jnp.float32)
    if space == "log_probs":
        cond = jax.nn.log_softmax(cond, axis=-1)
        uncond = jax.nn.log_softmax(uncond, axis=-1)
    removed = jnp.isneginf(cond) | jnp.isneginf(uncond)
    scale = _per_row(scale)
    if jnp.ndim(scale) and cond.ndim > 2:   # [batch] scales over [batch, ..., vocab]
        scale = jnp.reshape(scale, scale.shape[:1] + (1,) * (cond.ndim - 2) + scale.shape[1:])
    guided = uncond + scale * (jnp.where(removed, 0.0, cond) - jnp.where(removed, 0.0, uncond))
    return jnp.where(removed, NEG_INF, guided)


def process_logits(logits: jax.Array, temperature: jax.Array | float = 1.0, top_k: int = 0,
                   top_p: jax.Array | float = 1.0,
                   min_p: jax.Array | float = 0.0) -> jax.Array:
    """Temperature, then top-k, top-p and min-p: the distribution `sample_token` draws from.

    Args:
      logits: [batch, vocab].
      temperature, top_k, top_p, min_p: see the single filters.

    Returns:
      [batch, vocab] float32 logits, removed tokens -inf; at least one token
      per row is always kept.
    """
    logits = apply_temperature(logits, temperature)
    logits = top_k_filter(logits, top_k)
    logits = top_p_filter(logits, top_p)
    return min_p_filter(logits, min_p)


def sample_token(key: jax.Array, logits: jax.Array, temperature: jax.Array | float = 1.0,
                 top_k: int = 0, top_p: jax.Array | float = 1.0,
                 min_p: jax.Array | float = 0.0) -> jax.Array:
    """Draws one token per row from the processed distribution.

    Args:
      key: PRNG key (one draw for the whole batch; rows are independent).
      logits: [batch, vocab].
      temperature: scalar or [batch]; 0 is greedy (exact argmax, no randomness).
      top_k: static int, 0 disables.
      top_p, min_p: scalar or [batch].

    Returns:
      [batch] int32 token ids.
    """
    processed = process_logits(logits, temperature, top_k, top_p, min_p)
    sampled = jax.random.categorical(key, processed, axis=-1).astype(jnp.int32)
    if _is_static(temperature, 1.0):
        return sampled
    greedy = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return jnp.where(jnp.asarray(temperature) > 0, sampled, greedy)
