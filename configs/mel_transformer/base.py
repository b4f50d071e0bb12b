"""Masked log-mel transformer, base: one accelerator (GPU/TPU), bfloat16 compute."""

from configs.mel_transformer import tiny


def get_config():
    c = tiny.get_config()
    c.model.update(n_mels=80, embed_dim=512, num_layers=8, num_heads=8, mlp_dim=2048,
                   dtype="bfloat16")
    c.data.update(crop_seconds=4.0, batch_size=64, num_threads=8)
    c.optimizer.update(lr=5e-4, warmup_steps=1000, decay_steps=50_000)
    c.train.update(num_steps=50_000, log_every=50, save_every=2000, keep_checkpoints=3,
                   eval_every=2000)
    return c
