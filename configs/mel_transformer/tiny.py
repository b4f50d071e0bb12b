"""Masked log-mel transformer, tiny: trains on a 2-core CPU in minutes."""

import ml_collections


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
    c.data = ml_collections.ConfigDict(dict(
        source="corpus",          # corpus | folder | tfds
        corpus="speech", corpus_size="default", corpus_seed=0, corpus_root="",
        folder="", tfds_name="", tfds_split="train", tfds_data_dir="", tfds_sample_rate=16_000,
        crop_seconds=1.5, batch_size=16, seed=0, num_threads=2,
    ))
    c.optimizer = ml_collections.ConfigDict(dict(
        name="adamw", lr=2e-3, warmup_steps=50, schedule="cosine", decay_steps=1000,
        end_lr_ratio=0.1, b1=0.9, b2=0.98, eps=1e-8, weight_decay=0.01, grad_clip_norm=1.0,
    ))
    c.mesh = ml_collections.ConfigDict(dict(
        shape=ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1)),
        rules="fsdp",             # dp | fsdp | tp | fsdp_tp
    ))
    c.train = ml_collections.ConfigDict(dict(
        num_steps=1000, log_every=10, save_every=250, keep_checkpoints=2, eval_every=250,
        seed=0, profile_start=-1, profile_steps=5, async_checkpoints=True, progress=True,
    ))
    c.distributed = False
    return c
