"""Melody embedder, base (one accelerator): 8 x 512 transformer, batch 64 pairs."""

from configs.melody import common


def get_config():
    return common.base_config()
