"""Voicebox audio model, tiny: 4 layers x 256 (4.6 M params) for a 2-core CPU.

Batches of 8 crops of 256 frames (2.7 s; the corpus's median utterance is 217
frames): about 1 s a step on an idle 2-core CPU.
"""

import ml_collections

from configs.voicebox import common


def get_config() -> ml_collections.ConfigDict:
    c = common.base_config("audio")
    c.model.update(dim=256, num_layers=4, num_heads=4, phone_embed_dim=64, conv_pos_groups=16)
    c.data.update(max_frames=256, batch_size=8)
    c.optimizer.update(lr=5e-4, warmup_steps=200, decay_steps=4000, end_lr_ratio=0.05,
                       grad_clip_norm=1.0)
    c.train.update(num_steps=4000, log_every=50, save_every=500, eval_every=500)
    return c
