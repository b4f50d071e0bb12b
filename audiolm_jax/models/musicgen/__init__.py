"""MusicGen (audiocraft) in JAX: T5 text conditioning, a delayed-codebook decoder with
cross-attention, classifier-free guidance, EnCodec 32 kHz.

- `model`: `MusicGenConfig`, `MusicGen` (T5 encoder, text projection, the shared
  `layers.streams.StreamDecoder` with cross-attention).
- `generation`: `generate` (one jitted loop, guidance on the raw logits as
  transformers mixes them), `SamplingSettings`.
- `pipeline`: `MusicGenPipeline` (captions -> audio) and `load`.
- `train`: fine-tuning (`make_train_step`: per-book cross-entropy).

Import of Hugging Face weights: `python -m audiolm_jax.convert musicgen`.
"""

from __future__ import annotations

from audiolm_jax.models.musicgen.model import MODEL_NAME, MusicGen, MusicGenConfig


def load(path, **kwargs):
    """A `pipeline.MusicGenPipeline` from a `convert musicgen` export."""
    from audiolm_jax.models.musicgen.pipeline import load as load_pipeline

    return load_pipeline(path, **kwargs)


__all__ = ["MODEL_NAME", "MusicGen", "MusicGenConfig", "load"]
