"""Fields shared by every semantic-encoder pretraining config; `tiny`, `base`, `large` change a few."""

import ml_collections

from configs import common


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model_name = "w2v_bert"

    c.model = ml_collections.ConfigDict(dict(
        # `W2vBertConfig` fields (audiolm_jax/models/w2v_bert/model.py): w2v-BERT 2.0's shape.
        encoder=ml_collections.ConfigDict(dict(
            hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
            intermediate_size=4096, feature_projection_input_dim=160, hidden_act="swish",
            layer_norm_eps=1e-5, position_embeddings_type="relative_key",
            rotary_embedding_base=10_000.0, left_max_position_embeddings=64,
            right_max_position_embeddings=8, conv_depthwise_kernel_size=31,
            sample_rate=16_000, num_mel_bins=80, stride=2)),
        # `PretrainConfig` fields (audiolm_jax/models/w2v_bert/pretrain.py).
        pretrain=ml_collections.ConfigDict(dict(
            objective="w2v_bert", mask_start_prob=0.065, mask_span=10, codebook_size=1024,
            contrastive_layers=8, codevector_dim=768, proj_dim=768, num_negatives=100,
            contrastive_temperature=0.1, diversity_weight=0.1, contrastive_weight=1.0,
            mlm_weight=1.0, gumbel_start=2.0, gumbel_end=0.5, gumbel_decay=0.999995,
            best_rq_dim=16, best_rq_noise_std=0.1, best_rq_seed=0)),
        # The "kmeans" objective's target clusters: frames from this many training
        # batches, this many mini-batch k-means updates (k = pretrain.codebook_size).
        kmeans_targets=ml_collections.ConfigDict(dict(batches=50, steps=100)),
        remat=False,
    ))
    c.data = common.data(extra=dict(crop_seconds=4.0), batch_size=32)
    c.optimizer = common.optimizer(lr=5e-4, warmup_steps=10_000, schedule="cosine",
                                   decay_steps=400_000, end_lr_ratio=0.01, eps=1e-6,
                                   weight_decay=0.01, grad_clip_norm=1.0)
    c.mesh = common.mesh("fsdp")
    c.train = common.train(num_steps=400_000)
    c.distributed = False
    return c
