"""Bark (suno-ai): text -> semantic -> coarse -> fine EnCodec tokens, in JAX.

- `model`: `BarkStageConfig`, `causal_decoder` (the semantic and coarse stages
  on the shared `layers.decoder.Decoder`) and `BarkFine` (the fine stage).

Import of Hugging Face weights: `audiolm_jax.convert.bark`. The generation
pipeline and `convert bark` are in progress (docs/bark.md).
"""

from __future__ import annotations

from audiolm_jax.models.bark.model import BarkFine, BarkStageConfig, causal_decoder

MODEL_NAME = "bark"


def load(path):
    """A `pipeline.BarkPipeline` from a `convert bark` export."""
    from audiolm_jax.models.bark.pipeline import load as load_pipeline

    return load_pipeline(path)

__all__ = ["BarkFine", "BarkStageConfig", "MODEL_NAME", "causal_decoder", "load"]
