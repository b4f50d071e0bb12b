"""Melody embedder, large: 12 x 768 transformer, batch 512 pairs, 10 s windows."""

from configs.melody import common


def get_config():
    c = common.base_config()
    c.model.update(hidden_size=768, num_layers=12, num_heads=12, mlp_dim=3072, clip_seconds=10.0)
    c.data.batch_size = 512
    return c
