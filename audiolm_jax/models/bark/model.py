"""Bark's token models in JAX (suno-ai/bark, as Hugging Face's `BarkModel` holds them).

Bark turns text into speech in three token stages, then EnCodec decodes:

    text (BERT ids + offset) -> semantic  (causal GPT, 10k semantic tokens)
    semantic -> coarse        (causal GPT, EnCodec books 0-1 interleaved)
    coarse -> fine            (non-causal GPT, EnCodec books 2-7, one book at a time)

The semantic and coarse stages are GPT-2-style decoders: learned absolute
positions, LayerNorm (with or without bias), biased or unbiased projections,
exact-GELU MLPs of 4x width, an untied head. They are the project's shared
`layers.decoder.Decoder` in its GPT-2 style (`causal_decoder`), so they get its
KV cache, its logical axes and its generation loop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp

from audiolm_jax.layers.decoder import Decoder


@dataclasses.dataclass(frozen=True)
class BarkStageConfig:
    """One of Bark's GPT stages (Hugging Face's `BarkSubModelConfig` fields).

    Attributes:
      block_size: the context: the learned position table's length.
      input_vocab_size, output_vocab_size: token ids in, logits out.
      num_layers, num_heads, hidden_size: the transformer.
      bias: biases in the LayerNorms and linear layers (the heads never have one).
      n_codes_total, n_codes_given: fine stage only: EnCodec books in all, and
        books given as input (the coarse ones); 0 for the causal stages.
    """

    block_size: int = 1024
    input_vocab_size: int = 10_048
    output_vocab_size: int = 10_048
    num_layers: int = 12
    num_heads: int = 12
    hidden_size: int = 768
    bias: bool = True
    n_codes_total: int = 0
    n_codes_given: int = 0

    def __post_init__(self):
        if self.hidden_size % self.num_heads:
            raise ValueError(f"BarkStageConfig: hidden_size {self.hidden_size} is not divisible "
                             f"by num_heads {self.num_heads}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @classmethod
    def from_hf(cls, data: Mapping[str, Any]) -> BarkStageConfig:
        """From a Hugging Face sub-model config dict (`semantic_config` etc.)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def causal_decoder(config: BarkStageConfig, dtype: jnp.dtype = jnp.float32) -> Decoder:
    """The semantic or coarse stage as the shared decoder in its GPT-2 style.

    [batch, length] ids -> [batch, length, output_vocab_size] float32 logits."""
    return Decoder(vocab_size=config.input_vocab_size, embed_dim=config.hidden_size,
                   num_layers=config.num_layers, num_heads=config.num_heads,
                   head_dim=config.head_dim, mlp_dim=4 * config.hidden_size, dtype=dtype,
                   output_vocab_size=config.output_vocab_size, position_embedding="learned",
                   max_length=config.block_size, norm="layer", use_bias=config.bias,
                   gated=False, exact_gelu=True)
