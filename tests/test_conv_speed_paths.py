"""The fast conv paths of `audiolm_jax.layers.conv` against the textbook XLA forms.

`conv_transpose1d` (sub-pixel form: padded stride-1 conv + depth-to-space),
`conv1d` and `conv2d` (height taps as a matmul, polyphase input gradient of
width-strided convs) must equal `lax.conv_general_dilated` written the obvious
way in values *and* gradients, and their compiled gradients must stay free of
the convolutions XLA:CPU runs many times slower (see benchmarks/codec_speed.py
and benchmarks/discriminator_speed.py).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audiolm_jax.layers.conv import conv1d, conv2d, conv_transpose1d, grouped_conv1d

_DN = ("NWC", "WIO", "NWC")
_DN_2D = ("NHWC", "HWIO", "NHWC")


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


# (groups, in, out): Voicebox's and F5-TTS's position convolutions (groups of
# several channels), depthwise, and one group (a plain conv).
@pytest.mark.parametrize("groups,features_in,features_out", [(4, 8, 8), (3, 6, 9), (6, 6, 6),
                                                             (1, 4, 5)])
def test_grouped_conv1d_matches_reference(groups, features_in, features_out):
    x, kernel = randn(2, 23, features_in), randn(7, features_in // groups, features_out, seed=1)

    def reference(x, k):
        return jax.lax.conv_general_dilated(x, k, (1,), "VALID", dimension_numbers=_DN,
                                            feature_group_count=groups,
                                            precision=jax.lax.Precision.HIGHEST)

    assert_same_values_and_grads(lambda x, k: grouped_conv1d(x, k, groups), reference, x, kernel)


def test_grouped_conv1d_gradients_keep_bfloat16():
    x = randn(2, 23, 8).astype(jnp.bfloat16)
    kernel = randn(7, 2, 8, seed=1).astype(jnp.bfloat16)
    dx, dk = jax.grad(lambda x, k: jnp.sum(grouped_conv1d(x, k, 4).astype(jnp.float32)),
                      argnums=(0, 1))(x, kernel)
    assert dx.dtype == dk.dtype == jnp.bfloat16
    reference = jax.grad(lambda k: jnp.sum(jax.lax.conv_general_dilated(
        x.astype(jnp.float32), k, (1,), "VALID", dimension_numbers=_DN,
        feature_group_count=4)))(kernel.astype(jnp.float32))
    np.testing.assert_allclose(dk.astype(jnp.float32), reference, rtol=2e-2, atol=2e-2)


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


# ------------------------------------------------------------------------- conv2d


def reference_conv2d(x, kernel, strides=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1)):
    return jax.lax.conv_general_dilated(x, kernel, strides, padding, rhs_dilation=dilation,
                                        dimension_numbers=_DN_2D,
                                        precision=jax.lax.Precision.HIGHEST)


# (kernel, strides, dilation, padding, (height, width)). Height-tap matmuls:
# HiFi-GAN's period convs, one dilated and width-padded. The others: the STFT
# discriminators' (3, 9) convs at frequency stride 2 (time-dilated or not),
# lengths the stride does not divide, a kernel narrower than the stride, both
# axes strided with a dilated strided axis, asymmetric padding, no padding,
# stride 1, height strides only. Each runs with few channels (the width-folded
# form) and with more than 16 (polyphase input gradient when width-strided,
# else XLA's own).
CONV2D_CASES = [
    ((5, 1), (3, 1), (1, 1), ((2, 2), (0, 0)), (40, 3)),
    ((5, 1), (2, 1), (2, 1), ((4, 1), (1, 2)), (41, 3)),
    ((3, 1), (1, 1), (1, 1), ((1, 1), (0, 0)), (9, 11)),
    ((1, 1), (1, 1), (1, 1), ((0, 0), (0, 0)), (7, 5)),
    ((3, 9), (1, 2), (1, 1), ((1, 1), (4, 4)), (11, 37)),
    ((3, 9), (1, 2), (4, 1), ((4, 4), (4, 4)), (11, 36)),
    ((3, 9), (1, 2), (1, 1), ((0, 0), (0, 0)), (6, 12)),
    ((2, 4), (1, 4), (1, 1), ((0, 0), (0, 0)), (9, 17)),
    ((3, 2), (1, 3), (1, 1), ((1, 1), (1, 0)), (5, 14)),
    ((3, 3), (2, 3), (1, 2), ((1, 0), (2, 1)), (13, 29)),
    ((3, 3), (1, 1), (1, 1), ((1, 1), (1, 1)), (9, 9)),
    ((3, 9), (2, 1), (1, 1), ((1, 1), (4, 4)), (12, 20)),
]


@pytest.mark.parametrize("kernel_size,strides,dilation,padding,size", CONV2D_CASES)
@pytest.mark.parametrize("features", [(3, 4), (2, 8), (5, 20)])
def test_conv2d_matches_reference(kernel_size, strides, dilation, padding, size, features):
    x, kernel = randn(2, *size, features[0]), randn(*kernel_size, *features, seed=1)
    assert_same_values_and_grads(lambda x, k: conv2d(x, k, strides, padding, dilation),
                                 lambda x, k: reference_conv2d(x, k, strides, padding, dilation),
                                 x, kernel)


@pytest.mark.parametrize("features", [(3, 4), (4, 20)])
def test_conv2d_jit_vmap_second_order_and_bfloat16(features):
    x, kernel = randn(3, 2, 8, 21, features[0]), randn(3, 9, *features, seed=1)
    args = ((1, 2), ((1, 1), (4, 4)), (2, 1))
    f = jax.jit(jax.vmap(lambda x: conv2d(x, kernel, *args)))
    np.testing.assert_allclose(f(x), jax.vmap(lambda x: reference_conv2d(x, kernel, *args))(x),
                               atol=1e-4, rtol=1e-5)

    # A gradient penalty differentiates the input gradient w.r.t. the kernel.
    def grad_norm(conv, k):
        g = jax.grad(lambda x: jnp.sum(conv(x, k, *args) ** 2))(x[0])
        return jnp.sum(g ** 2)

    h = jax.jit(jax.grad(lambda k: grad_norm(conv2d, k)))(kernel)
    h_ref = jax.grad(lambda k: grad_norm(reference_conv2d, k))(kernel)
    np.testing.assert_allclose(h, h_ref, atol=1e-5 * float(jnp.abs(h_ref).max()), rtol=1e-4)

    for size, ksize, strides in (((8, 21), (3, 9), (1, 2)), ((20, 3), (5, 1), (3, 1))):
        xb = randn(2, *size, features[0]).astype(jnp.bfloat16)
        kb = randn(*ksize, *features, seed=1).astype(jnp.bfloat16)
        y, vjp = jax.vjp(lambda x, k, s=strides: conv2d(x, k, s, ((1, 1), (0, 0))), xb, kb)
        assert y.dtype == jnp.bfloat16
        assert all(g.dtype == jnp.bfloat16 for g in vjp(jnp.ones_like(y)))


def test_conv2d_rejects_negative_padding():
    with pytest.raises(ValueError, match="padding"):
        conv2d(randn(1, 5, 5, 2), randn(3, 3, 2, 2), padding=((-1, 0), (0, 0)))


def _compiled_convolutions(fn, *args):
    hlo = jax.jit(fn).lower(*args).compile().as_text()
    return [line for line in hlo.splitlines() if " convolution(" in line]


@pytest.mark.parametrize("features", [8, 24])
def test_width_strided_gradient_avoids_base_dilated_convolutions(features):
    """The frequency-strided conv's input gradient is a stride-1 convolution (polyphase
    with 24 channels, width-folded with 8); the textbook one dilates its input
    along the width (`lhs_dilate`), which XLA:CPU runs ~10x slower than the forward."""
    x, kernel = randn(2, 12, 40, features), randn(3, 9, features, features, seed=1)
    args = ((1, 2), ((1, 1), (4, 4)), (2, 1))

    def loss(conv):
        return lambda x, k: jnp.sum(conv(x, k, *args) ** 2)

    textbook = _compiled_convolutions(jax.grad(loss(reference_conv2d), argnums=(0, 1)), x, kernel)
    assert any("lhs_dilate" in c for c in textbook)        # the pattern this test looks for
    convs = _compiled_convolutions(jax.grad(loss(conv2d), argnums=(0, 1)), x, kernel)
    assert len(convs) == 3  # forward, input gradient, kernel gradient
    slow = ("lhs_dilate", "rhs_reversal")
    assert not [c for c in convs if any(s in c for s in slow)], convs
    if features <= 16:                                      # folded: no width stride left
        assert not [c for c in convs if "stride=1x2" in c], convs


def test_height_taps_gradient_has_no_convolution():
    """(k, 1) kernels run as matmuls in the forward and both gradients (the
    convolution's kernel gradient has a window the size of the whole output)."""
    x, kernel = randn(2, 60, 3, 16), randn(5, 1, 16, 32, seed=1)

    def loss(x, k):
        return jnp.sum(conv2d(x, k, (3, 1), ((2, 2), (0, 0))) ** 2)

    assert not _compiled_convolutions(jax.grad(loss, argnums=(0, 1)), x, kernel)
