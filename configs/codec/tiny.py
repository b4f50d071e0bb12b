"""Codec, tiny: a small causal EnCodec-style codec that learns on a 2-core CPU in minutes.

Real EnCodec bitrates (1.5 / 3 / 6 kbps at 24 kHz, 75 frames/s, 1024 codes per
book) with 8 channels instead of 32 and a short adversarial phase at the end.
"""

import ml_collections

from configs.codec import common


def get_config() -> ml_collections.ConfigDict:
    c = common.base_config()
    c.model.seanet.update(num_filters=8, hidden_size=32, num_lstm_layers=1)
    c.model.target_bandwidths = (1.5, 3.0, 6.0)
    c.model.kmeans_iters = 10
    c.discriminator.update(stft_n_ffts=(512, 256, 128), stft_filters=8, periods=())
    c.data.update(crop_seconds=0.5, batch_size=8)
    c.optimizer.update(lr=1e-3, warmup_steps=20, schedule="cosine", decay_steps=1200,
                       end_lr_ratio=0.05)
    c.discriminator_optimizer.update(lr=1e-3, warmup_steps=20, schedule="cosine",
                                     decay_steps=1200, end_lr_ratio=0.05)
    c.loss.adversarial_start_step = 900
    c.loss.quantizer_warmup_steps = 100
    c.loss.mel.update(range_start=6, range_end=10)
    c.train.update(num_steps=1200, log_every=20, save_every=300, eval_every=300)
    c.eval.update(num_clips=8, clip_seconds=2.0)
    return c
