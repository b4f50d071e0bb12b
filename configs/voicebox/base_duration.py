"""Voicebox duration model, base: the paper's flow-matching duration model (8 x 512)."""

import ml_collections

from configs.voicebox import common


def get_config() -> ml_collections.ConfigDict:
    c = common.base_config("duration")
    c.train.update(num_steps=500_000, eval_every=10_000, save_every=10_000)
    return c
