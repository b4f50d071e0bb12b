"""Voicebox's regression baseline, tiny: the audio model's network and data, trained with
an L1 loss to output the masked frames directly (no flow, no noise, one pass)."""

import ml_collections

from configs.voicebox import tiny


def get_config() -> ml_collections.ConfigDict:
    c = tiny.get_config()
    c.model.objective = "regression"
    c.model.p_uncond = 0.0          # it never uses guidance
    return c
