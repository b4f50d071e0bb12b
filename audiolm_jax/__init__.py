"""audiolm-jax: the generative-audio stack in JAX/Flax."""

__version__ = "0.1.0"
