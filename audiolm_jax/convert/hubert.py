"""Hugging Face HuBERT checkpoints -> `audiolm_jax.models.hubert.HuBERT` variables.

    python -m audiolm_jax.convert hubert HF_DIR OUT_DIR

Reads a directory as `save_pretrained` writes it (`config.json` +
`model.safetensors`, e.g. `facebook/hubert-base-ls960`) with safetensors and
numpy only. `HubertModel` keys and `HubertForCTC` / `HubertForSequenceClassification`
keys (prefixed `hubert.`) are both accepted; heads other than the encoder and
the training-only `masked_spec_embed` are skipped and listed. Every encoder key
must be used and every shape must match the Flax init, else the error names it.

Layouts: torch `Linear.weight [out, in]` -> Flax `kernel [in, out]`; conv
weights `[out, in / groups, K]` -> `[K, in / groups, out]`; the positional
conv's weight-norm gain `[1, 1, K]` (old `weight_g` or new
`parametrizations.weight.original0`) -> `[K, 1, 1]`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from audiolm_jax.convert.hf import (
    convert_to_export,
    load_export_or_hf,
    load_hf_dir,
    map_state_dict,
    require_complete,
)
from audiolm_jax.models.hubert.model import HuBERT, HubertConfig

MODEL_NAME = "hubert"
_SKIPPED_PREFIXES = ("masked_spec_embed", "lm_head.", "projector.", "classifier.",
                     "layer_weights")

_CONV = (2, 1, 0)       # [out, in, K] -> [K, in, out]
_LINEAR = (1, 0)        # [out, in] -> [in, out]
_GAIN = (2, 0, 1)       # [1, 1, K] -> [K, 1, 1]


def _map_key(key: str) -> tuple[tuple[str, ...], tuple[int, ...] | None] | None:
    """HF key (without `hubert.`) -> (Flax param path, transpose), or None if unknown."""
    m = re.fullmatch(r"feature_extractor\.conv_layers\.(\d+)\.(conv|layer_norm)\.(weight|bias)",
                     key)
    if m:
        i, part, kind = m.groups()
        if part == "conv":
            name = f"conv_layers_{i}_conv_{'kernel' if kind == 'weight' else 'bias'}"
            return ("feature_extractor", name), _CONV if kind == "weight" else None
        return (("feature_extractor", f"conv_layers_{i}_layer_norm",
                 "scale" if kind == "weight" else "bias"), None)
    m = re.fullmatch(r"encoder\.pos_conv_embed\.conv\.(weight_g|weight_v|bias|"
                     r"parametrizations\.weight\.original0|parametrizations\.weight\.original1)",
                     key)
    if m:
        part = {"parametrizations.weight.original0": "weight_g",
                "parametrizations.weight.original1": "weight_v"}.get(m.group(1), m.group(1))
        how = {"weight_g": _GAIN, "weight_v": _CONV, "bias": None}[part]
        return ("encoder_pos_conv_embed", part), how
    m = re.fullmatch(r"(feature_projection\.layer_norm|feature_projection\.projection|"
                     r"encoder\.layer_norm)\.(weight|bias)", key)
    if m:
        module, kind = m.groups()
        name = module.replace(".", "_")
        is_norm = "norm" in module
        leaf = ("scale" if is_norm else "kernel") if kind == "weight" else "bias"
        return (name, leaf), (_LINEAR if leaf == "kernel" else None)
    m = re.fullmatch(r"encoder\.layers\.(\d+)\.(attention\.(?:q|k|v|out)_proj|layer_norm|"
                     r"final_layer_norm|feed_forward\.intermediate_dense|"
                     r"feed_forward\.output_dense)\.(weight|bias)", key)
    if m:
        i, module, kind = m.groups()
        is_norm = module.endswith("layer_norm")
        leaf = ("scale" if is_norm else "kernel") if kind == "weight" else "bias"
        path = (f"encoder_layers_{i}",) + (
            ("attention", module.split(".")[1]) if module.startswith("attention") else
            (module.replace(".", "_"),))
        return path + (leaf,), (_LINEAR if leaf == "kernel" else None)
    return None


def expected_shapes(config: HubertConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Flax param path -> shape, from an abstract init."""
    dummy = jax.ShapeDtypeStruct((1, max(config.hop_length * 2, 400)), jnp.float32)
    shapes = jax.eval_shape(lambda k, x: HuBERT(config).init(k, x), jax.random.key(0), dummy)
    return {path: leaf.shape for path, leaf in flatten_dict(shapes["params"]).items()}


def variables_from_state_dict(state_dict: Mapping[str, np.ndarray], config: HubertConfig,
                              source: str = "state dict") -> dict:
    """HF HuBERT weights -> {"params": ...} float32 numpy, every key and shape checked.

    Raises:
      CheckpointMismatchError: naming the unknown, missing or misshapen key.
    """
    expected = expected_shapes(config)
    params = map_state_dict(
        state_dict, expected, map_key=_map_key,
        transform=lambda array, how: array.transpose(how) if how is not None else array,
        skip=lambda short: short.startswith(_SKIPPED_PREFIXES), prefix="hubert.",
        source=source, family="HuBERT")
    require_complete(params, expected, source, "HuBERT")
    return {"params": unflatten_dict(params)}


def load_hf_hubert(hf_dir: str | os.PathLike) -> tuple[HubertConfig, dict]:
    """(config, variables) from a Hugging Face HuBERT directory."""
    return load_hf_dir(hf_dir, "hubert", HubertConfig, variables_from_state_dict)


def convert_hubert(hf_dir: str | os.PathLike, out_dir: str | os.PathLike
                   ) -> tuple[HubertConfig, dict, Path]:
    """Converts a Hugging Face HuBERT directory into an export (`save_exported`)."""
    return convert_to_export(hf_dir, out_dir, MODEL_NAME, load_hf_hubert, "huggingface-hubert")


def load_hubert(path: str | os.PathLike) -> tuple[HuBERT, dict]:
    """A HuBERT and its variables from an export or a Hugging Face directory."""
    config, variables = load_export_or_hf(path, MODEL_NAME, HubertConfig, load_hf_hubert)
    return HuBERT(config), variables
