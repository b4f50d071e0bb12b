"""Bark's Hugging Face weights -> the project's modules (in progress: the causal stages).

`causal_stage_params` maps one GPT stage of a `BarkModel` state dict (the keys
under `semantic.` or `coarse_acoustics.`, or a bare `BarkSemanticModel` /
`BarkCoarseModel`) onto `models.bark.causal_decoder`'s params, every key and
shape checked:

| Hugging Face (torch layout)                 | here                                    |
|---------------------------------------------|-----------------------------------------|
| input_embeds_layer.weight [V, E]            | embedding [V, E]                        |
| position_embeds_layer.weight [block, E]     | position_embedding [block, E]           |
| layers.i.layernorm_1 / _2 .weight, .bias    | layer_i/attn_norm, mlp_norm scale, bias |
| layers.i.attn.att_proj.weight [3E, E]       | layer_i/attn/qkv [E, 3, heads, head_dim]|
| layers.i.attn.att_proj.bias [3E]            | layer_i/attn/qkv_bias [3, heads, head]  |
| layers.i.attn.out_proj.weight [E, E]        | layer_i/attn/out [heads, head_dim, E]   |
| layers.i.mlp.in_proj.weight [4E, E]         | layer_i/mlp/wi [E, 1, 4E] (+ wi_bias)   |
| layers.i.mlp.out_proj.weight [E, 4E]        | layer_i/mlp/wo/kernel [4E, E] (+ bias)  |
| layernorm_final.weight, .bias               | final_norm scale, bias                  |
| lm_head.weight [V_out, E]                   | logits [E, V_out]                       |

The causal-mask buffers (`layers.i.attn.bias`) hold no weights and are skipped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from audiolm_jax.convert.hf import map_state_dict, require_complete
from audiolm_jax.models.bark.model import BarkStageConfig, causal_decoder

_NORMS = {"layernorm_1": "attn_norm", "layernorm_2": "mlp_norm"}


def _expected_shapes(config: BarkStageConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
    decoder = causal_decoder(config)
    abstract = jax.eval_shape(decoder.init, jax.random.key(0), jnp.zeros((1, 2), jnp.int32))
    import flax.linen as nn

    return {path: tuple(leaf.shape)
            for path, leaf in flatten_dict(nn.meta.unbox(abstract["params"])).items()}


def _map_key(key: str) -> tuple[tuple[str, ...], str] | None:
    simple = {"input_embeds_layer.weight": (("embedding",), "copy"),
              "position_embeds_layer.weight": (("position_embedding",), "copy"),
              "layernorm_final.weight": (("final_norm", "scale"), "copy"),
              "layernorm_final.bias": (("final_norm", "bias"), "copy"),
              "lm_head.weight": (("logits",), "transpose")}
    if key in simple:
        return simple[key]
    match = re.fullmatch(r"layers\.(\d+)\.(.+)", key)
    if not match:
        return None
    layer, rest = f"layer_{match.group(1)}", match.group(2)
    norm = re.fullmatch(r"(layernorm_[12])\.(weight|bias)", rest)
    if norm:
        return (layer, _NORMS[norm.group(1)], "scale" if norm.group(2) == "weight" else "bias"), \
            "copy"
    table = {"attn.att_proj.weight": (("attn", "qkv"), "qkv"),
             "attn.att_proj.bias": (("attn", "qkv_bias"), "qkv_bias"),
             "attn.out_proj.weight": (("attn", "out"), "out"),
             "attn.out_proj.bias": (("attn", "out_bias"), "copy"),
             "mlp.in_proj.weight": (("mlp", "wi"), "mlp_in"),
             "mlp.in_proj.bias": (("mlp", "wi_bias"), "row"),
             "mlp.out_proj.weight": (("mlp", "wo", "kernel"), "transpose"),
             "mlp.out_proj.bias": (("mlp", "wo", "bias"), "copy")}
    if rest not in table:
        return None
    path, how = table[rest]
    return (layer, *path), how


def causal_stage_params(state_dict: Mapping[str, Any], config: BarkStageConfig, *,
                        prefix: str = "", source: str = "Bark checkpoint") -> dict:
    """The params of `causal_decoder(config)` from a Bark GPT stage's state dict.

    Args:
      state_dict: key -> array (torch tensors or numpy); keys outside `prefix` are
        ignored when a prefix is given (a whole `BarkModel`'s dict).
      config: the stage's settings (its `config.json` sub-config).
      prefix: e.g. "semantic." or "coarse_acoustics.".

    Raises:
      CheckpointMismatchError: a key of no known kind, a shape `config` does not
        imply, or a weight the model needs that the dict lacks (named).
    """
    heads, head_dim, embed = config.num_heads, config.head_dim, config.hidden_size

    def transform(a: np.ndarray, how: str) -> np.ndarray:
        if how == "copy":
            return a
        if how == "transpose":
            return a.T
        if how == "qkv":            # [3E, E] (q | k | v rows, heads inside) -> [E, 3, H, D]
            return a.T.reshape(a.shape[1], 3, heads, head_dim)
        if how == "qkv_bias":
            return a.reshape(3, heads, head_dim)
        if how == "out":            # [E_out, H*D] -> [H, D, E_out]
            return a.T.reshape(heads, head_dim, a.shape[0])
        if how == "mlp_in":         # [4E, E] -> [E, 1, 4E]
            return a.T[:, None, :]
        if how == "row":
            return a[None, :]
        raise AssertionError(how)

    if prefix:
        state_dict = {k: v for k, v in state_dict.items() if k.startswith(prefix)}
    expected = _expected_shapes(config)
    params = map_state_dict(
        {k: np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v)
         for k, v in state_dict.items()}, expected, map_key=_map_key, transform=transform,
        skip=lambda k: re.fullmatch(r"layers\.\d+\.attn\.bias", k) is not None, prefix=prefix,
        source=source, family="Bark stage")
    require_complete(params, expected, source, "Bark stage")
    del embed
    return unflatten_dict(params)
