"""MusicGen, tiny: a 2 x 32 decoder and a 2 x 24 T5 over 4 books of 64 codes, for a
2-core CPU (tests, the device suite's smoke run)."""

import dataclasses

import ml_collections

from audiolm_jax.models.musicgen.model import MusicGenConfig
from configs.musicgen import common


def get_config() -> ml_collections.ConfigDict:
    c = common.base_config()
    c.model = ml_collections.ConfigDict(dataclasses.asdict(MusicGenConfig.tiny()))
    c.data.update(frames=50, text_tokens=8, batch_size=4)
    c.optimizer.update(lr=1e-3, warmup_steps=10, decay_steps=1000)
    return c
