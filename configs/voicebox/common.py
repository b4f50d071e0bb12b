"""Fields shared by every Voicebox config (audio and duration models)."""

import ml_collections

from audiolm_jax.models.ctc import DEFAULT_RECOGNIZER
from audiolm_jax.models.vocoder import DEFAULT_VOCODER
from configs import common

# Normalization, measured by `python benchmarks/voicebox_feature_stats.py --utterances 256`
# on the built-in speech corpus's training speakers. The audio model uses per-bin
# statistics of speech frames (phone not <sil> or <pause>; std floored at 1.0): over all
# frames (mean -2.53, std 4.42) the 18 % that are silence near the log floor
# (log 1e-5 = -11.5) set the spread and speech keeps a per-bin std of 0.46 after
# normalization; with these it keeps 0.99 and the floor sits near -5.3. The duration
# model's log(1 + frames per phone), pauses included: mean 2.12, std 0.50.
SPEECH_MEL_MEAN = (
    -1.77, -1.73, -1.27, -0.68, -0.43, -0.29, -0.02, 0.47, 0.86, 0.90, 0.64, 0.38, 0.35, 0.47,
    0.70, 0.58, 0.75, 0.72, 0.51, 0.42, 0.17, 0.02, -0.02, -0.25, -0.32, -0.35, -0.45, -0.63,
    -0.74, -0.72, -0.70, -0.72, -0.85, -0.91, -0.89, -0.81, -0.84, -0.76, -0.86, -0.86, -0.82,
    -0.81, -0.77, -0.75, -0.77, -0.78, -0.82, -0.83, -0.77, -0.75, -0.66, -0.60, -0.52, -0.44,
    -0.43, -0.43, -0.34, -0.26, -0.23, -0.21, -0.21, -0.26, -0.29, -0.30, -0.23, -0.25, -0.34,
    -0.45, -0.57, -0.71, -0.81, -0.91, -1.01, -1.17, -1.39, -1.61, -1.61, -1.56, -1.54, -1.53,
    -1.46, -1.37, -1.27, -1.22, -1.06, -0.93, -0.89, -1.08, -1.32, -1.33, -1.51, -1.71, -1.75,
    -1.82, -1.86, -1.96, -2.87, -5.37, -6.22, -6.20,
)
SPEECH_MEL_STD = (
    1.85, 1.69, 1.94, 2.11, 2.09, 1.94, 1.94, 2.07, 2.08, 2.06, 2.01, 1.97, 1.98, 2.01, 2.00,
    2.01, 2.00, 2.02, 2.06, 2.06, 2.08, 2.14, 2.17, 2.18, 2.18, 2.18, 2.19, 2.16, 2.16, 2.17,
    2.19, 2.19, 2.16, 2.15, 2.18, 2.19, 2.18, 2.17, 2.15, 2.12, 2.08, 2.02, 1.99, 1.98, 1.97,
    1.94, 1.91, 1.91, 1.91, 1.92, 1.89, 1.88, 1.89, 1.96, 1.98, 1.95, 1.92, 1.87, 1.85, 1.90,
    1.96, 1.98, 1.97, 1.99, 2.07, 2.11, 2.14, 2.22, 2.29, 2.28, 2.31, 2.32, 2.28, 2.21, 2.15,
    2.15, 2.05, 2.05, 2.11, 2.15, 2.17, 2.17, 2.15, 2.08, 2.11, 2.15, 2.17, 2.19, 2.22, 2.12,
    2.05, 2.04, 2.02, 2.00, 1.95, 1.87, 1.71, 1.03, 1.00, 1.00,
)
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
        p_prompt=0.0, prompt_fraction=(0.1, 0.7),
        feature_mean=SPEECH_MEL_MEAN if audio else LOG_DURATION_MEAN,
        feature_std=SPEECH_MEL_STD if audio else LOG_DURATION_STD,
    ))
    # The features: the vocoder's log-mel (vocos-mel-24khz settings); the decoding
    # vocoder must share every one (`models.vocoder.check_mel_settings`).
    c.mel = ml_collections.ConfigDict(dict(sample_rate=24_000, n_fft=1024, hop_length=256,
                                           n_mels=100, log_floor=1e-5))
    c.data = common.data(
        extra=dict(max_frames=512,        # frames per example (longer utterances cropped)
                   max_phones=96,         # phones per example, silences and pauses included
                   pause_seconds=0.05,    # gaps this long between phones become <pause>
                   pair_probability=0.0),  # chance an example is two utterances of a speaker
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
    c.eval = ml_collections.ConfigDict(dict(num_clips=4, num_steps=8, method="midpoint",
                                            guidance=0.7, vocoder=DEFAULT_VOCODER,
                                            recognizer=""))
    # The audio model's run writes `bundle.json` (a loadable Voicebox) when
    # `duration_model` names the duration model's export (absolute, relative to the
    # work directory, or a committed name); vocoder and aligner default to the committed.
    c.export = ml_collections.ConfigDict(dict(duration_model="", vocoder=DEFAULT_VOCODER,
                                              recognizer=DEFAULT_RECOGNIZER))
    c.ema_decay = 0.0             # > 0: keep an EMA of the weights; eval and export use it
    c.distributed = False
    return c
