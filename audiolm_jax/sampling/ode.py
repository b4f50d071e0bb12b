"""Fixed-step ODE solvers for flow-matching and probability-flow sampling.

`odeint(velocity_fn, x0, t0, t1, num_steps, method)` integrates
`dx/dt = velocity_fn(x, t)` on a uniform grid with one `lax.scan` over steps, so
the cost is a fixed, known number of function evaluations (NFE):
`NFE_PER_STEP[method] * num_steps`. Compare solvers at equal NFE, not equal
steps: 8 RK4 steps cost as much as 32 Euler steps. `odeint_on_grid` takes an
explicit (e.g. non-uniform) time grid instead.

The state `x` may be an array or any pytree of arrays; `t` is passed to
`velocity_fn` as a scalar float32 (float64 when x64 is enabled). Integration
may run backwards in time (`t1 < t0`), as diffusion samplers do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

VelocityFn = Callable[[Any, jax.Array], Any]

# Velocity evaluations per step of each method.
NFE_PER_STEP: dict[str, int] = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}
# Global order of accuracy: the error at t1 shrinks as dt ** ORDER.
ORDER: dict[str, int] = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}


def num_function_evals(method: str, num_steps: int) -> int:
    """Total velocity evaluations of `num_steps` steps of `method`."""
    _check_method(method)
    return NFE_PER_STEP[method] * num_steps


def _check_method(method: str) -> None:
    if method not in NFE_PER_STEP:
        raise ValueError(f"unknown ODE method {method!r}; expected one of {list(NFE_PER_STEP)}")


def _axpy(x: Any, a: jax.Array, *terms: tuple[float, Any]) -> Any:
    """x + a * sum(c_i * k_i) over pytrees, kept in each leaf's dtype (a float32 state
    stays float32 even when t is float64, so the scan carry's type never changes)."""

    def leaf(xl, *kls):
        acc = sum(c * kl.astype(xl.dtype) for (c, _), kl in zip(terms, kls))
        return xl + a.astype(xl.dtype) * acc

    return jax.tree.map(leaf, x, *[k for _, k in terms])


def ode_step(velocity_fn: VelocityFn, x: Any, t: jax.Array, dt: jax.Array,
             method: str = "euler") -> Any:
    """One step of `method` from (x, t) to t + dt.

    Args:
      velocity_fn: `(x, t) -> dx/dt`, same pytree structure as x.
      x: state pytree.
      t, dt: scalars.
      method: "euler" | "midpoint" | "heun" | "rk4".

    Returns:
      The state at t + dt.
    """
    _check_method(method)
    if method == "euler":
        return _axpy(x, dt, (1.0, velocity_fn(x, t)))
    if method == "midpoint":
        k1 = velocity_fn(x, t)
        k2 = velocity_fn(_axpy(x, dt / 2, (1.0, k1)), t + dt / 2)
        return _axpy(x, dt, (1.0, k2))
    if method == "heun":
        # Explicit trapezoid (Heun's 2nd order): average the slopes at both ends.
        k1 = velocity_fn(x, t)
        k2 = velocity_fn(_axpy(x, dt, (1.0, k1)), t + dt)
        return _axpy(x, dt, (0.5, k1), (0.5, k2))
    k1 = velocity_fn(x, t)
    k2 = velocity_fn(_axpy(x, dt / 2, (1.0, k1)), t + dt / 2)
    k3 = velocity_fn(_axpy(x, dt / 2, (1.0, k2)), t + dt / 2)
    k4 = velocity_fn(_axpy(x, dt, (1.0, k3)), t + dt)
    return _axpy(x, dt, (1 / 6, k1), (1 / 3, k2), (1 / 3, k3), (1 / 6, k4))


def _time_dtype() -> jnp.dtype:
    # float32, or float64 under x64 (so convergence can be studied in double precision).
    return jax.dtypes.canonicalize_dtype(jnp.float64)


def odeint_on_grid(velocity_fn: VelocityFn, x0: Any, ts: jax.Array, method: str = "euler",
                   return_trajectory: bool = False) -> Any:
    """Integrates from ts[0] to ts[-1] with one step per grid interval.

    Args:
      velocity_fn: `(x, t) -> dx/dt`.
      x0: initial state pytree.
      ts: [num_steps + 1] increasing or decreasing times.
      method: see `NFE_PER_STEP`.
      return_trajectory: also return the states at every grid time.

    Returns:
      The state at ts[-1]; with `return_trajectory`, `(x1, trajectory)` where each
      trajectory leaf is `[num_steps + 1, *leaf.shape]`, x0 first.
    """
    _check_method(method)
    ts = jnp.asarray(ts, _time_dtype())

    def body(x, t_pair):
        t, t_next = t_pair
        x = ode_step(velocity_fn, x, t, t_next - t, method)
        return x, (x if return_trajectory else None)

    x1, states = jax.lax.scan(body, x0, (ts[:-1], ts[1:]))
    if not return_trajectory:
        return x1
    trajectory = jax.tree.map(lambda first, rest: jnp.concatenate([first[None], rest]), x0,
                              states)
    return x1, trajectory


def odeint(velocity_fn: VelocityFn, x0: Any, t0: float | jax.Array, t1: float | jax.Array,
           num_steps: int, method: str = "euler", return_trajectory: bool = False) -> Any:
    """Integrates `dx/dt = velocity_fn(x, t)` from t0 to t1 in `num_steps` equal steps.

    `NFE_PER_STEP[method] * num_steps` velocity evaluations in all.

    Args:
      velocity_fn: `(x, t) -> dx/dt`, x a pytree, t a scalar.
      x0: state at t0 (array or pytree).
      t0, t1: start and end times (t1 < t0 integrates backwards); may be traced.
      num_steps: static number of steps.
      method: "euler" | "midpoint" | "heun" | "rk4".
      return_trajectory: see `odeint_on_grid`.

    Returns:
      The state at t1, or `(x1, trajectory)`.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    dtype = _time_dtype()
    t0, t1 = jnp.asarray(t0, dtype), jnp.asarray(t1, dtype)
    # t0 + (t1 - t0) * i / n, not repeated additions of dt, so rounding does not accumulate
    # and the last grid time is exactly t1.
    fractions = jnp.arange(num_steps + 1, dtype=dtype) / num_steps
    ts = (t0 + (t1 - t0) * fractions).at[-1].set(t1)
    return odeint_on_grid(velocity_fn, x0, ts, method, return_trajectory)
