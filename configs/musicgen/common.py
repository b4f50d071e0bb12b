"""Fields shared by every MusicGen config (fine-tuning: the step exists, a corpus recipe
does not yet; `benchmarks/device_suite.py` times the step from these)."""

import dataclasses

import ml_collections

from audiolm_jax.models.musicgen.model import MusicGenConfig
from audiolm_jax.models.t5.model import T5Config
from configs import common

# facebook/musicgen-small: T5-base (12 x 768) and a 24 x 1024 decoder over 4 books of 2048.
SMALL = MusicGenConfig(text=T5Config(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072,
                                     num_layers=12, num_heads=12))


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model_name = "musicgen"
    c.compute_dtype = "float32"
    c.remat = False                 # recompute each decoder block's activations backward
    c.train_text_encoder = False    # audiocraft's default: T5 frozen
    # `MusicGenConfig` fields (audiolm_jax/models/musicgen/model.py), the T5 as a dict.
    c.model = ml_collections.ConfigDict(dataclasses.asdict(SMALL))
    c.data = common.data(
        extra=dict(frames=500,      # codec frames per example (10 s at 50 Hz)
                   text_tokens=32),  # T5 tokens per caption
        corpus="music", batch_size=16)
    # audiocraft's MusicGen recipe: AdamW 1e-4, betas (0.9, 0.95), weight decay 0.1.
    c.optimizer = common.optimizer(name="adamw", lr=1e-4, b2=0.95, warmup_steps=4000,
                                   schedule="cosine", decay_steps=1_000_000,
                                   weight_decay=0.1, grad_clip_norm=1.0)
    c.mesh = common.mesh("dp")
    c.train = common.train(log_every=100)
    c.distributed = False
    return c
