"""Masked log-mel transformer, tiny: trains on a 2-core CPU in minutes."""

import ml_collections

from configs import common


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model_name = "mel_transformer"

    c.model = ml_collections.ConfigDict(dict(
        sample_rate=24_000, n_fft=1024, hop_length=256, n_mels=64,
        # Log-mel normalization constants (natural log, floor 1e-5) measured on the
        # built-in speech corpus, so inputs are roughly zero-mean, unit-variance.
        mel_mean=-6.0, mel_std=3.5,
        embed_dim=128, num_layers=3, num_heads=4, mlp_dim=256, remat=False, dtype="float32",
        mask_start_prob=0.05, mask_span=8,
    ))
    c.data = common.data(extra=dict(crop_seconds=1.5), batch_size=16)
    c.optimizer = common.optimizer(lr=2e-3, warmup_steps=50, schedule="cosine", decay_steps=1000,
                                   end_lr_ratio=0.1, weight_decay=0.01, grad_clip_norm=1.0)
    c.mesh = common.mesh("fsdp")
    c.train = common.train(num_steps=1000, log_every=10, save_every=250, keep_checkpoints=2,
                           eval_every=250)
    c.distributed = False
    return c
