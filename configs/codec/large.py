"""Codec, large: a wider 24 kHz codec with both discriminators, for a TPU pod slice / GPU node.

64 filters, MS-STFT plus multi-period discriminators, bfloat16 compute,
FSDP sharding of parameters and optimizer state.
"""

import ml_collections

from configs.codec import common


def get_config() -> ml_collections.ConfigDict:
    c = common.base_config()
    c.model.seanet.update(num_filters=64, hidden_size=128)
    c.discriminator.update(stft_filters=64, periods=(2, 3, 5, 7, 11))
    c.compute_dtype = "bfloat16"
    c.data.update(crop_seconds=1.0, batch_size=256, num_threads=8)
    c.mesh.update(rules="fsdp")
    c.mesh.shape.update(data=-1, fsdp=8, tensor=1)
    c.train.update(num_steps=500_000, eval_every=10_000, save_every=10_000)
    return c
