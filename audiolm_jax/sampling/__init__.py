"""Sampling: logits processors, autoregressive token generation, ODE solvers.

* `logits`: temperature, top-k, top-p, min-p, repetition penalty, classifier-free
  guidance and `sample_token`, all `jit`-able on `[batch, vocab]` logits.
* `autoregressive`: `generate`, a `lax.while_loop` decoder around any one-token `step_fn`.
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

__all__ = [
    "NFE_PER_STEP",
    "ORDER",
    "GenerationOutput",
    "apply_temperature",
    "classifier_free_guidance",
    "generate",
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
