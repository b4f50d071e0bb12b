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

import flax.linen as nn
import jax
import jax.numpy as jnp

from audiolm_jax.layers.decoder import Decoder
from audiolm_jax.layers.norms import LayerNorm
from audiolm_jax.layers.transformer import TransformerBlock


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
      tie_word_embeddings: fine stage only: the head predicting book `k` is book
        `k`'s input embedding (Hugging Face's `lm_heads.{k - n_codes_given}` tied
        to `input_embeds_layers.{k - n_codes_given + 1}`, the same table when
        `n_codes_given` is 1).
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
    tie_word_embeddings: bool = True

    def __post_init__(self):
        if self.hidden_size % self.num_heads:
            raise ValueError(f"BarkStageConfig: hidden_size {self.hidden_size} is not divisible "
                             f"by num_heads {self.num_heads}")
        if (self.n_codes_total and self.tie_word_embeddings
                and self.input_vocab_size != self.output_vocab_size):
            raise ValueError("BarkStageConfig: tied heads need input_vocab_size == "
                             f"output_vocab_size, got {self.input_vocab_size} and "
                             f"{self.output_vocab_size}")

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


class BarkFine(nn.Module):
    """Bark's fine stage: a non-causal GPT that fills in one EnCodec book at a time.

    For book `k` (`n_codes_given <= k < n_codes_total`) the input of frame t is the
    sum of the embeddings of its codes in books `0..k` (book k holds the filler id
    `CODEBOOK_SIZE` where it is still unknown) plus the learned position t; every
    frame attends to every other (no mask); the head of book k reads the final
    LayerNorm's output.

    Params: `embeddings` [n_codes_total, V_in, E] (Hugging Face's
    `input_embeds_layers`), `position_embedding` [block_size, E], `layer_i` (GPT-2
    blocks whose LayerNorms always have biases), `final_norm`, and with untied
    embeddings `heads` [n_codes_total - n_codes_given, E, V_out].
    """

    config: BarkStageConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, codes: jax.Array, codebook_idx: int) -> jax.Array:
        """Logits of book `codebook_idx`.

        Args:
          codes: [batch, frames, n_codes_total] ids, `frames <= block_size`.
          codebook_idx: the book to predict (a Python int: one program per book).

        Returns:
          [batch, frames, output_vocab_size] float32.
        """
        cfg = self.config
        if not cfg.n_codes_given <= codebook_idx < cfg.n_codes_total:
            raise ValueError(f"codebook_idx {codebook_idx} is not a predicted book: expected "
                             f"{cfg.n_codes_given} <= codebook_idx < {cfg.n_codes_total}")
        batch, frames, books = codes.shape
        if books != cfg.n_codes_total:
            raise ValueError(f"codes have {books} books, the fine stage reads {cfg.n_codes_total}")
        if frames > cfg.block_size:
            raise ValueError(f"{frames} frames do not fit the fine stage's context of "
                             f"{cfg.block_size}")
        tables = self.param("embeddings", nn.with_logical_partitioning(
            nn.initializers.normal(stddev=0.02), (None, "vocab", "embed")),
            (cfg.n_codes_total, cfg.input_vocab_size, cfg.hidden_size), jnp.float32)
        positions = self.param("position_embedding", nn.with_logical_partitioning(
            nn.initializers.normal(stddev=0.02), (None, "embed")),
            (cfg.block_size, cfg.hidden_size), jnp.float32)
        x = sum(jnp.take(tables[j], codes[..., j].astype(jnp.int32), axis=0)
                for j in range(codebook_idx + 1))
        x = (x + positions[:frames]).astype(self.dtype)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
        for i in range(cfg.num_layers):
            x = TransformerBlock(cfg.num_heads, cfg.head_dim, 4 * cfg.hidden_size, causal=False,
                                 dtype=self.dtype, attention_positions="none", norm="layer",
                                 use_bias=cfg.bias, gated=False, exact_gelu=True,
                                 norm_bias=True, name=f"layer_{i}")(x)
        x = LayerNorm(dtype=self.dtype, name="final_norm")(x)
        if cfg.tie_word_embeddings:
            head = tables[codebook_idx - cfg.n_codes_given + 1].T               # [E, V]
        else:
            heads = self.param("heads", nn.with_logical_partitioning(
                nn.initializers.lecun_normal(in_axis=1, out_axis=2), (None, "embed", "vocab")),
                (cfg.n_codes_total - cfg.n_codes_given, cfg.hidden_size, cfg.output_vocab_size),
                jnp.float32)
            head = heads[codebook_idx - cfg.n_codes_given]
        logits = jnp.einsum("ble,ev->blv", x, head.astype(self.dtype))
        return nn.with_logical_constraint(logits, ("batch", "length", "vocab")).astype(jnp.float32)
