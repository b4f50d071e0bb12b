"""Vocoder, base: the architecture of the public vocos-mel-24khz (13.5 M params) for one GPU.

Its converted weights (`python -m audiolm_jax.convert vocos`) fine-tune with this
config; the training settings are the `vocos` package's (batch 16 of 16384
samples, AdamW 5e-4 with b1 0.8, b2 0.9, cosine decay).
"""

import ml_collections

from configs.vocoder import common


def get_config() -> ml_collections.ConfigDict:
    c = common.base_config()
    c.train.update(num_steps=1_000_000, eval_every=10_000, save_every=10_000)
    return c
