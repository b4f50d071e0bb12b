"""MusicGen, base: musicgen-small's shape (T5-base, 24 x 1024 decoder), 10 s examples,
batch 16 on one accelerator (the device suite's row)."""

import ml_collections

from configs.musicgen import common


def get_config() -> ml_collections.ConfigDict:
    return common.base_config()
