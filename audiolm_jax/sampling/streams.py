"""Generation over several codebook streams: whole frames from a KV-cached decoder.

`generate_streams` is one `lax.while_loop` over the sequence steps of a
`layers.streams.StreamLayout`: a flattened stream emits a frame in K steps of one
code, a delayed or parallel one in one step of K codes (K heads; a delayed
stream's last frame completes D steps later). The model is two callables,

    prefill_fn(cache, prefix [b, P], prefix_lengths [b], steps [b, S0, H],
               step_lengths [b]) -> (logits [b, H, V], cache)
    step_fn(cache, step [b, H]) -> (logits [b, H, V], cache)

(`stream_fns` makes them for a `StreamDecoder`), each returning the logits of the
*next* step. Each step the layout says which (frame, book) every head holds: a
code of the prompt is kept, a delayed book's leading step and everything past a
row's end get `pad_id`, the rest is sampled (`sampling.logits.sample_token`:
temperature, top-k, top-p, min-p) among the book's codes (and the EOS on book 0).

EOS: `eos_id` sampled for book 0 of frame f ends the row at f frames. The row's
other books still finish frames `< f` (a delayed stream needs D more steps), then
the row only pads; the loop exits when every row has finished.

`generate_windowed` continues past the context: windows of new frames, each after
the prefix and the last `history_frames` frames, with a fresh cache (Bark's coarse
stage's sliding window).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from audiolm_jax.layers.streams import FLATTENED, StreamDecoder, StreamLayout
from audiolm_jax.sampling.logits import sample_token


class StreamOutput(NamedTuple):
    """What `generate_streams` returns.

    Attributes:
      codes: [batch, max_frames, K] int32 new frames (flattened: offsets removed);
        `pad_id` from each row's end on.
      lengths: [batch] int32 new frames per row (the EOS frame excluded).
      steps: scalar int32, decode steps run.
      cache: the final cache.
    """

    codes: jax.Array
    lengths: jax.Array
    steps: jax.Array
    cache: Any


def allowed_codes(layout: StreamLayout, logits: jax.Array, books: jax.Array,
                  eos_id: int | None) -> jax.Array:
    """The default mask: head h may emit only book `books[h]`'s codes (flattened: with
    the book's offset), and the EOS on book 0. [b, H, V] -> the same, -inf elsewhere."""
    ids = jnp.arange(logits.shape[-1])[None, None, :]
    start = jnp.asarray(layout.offsets, jnp.int32)[books][None, :, None]         # [1, H, 1]
    keep = (ids >= start) & (ids < start + layout.codebook_size)
    if eos_id is not None:
        keep = keep | ((ids == eos_id) & (books == 0)[None, :, None])
    return jnp.where(keep, logits, -jnp.inf)


class _State(NamedTuple):
    step: jax.Array          # [] sequence step sampled next
    seq: jax.Array           # [b, S, H] the sequence buffer
    logits: jax.Array        # [b, H, V] logits of `step`
    end: jax.Array           # [b] frames each row holds (prompt + new) once ended
    done: jax.Array          # [b] every code of the row is written
    cache: Any


def generate_streams(prefill_fn: Callable, step_fn: Callable, cache: Any, layout: StreamLayout,
                     prefix: jax.Array | None, prefix_lengths: jax.Array | None,
                     max_frames: int, key: jax.Array, *, prompt: jax.Array | None = None,
                     prompt_frames: jax.Array | int | None = None, eos_id: int | None = None,
                     temperature: jax.Array | float = 1.0, top_k: int = 0,
                     top_p: jax.Array | float = 1.0, min_p: jax.Array | float = 0.0,
                     logits_fn: Callable | None = None) -> StreamOutput:
    """Samples up to `max_frames` frames after each row's prefix and prompt frames.

    Jit with `prefill_fn`, `step_fn`, `layout`, `max_frames`, `eos_id`, `top_k` and
    `logits_fn` static. The cache needs room for `P + layout.sequence_length(T0 +
    max_frames)` positions.

    Args:
      prefill_fn, step_fn: the model, see the module docstring.
      cache: its empty cache.
      layout: the stream layout.
      prefix: [batch, P] conditioning ids (or None when the callables hold it).
      prefix_lengths: [batch] valid prefix per row (None: all P).
      max_frames: static N.
      key: PRNG key; step s after the prompt samples with `fold_in(key, s)`.
      prompt: [batch, T0, K] frames to continue (without offsets), or None.
      prompt_frames: how many of the T0 are real (a scalar, traced or not, shared by the
        rows; default T0): a sliding window's history can grow without recompiling.
      eos_id: static id ending a row when emitted for book 0 (None: always N frames).
      temperature, top_k, top_p, min_p: `sample_token`'s (temperature 0: greedy).
      logits_fn: `(logits [b, H, V], step) -> logits` replacing `allowed_codes`
        (step counts the steps after the prompt), e.g. Bark's alternating-books mask.

    Returns:
      `StreamOutput(codes [b, N, K], lengths [b], steps [], cache)`.
    """
    k, heads, pad = layout.num_codebooks, layout.heads, layout.pad
    if prompt is None:
        prompt = jnp.zeros((_batch(prefix, prefix_lengths), 0, k), jnp.int32)
    batch, max_prompt = prompt.shape[:2]
    t0 = jnp.asarray(max_prompt if prompt_frames is None else prompt_frames, jnp.int32)
    frames_total = max_prompt + max_frames
    # The buffer: the prompt's frames, pad_id past them; in the layout, then prefilled.
    frames = jnp.pad(prompt.astype(jnp.int32), ((0, 0), (0, max_frames), (0, 0)),
                     constant_values=pad)
    frames = jnp.where(jnp.arange(frames_total)[None, :, None] < t0, frames, pad)
    seq = layout.to_sequence(frames)                                         # [b, S, H]
    if layout.kind == FLATTENED:   # pads stay pad_id, not pad_id + offset
        is_pad = (frames == pad).reshape(batch, -1, 1)
        seq = jnp.where(is_pad, pad, seq)
    start = layout.known_steps(t0)
    known = seq[:, :layout.known_steps(max_prompt)]
    logits, cache = prefill_fn(cache, prefix, prefix_lengths, known,
                               jnp.full((batch,), start, jnp.int32))
    end = jnp.full((batch,), t0 + max_frames, jnp.int32)
    last = layout.sequence_length(t0 + max_frames)

    def cond(state: _State) -> jax.Array:
        return (state.step < last) & ~jnp.all(state.done)

    def body(state: _State) -> _State:
        frame, book = layout.step_frames(state.step)                          # [H], [H]
        logits = state.logits
        logits = (allowed_codes(layout, logits, book, eos_id) if logits_fn is None
                  else logits_fn(logits, state.step - start))
        flat = logits.reshape(batch * heads, -1)
        sampled = sample_token(jax.random.fold_in(key, state.step - start), flat,
                               _per_head(temperature, heads), top_k,
                               _per_head(top_p, heads), _per_head(min_p, heads))
        sampled = sampled.reshape(batch, heads).astype(jnp.int32)
        new = frame[None, :] >= t0                                            # [1, H]
        end = state.end
        if eos_id is not None:
            book0 = new & (book == 0)[None, :] & (frame[None, :] < end[:, None])
            hit = jnp.any(book0 & (sampled == eos_id), axis=1)                # [b]
            end = jnp.where(hit, frame[0], end)             # head 0 holds book 0
        valid = (frame[None, :] >= 0) & (frame[None, :] < end[:, None])       # [b, H]
        current = jax.lax.dynamic_index_in_dim(state.seq, state.step, 1, keepdims=False)
        token = jnp.where(new, jnp.where(valid, sampled, pad), current)      # [b, H]
        seq = jax.lax.dynamic_update_index_in_dim(state.seq, token, state.step, 1)
        done = state.step + 1 >= layout.sequence_length(end)
        logits, cache = step_fn(state.cache, token)
        return _State(state.step + 1, seq, logits, end, done, cache)

    init = _State(jnp.asarray(start, jnp.int32), seq, logits, end,
                  jnp.zeros((batch,), bool), cache)
    final = jax.lax.while_loop(cond, body, init)
    codes = layout.from_sequence(final.seq)                                   # [b, T0 + N, K]
    codes = jax.lax.dynamic_slice_in_dim(codes, t0, max_frames, axis=1)
    lengths = final.end - t0
    codes = jnp.where(jnp.arange(max_frames)[None, :, None] < lengths[:, None, None], codes, pad)
    return StreamOutput(codes, lengths, final.step - start, final.cache)


def _batch(prefix, prefix_lengths) -> int:
    if prefix is not None:
        return prefix.shape[0]
    if prefix_lengths is not None:
        return jnp.shape(prefix_lengths)[0]
    raise ValueError("generate_streams needs a prompt, a prefix or prefix_lengths for the batch")


def _per_head(value, heads: int):
    """A [batch] knob repeated for each head (logits are sampled as [batch * heads])."""
    if isinstance(value, int | float) or jnp.ndim(value) == 0:
        return value
    return jnp.repeat(jnp.asarray(value), heads)


def stream_fns(model: StreamDecoder, params: Any,
               prefix_embeddings: jax.Array | None = None) -> tuple[Callable, Callable]:
    """`(prefill_fn, step_fn)` of a `StreamDecoder` for `generate_streams`."""

    def prefill_fn(cache, prefix, prefix_lengths, steps, step_lengths):
        logits, v = model.apply({"params": params, "cache": cache}, prefix, prefix_lengths,
                                steps, step_lengths, prefix_embeddings,
                                method=StreamDecoder.prefill, mutable=["cache"])
        return logits, v["cache"]

    def step_fn(cache, step):
        logits, v = model.apply({"params": params, "cache": cache}, step,
                                method=StreamDecoder.decode, mutable=["cache"])
        return logits, v["cache"]

    return prefill_fn, step_fn


def generate_windowed(run_window: Callable, prompt: np.ndarray, total_frames: int,
                      window_frames: int, history_frames: int, pad_id: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Generates `total_frames` frames window by window, each with a fresh context.

    Window w continues from the last `history_frames` frames so far (the prompt's,
    then the generated ones) and adds `window_frames`; the caller's `run_window`
    re-prefills its prefix (which may move with w, as Bark's semantic window does)
    and that history. Every window has the same shapes (the history is right-padded
    to `history_frames`, its real length passed as `prompt_frames`), so one compiled
    program serves them all. Rows that emitted EOS pad from there on.

    Args:
      run_window: `(w, frames_done, history [b, history_frames, K], history_length)
        -> (codes [b, window_frames, K], lengths [b])`, e.g. a jitted
        `generate_streams` with `prompt=history, prompt_frames=history_length`.
      prompt: [b, T0, K] frames before the first window (T0 may be 0).
      total_frames: new frames wanted.
      window_frames, history_frames: frames per window, context frames kept.
      pad_id: filler past a row's end.

    Returns:
      (codes [b, total_frames, K], lengths [b]) as numpy.
    """
    prompt = np.asarray(prompt)
    batch, _, k = prompt.shape
    frames = prompt
    lengths = np.zeros((batch,), np.int64)
    ended = np.zeros((batch,), bool)
    done, w = 0, 0
    while done < total_frames and not ended.all():
        history = frames[:, max(0, frames.shape[1] - history_frames):]
        real = history.shape[1]
        history = np.pad(history, ((0, 0), (0, history_frames - real), (0, 0)),
                         constant_values=pad_id)
        new, new_lengths = run_window(w, done, history, real)
        take = min(window_frames, total_frames - done)
        new, new_lengths = np.asarray(new)[:, :take], np.minimum(np.asarray(new_lengths), take)
        new = np.where(ended[:, None, None], pad_id, new)
        lengths = np.where(ended, lengths, lengths + new_lengths)
        ended = ended | (new_lengths < take)
        frames = np.concatenate([frames, new], axis=1)
        done, w = done + take, w + 1
    out = frames[:, prompt.shape[1]:]
    out = np.pad(out, ((0, 0), (0, total_frames - out.shape[1]), (0, 0)), constant_values=pad_id)
    return out, lengths
