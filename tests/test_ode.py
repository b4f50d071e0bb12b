"""Fixed-step ODE solvers: observed order of accuracy, NFE accounting, pytrees, trajectories."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audiolm_jax.sampling.ode import NFE_PER_STEP, ORDER, num_function_evals, odeint

LAM = -1.5
# (velocity, x0, t0, t1, exact x(t1)); the second is time-dependent only, the third both.
PROBLEMS = {
    "linear": (lambda x, t: LAM * x, 1.0, 0.0, 1.0, math.exp(LAM)),
    "cos": (lambda x, t: jnp.cos(t) * jnp.ones_like(x), 0.5, 0.0, 1.0, 0.5 + math.sin(1.0)),
    "cos_x": (lambda x, t: jnp.cos(t) * x, 1.0, 0.2, 1.2, math.exp(math.sin(1.2) - math.sin(0.2))),
}


@pytest.mark.parametrize("method", list(NFE_PER_STEP))
@pytest.mark.parametrize("problem", list(PROBLEMS))
def test_observed_order(method, problem):
    f, x0, t0, t1, exact = PROBLEMS[problem]
    # Enough steps for the asymptotic regime, few enough that RK4's error stays far
    # above float64 rounding.
    n = {"euler": 64, "rk4": 16}.get(method, 32)
    with jax.enable_x64(True):
        x0 = jnp.asarray(x0, jnp.float64)
        errors = [abs(float(odeint(f, x0, t0, t1, steps, method)) - exact) for steps in (n, 2 * n)]
    observed = math.log2(errors[0] / errors[1])
    assert abs(observed - ORDER[method]) < 0.3, (method, problem, errors, observed)


def test_backward_in_time_float32():
    # dx/dt = LAM x from t=1 back to t=0: x(0) = x(1) * exp(-LAM).
    x1 = jnp.full((3,), math.exp(LAM), jnp.float32)
    x0 = jax.jit(lambda x: odeint(lambda x, t: LAM * x, x, 1.0, 0.0, 20, "rk4"))(x1)
    assert x0.dtype == jnp.float32
    np.testing.assert_allclose(x0, 1.0, rtol=1e-5)


def test_pytree_state_and_trajectory():
    def velocity(state, t):
        assert t.shape == () and t.dtype == jnp.float32
        return {"a": -state["a"], "b": (jnp.cos(t) * jnp.ones_like(state["b"][0]),)}

    state = {"a": jnp.ones((2, 3), jnp.float32), "b": (jnp.zeros((4,), jnp.float32),)}
    out, traj = jax.jit(lambda s: odeint(velocity, s, 0.0, 1.0, 10, "heun",
                                         return_trajectory=True))(state)
    np.testing.assert_allclose(out["a"], math.exp(-1.0), rtol=5e-3)   # Heun, h = 0.1
    np.testing.assert_allclose(out["b"][0], math.sin(1.0), rtol=1e-3)
    assert traj["a"].shape == (11, 2, 3) and traj["b"][0].shape == (11, 4)
    np.testing.assert_array_equal(traj["a"][0], state["a"])
    np.testing.assert_array_equal(traj["a"][-1], out["a"])
    ts = np.linspace(0, 1, 11)
    np.testing.assert_allclose(traj["b"][0][:, 0], np.sin(ts), atol=1e-3)


@pytest.mark.parametrize("method", list(NFE_PER_STEP))
def test_nfe_per_step(method):
    calls = []

    def velocity(x, t):
        calls.append(t)          # counts trace-time calls: the scan body is traced once
        return -x

    odeint(velocity, jnp.ones((2,), jnp.float32), 0.0, 1.0, 7, method)
    assert len(calls) == NFE_PER_STEP[method]
    assert num_function_evals(method, 7) == 7 * NFE_PER_STEP[method]


def test_unknown_method():
    with pytest.raises(ValueError, match="unknown ODE method"):
        odeint(lambda x, t: x, jnp.ones(2), 0.0, 1.0, 4, "rk45")
