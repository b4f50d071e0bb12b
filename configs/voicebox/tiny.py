"""Voicebox audio model, tiny: 4 layers x 256 (4.6 M params) for a 2-core CPU.

Examples of up to 512 frames (5.5 s; the corpus's median utterance is 216
frames, its 99th percentile 520): half of them two utterances of one speaker
back to back, and half the masks prompt masks (a context prefix, the rest
generated; on a joined pair the prefix is exactly the first utterance), the
shape of zero-shot TTS. The bundle's `max_frames` is the same 512.

Batches of 4 such examples (about as many utterances as 8 crops of 256 frames):
0.87 s a step on an idle 2-core CPU (8 x 512 would take 1.75 s). The weights'
EMA (0.999) is what evaluation and the export use.
"""

import ml_collections

from configs.voicebox import common


def get_config() -> ml_collections.ConfigDict:
    c = common.base_config("audio")
    c.model.update(dim=256, num_layers=4, num_heads=4, phone_embed_dim=64, conv_pos_groups=16)
    c.model.update(p_prompt=0.5, p_random_frames=0.2)
    c.data.update(max_frames=512, batch_size=4, pair_probability=0.5)
    c.optimizer.update(lr=5e-4, warmup_steps=500, decay_steps=16_000, end_lr_ratio=0.05,
                       grad_clip_norm=1.0)
    c.ema_decay = 0.999
    c.train.update(num_steps=16_000, log_every=50, save_every=200, eval_every=2000)
    return c
