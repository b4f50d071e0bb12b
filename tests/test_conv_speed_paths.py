"""The fast conv paths of `audiolm_jax.layers.conv` against the textbook XLA forms.

`conv_transpose1d` (sub-pixel form: padded stride-1 conv + depth-to-space) and
`conv1d` must equal `lax.conv_general_dilated` written the obvious way in values
*and* gradients, and the transposed conv's compiled gradient must stay free of
the convolutions XLA:CPU runs seconds slower (see benchmarks/codec_speed.py).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audiolm_jax.layers.conv import conv1d, conv_transpose1d

_DN = ("NWC", "WIO", "NWC")


def reference_conv1d(x, kernel, stride=1, dilation=1):
    return jax.lax.conv_general_dilated(x, kernel, (stride,), "VALID", rhs_dilation=(dilation,),
                                        dimension_numbers=_DN,
                                        precision=jax.lax.Precision.HIGHEST)


def reference_conv_transpose1d(x, kernel, stride=1):
    width = kernel.shape[0]
    return jax.lax.conv_general_dilated(x, jnp.flip(kernel, 0), (1,), [(width - 1, width - 1)],
                                        lhs_dilation=(stride,), dimension_numbers=_DN,
                                        precision=jax.lax.Precision.HIGHEST)


def randn(*shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


def assert_same_values_and_grads(fast, ref, x, kernel, tol=1e-5):
    y, y_ref = fast(x, kernel), ref(x, kernel)
    assert y.shape == y_ref.shape
    np.testing.assert_allclose(y, y_ref, atol=tol, rtol=tol)
    cotangent = randn(*y.shape, seed=7)
    grads = jax.vjp(fast, x, kernel)[1](cotangent)
    grads_ref = jax.vjp(ref, x, kernel)[1](cotangent)
    for g, g_ref in zip(grads, grads_ref):
        assert g.shape == g_ref.shape and g.dtype == g_ref.dtype
        np.testing.assert_allclose(g, g_ref, atol=tol * 10, rtol=tol * 10)


# (width, stride, dilation): strided (width a multiple of the stride or not, or
# below it), dilated, 1x1, and a dilated strided one (the XLA fallback).
@pytest.mark.parametrize("width,stride,dilation", [(1, 1, 1), (3, 1, 1), (7, 1, 3), (4, 2, 1),
                                                   (10, 5, 1), (7, 3, 1), (2, 3, 1), (5, 3, 2),
                                                   (16, 8, 1)])
@pytest.mark.parametrize("length", [29, 40])
def test_conv1d_matches_reference(width, stride, dilation, length):
    x, kernel = randn(2, length, 3), randn(width, 3, 5, seed=1)
    assert_same_values_and_grads(lambda x, k: conv1d(x, k, stride, dilation),
                                 lambda x, k: reference_conv1d(x, k, stride, dilation), x, kernel)


@pytest.mark.parametrize("width,stride", [(1, 1), (3, 1), (4, 2), (10, 5), (7, 3), (2, 3),
                                          (16, 8), (5, 2)])
def test_conv_transpose1d_matches_reference(width, stride):
    x, kernel = randn(2, 11, 4), randn(width, 4, 3, seed=1)
    assert_same_values_and_grads(lambda x, k: conv_transpose1d(x, k, stride),
                                 lambda x, k: reference_conv_transpose1d(x, k, stride), x, kernel)


def test_jit_vmap_and_second_order():
    x, kernel = randn(3, 2, 20, 3), randn(4, 3, 5, seed=1)
    f = jax.jit(jax.vmap(lambda x: conv1d(x, kernel, 2)))
    ref = jax.vmap(lambda x: reference_conv1d(x, kernel, 2))
    np.testing.assert_allclose(f(x), ref(x), atol=1e-5, rtol=1e-5)

    # Gradient penalties differentiate a gradient.
    def grad_norm(conv, k):
        g = jax.grad(lambda x: jnp.sum(conv(x, k, 2) ** 2))(x[0])
        return jnp.sum(g ** 2)

    h = jax.grad(lambda k: grad_norm(conv_transpose1d, k))(kernel)
    h_ref = jax.grad(lambda k: grad_norm(reference_conv_transpose1d, k))(kernel)
    np.testing.assert_allclose(h, h_ref, atol=1e-3, rtol=1e-4)


def test_bfloat16_stays_bfloat16():
    x, kernel = randn(2, 24, 3).astype(jnp.bfloat16), randn(4, 3, 5, seed=1).astype(jnp.bfloat16)
    for f in (lambda x, k: conv1d(x, k, 2), lambda x, k: conv_transpose1d(x, k, 2)):
        y, vjp = jax.vjp(f, x, kernel)
        assert y.dtype == jnp.bfloat16
        assert all(g.dtype == jnp.bfloat16 for g in vjp(jnp.ones_like(y)))


def test_transposed_conv_gradient_avoids_slow_xla_cpu_convolutions():
    """Only undilated, unreversed convolutions remain in the transposed conv's compiled
    forward and backward. The textbook form's kernel gradient is a convolution
    with a time-long, rhs-dilated, reversed window, which XLA:CPU runs in a naive
    loop (seconds per SEANet layer)."""
    x, kernel = randn(2, 64, 4), randn(8, 4, 6, seed=1)

    def loss(x, kernel):
        return jnp.sum(conv_transpose1d(x, kernel, 4) ** 2)

    hlo = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x, kernel).compile().as_text()
    convs = [line for line in hlo.splitlines() if " convolution(" in line]
    assert len(convs) == 3  # forward, input gradient, kernel gradient
    slow = ("lhs_dilate", "rhs_dilate", "rhs_reversal")
    assert not [c for c in convs if any(s in c for s in slow)], convs
