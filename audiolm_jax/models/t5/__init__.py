"""T5 text encoder (MusicGen's text conditioning); weights via `audiolm_jax.convert.t5`.

Not a family of its own (no trainer, no exports): models that condition on text
build it from their checkpoint's T5 config and weights:

    config = T5Config.from_hf(musicgen_config["text_encoder"])
    params = t5_encoder_params(state_dict, config, prefix="text_encoder.")
    ids, mask, _ = T5Tokenizer.from_dir(model_dir).encode(captions)
    hidden = T5Encoder(config).apply({"params": params}, ids, mask)   # [b, l, d_model]
"""

from __future__ import annotations

from audiolm_jax.models.t5.model import (
    T5Attention,
    T5Block,
    T5Config,
    T5Encoder,
    T5FeedForward,
    parse_feed_forward_proj,
    relative_position_buckets,
)

__all__ = ["T5Attention", "T5Block", "T5Config", "T5Encoder", "T5FeedForward",
           "parse_feed_forward_proj", "relative_position_buckets"]
