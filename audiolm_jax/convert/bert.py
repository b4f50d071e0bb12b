"""Hugging Face BERT checkpoints -> `audiolm_jax.models.bert.Bert` variables (+ tokenizer).

    python -m audiolm_jax.convert bert HF_DIR OUT_DIR

Reads a directory as `save_pretrained` writes it (`config.json` +
`model.safetensors`, e.g. `bert-base-uncased` or
`sentence-transformers/all-MiniLM-L6-v2`) with safetensors and numpy only.
Bare `BertModel` keys and the keys of its heads' models (prefixed `bert.`,
e.g. `BertForMaskedLM`) are both accepted; the heads (`cls.*`), the pooler and
the `embeddings.position_ids` buffer are skipped. Every other key must land on
a `Bert` param with the shape its init gives, and every param must be filled,
else the error names the key (the table is in `models/bert/model.py`'s docstring).

Layouts: torch `Linear.weight [out, in]` -> Flax `kernel [in, out]`, with q/k/v
kernels `[hidden, heads, head_dim]` and biases `[heads, head_dim]`, the
attention output kernel `[heads, head_dim, hidden]`; LayerNorm `weight` ->
`scale`; embedding tables unchanged.

The tokenizer travels with the weights: the export holds `tokenizer.json`
(copied, or built from `vocab.txt`), checked against the checkpoint's
vocab_size and pad id before anything is written.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from audiolm_jax.convert.hf import (
    place_checked,
    read_hf_config,
    read_safetensors_dir,
    require_complete,
)
from audiolm_jax.models.bert.model import Bert, BertConfig
from audiolm_jax.text.wordpiece import TOKENIZER_FILE, WordPieceTokenizer
from audiolm_jax.training.checkpointing import CheckpointMismatchError
from audiolm_jax.training.export import MODEL_FILE, load_exported, save_exported

MODEL_NAME = "bert"
"""The model name of BERT exports (`save_exported` / `load_exported`)."""

_PREFIX = "bert."
_SKIPPED_PREFIXES = ("cls.", "pooler.")
_SKIPPED_KEYS = ("embeddings.position_ids",)

_EMBEDDINGS = ("word_embeddings", "position_embeddings", "token_type_embeddings")
_LAYER_MODULES = {
    "attention.self.query": ("attention", "query"),
    "attention.self.key": ("attention", "key"),
    "attention.self.value": ("attention", "value"),
    "attention.output.dense": ("attention", "out"),
    "attention.output.LayerNorm": ("attention_layer_norm",),
    "intermediate.dense": ("intermediate",),
    "output.dense": ("output",),
    "output.LayerNorm": ("output_layer_norm",),
}
_LAYER_KEY = re.compile(r"encoder\.layer\.(\d+)\.(.+)\.(weight|bias)")


def _map_key(key: str) -> tuple[tuple[str, ...], str] | None:
    """HF key (without the prefix) -> (Flax param path, how to transform), or None."""
    m = re.fullmatch(r"embeddings\.(\w+)\.weight", key)
    if m and m.group(1) in _EMBEDDINGS:
        return ("embeddings", m.group(1), "embedding"), "copy"
    m = re.fullmatch(r"embeddings\.LayerNorm\.(weight|bias)", key)
    if m:
        return ("embeddings", "layer_norm", "scale" if m.group(1) == "weight" else "bias"), "copy"
    m = _LAYER_KEY.fullmatch(key)
    if not m or m.group(2) not in _LAYER_MODULES:
        return None
    layer, module, kind = m.groups()
    path = (f"encoder_layer_{layer}",) + _LAYER_MODULES[module]
    if module.endswith("LayerNorm"):
        return path + ("scale" if kind == "weight" else "bias",), "copy"
    if kind == "bias":
        return path + ("bias",), ("heads_bias" if module.startswith("attention.self")
                                  else "copy")
    if module.startswith("attention.self"):
        return path + ("kernel",), "heads_in"          # [H*D, hidden] -> [hidden, H, D]
    if module == "attention.output.dense":
        return path + ("kernel",), "heads_out"         # [hidden, H*D] -> [H, D, hidden]
    return path + ("kernel",), "linear"


def _transform(array: np.ndarray, how: str, config: BertConfig) -> np.ndarray:
    """Torch layout -> Flax layout. A size that cannot be split into heads is left
    unsplit, so `place_checked` reports the key with its shape."""
    heads, dh = config.num_attention_heads, config.head_dim
    if how == "copy":
        return array
    if how == "heads_bias":
        return array.reshape(heads, dh) if array.shape == (heads * dh,) else array
    kernel = array.T
    if how == "heads_in" and kernel.ndim == 2 and kernel.shape[1] == heads * dh:
        return kernel.reshape(kernel.shape[0], heads, dh)
    if how == "heads_out" and kernel.ndim == 2 and kernel.shape[0] == heads * dh:
        return kernel.reshape(heads, dh, kernel.shape[1])
    return kernel


def init_variables(config: BertConfig, seed: int = 0) -> dict:
    """A randomly initialized Bert's (unboxed) variables."""
    dummy = jnp.zeros((1, 4), jnp.int32)
    return nn.meta.unbox(Bert(config).init(jax.random.key(seed), dummy,
                                           jnp.ones((1, 4), bool)))


def expected_shapes(config: BertConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Flax param path -> shape, from an abstract init."""
    shapes = jax.eval_shape(lambda: init_variables(config))
    return {path: leaf.shape for path, leaf in flatten_dict(shapes["params"]).items()}


def variables_from_state_dict(state_dict: Mapping[str, np.ndarray], config: BertConfig,
                              source: str = "state dict") -> dict:
    """HF BERT weights -> {"params": ...} float32 numpy, every key and shape checked.

    Raises:
      CheckpointMismatchError: naming the unexpected, repeated, missing or
        misshapen key.
    """
    expected = expected_shapes(config)
    params: dict[tuple[str, ...], np.ndarray] = {}
    origin: dict[tuple[str, ...], str] = {}
    for key, value in state_dict.items():
        short = key.removeprefix(_PREFIX)
        if short.startswith(_SKIPPED_PREFIXES) or short in _SKIPPED_KEYS:
            continue
        mapped = _map_key(short)
        if mapped is None:
            raise CheckpointMismatchError(f"{source}: unexpected BERT key {key!r}")
        path, how = mapped
        if path in origin:
            # Bare and `bert.`-prefixed copies of one weight: which one is meant is unclear.
            raise CheckpointMismatchError(f"{source}: {key!r} and {origin[path]!r} are the "
                                          f"same weight ({'/'.join(path)})")
        array = _transform(np.asarray(value, np.float32), how, config)
        place_checked(params, path, array, key, np.shape(value), expected, source)
        origin[path] = key
    require_complete(params, expected, source, "BERT")
    return {"params": unflatten_dict(params)}


def load_hf_bert(hf_dir: str | os.PathLike) -> tuple[BertConfig, dict]:
    """(config, variables) from a Hugging Face BERT directory (weights only, no tokenizer)."""
    hf_config = read_hf_config(hf_dir, model_type="bert")
    try:
        config = BertConfig.from_hf(hf_config)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{Path(hf_dir) / 'config.json'}: {e}") from e
    return config, variables_from_state_dict(read_safetensors_dir(hf_dir), config,
                                             source=str(hf_dir))


def convert_bert(hf_dir: str | os.PathLike, out_dir: str | os.PathLike
                 ) -> tuple[BertConfig, dict, Path]:
    """Converts a Hugging Face BERT directory into an export with its `tokenizer.json`.

    Raises:
      FileNotFoundError: when `hf_dir` lacks config.json, safetensors weights,
        or a tokenizer (tokenizer.json or vocab.txt).
      CheckpointMismatchError: when the weights do not fit config.json or the
        tokenizer does not fit the weights (nothing is written then).
    """
    config, variables = load_hf_bert(hf_dir)
    tokenizer = WordPieceTokenizer.from_hf_dir(hf_dir)
    tokenizer.check_compatible(config, source=str(hf_dir))
    config = dataclasses.replace(config, vocab_hash=tokenizer.vocab_hash)
    # The tokenizer goes first (and an earlier export's model.json goes before
    # it): `save_exported` writes model.json last, so a directory with
    # model.json is a complete export, tokenizer included.
    (Path(out_dir) / MODEL_FILE).unlink(missing_ok=True)
    tokenizer.save(Path(out_dir) / TOKENIZER_FILE)
    out = save_exported(out_dir, MODEL_NAME, config.to_dict(), variables,
                        source=f"huggingface-bert:{Path(hf_dir).absolute()}")
    return config, variables, out


def load_bert(path: str | os.PathLike) -> tuple[BertConfig, dict, WordPieceTokenizer]:
    """(config, variables, tokenizer) from a BERT export or a Hugging Face directory.

    Raises:
      CheckpointMismatchError: for an export of another model, or a tokenizer
        that does not match the weights.
      FileNotFoundError: when neither model.json nor config.json is there, or
        the tokenizer is missing.
    """
    path = Path(path)
    if (path / MODEL_FILE).is_file():
        config_dict, variables = load_exported(path, expected_model=MODEL_NAME)
        config = BertConfig(**config_dict)
        file = path / TOKENIZER_FILE
        if not file.is_file():
            raise FileNotFoundError(f"BERT export {path} has no {TOKENIZER_FILE} (convert_bert "
                                    f"writes one next to {MODEL_FILE})")
        tokenizer = WordPieceTokenizer.from_file(file)
    else:
        config, variables = load_hf_bert(path)
        variables = jax.tree.map(jnp.asarray, variables)
        tokenizer = WordPieceTokenizer.from_hf_dir(path)
    tokenizer.check_compatible(config, source=str(path))
    return config, variables, tokenizer
