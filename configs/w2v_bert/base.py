"""Semantic encoder, base: 12 Conformer layers x 768 (HuBERT-base scale), contrastive module 4 layers."""

from configs.w2v_bert import common


def get_config():
    c = common.base_config()
    c.model.encoder.update(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                           intermediate_size=3072)
    c.model.pretrain.update(contrastive_layers=4, codevector_dim=256, proj_dim=256)
    return c
