"""Fields shared by every melody-embedder config; `tiny`, `base`, `large` change a few."""

import ml_collections

from configs import common


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model_name = "melody"
    # `MelodyConfig` fields (audiolm_jax/models/melody/model.py).
    c.model = ml_collections.ConfigDict(dict(
        sample_rate=16_000, n_fft=4096, hop_length=512, midi_low=36, midi_high=96,
        frames_per_step=4, hidden_size=512, num_layers=8, num_heads=8, mlp_dim=2048,
        embed_dim=128, clip_seconds=4.0, init_temperature=0.1))
    # Melody tokens: residual codebooks over embeddings of windows `hop_seconds` apart.
    c.rvq = ml_collections.ConfigDict(dict(num_quantizers=12, codebook_size=1024, steps=100,
                                           windows_per_clip=24))
    # Records of one melody form a group; whole melodies are held out.
    c.data = common.data(extra=dict(group_field="melody_id", crops_per_group=2), corpus="music",
                         batch_size=64, eval_fraction=0.15)
    c.optimizer = common.optimizer(lr=3e-4, warmup_steps=1000, schedule="cosine",
                                   decay_steps=50_000, end_lr_ratio=0.01, eps=1e-6,
                                   weight_decay=0.01, grad_clip_norm=1.0)
    c.mesh = common.mesh("dp")
    c.train = common.train(num_steps=50_000)
    c.distributed = False
    return c
