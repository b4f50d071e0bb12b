"""Voicebox duration model, tiny: 4 layers x 128 flow matching over log-durations."""

import ml_collections

from configs.voicebox import common


def get_config() -> ml_collections.ConfigDict:
    c = common.base_config("duration")
    c.model.update(dim=128, num_layers=4, num_heads=4, phone_embed_dim=64, conv_pos_groups=8)
    c.model.update(p_prompt=0.5, p_random_frames=0.2)   # as the audio model: prompt masks
    c.data.update(batch_size=32, pair_probability=0.5)    # and same-speaker pairs
    c.optimizer.update(lr=1e-3, warmup_steps=100, decay_steps=3000, end_lr_ratio=0.05,
                       grad_clip_norm=1.0)
    c.train.update(num_steps=3000, log_every=50, save_every=500, eval_every=500)
    return c
