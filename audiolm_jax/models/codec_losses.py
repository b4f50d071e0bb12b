"""The codec's training losses and EnCodec's gradient-norm loss balancer.

Reconstruction losses compare an estimate with its target, both
`[batch, samples, channels]` (or `[batch, samples]` for mono):
`time_l1`, `multi_resolution_mel_loss` (EnCodec's multi-scale mel loss) and
`multi_resolution_stft_loss` (spectral convergence + log magnitude, as
Parallel WaveGAN). Adversarial losses take the `(logits, features)` lists
returned by `models.discriminators`. Everything is a pure function computed in
float32 and returns a float32 scalar.

The balancer
------------
EnCodec trains its generator on several losses of unrelated scales (a
waveform L1, a mel loss, adversarial and feature-matching terms). Instead of
tuning their weights by hand it rescales, for each loss `i`, the gradient
`g_i = d loss_i / d y` with respect to the decoder output `y`, so that

    G = sum_i total_norm * (w_i / sum_j w_j) * g_i / ema(||g_i||)

and back-propagates `G` through the generator. A weight is then the share of
the output gradient that its loss provides, whatever the loss's scale.

In JAX this is two `vjp`s: the generator's (parameters -> output `y`) and,
inside `LossBalancer.balanced_output_grad`, one per balanced loss
(`y` -> loss). Losses that do not go through `y` or are not balanced (the
quantizer's commitment loss) enter the generator's `vjp` as a cotangent of
their own, so one backward pass gives the parameter gradient of everything::

    balancer = LossBalancer({"l1": 0.1, "msspec": 2.0, "adv": 4.0, "feat": 4.0})
    (y, commit), gen_vjp = jax.vjp(lambda p: codec.apply(p, x), params)
    g_y, bal_state, metrics = balancer.balanced_output_grad(
        lambda y: generator_losses(y, x, disc_params), y, bal_state)
    (param_grads,) = gen_vjp((g_y, jnp.asarray(commit_weight, commit.dtype)))

`bal_state` (from `balancer.init()`) holds the EMA of the gradient norms and
belongs in the train state, so a resumed run continues the same averages.
Call the balancer inside `jit`: each loss gets its own `vjp` of
`losses_fn(y)[name]`, and XLA's common-subexpression elimination shares the
forward computation (the discriminator on `y`) between them.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from audiolm_jax.audio import spectral

# --------------------------------------------------------------- reconstruction


def _channels_first(audio: jax.Array) -> jax.Array:
    """[batch, samples] or [batch, samples, channels] -> [batch, channels, samples] float32."""
    audio = jnp.asarray(audio, jnp.float32)
    if audio.ndim == 2:
        return audio[:, None, :]
    if audio.ndim != 3:
        raise ValueError(f"expected audio [batch, samples, channels], got shape {audio.shape}")
    return jnp.moveaxis(audio, -1, 1)


def time_l1(estimate: jax.Array, target: jax.Array) -> jax.Array:
    """Mean absolute error on the waveform.

    Args:
      estimate, target: [batch, samples, channels] (any equal shapes).

    Returns:
      float32 scalar.
    """
    return jnp.mean(jnp.abs(jnp.asarray(estimate, jnp.float32) - jnp.asarray(target, jnp.float32)))


def _power_spectrum(audio: jax.Array, n_fft: int, hop_length: int, normalized: bool) -> jax.Array:
    """EnCodec's mel-loss framing: [..., samples] -> [..., ceil(samples / hop), n_fft//2+1].

    The signal is reflect-padded by `(n_fft - hop) // 2` on each side and
    zero-padded on the right until the last frame is full, then framed without
    centring, so the frame count is `ceil(samples / hop)` for every window size.
    """
    pad = (n_fft - hop_length) // 2
    widths = [(0, 0)] * (audio.ndim - 1)
    audio = jnp.pad(audio, widths + [(pad, pad)], mode="reflect")
    length = audio.shape[-1]
    frames = max(1, math.ceil((length - n_fft) / hop_length) + 1)
    extra = (frames - 1) * hop_length + n_fft - length
    if extra > 0:
        audio = jnp.pad(audio, widths + [(0, extra)])
    spec = spectral.stft(audio, n_fft, hop_length, center=False)
    # |X|^2 as re^2 + im^2: differentiable at 0, unlike jnp.abs of a complex zero.
    power = jnp.square(spec.real) + jnp.square(spec.imag)
    if normalized:
        power = power / np.float32(np.sum(np.square(spectral.hann_window(n_fft), dtype=np.float64)))
    return power


def _htk_mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float,
                        fmax: float | None) -> np.ndarray:
    """[n_fft//2+1, n_mels] HTK-scale, unnormalized triangles: torchaudio's MelScale defaults."""
    with warnings.catch_warnings():
        # With 64 mels the smallest windows (32, 64 samples) have fewer FFT bins
        # than filters, so some filters are empty; that is expected, and the
        # empty bands are equal (zero) for estimate and target alike.
        warnings.simplefilter("ignore", UserWarning)
        return spectral.mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax, True, None)


def multi_resolution_mel_loss(estimate: jax.Array, target: jax.Array, sample_rate: int,
                              range_start: int = 5, range_end: int = 11, n_mels: int = 64,
                              fmin: float = 0.0, fmax: float | None = None,
                              normalized: bool = True, alphas: bool = False,
                              floor: float = 1e-5) -> jax.Array:
    """EnCodec's multi-scale mel-spectrogram loss.

    For each window size `n = 2^i`, `i` in `[range_start, range_end]` (both
    included), hop `n / 4`:
    `mean|M_n(x) - M_n(y)| + alpha_i * mean((log10(floor + M_n(x)) - log10(floor + M_n(y)))^2)`
    with `M_n` the mel power spectrogram (HTK mel scale, unnormalized filters,
    periodic Hann window) and `alpha_i = sqrt(n - 1)` if `alphas` else 1.
    With `normalized`, the STFT is divided by the window's L2 norm and the sum
    over scales by `sum_i (alpha_i + 1)`.

    Args:
      estimate, target: [batch, samples, channels] or [batch, samples];
        `samples > (2^range_end - 2^range_end / 4) / 2` (reflection padding).
      sample_rate: Hz, for the mel scale.
      range_start, range_end: log2 of the smallest and largest window.
      n_mels: mel bands per scale.
      fmin, fmax: mel band edges in Hz (fmax None: Nyquist).
      normalized: see above.
      alphas: weigh the log term by `sqrt(n - 1)`.
      floor: added before the log.

    Returns:
      float32 scalar.
    """
    x, y = _channels_first(estimate), _channels_first(target)
    loss, total = jnp.zeros((), jnp.float32), 0.0
    for i in range(range_start, range_end + 1):
        n_fft = 2 ** i
        fb = _htk_mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax)
        mel_x = _power_spectrum(x, n_fft, n_fft // 4, normalized) @ fb   # [b, c, frames, mels]
        mel_y = _power_spectrum(y, n_fft, n_fft // 4, normalized) @ fb
        alpha = math.sqrt(n_fft - 1) if alphas else 1.0
        l1 = jnp.mean(jnp.abs(mel_x - mel_y))
        l2 = jnp.mean(jnp.square(jnp.log10(floor + mel_x) - jnp.log10(floor + mel_y)))
        loss = loss + l1 + alpha * l2
        total += alpha + 1.0
    return loss / total if normalized else loss


def multi_resolution_stft_loss(estimate: jax.Array, target: jax.Array,
                               n_ffts: Sequence[int] = (1024, 2048, 512),
                               hop_lengths: Sequence[int] = (120, 240, 50),
                               win_lengths: Sequence[int] = (600, 1200, 240),
                               factor_sc: float = 1.0, factor_mag: float = 1.0,
                               eps: float = 1e-7) -> jax.Array:
    """Multi-resolution STFT loss (Parallel WaveGAN), averaged over resolutions.

    Per resolution, with `|X|` the STFT magnitude (centred frames, reflection
    padding, periodic Hann window of `win_length` centred in `n_fft`):
    spectral convergence `||Y| - |X||_F / ||Y||_F` (over the whole batch) and
    log magnitude `mean|log|Y| - log|X||`, magnitudes floored at `sqrt(eps)`.

    Args:
      estimate, target: [batch, samples, channels] or [batch, samples];
        `samples > max(n_ffts) // 2`.
      n_ffts, hop_lengths, win_lengths: one entry per resolution.
      factor_sc, factor_mag: weights of the two terms.
      eps: floor on the squared magnitude (keeps log and sqrt finite).

    Returns:
      float32 scalar `factor_sc * sc + factor_mag * mag`, each averaged over resolutions.
    """
    if not len(n_ffts) == len(hop_lengths) == len(win_lengths):
        raise ValueError("n_ffts, hop_lengths and win_lengths must have the same length")
    x, y = _channels_first(estimate), _channels_first(target)

    def magnitude(audio: jax.Array, n_fft: int, hop: int, win: int) -> jax.Array:
        spec = spectral.stft(audio, n_fft, hop, win, center=True, pad_mode="reflect")
        return jnp.sqrt(jnp.maximum(jnp.square(spec.real) + jnp.square(spec.imag), eps))

    sc = mag = jnp.zeros((), jnp.float32)
    for n_fft, hop, win in zip(n_ffts, hop_lengths, win_lengths):
        mag_x, mag_y = magnitude(x, n_fft, hop, win), magnitude(y, n_fft, hop, win)
        sc = sc + jnp.linalg.norm((mag_y - mag_x).ravel()) / jnp.linalg.norm(mag_y.ravel())
        mag = mag + jnp.mean(jnp.abs(jnp.log(mag_y) - jnp.log(mag_x)))
    n = len(n_ffts)
    return factor_sc * sc / n + factor_mag * mag / n


# ------------------------------------------------------------------ adversarial


def _as_list(logits: jax.Array | Sequence[jax.Array]) -> list[jax.Array]:
    return [logits] if isinstance(logits, jax.Array | np.ndarray) else list(logits)


def hinge_discriminator_loss(real_logits: jax.Array | Sequence[jax.Array],
                             fake_logits: jax.Array | Sequence[jax.Array]) -> jax.Array:
    """Hinge loss of the discriminator, averaged over sub-discriminators.

    `1/K sum_k [mean(relu(1 - D_k(x))) + mean(relu(1 + D_k(G(z))))]`.

    Args:
      real_logits, fake_logits: one array (any shape) per sub-discriminator,
        or a single array; fakes should be `stop_gradient`-ed by the caller
        (or produced from a fixed generator output).

    Returns:
      float32 scalar.
    """
    real, fake = _as_list(real_logits), _as_list(fake_logits)
    if len(real) != len(fake) or not real:
        raise ValueError(f"got {len(real)} real and {len(fake)} fake logit arrays")
    per_disc = [jnp.mean(jax.nn.relu(1.0 - r.astype(jnp.float32))) +
                jnp.mean(jax.nn.relu(1.0 + f.astype(jnp.float32))) for r, f in zip(real, fake)]
    return sum(per_disc) / len(per_disc)


def hinge_generator_loss(fake_logits: jax.Array | Sequence[jax.Array],
                         clipped: bool = True) -> jax.Array:
    """Adversarial loss of the generator, averaged over sub-discriminators.

    Args:
      fake_logits: one array per sub-discriminator (or a single array).
      clipped: `mean(relu(1 - D_k))`, the EnCodec paper's form (no gradient once
        a fake is scored above the margin); False gives `-mean(D_k)`, the
        classic hinge-GAN generator loss that audiocraft's "hinge" uses.

    Returns:
      float32 scalar.
    """
    fake = [f.astype(jnp.float32) for f in _as_list(fake_logits)]
    if clipped:
        per_disc = [jnp.mean(jax.nn.relu(1.0 - f)) for f in fake]
    else:
        per_disc = [-jnp.mean(f) for f in fake]
    return sum(per_disc) / len(per_disc)


def feature_matching_loss(real_feats: Sequence[Any], fake_feats: Sequence[Any],
                          eps: float = 1e-8) -> jax.Array:
    """Relative L1 feature matching (EnCodec).

    `1/(K L) sum_k sum_l mean|D_k^l(x) - D_k^l(G(z))| / (mean|D_k^l(x)| + eps)`:
    dividing each layer's L1 by the mean magnitude of its real activations
    keeps layers of different scales on an equal footing.

    Args:
      real_feats, fake_feats: per sub-discriminator, a list of layer
        activations (the `features` output of a discriminator); a flat list of
        arrays is taken as one sub-discriminator. Shapes must match pairwise.
      eps: keeps the ratio finite for an all-zero real activation.

    Returns:
      float32 scalar: mean over layers, then over sub-discriminators.
    """
    if real_feats and isinstance(real_feats[0], jax.Array | np.ndarray):
        real_feats, fake_feats = [real_feats], [fake_feats]
    if len(real_feats) != len(fake_feats) or not real_feats:
        raise ValueError(f"got {len(real_feats)} real and {len(fake_feats)} fake feature lists")
    per_disc = []
    for real_layers, fake_layers in zip(real_feats, fake_feats):
        if len(real_layers) != len(fake_layers) or not real_layers:
            raise ValueError("real and fake feature lists differ in length or are empty")
        terms = []
        for r, f in zip(real_layers, fake_layers):
            if r.shape != f.shape:
                raise ValueError(f"feature shapes differ: {r.shape} vs {f.shape}")
            r, f = r.astype(jnp.float32), f.astype(jnp.float32)
            terms.append(jnp.mean(jnp.abs(r - f)) / (jnp.mean(jnp.abs(r)) + eps))
        per_disc.append(sum(terms) / len(terms))
    return sum(per_disc) / len(per_disc)


# --------------------------------------------------------------------- balancer

BalancerState = dict[str, dict[str, jax.Array]]


@dataclasses.dataclass(frozen=True)
class LossBalancer:
    """EnCodec's gradient-norm loss balancer, as pure functions of an explicit state.

    The balanced gradient with respect to the generator output `y` is
    `G = sum_i s_i g_i` with `g_i = d loss_i / d y` and

    * `balance_grads=True`: `s_i = total_norm * (w_i / sum_j w_j) / (epsilon + ema_i)`,
      `ema_i` the bias-corrected exponential moving average of `||g_i||`;
      on average `s_i ||g_i||` is then `total_norm * w_i / sum_j w_j`.
    * `balance_grads=False`: `s_i = w_i`, the plain weighted sum.

    The EMA is bias-corrected (`sum_t beta^(T-t) n_t / sum_t beta^(T-t)`), so
    its first value is the first norm itself. Losses with weight 0 are
    evaluated (their values are reported) but not differentiated.

    Attributes:
      weights: loss name -> weight; every loss that `losses_fn` returns must
        have one.
      balance_grads: rescale by the gradient norms (else plain weighted sum).
      total_norm: target norm of the summed balanced gradient.
      ema_decay: EMA decay (beta) of the norms.
      per_batch_item: norm per batch item (over all but the first axis), then
        averaged over the batch, rather than one norm over the whole batch.
      epsilon: added to the averaged norm before dividing.
    """

    weights: Mapping[str, float]
    balance_grads: bool = True
    total_norm: float = 1.0
    ema_decay: float = 0.999
    per_batch_item: bool = True
    epsilon: float = 1e-12

    def init(self) -> BalancerState:
        """Zero EMA state: `{"norm_sum": {name: 0.}, "weight_sum": {name: 0.}}` float32 scalars."""
        zeros = {name: jnp.zeros((), jnp.float32) for name in self.weights}
        return {"norm_sum": dict(zeros), "weight_sum": dict(zeros)}

    def _norm(self, grad: jax.Array) -> jax.Array:
        grad = grad.astype(jnp.float32)
        if self.per_batch_item and grad.ndim > 1:
            return jnp.mean(jnp.sqrt(jnp.sum(jnp.square(grad), axis=tuple(range(1, grad.ndim)))))
        return jnp.sqrt(jnp.sum(jnp.square(grad)))

    def balance(self, grads: Mapping[str, jax.Array], state: BalancerState,
                losses: Mapping[str, jax.Array] | None = None
                ) -> tuple[jax.Array, BalancerState, dict[str, jax.Array]]:
        """Combines precomputed per-loss gradients.

        Args:
          grads: loss name -> gradient with respect to `y`, all the same shape.
          state: from `init` or the previous step.
          losses: loss values, only for the `effective_loss` metric.

        Returns:
          out_grad: the combined gradient, shape and dtype of the grads.
          new_state: the updated EMA.
          metrics: `grad_norm_<name>` (this step's norm), `ratio_<name>` (its
            share of the summed EMA norms), `scale_<name>` (`s_i`) and, with
            `losses`, `effective_loss = sum_i s_i * loss_i`.
        """
        unknown = set(grads) - set(self.weights)
        if unknown:
            raise KeyError(f"losses {sorted(unknown)} have no weight in {dict(self.weights)}")
        if not grads:
            raise ValueError("no gradients to balance")
        beta = jnp.float32(self.ema_decay)
        norm_sum, weight_sum = dict(state["norm_sum"]), dict(state["weight_sum"])
        avg, metrics = {}, {}
        for name, grad in grads.items():
            norm = self._norm(grad)
            norm_sum[name] = beta * state["norm_sum"][name] + norm
            weight_sum[name] = beta * state["weight_sum"][name] + 1.0
            avg[name] = norm_sum[name] / weight_sum[name]
            metrics[f"grad_norm_{name}"] = norm
        # As EnCodec, the total is approximated by the sum of the norms (exact
        # only if the gradients were orthogonal); it only feeds the ratio metric.
        total = sum(avg.values())
        total_weight = sum(float(self.weights[name]) for name in grads)
        if total_weight <= 0:
            raise ValueError(f"weights of {sorted(grads)} sum to {total_weight}; need > 0")
        out_grad = None
        effective = jnp.zeros((), jnp.float32)
        for name, grad in grads.items():
            if self.balance_grads:
                desired_ratio = float(self.weights[name]) / total_weight
                scale = desired_ratio * self.total_norm / (self.epsilon + avg[name])
            else:
                scale = jnp.float32(self.weights[name])
            term = scale.astype(grad.dtype) * grad
            out_grad = term if out_grad is None else out_grad + term
            metrics[f"ratio_{name}"] = avg[name] / total
            metrics[f"scale_{name}"] = scale
            if losses is not None:
                effective = effective + scale * jax.lax.stop_gradient(
                    jnp.asarray(losses[name], jnp.float32))
        if losses is not None:
            metrics["effective_loss"] = effective
        return out_grad, {"norm_sum": norm_sum, "weight_sum": weight_sum}, metrics

    def balanced_output_grad(self, losses_fn: Callable[[jax.Array], Any], y: jax.Array,
                             state: BalancerState, has_aux: bool = False):
        """Balanced gradient of several losses with respect to the generator output.

        Args:
          losses_fn: `y -> {name: scalar loss}` (or `(dict, aux)` with
            `has_aux`); everything else it needs (target audio, discriminator
            params) is closed over and treated as constant.
          y: the generator output, e.g. [batch, samples, channels].
          state: balancer state.
          has_aux: `losses_fn` returns `(losses, aux)`.

        Returns:
          `(grad_y, new_state, metrics)`, plus `aux` last with `has_aux`.
          `grad_y` has `y`'s shape and dtype; metrics hold each loss value under
          its name and those of `balance` (`effective_loss` included).
        """
        if has_aux:
            losses, aux = losses_fn(y)
        else:
            losses, aux = losses_fn(y), None
        active = [name for name in losses if float(self.weights.get(name, 0.0)) != 0.0]
        unknown = set(losses) - set(self.weights)
        if unknown:
            raise KeyError(f"losses {sorted(unknown)} have no weight in {dict(self.weights)}")
        grads = {}
        for name in active:
            # One vjp per loss: each backward pass touches only its own loss, and
            # under jit the shared forward work is deduplicated by XLA.
            def single(y_, name=name):
                out = losses_fn(y_)
                return (out[0] if has_aux else out)[name]

            _, vjp_fn = jax.vjp(single, y)
            (grads[name],) = vjp_fn(jnp.ones((), jnp.result_type(losses[name])))
        if grads:
            grad_y, new_state, metrics = self.balance(grads, state, losses)
        else:
            grad_y, new_state, metrics = jnp.zeros_like(y), state, {}
        # Weight-0 losses keep their EMA untouched but stay in the state.
        new_state = {key: {**state[key], **new_state[key]} for key in state}
        metrics.update({name: jnp.asarray(value, jnp.float32) for name, value in losses.items()})
        if has_aux:
            return grad_y, new_state, metrics, aux
        return grad_y, new_state, metrics
