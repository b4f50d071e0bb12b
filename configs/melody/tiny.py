"""Melody embedder, tiny: 3 x 128 transformer over semitone frames, 4 s windows (CPU)."""

from configs.melody import common


def get_config():
    c = common.base_config()
    c.model.update(hidden_size=128, num_layers=3, num_heads=4, mlp_dim=512, embed_dim=64)
    c.rvq.update(codebook_size=256, windows_per_clip=8)
    c.data.update(batch_size=32)
    c.optimizer.update(lr=1e-3, warmup_steps=100, decay_steps=1000, end_lr_ratio=0.05)
    c.train.update(num_steps=1000, log_every=10, save_every=250, keep_checkpoints=2,
                   eval_every=250)
    return c
