"""1-D convolutions and the skip LSTM of SEANet codecs (SoundStream / EnCodec).

The modules mirror Hugging Face's `EncodecConv1d`, `EncodecConvTranspose1d` and
`EncodecLSTM` numerically (padding, "extra padding", trimming, weight norm,
time group norm, PyTorch LSTM gates), in this project's channels-last layout:
activations are [batch, time, channels] and kernels [width, in, out].

Parameter names follow PyTorch so that importers map weights one to one:

| module          | param        | shape here   | PyTorch shape | here = torch.permute |
|-----------------|--------------|--------------|---------------|----------------------|
| Conv1d          | weight_v     | [K, in, out] | [out, in, K]  | (2, 1, 0)            |
| Conv1d          | weight_g     | [1, 1, out]  | [out, 1, 1]   | (2, 1, 0)            |
| Conv1d          | weight       | [K, in, out] | [out, in, K]  | (2, 1, 0)            |
| ConvTranspose1d | weight_v     | [K, in, out] | [in, out, K]  | (2, 0, 1)            |
| ConvTranspose1d | weight_g     | [1, in, 1]   | [in, 1, 1]    | (2, 0, 1)            |
| ConvTranspose1d | weight       | [K, in, out] | [in, out, K]  | (2, 0, 1)            |
| both            | bias         | [out]        | [out]         | -                    |
| both            | norm/scale   | [out]        | norm.weight   | -                    |
| both            | norm/bias    | [out]        | norm.bias     | -                    |
| LSTM            | weight_ih_l{n} | [in, 4H]   | [4H, in]      | .T                   |
| LSTM            | weight_hh_l{n} | [H, 4H]    | [4H, H]       | .T                   |
| LSTM            | bias_ih_l{n}, bias_hh_l{n} | [4H] | [4H]    | -                    |

`weight_g` keeps torch's `weight_norm(dim=0)` semantics: one gain per *output*
channel for `Conv1d` (torch dim 0 is `out`), but one gain per *input* channel
for `ConvTranspose1d` (torch stores transposed-conv weights as [in, out, K], so
its dim 0 is `in`). The gain keeps its singleton axes so that it broadcasts
against the kernel and imports with the same permutation as `weight_v`.

Streaming: every module takes `streaming=True`, in which case it reads and
writes its carried state in the Flax `cache` collection (a conv's left
context, a transposed conv's overlap, the LSTM's (h, c)), so that chunks fed
one after another give the same output as one offline call. The state of a
fresh stream is all zeros (see `audiolm_jax.models.codec.init_streaming_state`).
Streaming needs causal modules without time group norm.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from audiolm_jax.checks import check_choice

NORM_TYPES = ("weight_norm", "time_group_norm", "none")
PAD_MODES = ("reflect", "constant", "replicate")
# Channels-last counterparts of torch's (N, C, W) / (O, I, W) layouts.
_DIMENSION_NUMBERS = ("NWC", "WIO", "NWC")

Initializer = Callable[..., jax.Array]


# ----------------------------------------------------------------------------- functional ops


def conv1d(x: jax.Array, kernel: jax.Array, stride: int = 1, dilation: int = 1,
           precision: Any = None) -> jax.Array:
    """Unpadded 1-D cross-correlation, i.e. `torch.nn.functional.conv1d(padding=0)`.

    Args:
      x: [batch, time, in].
      kernel: [width, in, out].
      stride: hop between output frames.
      dilation: spacing between kernel taps.
      precision: `jax.lax` precision for the convolution.

    Returns:
      [batch, (time - (width - 1) * dilation - 1) // stride + 1, out].
    """
    return jax.lax.conv_general_dilated(
        x, kernel, window_strides=(stride,), padding="VALID", rhs_dilation=(dilation,),
        dimension_numbers=_DIMENSION_NUMBERS, precision=precision)


def _grouped_conv1d_xla(x: jax.Array, kernel: jax.Array, groups: int) -> jax.Array:
    return jax.lax.conv_general_dilated(x, kernel, (1,), "VALID",
                                        dimension_numbers=_DIMENSION_NUMBERS,
                                        feature_group_count=groups)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def grouped_conv1d(x: jax.Array, kernel: jax.Array, groups: int) -> jax.Array:
    """Unpadded grouped 1-D cross-correlation (`torch.nn.functional.conv1d(groups=)`).

    Forward and input gradient are XLA's grouped convolution; the kernel gradient
    is a sum over taps of per-group matmuls, `dW[k] = sum_{b,t} x[b, t + k]^T
    dy[b, t]`. XLA:CPU lowers the grouped kernel gradient to an input-dilated
    convolution without a fast kernel: for Voicebox's position embedding (31
    taps, 16 groups, 8 x 512 frames x 256 channels) it took 0.6-0.8 s against
    0.13-0.16 s for the taps, most of the tiny model's train step. Other backends
    keep XLA's kernel gradient. A `jax.custom_vjp`: reverse mode works, forward
    mode (`jax.jvp`) does not.

    Args:
      x: [batch, time, in].
      kernel: [width, in / groups, out]; output channel `o` belongs to group
        `o // (out / groups)`, as in torch.
      groups: channel groups (divides `in` and `out`).

    Returns:
      [batch, time - width + 1, out].
    """
    return _grouped_conv1d_xla(x, kernel, groups)


def _grouped_conv1d_fwd(x, kernel, groups):
    return _grouped_conv1d_xla(x, kernel, groups), (x, kernel)


def _grouped_kernel_grad_taps(x: jax.Array, kernel: jax.Array, dy: jax.Array,
                              groups: int) -> jax.Array:
    """`dW[k] = sum_{b,t} x[b, t + k]^T dy[b, t]` per group, one matmul per tap."""
    width, in_per_group, out = kernel.shape
    batch, frames = dy.shape[:2]
    xg = x.reshape(batch, x.shape[1], groups, in_per_group)
    dyg = dy.reshape(batch, frames, groups, out // groups)
    taps = [jnp.einsum("btgc,btgo->cgo", xg[:, k:k + frames], dyg,
                       preferred_element_type=jnp.float32) for k in range(width)]
    return jnp.stack(taps).reshape(width, in_per_group, out).astype(kernel.dtype)


def _grouped_conv1d_bwd(groups, residuals, dy):
    x, kernel = residuals
    _, input_vjp = jax.vjp(lambda x_: _grouped_conv1d_xla(x_, kernel, groups), x)
    (dx,) = input_vjp(dy)

    def xla_kernel_grad(x, kernel, dy):
        _, kernel_vjp = jax.vjp(lambda k: _grouped_conv1d_xla(x, k, groups), kernel)
        return kernel_vjp(dy)[0]

    # The taps where they were measured to win (XLA:CPU); elsewhere XLA's own.
    dkernel = jax.lax.platform_dependent(
        x, kernel, dy, cpu=functools.partial(_grouped_kernel_grad_taps, groups=groups),
        default=xla_kernel_grad)
    return dx, dkernel


grouped_conv1d.defvjp(_grouped_conv1d_fwd, _grouped_conv1d_bwd)


def conv_transpose1d(x: jax.Array, kernel: jax.Array, stride: int = 1,
                     precision: Any = None) -> jax.Array:
    """1-D transposed convolution, i.e. `torch.nn.functional.conv_transpose1d(padding=0)`.

    Computed in sub-pixel (polyphase) form: a stride-1 convolution of the
    zero-padded input with `stride * out` output channels, then a depth-to-space
    reshape. Output sample `m * stride + r` only sees kernel taps `j * stride + r`,
    so phase r of block m is sum_j x[m - j] @ kernel[j * stride + r]: a J-tap
    convolution with J = ceil(width / stride) (the kernel is zero-padded to
    J * stride taps).

    Why not the textbook form (a stride-1 convolution of the stride-dilated input,
    `lhs_dilation=stride`)? It multiplies stride - 1 inserted zeros per sample,
    and, worse, XLA:CPU has no fast kernel for its weight gradient: that
    becomes a convolution with a time-long, rhs-dilated, reversed window that
    falls back to a naive loop. On the 24 kHz SEANet decoder it took 1-6 s per
    layer for a batch of 8 x 1 s, about 95% of the whole train step, against
    ~0.1 s for this form. The input is padded with `jnp.pad` rather than with
    the convolution's own `padding`: with in-convolution padding the weight
    gradient again leaves XLA:CPU's Eigen path (~10 s per layer), with an
    explicit pad it is the plain VALID stride-1 weight gradient, which is fast.

    Args:
      x: [batch, time, in].
      kernel: [width, in, out] (torch's [in, out, width] permuted by (2, 0, 1)).
      stride: upsampling factor.
      precision: `jax.lax` precision for the convolution.

    Returns:
      [batch, (time - 1) * stride + width, out].
    """
    width, in_features, out_features = kernel.shape
    batch, length, _ = x.shape
    taps = -(-width // stride)
    # [width, in, out] -> [taps, stride, in, out] -> [taps, in, stride * out], taps reversed
    # (a transposed conv is a convolution with the flipped kernel).
    phases = jnp.pad(kernel, ((0, taps * stride - width), (0, 0), (0, 0)))
    phases = phases.reshape(taps, stride, in_features, out_features).transpose(0, 2, 1, 3)
    phases = jnp.flip(phases.reshape(taps, in_features, stride * out_features), axis=0)
    x = jnp.pad(x, ((0, 0), (taps - 1, taps - 1), (0, 0)))
    y = conv1d(x, phases, precision=precision)  # [batch, length + taps - 1, stride * out]
    y = y.reshape(batch, (length + taps - 1) * stride, out_features)
    return y[:, :(length - 1) * stride + width]


# 2-D convolutions (the GAN discriminators' layers) --------------------------------
#
# `conv2d` equals `lax.conv_general_dilated` (NHWC / HWIO, zero padding) in value and
# gradient; it only picks forms that XLA:CPU runs fast. Measured on 2 cores, batch
# 8 x 0.5 s at 24 kHz (benchmarks/discriminator_speed.py --profile):
#
# * A stride along the width (frequency, in the STFT discriminators) makes the
#   textbook input gradient a convolution with `lhs_dilation` on the width, which
#   XLA:CPU's library kernels decline (YNNPACK takes no base dilation) and Eigen
#   runs ~10x slower than the forward: 105-350 ms against 6-40 ms for the
#   polyphase form below, which is a stride-1 convolution.
# * The forward and the kernel gradient stay XLA's own. Rewriting the forward
#   in a stride-1 space-to-depth form would make the whole gradient stride-1
#   too, but with more than 16 channels XLA hands those convolutions to
#   YNNPACK, which runs them ~5x slower than the strided originals (forward
#   190 ms against 32 ms on a 32-channel (3, 9) layer of EnCodec's MS-STFTD).
# * (k, 1) kernels (HiFi-GAN's period discriminators: 32-1024 channels, one
#   column per phase) are a 1-D convolution along the height. As taps gathered
#   along the height (contiguous slices) and one matrix product, they run at
#   matmul speed: kernel gradients 2-4x, input gradients up to 1.8x faster
#   than the convolution's (whose kernel gradient is a convolution with a
#   window the size of the whole output).
# * Taps along the width cannot be gathered that way: strided slices of the
#   inner axes are slow copies in XLA:CPU (im2col of a (3, 9) layer took
#   5-10x its convolution), so other layers stay convolutions.
# * With 16 channels or fewer (the tiny codec's 8-filter MS-STFT
#   discriminator) XLA:CPU leaves convolutions to Eigen, which runs them at
#   5-10 GFLOP/s (its 2-channel first layer: 20 ms forward, 29 ms input
#   gradient). Folding r adjacent width positions into the channels (a free
#   reshape) gives a stride-1 convolution with r times the channels, which
#   goes to the library kernel: 4.7 / 7.1 ms for that layer, 2-3x faster for
#   the strided ones, gradients included, at 4/3 of the FLOPs.

_DIMENSION_NUMBERS_2D = ("NHWC", "HWIO", "NHWC")
Padding2D = tuple[tuple[int, int], tuple[int, int]]


def _conv2d_xla(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], padding: Padding2D,
                dilation: tuple[int, int], precision: Any) -> jax.Array:
    """The textbook form (the reference `conv2d` equals)."""
    return jax.lax.conv_general_dilated(
        x, kernel, window_strides=strides, padding=padding, rhs_dilation=dilation,
        dimension_numbers=_DIMENSION_NUMBERS_2D, precision=precision)


def _conv2d_height_taps(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
                        padding: Padding2D, dilation: tuple[int, int],
                        precision: Any) -> jax.Array:
    """A (kh, 1) kernel at width stride 1 as im2col along the height + one matmul.

    Tap i of output row t reads padded row `t * stride + i * dilation`: the kh
    strided row slices, concatenated on the channels, are the patches
    [batch, rows, width, kh * in]. Slices along the height are whole contiguous
    rows, so building the patches (and, in the gradient, adding them back) is
    cheap next to the product.
    """
    kh, _, in_features, out_features = kernel.shape
    (s, _), (d, _) = strides, dilation
    x = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
    rows = (x.shape[1] - (kh - 1) * d - 1) // s + 1
    taps = [x[:, i * d:i * d + (rows - 1) * s + 1:s] for i in range(kh)]
    patches = taps[0] if kh == 1 else jnp.concatenate(taps, axis=-1)
    return jnp.matmul(patches, kernel.reshape(kh * in_features, out_features),
                      precision=precision)


def _undilate(kernel: jax.Array, axis: int, dilation: int) -> jax.Array:
    """The dilated kernel written out: dilation - 1 zero taps between taps along `axis`."""
    if dilation == 1:
        return kernel
    shape = list(kernel.shape)
    shape[axis] = (shape[axis] - 1) * dilation + 1
    index = [slice(None)] * kernel.ndim
    index[axis] = slice(None, None, dilation)
    return jnp.zeros(shape, kernel.dtype).at[tuple(index)].set(kernel)

# `conv2d` folds the width of convolutions with at most this many channels
# (in and out) until one side has at least `_FOLD_TARGET_CHANNELS`.
_FOLD_MAX_CHANNELS = 16
_FOLD_TARGET_CHANNELS = 32


def _width_fold(in_features: int, out_features: int, stride: int) -> int:
    """Width positions per block for `_conv2d_width_folded`: a multiple r = stride * q
    of the stride, the smallest with max(r * in, q * out) >= 32."""
    q = 1
    while max(stride * q * in_features, q * out_features) < _FOLD_TARGET_CHANNELS:
        q += 1
    return stride * q


def _conv2d_width_folded(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
                         padding: Padding2D, dilation: tuple[int, int], fold: int,
                         precision: Any) -> jax.Array:
    """The convolution on a width folded into channels: blocks of `fold` inputs.

    With width stride s and `fold = r = s * q`, input block m holds padded
    positions `m * r .. m * r + r - 1` and output block m outputs
    `m * q .. m * q + q - 1`; output `m * q + o` reads inputs `(m * q + o) * s + j
    = (m + b) * r + i` for tap `j = b * r + i - o * s`. So the folded layer is a
    stride-1 convolution over blocks, [batch, h, blocks, r * in] ->
    [batch, h', blocks', q * out], with J = ceil(((q - 1) * s + kw) / r) block
    taps; kernel entries whose j falls outside [0, kw) are zeros. A dilated width
    is written out as zero taps first. Both reshapes are free (they split the
    minor dimensions), the kernel is small, and the gradients are those of a
    stride-1 convolution.

    Args:
      x: [batch, h, w, in].
      kernel: [kh, kw, in, out].
      strides, padding, dilation: as `conv2d`'s.
      fold: r, a multiple of the width stride.
      precision: `jax.lax` precision.

    Returns:
      The convolution, [batch, h', w', out].
    """
    kernel = _undilate(kernel, 1, dilation[1])
    kh, kw, in_features, out_features = kernel.shape
    s, r = strides[1], fold
    q = r // s
    batch, height, width, _ = x.shape
    (left, right) = padding[1]
    length = left + width + right
    out_length = (length - kw) // s + 1
    out_blocks = -(-out_length // q)
    taps = -(-((q - 1) * s + kw) // r)
    needed = (out_blocks + taps - 1) * r           # the last output block reads this far
    if left % r == 0 and width % r == 0 and needed >= left + width:
        # Whole blocks of zeros on both sides: fold first (a free reshape) and let the
        # convolution pad blocks, instead of writing a padded copy of the input.
        x = x.reshape(batch, height, width // r, r * in_features)
        block_padding = (left // r, (needed - left - width) // r)
    else:
        x = jnp.pad(x, ((0, 0), (0, 0), (left, max(right, needed - left - width)), (0, 0)))
        x = x[:, :, :needed].reshape(batch, height, needed // r, r * in_features)
        block_padding = (0, 0)
    # j[b, i, o] = b * r + i - o * s: which tap links input phase i of block
    # m + b to output phase o of block m.
    j = (np.arange(taps)[:, None, None] * r + np.arange(r)[None, :, None]
         - s * np.arange(q)[None, None, :])
    folded = jnp.take(kernel, np.clip(j, 0, kw - 1), axis=1)    # [kh, taps, r, q, in, out]
    folded = jnp.where(((j >= 0) & (j < kw))[None, :, :, :, None, None], folded, 0)
    folded = folded.transpose(0, 1, 2, 4, 3, 5).reshape(kh, taps, r * in_features,
                                                        q * out_features)
    y = _conv2d_xla(x, folded, (strides[0], 1), (padding[0], block_padding), (dilation[0], 1),
                    precision)
    y = y.reshape(batch, y.shape[1], out_blocks * q, out_features)
    return y[:, :, :out_length]



def _conv2d_input_grad_polyphase(dy: jax.Array, kernel: jax.Array, x_shape: tuple[int, ...],
                                 strides: tuple[int, int], padding: Padding2D,
                                 dilation: tuple[int, int], precision: Any) -> jax.Array:
    """Input gradient of a strided 2-D convolution as one stride-1 convolution.

    With stride s along an axis (and, there, no dilation: a dilated strided axis
    has its kernel written out with zero taps first), output t reads padded
    input `t * s + i`. Split the padded input into s phases, `u = m * s + r`:
    the forward is a stride-1 convolution of the space-to-depth input
    [.., M, s * in] with the kernel regrouped into J = ceil(k / s) taps of
    [s * in, out] (zero-padded to J * s taps). Its input gradient is the
    stride-1 transposed convolution of dy with that kernel — the J taps
    flipped, in and out swapped, J - 1 zeros of padding — followed by
    depth-to-space. Nothing is dilated, so XLA:CPU runs it on its fast path.

    Args:
      dy: [batch, out_h, out_w, out] cotangent of the output.
      kernel: [kh, kw, in, out].
      x_shape: shape of the input, [batch, h, w, in].
      strides, padding, dilation: those of the forward convolution.
      precision: `jax.lax` precision.

    Returns:
      [batch, h, w, in], the cotangent of the input.
    """
    for axis in range(2):
        if strides[axis] > 1:
            kernel = _undilate(kernel, axis, dilation[axis])
    dilation = tuple(1 if s > 1 else d for s, d in zip(strides, dilation))
    kh, kw, in_features, out_features = kernel.shape
    (s1, s2) = strides
    j1, j2 = -(-kh // s1), -(-kw // s2)
    # [kh, kw, in, out] -> [j1, s1, j2, s2, in, out] -> [j1, j2, (s1, s2, in), out]
    phases = jnp.pad(kernel, ((0, j1 * s1 - kh), (0, j2 * s2 - kw), (0, 0), (0, 0)))
    phases = phases.reshape(j1, s1, j2, s2, in_features, out_features)
    phases = phases.transpose(0, 2, 1, 3, 4, 5).reshape(j1, j2, s1 * s2 * in_features,
                                                         out_features)
    # Transposed (stride-1) convolution: flipped taps, in <-> out. The flip stays
    # an explicit reverse of the small kernel (a window reversal inside the
    # convolution would push it off the fast path).
    transposed = jnp.flip(phases, axis=(0, 1)).transpose(0, 1, 3, 2)
    full = [((j - 1) * d, (j - 1) * d) for j, d in zip((j1, j2), dilation)]
    dz = _conv2d_xla(dy, transposed, (1, 1), full, dilation, precision)
    batch, m1, m2, _ = dz.shape
    # Depth-to-space: [batch, m1, m2, (s1, s2, in)] -> [batch, m1 * s1, m2 * s2, in].
    dz = dz.reshape(batch, m1, m2, s1, s2, in_features).transpose(0, 1, 3, 2, 4, 5)
    dz = dz.reshape(batch, m1 * s1, m2 * s2, in_features)
    # dz covers the padded input's first m * s samples of each axis (the forward
    # never reads beyond them): zero-extend it to the padded length, then drop
    # the padding.
    for axis in (1, 2):
        (lo, hi), length = padding[axis - 1], x_shape[axis]
        extra = lo + length + hi - dz.shape[axis]
        if extra > 0:
            widths = [(0, 0)] * 4
            widths[axis] = (0, extra)
            dz = jnp.pad(dz, widths)
        dz = jax.lax.slice_in_dim(dz, lo, lo + length, axis=axis)
    return dz


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _conv2d_width_strided(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
                          padding: Padding2D, dilation: tuple[int, int],
                          precision: Any) -> jax.Array:
    """XLA's strided convolution and kernel gradient; the input gradient polyphase."""
    return _conv2d_xla(x, kernel, strides, padding, dilation, precision)


def _conv2d_width_strided_fwd(x, kernel, strides, padding, dilation, precision):
    return _conv2d_xla(x, kernel, strides, padding, dilation, precision), (x, kernel)


def _conv2d_width_strided_bwd(strides, padding, dilation, precision, residuals, dy):
    x, kernel = residuals
    _, kernel_vjp = jax.vjp(
        lambda k: _conv2d_xla(x, k, strides, padding, dilation, precision), kernel)
    dx = _conv2d_input_grad_polyphase(dy, kernel, x.shape, strides, padding, dilation,
                                      precision)
    return dx.astype(x.dtype), kernel_vjp(dy)[0]


_conv2d_width_strided.defvjp(_conv2d_width_strided_fwd, _conv2d_width_strided_bwd)


def conv2d(x: jax.Array, kernel: jax.Array, strides: Sequence[int] = (1, 1),
           padding: Sequence[tuple[int, int]] = ((0, 0), (0, 0)),
           dilation: Sequence[int] = (1, 1), precision: Any = None) -> jax.Array:
    """Zero-padded 2-D cross-correlation, channels last: `torch.nn.functional.conv2d`
    on NHWC, i.e. `lax.conv_general_dilated(x, kernel, strides, padding,
    rhs_dilation=dilation, dimension_numbers=("NHWC", "HWIO", "NHWC"))`.

    Equal to that in value and gradient (up to float rounding); only the forms
    differ, chosen for XLA:CPU (see the notes above `_DIMENSION_NUMBERS_2D`):
    (kh, 1) kernels at width stride 1 run as a matmul over height taps,
    convolutions with at most 16 channels on a width folded into channels,
    wider width-strided ones get a polyphase input gradient, the rest is XLA's
    own.
    The width-strided form is a `jax.custom_vjp`: reverse mode (also of a
    gradient, as in gradient penalties) works, forward mode (`jax.jvp`) does not.

    Args:
      x: [batch, h, w, in].
      kernel: [kh, kw, in, out].
      strides: (h, w) strides.
      padding: ((top, bottom), (left, right)) zeros, each >= 0.
      dilation: (h, w) kernel dilation.
      precision: `jax.lax` precision of the products.

    Returns:
      [batch, (h + top + bottom - (kh - 1) * dh - 1) // sh + 1, (likewise w), out].
    """
    strides = tuple(int(s) for s in strides)
    dilation = tuple(int(d) for d in dilation)
    padding = tuple((int(lo), int(hi)) for lo, hi in padding)
    if len(strides) != 2 or len(dilation) != 2 or len(padding) != 2:
        raise ValueError(f"conv2d: expected 2-D strides, padding and dilation, got {strides}, "
                         f"{padding}, {dilation}")
    if min(min(strides), min(dilation)) < 1 or min(min(p) for p in padding) < 0:
        raise ValueError(f"conv2d: strides and dilation must be >= 1 and padding >= 0, got "
                         f"{strides}, {dilation}, {padding}")
    if kernel.shape[1] == 1 and strides[1] == 1:
        return _conv2d_height_taps(x, kernel, strides, padding, dilation, precision)
    in_features, out_features = kernel.shape[2:]
    if max(in_features, out_features) <= _FOLD_MAX_CHANNELS:
        fold = _width_fold(in_features, out_features, strides[1])
        return _conv2d_width_folded(x, kernel, strides, padding, dilation, fold, precision)
    if strides[1] > 1:
        return _conv2d_width_strided(x, kernel, strides, padding, dilation, precision)
    return _conv2d_xla(x, kernel, strides, padding, dilation, precision)


def pad1d(x: jax.Array, left: int, right: int, mode: str = "constant") -> jax.Array:
    """Pads the time axis like EnCodec's `_pad1d`, small-input reflect workaround included.

    Reflect padding needs more samples than the pad; for shorter inputs EnCodec
    first appends zeros, reflects, and cuts the zeros' share off the end again.

    Args:
      x: [batch, time, channels].
      left, right: samples to add on each side.
      mode: "constant" (zeros), "reflect" or "replicate".

    Returns:
      [batch, left + time + right, channels].
    """
    if mode == "constant":
        return jnp.pad(x, ((0, 0), (left, right), (0, 0)))
    if mode == "replicate":
        return jnp.pad(x, ((0, 0), (left, right), (0, 0)), mode="edge")
    if mode != "reflect":
        raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {mode!r}")
    length, max_pad = x.shape[1], max(left, right)
    extra = max_pad - length + 1 if length <= max_pad else 0
    x = jnp.pad(x, ((0, 0), (0, extra), (0, 0)))
    padded = jnp.pad(x, ((0, 0), (left, right), (0, 0)), mode="reflect")
    return padded[:, :padded.shape[1] - extra]


def extra_padding(length: int, stride: int) -> int:
    """Right padding that makes a padded conv emit exactly ceil(length / stride) frames.

    This is EnCodec's `_get_extra_padding_for_conv1d` with padding_total =
    effective_kernel - stride substituted, where it reduces to rounding the length
    up to a multiple of the stride.
    """
    return -length % stride


def weight_norm(v: jax.Array, g: jax.Array, norm_axes: Sequence[int]) -> jax.Array:
    """`g * v / ||v||`, the norm taken over `norm_axes` (torch's `_weight_norm`)."""
    norm = jnp.sqrt(jnp.sum(jnp.square(v), axis=tuple(norm_axes), keepdims=True))
    return v * (g / norm)


def _torch_uniform(fan_in: int) -> Initializer:
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): torch's default for conv biases and LSTMs."""
    bound = 1.0 / math.sqrt(fan_in)
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound,
                                                                    bound)


# ----------------------------------------------------------------------------- shared pieces

# Initializations of the conv layers.
#   "torch": PyTorch's defaults, kernel U(+-1/sqrt(fan_in)) (variance 1/(3 fan_in)) and
#     bias U(+-1/sqrt(fan_in)). Each layer then shrinks a signal's variance about
#     threefold, so after SEANet's ~15 encoder convs a waveform of std 0.1 is
#     gone and the latents are the biases' constant (measured: latent std over
#     time 0.003 against 0.054 overall); training from there stalls.
#   "lecun": kernel variance 1/fan_in and zero biases; the waveform reaches the
#     latents (std over time 0.23 for the same input) and training starts at once.
INITS = ("lecun", "torch")


def _kernel_init(init: str, **axes: Any) -> Initializer:
    check_choice("param_init", init, INITS)
    scale = 1.0 if init == "lecun" else 1 / 3
    return nn.initializers.variance_scaling(scale, "fan_in", "uniform", **axes)


def _kernel(module: nn.Module, shape: tuple[int, int, int], gain_axis: int,
            kernel_init: Initializer) -> jax.Array:
    """Creates the (possibly weight-normalized) float32 kernel of a conv module.

    Args:
      module: the calling module (its `norm_type` picks the params).
      shape: [width, in, out].
      gain_axis: the kernel axis with one weight-norm gain per entry (torch's dim 0).
      kernel_init: initializer of `weight_v` / `weight`.

    Returns:
      The effective kernel, [width, in, out] float32.
    """
    names = (None, "conv_in", "conv_out")
    if module.norm_type != "weight_norm":
        return module.param("weight", nn.with_logical_partitioning(kernel_init, names), shape,
                            jnp.float32)
    v = module.param("weight_v", nn.with_logical_partitioning(kernel_init, names), shape,
                     jnp.float32)
    norm_axes = tuple(a for a in range(3) if a != gain_axis)
    g_shape = tuple(n if a == gain_axis else 1 for a, n in enumerate(shape))
    g_names = tuple(name if a == gain_axis else None for a, name in enumerate(names))
    # Like torch's weight_norm, start with g = ||v|| so the initial kernel is v itself.
    g_init = lambda key, shape, dtype=jnp.float32: jnp.sqrt(
        jnp.sum(jnp.square(v), axis=norm_axes, keepdims=True)).astype(dtype)
    g = module.param("weight_g", nn.with_logical_partitioning(g_init, g_names), g_shape,
                     jnp.float32)
    return weight_norm(v, g, norm_axes)


def _bias(module: nn.Module, features: int, fan_in: int) -> jax.Array:
    init = _torch_uniform(fan_in) if module.param_init == "torch" else nn.initializers.zeros
    return module.param("bias", nn.with_logical_partitioning(init, ("conv_out",)),
                        (features,), jnp.float32)


def _time_group_norm(x: jax.Array, dtype: Any) -> jax.Array:
    """GroupNorm with one group: statistics over time and all channels, as torch's GroupNorm(1, C)."""
    return nn.GroupNorm(
        num_groups=1, epsilon=1e-5, dtype=dtype, param_dtype=jnp.float32,
        use_fast_variance=False, name="norm",
        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("conv_out",)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("conv_out",)))(x)


def _check_streamable(module: nn.Module) -> None:
    if not module.causal:
        raise ValueError(f"{type(module).__name__}: streaming needs causal=True (a non-causal "
                         "conv looks at future samples)")
    if module.norm_type == "time_group_norm":
        raise ValueError(f"{type(module).__name__}: streaming is impossible with "
                         "norm_type='time_group_norm' (its statistics span the whole signal)")


# ----------------------------------------------------------------------------- modules


class Conv1d(nn.Module):
    """EnCodec's padded conv: output length ceil(time / stride), causal or centered.

    Causal convs put all `padding_total = (kernel_size - 1) * dilation + 1 - stride`
    padding on the left; non-causal ones split it with the extra sample on the
    left. Either way the right side also gets `extra_padding` so that the last
    partial window is computed rather than dropped.

    Attributes:
      features: output channels.
      kernel_size: taps.
      stride: hop between output frames.
      dilation: spacing between taps.
      causal: pad only on the left.
      pad_mode: "reflect" (EnCodec's default), "constant" (zeros) or "replicate".
      norm_type: "weight_norm", "time_group_norm" (GroupNorm(1) after the conv) or "none".
      use_bias: add a bias.
      param_init: "lecun" (kernel variance 1/fan_in, zero bias) or "torch" (PyTorch's
        defaults); see `INITS`.
      dtype: compute dtype (params stay float32).
      precision: `jax.lax` precision of the convolution.
    """

    features: int
    kernel_size: int
    stride: int = 1
    dilation: int = 1
    causal: bool = False
    pad_mode: str = "reflect"
    norm_type: str = "weight_norm"
    use_bias: bool = True
    param_init: str = "lecun"
    dtype: Any = jnp.float32
    precision: Any = None

    @property
    def padding_total(self) -> int:
        """Padding added besides the extra padding: effective kernel minus stride."""
        return (self.kernel_size - 1) * self.dilation + 1 - self.stride

    @nn.compact
    def __call__(self, x: jax.Array, streaming: bool = False) -> jax.Array:
        """Convolves.

        Args:
          x: [batch, time, in].
          streaming: treat x as the next chunk of a stream; needs `mutable=["cache"]`.
            Every chunk but the last must have a length divisible by `stride`.

        Returns:
          [batch, ceil(time / stride), features].
        """
        check_choice("norm_type", self.norm_type, NORM_TYPES)
        check_choice("pad_mode", self.pad_mode, PAD_MODES)
        if self.padding_total < 0:
            raise ValueError(f"Conv1d: effective kernel size {self.padding_total + self.stride} "
                             f"is smaller than the stride {self.stride}")
        in_features = x.shape[-1]
        kernel = _kernel(self, (self.kernel_size, in_features, self.features), gain_axis=2,
                         kernel_init=_kernel_init(self.param_init))
        x = x.astype(self.dtype)
        extra = extra_padding(x.shape[1], self.stride)
        if streaming:
            _check_streamable(self)
            x = pad1d(self._with_left_context(x), 0, extra, self.pad_mode)
        else:
            left, right = self._paddings()
            x = pad1d(x, left, right + extra, self.pad_mode)
        y = conv1d(x, kernel.astype(self.dtype), self.stride, self.dilation, self.precision)
        if self.use_bias:
            y = y + _bias(self, self.features, in_features * self.kernel_size).astype(self.dtype)
        if self.norm_type == "time_group_norm":
            y = _time_group_norm(y, self.dtype)
        return y

    def _paddings(self) -> tuple[int, int]:
        """(left, right) padding of an offline call, before the extra padding."""
        if self.causal:
            return self.padding_total, 0
        right = self.padding_total // 2
        return self.padding_total - right, right

    def _with_left_context(self, x: jax.Array) -> jax.Array:
        """Prepends the stream's last `padding_total` samples (or, on the first chunk,
        the padding an offline call would add) and keeps the new tail for the next chunk."""
        pad = self.padding_total
        if pad == 0:
            return x
        batch, _, channels = x.shape
        buffer = self.variable("cache", "buffer", jnp.zeros, (batch, pad, channels), x.dtype)
        started = self.variable("cache", "started", jnp.zeros, (), jnp.bool_)
        # On the first chunk the left padding comes from the chunk itself (reflect
        # reads samples 1..pad), exactly as the offline call pads the whole signal.
        first = pad1d(x, pad, 0, self.pad_mode)[:, :pad]
        x = jnp.concatenate([jnp.where(started.value, buffer.value, first), x], axis=1)
        buffer.value = x[:, -pad:]
        started.value = jnp.ones((), jnp.bool_)
        return x


class ConvTranspose1d(nn.Module):
    """EnCodec's transposed conv: output length time * stride after trimming.

    The full transposed conv makes (time - 1) * stride + kernel_size samples; the
    `padding_total = kernel_size - stride` surplus is trimmed from the right
    (causal, `ceil(padding_total * trim_right_ratio)` of it) or split with the
    extra sample on the left (non-causal).

    Attributes:
      features: output channels.
      kernel_size: taps (EnCodec uses 2 * stride).
      stride: upsampling factor.
      causal: trim on the right.
      trim_right_ratio: share of the surplus trimmed on the right when causal.
      norm_type, use_bias, param_init, dtype, precision: as `Conv1d`'s.
    """

    features: int
    kernel_size: int
    stride: int = 1
    causal: bool = False
    trim_right_ratio: float = 1.0
    norm_type: str = "weight_norm"
    use_bias: bool = True
    param_init: str = "lecun"
    dtype: Any = jnp.float32
    precision: Any = None

    @property
    def padding_total(self) -> int:
        """Samples the full transposed conv makes beyond time * stride."""
        return self.kernel_size - self.stride

    @nn.compact
    def __call__(self, x: jax.Array, streaming: bool = False) -> jax.Array:
        """Upsamples.

        Args:
          x: [batch, time, in].
          streaming: treat x as the next chunk of a stream; needs `mutable=["cache"]`.

        Returns:
          [batch, time * stride, features].
        """
        check_choice("norm_type", self.norm_type, NORM_TYPES)
        if self.padding_total < 0:
            raise ValueError(f"ConvTranspose1d: kernel_size {self.kernel_size} is smaller than "
                             f"the stride {self.stride}")
        if not (self.causal or self.trim_right_ratio == 1.0):
            raise ValueError("ConvTranspose1d: trim_right_ratio != 1.0 only makes sense for "
                             "causal convolutions")
        in_features = x.shape[-1]
        # torch's fan-in for transposed convs counts the *output* channels.
        kernel_init = _kernel_init(self.param_init, in_axis=2, out_axis=1)
        kernel = _kernel(self, (self.kernel_size, in_features, self.features), gain_axis=1,
                         kernel_init=kernel_init)
        bias = (_bias(self, self.features, self.features * self.kernel_size)
                if self.use_bias else jnp.zeros((self.features,), jnp.float32))
        length = x.shape[1]
        y = conv_transpose1d(x.astype(self.dtype), kernel.astype(self.dtype), self.stride,
                             self.precision)
        if streaming:
            _check_streamable(self)
            return self._overlap_add(y, length) + bias.astype(self.dtype)
        y = y + bias.astype(self.dtype)
        if self.norm_type == "time_group_norm":
            y = _time_group_norm(y, self.dtype)  # before trimming, as EnCodec does
        left, right = self._trims()
        return y[:, left:y.shape[1] - right]

    def _trims(self) -> tuple[int, int]:
        """(left, right) samples cut from the full transposed conv output."""
        if self.causal:
            right = math.ceil(self.padding_total * self.trim_right_ratio)
        else:
            right = self.padding_total // 2
        return self.padding_total - right, right

    def _overlap_add(self, y: jax.Array, length: int) -> jax.Array:
        """Adds the previous chunk's tail into this chunk's head and keeps the new tail.

        The first `length * stride` samples of y receive no contribution from
        later chunks, so they are final; the rest is carried (without bias, which
        the caller adds once per emitted sample).
        """
        if self.trim_right_ratio != 1.0:
            raise ValueError("ConvTranspose1d: streaming needs trim_right_ratio == 1.0 (a "
                             "left trim would delay the output past the chunk)")
        pad = self.padding_total
        if pad == 0:
            return y
        batch, _, channels = y.shape
        overlap = self.variable("cache", "overlap", jnp.zeros, (batch, pad, channels),
                                jnp.float32)
        # Accumulate in float32 so chunked and offline sums agree in low precision too.
        y = y.astype(jnp.float32).at[:, :pad].add(overlap.value)
        overlap.value = y[:, length * self.stride:]
        return y[:, :length * self.stride].astype(self.dtype)


class LSTM(nn.Module):
    """EnCodec's skip LSTM: y = lstm(x) + x, a stack of PyTorch-compatible LSTMs.

    Gates follow PyTorch's order (input, forget, cell, output) and both biases
    (b_ih, b_hh) are kept, so `torch.nn.LSTM` weights import one to one
    (transposed to [in, 4 * hidden]). Hidden size equals the input size.

    Attributes:
      num_layers: stacked LSTM layers (0 makes the block an identity).
      dtype: compute dtype of the matmuls; the cell state is float32.
      precision: `jax.lax` precision of the matmuls.
    """

    num_layers: int = 2
    dtype: Any = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, streaming: bool = False) -> jax.Array:
        """Runs the stack over time.

        Args:
          x: [batch, time, dim].
          streaming: start from (and save) the carried (h, c) in the `cache` collection.

        Returns:
          [batch, time, dim].
        """
        x = x.astype(self.dtype)
        if self.num_layers == 0:
            return x
        h = x
        for layer in range(self.num_layers):
            h = self._layer(h, layer, streaming)
        return h + x

    def _layer(self, x: jax.Array, layer: int, streaming: bool) -> jax.Array:
        """One LSTM layer: [batch, time, dim] -> [batch, time, dim]."""
        batch, _, dim = x.shape
        init = _torch_uniform(dim)

        def param(name, shape, names):
            return self.param(name, nn.with_logical_partitioning(init, names), shape, jnp.float32)

        w_ih = param(f"weight_ih_l{layer}", (dim, 4 * dim), ("conv_in", "conv_out"))
        w_hh = param(f"weight_hh_l{layer}", (dim, 4 * dim), ("conv_in", "conv_out"))
        b_ih = param(f"bias_ih_l{layer}", (4 * dim,), ("conv_out",))
        b_hh = param(f"bias_hh_l{layer}", (4 * dim,), ("conv_out",))
        # The input projection of all steps at once; only h @ W_hh stays in the loop.
        gates_x = jnp.einsum("btd,dg->btg", x, w_ih.astype(self.dtype), precision=self.precision)
        gates_x = gates_x.astype(jnp.float32) + b_ih + b_hh
        w_hh = w_hh.astype(self.dtype)

        def step(carry, gx):
            h, c = carry
            z = gx + jnp.dot(h.astype(self.dtype), w_hh,
                             precision=self.precision).astype(jnp.float32)
            i, f, g, o = jnp.split(z, 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), h

        zeros = jnp.zeros((batch, dim), jnp.float32)
        if streaming:
            h0 = self.variable("cache", f"h_l{layer}", jnp.zeros, (batch, dim), jnp.float32)
            c0 = self.variable("cache", f"c_l{layer}", jnp.zeros, (batch, dim), jnp.float32)
            carry = (h0.value, c0.value)
        else:
            carry = (zeros, zeros)
        carry, hs = jax.lax.scan(step, carry, jnp.swapaxes(gates_x, 0, 1))
        if streaming:
            h0.value, c0.value = carry
        return jnp.swapaxes(hs, 0, 1).astype(self.dtype)
