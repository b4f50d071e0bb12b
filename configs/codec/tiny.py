"""Codec, tiny: a small causal EnCodec-style codec that learns on a 2-core CPU in minutes.

Real EnCodec bitrates (1.5 / 3 / 6 kbps at 24 kHz, 75 frames/s, 1024 codes per
book) with 8 channels instead of 32. Its 1000 steps train the reconstruction losses;
the adversarial phase starts at step 1000 of a longer run.
The time-domain L1 gets ten times EnCodec's weight: in 300-step autoencoder
runs (quantizer bypassed, mel weight 1) held-out SI-SNR reached -37 / -27 /
-19 dB with L1 weights 0.1 / 1 / 5, and a codec this small has few steps to
learn the waveform's phase.
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
    c.optimizer.update(lr=1e-3, warmup_steps=20, schedule="cosine", decay_steps=1000,
                       end_lr_ratio=0.05)
    c.discriminator_optimizer.update(lr=1e-3, warmup_steps=20, schedule="cosine",
                                     decay_steps=1000, end_lr_ratio=0.05)
    c.loss.weights.l1 = 1.0
    # The adversarial phase starts where this run ends: on this CPU a step with the
    # discriminators took 2.2 s against 0.31 s without, and in 40 adversarial
    # steps the mel loss rose from 0.39 to 0.59 while the balancer handed most of
    # the gradient to the new losses. Raise train.num_steps and it begins here.
    c.loss.adversarial_start_step = 1000
    c.loss.quantizer_warmup_steps = 100
    c.loss.mel.update(range_start=6, range_end=10)
    c.train.update(num_steps=1000, log_every=20, save_every=250, eval_every=250)
    c.eval.update(num_clips=8, clip_seconds=2.0)
    return c
