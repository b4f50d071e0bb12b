"""Vocoder, tiny: a small Vocos (4 ConvNeXt blocks x 128) that learns on a 2-core CPU.

The front end is the full vocos-mel-24khz one (the features Voicebox generates);
only the backbone is small. The first steps train the mel loss alone, so the
discriminators meet a vocoder that already reconstructs; then the multi-period
and multi-resolution discriminators join with small widths.
"""

import ml_collections

from configs.vocoder import common


def get_config() -> ml_collections.ConfigDict:
    c = common.base_config()
    # Silence clamped at 1e-5, as Voicebox and F5-TTS log their mels (vocos: 1e-7).
    c.model.update(dim=128, intermediate_dim=384, num_layers=4, log_floor=1e-5)
    # Two of vocos's three MRD resolutions (the finest in frequency and in time):
    # the third cost 15 of the step's 57 GFLOP (docs/vocoder.md).
    c.discriminator.update(period_channels=(16, 32, 64, 128, 128), mrd_channels=16,
                           mrd_window_lengths=(2048, 512))
    c.loss.adversarial_start_step = 2000
    # Held out: the TTS evaluation's speakers (data.sources.split_held_out_speakers).
    c.data.update(crop_seconds=8192 / 24_000, batch_size=8, held_out_speakers=4)
    c.optimizer.update(lr=1e-3, warmup_steps=100, decay_steps=20_000, end_lr_ratio=0.05)
    c.discriminator_optimizer.update(lr=1e-3, warmup_steps=100, decay_steps=20_000,
                                     end_lr_ratio=0.05)
    c.train.update(num_steps=8000, log_every=50, save_every=250, eval_every=1000)
    c.eval.update(num_clips=8, clip_seconds=2.0)
    return c
