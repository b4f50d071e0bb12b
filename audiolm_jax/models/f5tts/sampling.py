"""F5-TTS sampling: the package's `CFM.sample` on the shared fixed-step ODE solver.

From noise at t = 0 to speech at t = 1 along the DiT's velocity, with the
reference mel as the condition on its own frames:

- time grid: `steps + 1` points, uniform on [0, 1], or for 5, 6, 7, 10, 12 or 16
  steps (with `use_epss`, the package's default) its Empirically Pruned Step
  Sampling grid (multiples of 1/32, denser near t = 0); then sway sampling
  `t + sway * (cos(pi/2 t) - 1 + t)` (sway -1, the default, crowds the steps
  toward t = 0 further).
- classifier-free guidance in the package's convention:
  `v = pred + (pred - null_pred) * cfg_strength` (so `cfg_strength` 2 weighs the
  conditional prediction 3x), where the null pass drops BOTH the text (all
  filler) and the audio prompt (zeros). Both passes run as one network call on a
  doubled batch. `cfg_strength < 1e-5` turns guidance off (one pass per call).
- the solver is `sampling.ode.odeint_on_grid` (euler by default, as released;
  midpoint / heun / rk4 too, rk4 being the classic one, not torchdiffeq's 3/8 rule).
- after the last step, the prompt's frames are the reference mel again.

Cost, reported as `SampleInfo`: `steps` solver steps, `num_function_evals(method,
steps)` velocity evaluations, and `passes` = evaluations x 2 with guidance
(network passes over the batch; both halves of a guided call count).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from audiolm_jax.models.f5tts.model import DiT
from audiolm_jax.sampling.ode import num_function_evals, odeint_on_grid

# The package's Empirically Pruned Step Sampling grids, in 32nds of [0, 1].
EPSS_GRIDS = {
    5: (0, 2, 4, 8, 16, 32),
    6: (0, 2, 4, 6, 8, 16, 32),
    7: (0, 2, 4, 6, 8, 16, 24, 32),
    10: (0, 2, 4, 6, 8, 12, 16, 20, 24, 28, 32),
    12: (0, 2, 4, 6, 8, 10, 12, 14, 16, 20, 24, 28, 32),
    16: (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32),
}
MAX_DURATION = 65_536   # frames; the package's cap


class SampleInfo(NamedTuple):
    """What a sampling run cost."""

    steps: int                  # solver steps
    function_evals: int         # velocity evaluations (steps x evaluations per step)
    passes: int                 # network passes: function_evals x 2 with guidance
    guided: bool


def time_grid(steps: int, sway_coef: float | None = -1.0, use_epss: bool = True) -> np.ndarray:
    """The `[steps + 1]` float32 times the solver steps through (see the module doc)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if use_epss and steps in EPSS_GRIDS:
        t = np.float32(1 / 32) * np.asarray(EPSS_GRIDS[steps], np.float32)
    else:
        t = np.linspace(0, 1, steps + 1, dtype=np.float32)
    if sway_coef is not None:
        t = t + np.float32(sway_coef) * (np.cos(np.float32(np.pi / 2) * t) - 1 + t)
    return t.astype(np.float32)


def sample_info(steps: int, cfg_strength: float, method: str = "euler") -> SampleInfo:
    evals = num_function_evals(method, steps)
    guided = cfg_strength >= 1e-5
    return SampleInfo(steps, evals, evals * (2 if guided else 1), guided)


def durations(text: np.ndarray, lens: np.ndarray, duration: int | np.ndarray,
              max_duration: int = MAX_DURATION) -> np.ndarray:
    """The package's rule: at least one frame past both the text and the prompt,
    at most `max_duration`. [batch] ints."""
    text_len = (np.asarray(text) != -1).sum(-1)
    duration = np.broadcast_to(np.asarray(duration, np.int64), lens.shape)
    return np.minimum(np.maximum(np.maximum(text_len, lens) + 1, duration), max_duration)


def sample(model: DiT, params, cond: jax.Array, text: jax.Array, duration: int | np.ndarray,
           *, lens: np.ndarray | None = None, steps: int = 32, cfg_strength: float = 2.0,
           sway_coef: float | None = -1.0, use_epss: bool = True, method: str = "euler",
           key: jax.Array | None = None, noise: jax.Array | None = None,
           max_duration: int = MAX_DURATION, bucket: int | None = None
           ) -> tuple[jax.Array, SampleInfo]:
    """Generates mel frames after (and around) a mel prompt.

    Args:
      model: the `DiT`.
      params: its params (unboxed or boxed).
      cond: [batch, prompt_frames, mel_dim] the reference log-mel.
      text: [batch, chars] vocabulary ids of reference text + text to speak, -1 padded.
      duration: total frames (prompt included) per row, or one int for all; raised
        to `max(chars, prompt) + 1` when shorter, as the package does.
      lens: [batch] prompt frames per row (all of `prompt_frames` when None).
      steps: solver steps.
      cfg_strength: guidance strength (see the module doc); 0 disables guidance.
      sway_coef: sway sampling coefficient, None for none.
      use_epss: the pruned grids for 5/6/7/10/12/16 steps.
      method: the ODE solver ("euler" as the package's default).
      key: draws the starting noise, each row over its own duration (zeros after).
      noise: [batch, max(duration), mel_dim] the starting noise instead of `key`
        (frames past a row's duration are zeroed, as the package pads).
      bucket: pad the frames (and the text) to a multiple of this, so that every
        duration in a bucket runs one compiled ODE loop. Padded frames are then
        masked out of attention as keys (the package's batches attend to their
        padding; masking it makes each row the same as alone and unpadded, to
        float rounding). None: the package's shapes and numbers exactly.

    Returns:
      (mel [batch, max(duration), mel_dim] float32: the prompt's frames are the
      reference, the rest generated; frames past a row's duration are padding),
      and the cost as `SampleInfo`.
    """
    cond = jnp.asarray(cond, jnp.float32)
    batch, prompt_frames, mel_dim = cond.shape
    text = np.asarray(text, np.int32)
    if text.ndim != 2 or text.shape[0] != batch:
        raise ValueError(f"text must be [batch={batch}, chars] ids, got shape {text.shape}")
    lens = (np.full((batch,), prompt_frames, np.int64) if lens is None
            else np.asarray(lens, np.int64))
    dur = durations(text, lens, duration, max_duration)
    frames = int(dur.max())
    if noise is None:
        if key is None:
            raise ValueError("sample needs a `key` (or explicit `noise`)")
        noise = jax.random.normal(key, (batch, frames, mel_dim), jnp.float32)
    noise = jnp.asarray(noise, jnp.float32)
    if noise.shape != (batch, frames, mel_dim):
        raise ValueError(f"noise must be [batch, frames, mel_dim] = {(batch, frames, mel_dim)} "
                         f"(frames = the longest duration), got {noise.shape}")
    padded = frames if not bucket else -(-frames // bucket) * bucket
    if padded > frames:
        noise = jnp.pad(noise, ((0, 0), (0, padded - frames), (0, 0)))
    if bucket:
        # The text is cut or filler-padded to the frames inside the model anyway: giving
        # it `padded` columns makes the compiled shapes depend on the bucket alone.
        text = np.pad(text[:, :padded], ((0, 0), (0, max(padded - text.shape[1], 0))),
                      constant_values=-1)
        model = model.clone(exact_padding=True)
    valid = np.arange(padded)[None] < dur[:, None]                          # [b, padded]
    y0 = jnp.where(valid[..., None], noise, 0)
    prompt = np.arange(padded)[None] < np.minimum(lens, prompt_frames)[:, None]
    cond = jnp.pad(cond, ((0, 0), (0, max(padded - prompt_frames, 0)), (0, 0)))[:, :padded]
    step_cond = jnp.where(prompt[..., None], cond, 0)
    # A single unpadded row needs no mask (the package skips it too; the numbers differ
    # slightly).
    mask = jnp.asarray(valid) if batch > 1 or padded > frames else None
    info = sample_info(steps, cfg_strength, method)
    ts = jnp.asarray(time_grid(steps, sway_coef, use_epss))
    out = _integrate(model, method, info.guided, params, y0, step_cond, jnp.asarray(text), mask,
                     ts, jnp.float32(cfg_strength))
    out = jnp.where(jnp.asarray(prompt)[..., None], cond, out)
    return out[:, :frames], info


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _integrate(model: DiT, method: str, guided: bool, params, y0, step_cond, text, mask, ts,
               cfg_strength):
    frames = y0.shape[1]
    lengths = None if mask is None else jnp.sum(mask, axis=1)
    variables = {"params": params}

    def embed(drop_text):
        return model.apply(variables, text, frames, lengths, drop_text, method=DiT.embed_text)

    if guided:
        # The text does not change over the ODE: both embeddings once, then one doubled
        # batch per evaluation (conditional rows first, the null rows after).
        text_embed = jnp.concatenate([embed(False), embed(True)])
        cond2 = jnp.concatenate([step_cond, jnp.zeros_like(step_cond)])
        mask2 = None if mask is None else jnp.concatenate([mask, mask])

        def velocity(x, t):
            both = model.apply(variables, jnp.concatenate([x, x]), cond2, text_embed, t, mask2,
                               method=DiT.velocity)
            pred, null = jnp.split(both, 2)
            return pred + (pred - null) * cfg_strength
    else:
        text_embed = embed(False)

        def velocity(x, t):
            return model.apply(variables, x, step_cond, text_embed, t, mask, method=DiT.velocity)

    return odeint_on_grid(velocity, y0, ts, method)
