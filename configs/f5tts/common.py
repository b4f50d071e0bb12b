"""Fields shared by every F5-TTS config."""

import dataclasses

import ml_collections

from audiolm_jax.models.f5tts.model import F5Config
from configs import common


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model_name = "f5tts"
    c.compute_dtype = "float32"
    c.remat = False               # recompute each DiT block's activations in the backward pass

    # `F5Config` fields (audiolm_jax/models/f5tts/model.py): F5TTS_v1_Base, 22 x 1024, 16
    # heads, text 512 over 4 ConvNeXt-V2 blocks, 2545 characters / pinyin syllables. The
    # mel (vocos-mel-24khz's settings, floor 1e-5) is part of it.
    c.model = ml_collections.ConfigDict(dataclasses.asdict(F5Config.base()))
    # The package's CFM: span of 70-100 % masked; drop audio 0.3, text and audio 0.2.
    c.loss = ml_collections.ConfigDict(dict(frac_lengths=(0.7, 1.0), audio_drop_prob=0.3,
                                            cond_drop_prob=0.2))
    c.data = common.data(
        extra=dict(max_frames=1024,   # frames per example (10.9 s); longer utterances skipped
                   max_chars=256,     # characters per example; longer texts skipped
                   vocab=""),         # vocab.txt to read ids from ("" = init_from's, else
                                      # the corpus's own characters)
        held_out_speakers=4,          # the held-out loss's speakers: never trained on
        tfds_sample_rate=24_000, batch_size=32)
    # The package's F5TTS_v1_Base recipe: AdamW 7.5e-5, 20 000 warm-up updates, clip 1.0.
    c.optimizer = common.optimizer(name="adamw", lr=7.5e-5, warmup_steps=20_000,
                                   schedule="constant", weight_decay=0.01, grad_clip_norm=1.0)
    c.mesh = common.mesh("dp")
    c.train = common.train(log_every=100)
    c.eval = ml_collections.ConfigDict(dict(batch_size=4))   # held-out loss batch
    # The export names the vocoder that decodes its mel (`infer/tts.py --model f5tts`):
    # an export of `python -m audiolm_jax.convert vocos` of vocos-mel-24khz.
    c.export = ml_collections.ConfigDict(dict(vocoder=""))
    c.ema_decay = 0.0             # > 0: keep an EMA of the weights; eval and export use it
    c.distributed = False
    return c
