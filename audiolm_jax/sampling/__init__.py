"""Sampling: logits processors, autoregressive token generation, ODE solvers.

* `logits`: temperature, top-k, top-p, min-p, repetition penalty, classifier-free
  guidance and `sample_token`, all `jit`-able on `[batch, vocab]` logits.
* `autoregressive`: `generate`, a `lax.while_loop` decoder around any one-token `step_fn`.
* `streams`: `generate_streams` (whole codebook frames in a stream layout, EOS, KV cache)
  and `generate_windowed` (a sliding window past the context).
* `ode`: fixed-NFE Euler / midpoint / Heun / RK4 for flow matching and diffusion.
"""

from audiolm_jax.sampling.autoregressive import GenerationOutput, generate
from audiolm_jax.sampling.logits import (
    apply_temperature,
    classifier_free_guidance,
    min_p_filter,
    process_logits,
    repetition_penalty,
    sample_token,
    top_k_filter,
    top_p_filter,
)
from audiolm_jax.sampling.ode import (
    NFE_PER_STEP,
    ORDER,
    num_function_evals,
    ode_step,
    odeint,
    odeint_on_grid,
)
from audiolm_jax.sampling.streams import StreamOutput, generate_streams, generate_windowed

__all__ = [
    "NFE_PER_STEP",
    "ORDER",
    "GenerationOutput",
    "StreamOutput",
    "apply_temperature",
    "classifier_free_guidance",
    "generate",
    "generate_streams",
    "generate_windowed",
    "min_p_filter",
    "num_function_evals",
    "ode_step",
    "odeint",
    "odeint_on_grid",
    "process_logits",
    "repetition_penalty",
    "sample_token",
    "top_k_filter",
    "top_p_filter",
]
