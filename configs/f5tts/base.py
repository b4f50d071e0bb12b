"""F5-TTS, base: F5TTS_v1_Base (22 x 1024, 337 M params) on one accelerator.

Meant for fine-tuning the released weights: convert them
(`python -m audiolm_jax.convert f5tts F5TTS_v1_Base/ exports/f5tts`) and start from
them with `--config.train.init_from=exports/f5tts` (the vocabulary comes with
them). The learning rate is the package's fine-tuning scale, not its 7.5e-5
pretraining peak.
"""

import ml_collections

from configs.f5tts import common


def get_config() -> ml_collections.ConfigDict:
    c = common.base_config()
    c.compute_dtype = "bfloat16"
    c.data.update(max_frames=1024, batch_size=16)
    c.optimizer.update(lr=1e-5, warmup_steps=1000)
    c.ema_decay = 0.999
    c.train.update(num_steps=50_000, eval_every=5_000, save_every=5_000)
    return c
