"""Semantic encoder, large: w2v-BERT 2.0's shape (24 Conformer layers x 1024, ~580 M params).

The contrastive module is the first `pretrain.contrastive_layers` = 8 layers and
the masked-prediction module the other 16 (w2v-BERT makes the split a model
choice; this one is ours).
"""

from configs.w2v_bert import common


def get_config():
    return common.base_config()
