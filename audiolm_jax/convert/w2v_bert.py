"""Hugging Face w2v-BERT 2.0 checkpoints -> `audiolm_jax.models.w2v_bert.W2vBert` variables.

    python -m audiolm_jax.convert w2v-bert HF_DIR OUT_DIR

Reads a directory as `save_pretrained` writes it (`config.json` +
`model.safetensors`, e.g. `facebook/w2v-bert-2.0`) with safetensors and numpy
only. `Wav2Vec2BertModel` keys and the keys of its heads' models (prefixed
`wav2vec2_bert.`, e.g. `Wav2Vec2BertForCTC`) are both accepted; the heads are
skipped and the adapter is refused. Every encoder key must be used and every
shape must match the Flax init, else the error names it. `masked_spec_embed`
(present only when the checkpoint was saved with time masking on) falls back to
the Flax init when absent.

Layouts: torch `Linear.weight [out, in]` -> Flax `kernel [in, out]`; pointwise
convs `[out, in, 1]` -> `[in, out]`; the depthwise conv `[C, 1, K]` -> `[K, 1, C]`;
LayerNorm `weight` -> `scale`; embeddings and position biases unchanged.
"""

from __future__ import annotations

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
    convert_to_export,
    load_export_or_hf,
    load_hf_dir,
    map_state_dict,
    require_complete,
)
from audiolm_jax.models.w2v_bert.model import W2vBert, W2vBertConfig
from audiolm_jax.training.checkpointing import CheckpointMismatchError

MODEL_NAME = "w2v_bert"
_PREFIX = "wav2vec2_bert."
_SKIPPED_PREFIXES = ("lm_head.", "projector.", "classifier.", "layer_weights", "tdnn.",
                     "feature_extractor.", "objective.")


def _map_key(key: str) -> tuple[tuple[str, ...], str] | None:
    """HF key (without the prefix) -> (Flax param path, how to transform), or None."""
    if key == "masked_spec_embed":
        return ("masked_spec_embed",), "copy"
    m = re.fullmatch(r"feature_projection\.(layer_norm|projection)\.(weight|bias)", key)
    if m:
        module, kind = m.groups()
        return _leaf((f"feature_projection_{module}",), module, kind)
    m = re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)", key)
    if not m:
        return None
    layer, rest = m.groups()
    prefix = (f"encoder_layers_{layer}",)
    parts = rest.split(".")
    if rest in ("self_attn.pos_bias_u", "self_attn.pos_bias_v"):
        return prefix + tuple(parts), "copy"
    if rest == "self_attn.distance_embedding.weight":
        return prefix + ("self_attn", "distance_embedding"), "copy"
    if rest == "conv_module.depthwise_conv.weight":
        return prefix + ("conv_module", "depthwise_conv"), "depthwise"
    if rest in ("conv_module.pointwise_conv1.weight", "conv_module.pointwise_conv2.weight"):
        return prefix + ("conv_module", parts[1], "kernel"), "pointwise"
    if len(parts) < 2 or parts[-1] not in ("weight", "bias"):
        return None
    return _leaf(prefix + tuple(parts[:-1]), parts[-2], parts[-1])


def _leaf(path: tuple[str, ...], module: str, kind: str) -> tuple[tuple[str, ...], str]:
    if module.endswith("layer_norm"):
        return path + ("scale" if kind == "weight" else "bias",), "copy"
    return path + ("kernel" if kind == "weight" else "bias",), ("linear" if kind == "weight"
                                                                else "copy")


def _transform(array: np.ndarray, how: str) -> np.ndarray:
    if how == "linear":
        return array.T
    if how == "pointwise":
        return array[:, :, 0].T
    if how == "depthwise":
        return array.transpose(2, 1, 0)
    return array


def init_variables(config: W2vBertConfig, seed: int = 0) -> dict:
    """A randomly initialized W2vBert's (unboxed) variables."""
    dummy = jnp.zeros((1, 4, config.feature_projection_input_dim), jnp.float32)
    return nn.meta.unbox(W2vBert(config).init(jax.random.key(seed), dummy))


def expected_shapes(config: W2vBertConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Flax param path -> shape, from an abstract init."""
    shapes = jax.eval_shape(lambda: init_variables(config))
    return {path: leaf.shape for path, leaf in flatten_dict(shapes["params"]).items()}


def variables_from_state_dict(state_dict: Mapping[str, np.ndarray], config: W2vBertConfig,
                              source: str = "state dict") -> dict:
    """HF w2v-BERT weights -> {"params": ...} float32 numpy, every key and shape checked.

    Raises:
      CheckpointMismatchError: naming the unknown, missing or misshapen key.
    """
    def map_key(short: str):
        if short.startswith(("adapter.", "intermediate_ffn.")):
            raise CheckpointMismatchError(f"{source}: {short!r} belongs to the CTC "
                                          "adapter, which this encoder does not have "
                                          "(add_adapter=True)")
        return _map_key(short)

    expected = expected_shapes(config)
    params = map_state_dict(
        state_dict, expected, map_key=map_key, transform=_transform,
        skip=lambda short: short.startswith(_SKIPPED_PREFIXES + ("encoder.embed_positions",)),
        prefix=_PREFIX, source=source, family="w2v-BERT")
    if ("masked_spec_embed",) not in params:
        init = init_variables(config)["params"]["masked_spec_embed"]
        params[("masked_spec_embed",)] = np.asarray(init, np.float32)
    require_complete(params, expected, source, "w2v-BERT")
    return {"params": unflatten_dict(params)}


def load_hf_w2v_bert(hf_dir: str | os.PathLike) -> tuple[W2vBertConfig, dict]:
    """(config, variables) from a Hugging Face w2v-BERT directory."""
    return load_hf_dir(hf_dir, "wav2vec2-bert", W2vBertConfig, variables_from_state_dict)


def convert_w2v_bert(hf_dir: str | os.PathLike, out_dir: str | os.PathLike
                     ) -> tuple[W2vBertConfig, dict, Path]:
    """Converts a Hugging Face w2v-bert directory into an export (`save_exported`)."""
    return convert_to_export(hf_dir, out_dir, MODEL_NAME, load_hf_w2v_bert, "huggingface-w2v-bert")


def load_w2v_bert(path: str | os.PathLike) -> tuple[W2vBert, dict]:
    """A W2vBert and its variables from an export or a Hugging Face directory."""
    config, variables = load_export_or_hf(path, MODEL_NAME, W2vBertConfig, load_hf_w2v_bert)
    return W2vBert(config), variables
