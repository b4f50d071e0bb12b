"""Fields shared by every codec config; `tiny`, `base` and `large` change a few."""

import ml_collections

from configs import common


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model_name = "codec"
    c.compute_dtype = "float32"

    # `CodecConfig` fields (audiolm_jax/models/codec/model.py); `seanet` is a `SEANetConfig`.
    c.model = ml_collections.ConfigDict(dict(
        seanet=ml_collections.ConfigDict(dict(
            audio_channels=1, num_filters=32, hidden_size=128, upsampling_ratios=(8, 5, 4, 2),
            num_residual_layers=1, dilation_growth_rate=2, residual_kernel_size=3,
            kernel_size=7, last_kernel_size=7, compress=2, use_conv_shortcut=True,
            num_lstm_layers=2, causal=True, norm_type="weight_norm", pad_mode="reflect",
            trim_right_ratio=1.0, param_init="lecun")),
        sample_rate=24_000, codebook_size=1024, target_bandwidths=(1.5, 3.0, 6.0, 12.0, 24.0),
        normalize=False, chunk_length_s=None, overlap=None, quantizer_dropout=True,
        commitment_weight=1.0, ema_decay=0.99, kmeans_init=True, kmeans_iters=50,
        threshold_ema_dead_code=2.0,
    ))
    c.discriminator = ml_collections.ConfigDict(dict(
        stft_n_ffts=(2048, 1024, 512, 256, 128), stft_filters=32,
        periods=(), period_channels=(32, 128, 512, 1024, 1024),
    ))
    # EnCodec's balancer weights: the share of the output gradient each loss gets.
    c.loss = ml_collections.ConfigDict(dict(
        weights=ml_collections.ConfigDict(dict(l1=0.1, mel=2.0, adv=4.0, feat=4.0)),
        balance_grads=True, total_norm=1.0, ema_decay=0.999,
        adversarial_start_step=0,
        quantizer_warmup_steps=0,  # steps that decode unquantized latents first
        mel=ml_collections.ConfigDict(dict(range_start=5, range_end=11, n_mels=64)),
    ))
    c.data = common.data(extra=dict(crop_seconds=1.0), tfds_sample_rate=24_000)
    c.optimizer = common.optimizer(name="adam", b1=0.5, b2=0.9)
    c.discriminator_optimizer = ml_collections.ConfigDict(dict(c.optimizer.to_dict()))
    c.mesh = common.mesh("dp")
    c.train = common.train(log_every=50)
    c.eval = ml_collections.ConfigDict(dict(num_clips=16, clip_seconds=4.0, num_wavs=2))
    c.distributed = False
    return c
