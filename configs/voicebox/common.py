"""Fields shared by every Voicebox config (audio and duration models)."""

import ml_collections

from configs import common

# Measured on the built-in speech corpus (128 utterances of its training speakers): the
# vocos log-mel floored at 1e-5 has mean -2.58 and std 4.40 over valid frames (16 % of
# them digital silence at log(1e-5) = -11.5); log(1 + frames per phone) has mean 2.12
# and std 0.49.
MEL_MEAN, MEL_STD = -2.6, 4.4
LOG_DURATION_MEAN, LOG_DURATION_STD = 2.1, 0.5


def base_config(kind: str = "audio") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model_name = "voicebox"
    c.kind = kind                 # audio (mel frames) | duration (one frame per phone)
    c.compute_dtype = "float32"
    c.remat = False               # recompute each block's activations in the backward pass

    # `VoiceboxConfig` fields (audiolm_jax/models/voicebox/model.py). The paper's audio
    # model: 24 layers x 1024, 16 heads, MLP 4096, ALiBi, conv position kernel 31.
    audio = kind == "audio"
    c.model = ml_collections.ConfigDict(dict(
        feature_dim=100 if audio else 1, num_phones=0, phone_embed_dim=256 if audio else 128,
        dim=1024 if audio else 512, num_layers=24 if audio else 8, num_heads=16 if audio else 8,
        mlp_ratio=4, conv_pos_kernel=31 if audio else 15, conv_pos_groups=16,
        attention_positions="alibi", objective="flow", sigma_min=1e-5, p_uncond=0.2,
        p_random_frames=0.3, span_fraction=(0.7, 1.0), random_frames_fraction=(0.7, 1.0),
        feature_mean=MEL_MEAN if audio else LOG_DURATION_MEAN,
        feature_std=MEL_STD if audio else LOG_DURATION_STD,
    ))
    # The features: the vocoder's log-mel (vocos-mel-24khz settings); the decoding
    # vocoder must share every one (`models.vocoder.check_mel_settings`).
    c.mel = ml_collections.ConfigDict(dict(sample_rate=24_000, n_fft=1024, hop_length=256,
                                           n_mels=100, log_floor=1e-5))
    c.data = common.data(
        extra=dict(max_frames=512,        # frames per example (longer utterances cropped)
                   max_phones=96),        # phones per example, silences included
        held_out_speakers=4,  # the TTS evaluation's speakers: never trained on
        tfds_sample_rate=24_000, batch_size=32)
    c.optimizer = common.optimizer(name="adamw", lr=1e-4, warmup_steps=5000,
                                   schedule="cosine", decay_steps=500_000, end_lr_ratio=0.0,
                                   weight_decay=0.01, grad_clip_norm=0.2)
    c.mesh = common.mesh("dp")
    c.train = common.train(log_every=100)
    # Held-out evaluation: loss on a fixed batch, and (audio model) infilling of held-out
    # utterances written as wavs (through `vocoder`, a vocoder export or workdir, else
    # Griffin-Lim) with a spectrogram PNG; PER when `recognizer` names a CTC export.
    c.eval = ml_collections.ConfigDict(dict(num_clips=4, num_steps=16, method="midpoint",
                                            guidance=0.7, vocoder="", recognizer=""))
    c.distributed = False
    return c
