"""Hugging Face T5 encoder weights -> `audiolm_jax.models.t5.T5Encoder` params.

    config = T5Config.from_hf(hf_config)                        # or a MusicGen text_encoder dict
    params = t5_encoder_params(state_dict, config, prefix="")   # {"shared": ..., "block_0": ...}
    T5Encoder(config).apply({"params": params}, ids, mask)

Accepts the keys of `T5EncoderModel`, of a full `T5ForConditionalGeneration`
(its `decoder.*` and `lm_head.*` are skipped) and of models that wrap a T5
encoder below a prefix (MusicGen: `prefix="text_encoder."`; keys outside the
prefix are ignored). Every key under the prefix must be a known encoder weight
of the shape the config implies, and every weight must be present, else a
`CheckpointMismatchError` (a ValueError) names the keys.

    HF key (below the prefix)                          Flax path
    shared.weight | encoder.embed_tokens.weight        shared/embedding (tied: either, or
                                                       both if equal)
    encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight
                                                       relative_attention_bias
    encoder.block.{i}.layer.0.layer_norm.weight        block_{i}/attention_norm/scale
    encoder.block.{i}.layer.0.SelfAttention.{q,k,v}.weight  block_{i}/attention/{q,k,v}
        [heads*d_kv, d_model] -> [d_model, heads, d_kv]
    encoder.block.{i}.layer.0.SelfAttention.o.weight   block_{i}/attention/o
        [d_model, heads*d_kv] -> [heads, d_kv, d_model]
    encoder.block.{i}.layer.1.layer_norm.weight        block_{i}/mlp_norm/scale
    encoder.block.{i}.layer.1.DenseReluDense.{wi,wi_0,wi_1,wo}.weight
                                                       block_{i}/mlp/<same>/kernel (transposed)
    encoder.final_layer_norm.weight                    final_norm/scale
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from flax.traverse_util import unflatten_dict

from audiolm_jax.models.t5.model import T5Config
from audiolm_jax.training.checkpointing import CheckpointMismatchError

# Keys below the prefix that hold nothing the encoder needs (a full T5's decoder
# and LM head).
_SKIPPED_PREFIXES = ("decoder.", "lm_head.")
_EMBEDDING_KEYS = ("shared.weight", "encoder.embed_tokens.weight")
# At most this many keys of each kind are named in an error.
_SHOWN = 8


def _expected(config: T5Config) -> dict[str, tuple[tuple[int, ...], tuple[str, ...], str]]:
    """HF key (below the prefix) -> (its torch shape, Flax path, how to transform)."""
    d, inner, ff = config.d_model, config.inner_dim, config.d_ff
    table: dict[str, tuple[tuple[int, ...], tuple[str, ...], str]] = {
        "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight":
            ((config.relative_attention_num_buckets, config.num_heads),
             ("relative_attention_bias",), "copy"),
        "encoder.final_layer_norm.weight": ((d,), ("final_norm", "scale"), "copy"),
    }
    mlp = ("wi_0", "wi_1") if config.is_gated_act else ("wi",)
    for i in range(config.num_layers):
        block, layer = f"block_{i}", f"encoder.block.{i}.layer"
        table[f"{layer}.0.layer_norm.weight"] = ((d,), (block, "attention_norm", "scale"), "copy")
        for name in ("q", "k", "v"):
            table[f"{layer}.0.SelfAttention.{name}.weight"] = (
                (inner, d), (block, "attention", name), "heads_in")
        table[f"{layer}.0.SelfAttention.o.weight"] = ((d, inner), (block, "attention", "o"),
                                                      "heads_out")
        table[f"{layer}.1.layer_norm.weight"] = ((d,), (block, "mlp_norm", "scale"), "copy")
        for name in mlp:
            table[f"{layer}.1.DenseReluDense.{name}.weight"] = (
                (ff, d), (block, "mlp", name, "kernel"), "linear")
        table[f"{layer}.1.DenseReluDense.wo.weight"] = ((d, ff), (block, "mlp", "wo", "kernel"),
                                                        "linear")
    return table


def _transform(array: np.ndarray, how: str, config: T5Config) -> np.ndarray:
    """torch layout -> Flax layout (shapes already checked)."""
    if how == "copy":
        return array
    kernel = array.T                                           # Linear [out, in] -> [in, out]
    if how == "heads_in":
        return kernel.reshape(config.d_model, config.num_heads, config.d_kv)
    if how == "heads_out":
        return kernel.reshape(config.num_heads, config.d_kv, config.d_model)
    return kernel


def _names(keys: list[str]) -> str:
    return ", ".join(repr(k) for k in keys[:_SHOWN]) + (
        f" ... ({len(keys)} in all)" if len(keys) > _SHOWN else "")


def t5_encoder_params(state: Mapping[str, Any], config: T5Config, prefix: str = "",
                      source: str = "T5 state dict") -> dict:
    """HF T5 encoder weights -> the `T5Encoder` params tree, every key and shape checked.

    Args:
      state: HF key -> array (numpy, or anything `np.asarray` reads: torch CPU
        tensors, safetensors' numpy arrays, bfloat16 included).
      config: the architecture the weights must fit (`T5Config.from_hf`).
      prefix: the wrapper's prefix (e.g. "text_encoder." for MusicGen); keys that do
        not start with it are ignored.
      source: where the weights came from, for messages.

    Returns:
      The params tree (what goes under "params": `{"shared": {"embedding": ...},
      "relative_attention_bias": ..., "block_0": ..., "final_norm": ...}`) of float32
      numpy arrays.

    Raises:
      CheckpointMismatchError: naming the keys under `prefix` that are unexpected,
        have the wrong shape or are missing, or tied embeddings that differ.
    """
    expected = _expected(config)
    params: dict[tuple[str, ...], np.ndarray] = {}
    unexpected, misshapen = [], []
    embeddings: dict[str, np.ndarray] = {}
    embedding_shape = (config.vocab_size, config.d_model)
    embedding_seen = False
    for key, value in state.items():
        if not key.startswith(prefix):
            continue
        short = key[len(prefix):]
        if short.startswith(_SKIPPED_PREFIXES):
            continue
        shape = tuple(np.shape(value))
        if short in _EMBEDDING_KEYS:
            embedding_seen = True
            if shape != embedding_shape:
                misshapen.append(f"{key!r} has shape {shape}, expected {embedding_shape} "
                                 f"(vocab_size, d_model)")
            else:
                embeddings[key] = np.asarray(value, np.float32)
            continue
        if short not in expected:
            unexpected.append(key)
            continue
        hf_shape, path, how = expected[short]
        if shape != hf_shape:
            misshapen.append(f"{key!r} has shape {shape}, expected {hf_shape}")
            continue
        params[path] = _transform(np.asarray(value, np.float32), how, config)
    missing = [prefix + k for k, (_, path, _) in expected.items() if path not in params]
    if not embedding_seen:
        missing.insert(0, f"{prefix}shared.weight (or {prefix}encoder.embed_tokens.weight)")
    problems = []
    if unexpected:
        hint = ("" if prefix else "; for a model that wraps T5 (e.g. MusicGen) pass its prefix, "
                "e.g. prefix='text_encoder.'")
        problems.append(f"unexpected T5 encoder keys {_names(unexpected)}{hint}")
    if misshapen:
        problems.append(f"wrong shapes for this config: {'; '.join(misshapen[:_SHOWN])}"
                        + (f" ... ({len(misshapen)} in all)" if len(misshapen) > _SHOWN else ""))
    if missing:
        problems.append(f"missing T5 encoder weights {_names(missing)}")
    if problems:
        raise CheckpointMismatchError(f"{source}: " + "; ".join(problems))
    tables = list(embeddings.items())
    for key, table in tables[1:]:
        # Tied copies of one table: both present is fine only if they agree.
        if not np.array_equal(table, tables[0][1]):
            raise CheckpointMismatchError(f"{source}: {key!r} and {tables[0][0]!r} should be the "
                                          f"same (tied) embedding but differ")
    params[("shared", "embedding")] = tables[0][1]
    return unflatten_dict(params)
