"""Fields shared by every melody-embedder config; `tiny`, `base`, `large` change a few."""

import ml_collections


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model_name = "melody_embedder"
    # `MelodyConfig` fields (audiolm_jax/models/melody.py).
    c.model = ml_collections.ConfigDict(dict(
        sample_rate=16_000, n_fft=4096, hop_length=512, midi_low=36, midi_high=96,
        frames_per_step=4, hidden_size=512, num_layers=8, num_heads=8, mlp_dim=2048,
        embed_dim=128, clip_seconds=4.0, init_temperature=0.1))
    # Melody tokens: residual codebooks over embeddings of windows `hop_seconds` apart.
    c.rvq = ml_collections.ConfigDict(dict(num_quantizers=12, codebook_size=1024, steps=100,
                                           windows_per_clip=24))
    c.data = ml_collections.ConfigDict(dict(
        source="corpus", corpus="music", corpus_size="default", corpus_seed=0, corpus_root="",
        folder="", tfds_name="", tfds_split="train", tfds_data_dir="", tfds_sample_rate=16_000,
        batch_size=64, seed=0, num_threads=2,
        eval_fraction=0.15, group_field="melody_id",   # records of one melody form a group
        # Pairs per melody in a batch, at different passages: each other's hard negatives.
        crops_per_group=2,
    ))
    c.optimizer = ml_collections.ConfigDict(dict(
        name="adamw", lr=3e-4, warmup_steps=1000, schedule="cosine", decay_steps=50_000,
        end_lr_ratio=0.01, b1=0.9, b2=0.98, eps=1e-6, weight_decay=0.01, grad_clip_norm=1.0,
    ))
    c.mesh = ml_collections.ConfigDict(dict(
        shape=ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1)), rules="dp"))
    c.train = ml_collections.ConfigDict(dict(
        num_steps=50_000, log_every=100, save_every=5000, keep_checkpoints=3, eval_every=5000,
        seed=0, profile_start=-1, profile_steps=5, async_checkpoints=True, progress=True,
    ))
    c.distributed = False
    return c
