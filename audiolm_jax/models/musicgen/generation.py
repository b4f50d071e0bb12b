"""MusicGen generation: delayed-stream sampling with classifier-free guidance.

`generate` runs `sampling.streams.generate_streams` (one `lax.while_loop` over the
steps of the delay pattern, a KV cache and the cached text keys and values) with
MusicGen's callables: with `guidance_scale > 1` every row runs twice in one
batch, conditioned on its text and on the null context (`model.null_context`),
and the next step samples from `uncond + scale * (cond - uncond)` on the raw
logits, as transformers' `MusicgenForConditionalGeneration.generate` does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from audiolm_jax.models.musicgen.model import MusicGen, null_context
from audiolm_jax.sampling.logits import classifier_free_guidance
from audiolm_jax.sampling.streams import StreamOutput, generate_streams


@dataclasses.dataclass(frozen=True)
class SamplingSettings:
    """How codes are drawn (MusicGen's defaults: sampling, top-k 250, guidance 3).

    Attributes:
      guidance_scale: classifier-free guidance on the raw logits; <= 1 runs the
        conditional model alone (transformers' rule).
      temperature: 0 is greedy.
      top_k: keep the k most likely codes (0: all).
      top_p: nucleus mass (1: all).
    """

    guidance_scale: float = 3.0
    temperature: float = 1.0
    top_k: int = 250
    top_p: float = 1.0

    @property
    def guided(self) -> bool:
        return self.guidance_scale > 1


def model_fns(model: MusicGen, params: Any, context: jax.Array, context_mask: jax.Array,
              guidance_scale: float, progress: Callable[[jax.Array], None] | None = None
              ) -> tuple[Callable, Callable]:
    """`(prefill_fn, step_fn)` for `generate_streams` over `[batch]` rows; the cache has
    `2 * batch` rows when guided (conditional rows, then null rows).

    Args:
      context: [b, C, embed] projected text states (`MusicGen.encode_text`).
      context_mask: [b, C] bool.
      guidance_scale: static; > 1 runs the null pass beside each row and mixes.
      progress: optional host callback, called with the step count after each step
        (through `jax.debug.callback`; e.g. a progress bar's update).
    """
    guided = guidance_scale > 1
    if guided:
        null, null_mask = null_context(context)
        context = jnp.concatenate([context, null])
        context_mask = jnp.concatenate([jnp.asarray(context_mask, bool), null_mask])

    def both(x):
        return jnp.concatenate([x, x]) if guided else x

    def mix(logits):
        if not guided:
            return logits
        cond, uncond = jnp.split(logits, 2)
        return classifier_free_guidance(cond, uncond, guidance_scale, space="logits")

    def prefill_fn(cache, prefix, prefix_lengths, steps, step_lengths):
        del prefix, prefix_lengths       # the start step and the text are the condition
        logits, v = model.apply({"params": params, "cache": cache}, context, context_mask,
                                both(steps), both(step_lengths), method=MusicGen.prefill,
                                mutable=["cache"])
        return mix(logits), v["cache"]

    def step_fn(cache, step):
        logits, v = model.apply({"params": params, "cache": cache}, both(step),
                                method=MusicGen.decode, mutable=["cache"])
        if progress is not None:
            # The decoder's position counter: the steps written so far, start step included.
            jax.debug.callback(progress, v["cache"]["lm"]["decoder"]["position_index"][0])
        return mix(logits), v["cache"]

    return prefill_fn, step_fn


def generate(model: MusicGen, params: Any, context: jax.Array, context_mask: jax.Array,
             frames: int, key: jax.Array, settings: SamplingSettings = SamplingSettings(),
             prompt: jax.Array | None = None,
             progress: Callable[[jax.Array], None] | None = None,
             prompt_frames: jax.Array | int | None = None) -> StreamOutput:
    """Samples `frames` new frames per row after its text (and optional prompt codes).

    Jit with `model`, `frames`, `settings` and `progress` static.

    Args:
      model: the `MusicGen` module; params its params.
      context, context_mask: [b, C, embed] and [b, C] (`MusicGen.encode_text`).
      frames: new codec frames (50 a second at 32 kHz).
      key: PRNG key.
      settings: `SamplingSettings`.
      prompt: [b, T0, K] codes to continue (an audio prompt's), or None.
      progress: see `model_fns`.
      prompt_frames: how many of the T0 prompt frames are real (traced or not; default
        T0): a window's history can be shorter than its buffer without recompiling.

    Returns:
      `StreamOutput`: codes [b, frames, K] (no EOS: every row is `frames` long).
    """
    batch = context.shape[0]
    layout = model.config.layout
    steps = layout.sequence_length((0 if prompt is None else prompt.shape[1]) + frames)
    rows = 2 * batch if settings.guided else batch
    cache = nn.unbox(model.init_cache(rows, steps, context.shape[1]))
    prefill_fn, step_fn = model_fns(model, params, context, context_mask,
                                    settings.guidance_scale, progress)
    return generate_streams(
        prefill_fn, step_fn, cache, layout, None, jnp.zeros((batch,), jnp.int32), frames, key,
        prompt=prompt, prompt_frames=prompt_frames, temperature=settings.temperature,
        top_k=settings.top_k, top_p=settings.top_p)

