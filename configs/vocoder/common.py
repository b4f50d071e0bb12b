"""Fields shared by every vocoder config; `tiny` and `base` change a few."""

import ml_collections

from configs import common


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model_name = "vocoder"
    c.compute_dtype = "float32"

    # `VocosConfig` fields (audiolm_jax/models/vocoder/model.py). The front end is the
    # public vocos-mel-24khz one (100 log-mel bands, n_fft 1024, hop 256, centred),
    # which is also what Voicebox generates, so an imported vocos-mel-24khz decodes
    # its output too.
    c.model = ml_collections.ConfigDict(dict(
        features="mel", sample_rate=24_000, n_fft=1024, hop_length=256, n_mels=100,
        f_min=0.0, f_max=None, log_floor=1e-7, padding="center", num_codebooks=0, codebook_size=1024,
        codebook_dim=128, dim=512, intermediate_dim=1536, num_layers=8,
        layer_scale_init_value=None, adanorm_num_embeddings=None, head_n_fft=None,
        head_hop_length=None,
    ))
    # The discriminator groups; a group trains when its loss.adversarial_weights entry > 0.
    c.discriminator = ml_collections.ConfigDict(dict(
        periods=(2, 3, 5, 7, 11), period_channels=(32, 128, 512, 1024, 1024),
        mrd_window_lengths=(2048, 1024, 512), mrd_channels=32,
        stft_n_ffts=(2048, 1024, 512, 256, 128), stft_filters=32,
    ))
    # The vocos package's weights: mel L1 x 45, multi-period 1, multi-resolution 0.1.
    c.loss = ml_collections.ConfigDict(dict(
        mel_weight=45.0,
        adversarial_weights=ml_collections.ConfigDict(dict(mpd=1.0, mrd=0.1, stft=0.0)),
        adversarial_start_step=0,   # steps of mel loss only before the GAN starts
    ))
    c.data = common.data(extra=dict(crop_seconds=16384 / 24_000), tfds_sample_rate=24_000,
                         batch_size=16)
    c.optimizer = common.optimizer(name="adamw", lr=5e-4, b1=0.8, b2=0.9, schedule="cosine",
                                   decay_steps=1_000_000, end_lr_ratio=0.0)
    c.discriminator_optimizer = ml_collections.ConfigDict(dict(c.optimizer.to_dict()))
    c.mesh = common.mesh("dp")
    c.train = common.train(log_every=100)
    # Held-out clips resynthesized at every evaluation (wavs, spectrograms, table).
    c.eval = ml_collections.ConfigDict(dict(num_clips=8, clip_seconds=3.0, num_wavs=2,
                                            griffin_lim_iters=32))
    c.distributed = False
    return c
