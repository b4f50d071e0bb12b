"""Codec, base: EnCodec 24 kHz (causal, 32 filters, 2-layer LSTM, 1.5-24 kbps) for one GPU.

The architecture matches `facebook/encodec_24khz`, so its converted weights
(`python -m audiolm_jax.convert encodec`) fine-tune with this config.
"""

import ml_collections

from configs.codec import common


def get_config() -> ml_collections.ConfigDict:
    c = common.base_config()
    c.data.update(crop_seconds=1.0, batch_size=32, corpus="speech")
    c.train.update(num_steps=300_000, eval_every=5000, save_every=5000)
    c.compute_dtype = "float32"
    return c
