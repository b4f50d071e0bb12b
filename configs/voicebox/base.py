"""Voicebox audio model, base: the paper's 24 layers x 1024, 432 M params, one GPU or a mesh.

The paper's 330 M had a two-matrix feed-forward; ours is SwiGLU, three matrices at
4 x width. On a mesh: docs/voicebox.md, "the base config on a mesh"."""

import ml_collections

from configs.voicebox import common


def get_config() -> ml_collections.ConfigDict:
    c = common.base_config("audio")
    c.compute_dtype = "bfloat16"
    c.train.update(num_steps=500_000, eval_every=10_000, save_every=10_000)
    return c
