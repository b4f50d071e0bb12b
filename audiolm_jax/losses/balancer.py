"""EnCodec's gradient-norm loss balancer.

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
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

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
                             state: BalancerState, has_aux: bool = False,
                             precomputed: Mapping[str, tuple[jax.Array, jax.Array]] | None = None):
        """Balanced gradient of several losses with respect to the generator output.

        Args:
          losses_fn: `y -> {name: scalar loss}` (or `(dict, aux)` with
            `has_aux`); everything else it needs (target audio, discriminator
            params) is closed over and treated as constant.
          y: the generator output, e.g. [batch, samples, channels].
          state: balancer state.
          has_aux: `losses_fn` returns `(losses, aux)`.
          precomputed: more losses, `name -> (value, d value / d y)`, whose
            gradients the caller already has (the adversarial terms, from one
            discriminator pass that also serves the discriminator's update).

        Returns:
          `(grad_y, new_state, metrics)`, plus `aux` last with `has_aux`.
          `grad_y` has `y`'s shape and dtype; metrics hold each loss value under
          its name and those of `balance` (`effective_loss` included).
        """
        if has_aux:
            losses, aux = losses_fn(y)
        else:
            losses, aux = losses_fn(y), None
        precomputed = dict(precomputed or {})
        overlap = set(losses) & set(precomputed)
        if overlap:
            raise KeyError(f"losses {sorted(overlap)} are both computed and precomputed")
        own = [name for name in losses if float(self.weights.get(name, 0.0)) != 0.0]
        losses = {**losses, **{name: value for name, (value, _) in precomputed.items()}}
        unknown = set(losses) - set(self.weights)
        if unknown:
            raise KeyError(f"losses {sorted(unknown)} have no weight in {dict(self.weights)}")
        grads = {}
        for name in own:
            # One vjp per loss: each backward pass touches only its own loss, and
            # under jit the shared forward work is deduplicated by XLA.
            def single(y_, name=name):
                out = losses_fn(y_)
                return (out[0] if has_aux else out)[name]

            _, vjp_fn = jax.vjp(single, y)
            (grads[name],) = vjp_fn(jnp.ones((), jnp.result_type(losses[name])))
        for name, (_, grad) in precomputed.items():
            if float(self.weights.get(name, 0.0)) != 0.0:
                grads[name] = grad
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
