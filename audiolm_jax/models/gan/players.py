"""Both players' gradients from one discriminator forward on each of real and fake audio.

A GAN step written as two updates runs a discriminator four times: on the fake
and the real audio for the generator (feature matching needs the real
activations), then on both again for the discriminator's own update. Within
one step the discriminator's parameters do not change between the two
updates, so those are the same two forwards. `adversarial_gradients` runs
each once (`discriminator_pass`) and differentiates it for both players:

    real forward  D(x)  -- vjp -> discriminator params (hinge on real logits)
    fake forward  D(y)  -- vjp -> y                    (the generator's loss)
                        -- vjp -> discriminator params (hinge on fake logits)

The maths is that of the two-update step (tests/test_vocoder_training.py and
tests/test_codec_training.py check it against `jax.grad` of the written-out
losses); only the work changes.
Inside `jit`, the cotangent a call does not ask for is dead code: the
generator's pass computes no parameter gradients and the discriminator's no
gradient of the audio.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from audiolm_jax import losses as losses_lib
from audiolm_jax.models.gan.discriminators import DiscriminatorOutput

# (params, audio [batch, samples, channels]) -> (logits per sub-discriminator,
# feature maps per sub-discriminator per layer).
ApplyFn = Callable[[Any, jax.Array], DiscriminatorOutput]


@dataclasses.dataclass(frozen=True)
class DiscriminatorPass:
    """One discriminator's forwards on real and fake audio, and what both players take.

    Attributes:
      fake_logits, fake_features: the discriminator's outputs on the fake audio.
      real_features: its feature maps on the real audio, as constants.
      discriminator_loss: float32 scalar, the hinge loss on real against fake
        (`losses.hinge_discriminator_loss`).
      discriminator_grads: d discriminator_loss / d params, the params' tree.
      fake_vjp: `(cotangent of (fake_logits, fake_features)) -> d / d fake`.
    """

    fake_logits: list
    fake_features: list
    real_features: list
    discriminator_loss: jax.Array
    discriminator_grads: Any
    fake_vjp: Callable[[tuple[list, list]], jax.Array]

    def generator_grad(self, loss_fn: Callable[[list, list], tuple[jax.Array, Any]]
                       ) -> tuple[jax.Array, Any, jax.Array]:
        """`loss_fn(fake_logits, fake_features) -> (scalar, aux)` ->
        `(value, aux, d value / d fake)`, through this pass's fake forward."""
        (value, aux), cotangent = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
            self.fake_logits, self.fake_features)
        return value, aux, self.fake_vjp(cotangent)


def discriminator_pass(apply_fn: ApplyFn, params: Any, real: jax.Array, fake: jax.Array
                       ) -> DiscriminatorPass:
    """One forward on `real` and one on `fake`, differentiated for both players.

    Args:
      apply_fn: the discriminator, `(params, audio) -> (logits, features)`.
      params: its parameters (before this step's update).
      real: [batch, samples, channels] real audio (no gradient taken).
      fake: the generator's output, same shape, as a plain value: the generator's
        gradient with respect to it comes from `DiscriminatorPass.generator_grad`,
        to go back through the generator.

    Returns:
      `DiscriminatorPass`.
    """
    (real_logits, real_features), real_vjp = jax.vjp(lambda p: apply_fn(p, real), params)
    (fake_logits, fake_features), fake_vjp = jax.vjp(apply_fn, params, fake)
    disc_loss, (d_real, d_fake) = jax.value_and_grad(
        losses_lib.hinge_discriminator_loss, argnums=(0, 1))(real_logits, fake_logits)
    (grads_real,) = real_vjp((d_real, jax.tree.map(jnp.zeros_like, real_features)))
    grads_fake, _ = fake_vjp((d_fake, jax.tree.map(jnp.zeros_like, fake_features)))
    return DiscriminatorPass(
        fake_logits=fake_logits, fake_features=fake_features,
        real_features=jax.lax.stop_gradient(real_features), discriminator_loss=disc_loss,
        discriminator_grads=jax.tree.map(jnp.add, grads_real, grads_fake),
        fake_vjp=lambda cotangent: fake_vjp(cotangent)[1])
