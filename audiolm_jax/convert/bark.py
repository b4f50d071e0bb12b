"""Bark's Hugging Face weights -> the project's modules (in progress: the three GPT stages).

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

`fine_stage_params` maps the fine stage (`fine_acoustics.` or a bare
`BarkFineModel`) onto `models.bark.BarkFine`: the same blocks, the per-book
`input_embeds_layers.j` stacked into `embeddings` [books, V, E], and the heads
`lm_heads.k` either checked equal to the embedding they are tied to (the
published checkpoints; a file that stores only one of a tied pair is fine) or,
untied, stacked into `heads` [heads, E, V].
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from audiolm_jax.convert.hf import map_state_dict, require_complete
from audiolm_jax.models.bark.model import BarkFine, BarkStageConfig, causal_decoder
from audiolm_jax.training.checkpointing import CheckpointMismatchError

_NORMS = {"layernorm_1": "attn_norm", "layernorm_2": "mlp_norm"}


def _expected_shapes(config: BarkStageConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
    if config.n_codes_total:
        codes = jnp.zeros((1, 2, config.n_codes_total), jnp.int32)
        abstract = jax.eval_shape(lambda: BarkFine(config).init(
            jax.random.key(0), codes, config.n_codes_given))
    else:
        abstract = jax.eval_shape(causal_decoder(config).init, jax.random.key(0),
                                  jnp.zeros((1, 2), jnp.int32))
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
    if prefix:
        state_dict = {k: v for k, v in state_dict.items() if k.startswith(prefix)}
    expected = _expected_shapes(config)
    params = map_state_dict(
        _numpy(state_dict), expected, map_key=_map_key,
        transform=lambda a, how: _transform(a, how, config),
        skip=lambda k: re.fullmatch(r"layers\.\d+\.attn\.bias", k) is not None, prefix=prefix,
        source=source, family="Bark stage")
    require_complete(params, expected, source, "Bark stage")
    return unflatten_dict(params)


def _numpy(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {k: np.asarray(v.detach().cpu().float().numpy() if hasattr(v, "detach") else v,
                          np.float32) for k, v in state_dict.items()}


def _transform(a: np.ndarray, how: str, config: BarkStageConfig) -> np.ndarray:
    """A torch-layout weight -> this module's layout (see the table above)."""
    heads, head_dim = config.num_heads, config.head_dim
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


def fine_stage_params(state_dict: Mapping[str, Any], config: BarkStageConfig, *,
                      prefix: str = "", source: str = "Bark checkpoint") -> dict:
    """The params of `BarkFine(config)` from the fine stage's state dict.

    Raises:
      CheckpointMismatchError: a key of no known kind, a wrong shape, a missing
        weight, or (tied config) a head that differs from its embedding.
    """
    if not config.n_codes_total:
        raise ValueError("fine_stage_params needs the fine stage's config (n_codes_total > 0)")
    weights = _numpy({k.removeprefix(prefix): v for k, v in state_dict.items()
                      if k.startswith(prefix)})
    books = config.n_codes_total
    num_heads = books - config.n_codes_given
    tables, heads = {}, {}
    for key in list(weights):
        embed = re.fullmatch(r"input_embeds_layers\.(\d+)\.weight", key)
        head = re.fullmatch(r"lm_heads\.(\d+)\.weight", key)
        if embed:
            tables[int(embed.group(1))] = weights.pop(key)
        elif head:
            heads[int(head.group(1))] = weights.pop(key)
    if config.tie_word_embeddings:
        for k, w in heads.items():     # tied: head k is embedding k + 1, stored once or twice
            twin = k + 1
            if twin not in tables:
                tables[twin] = w
            elif tables[twin].shape != w.shape or not np.array_equal(tables[twin], w):
                raise CheckpointMismatchError(
                    f"{source}: lm_heads.{k} differs from input_embeds_layers.{twin}, which the "
                    "config ties it to (tie_word_embeddings)")
    expected = _expected_shapes(config)
    missing = [j for j in range(books) if j not in tables]
    extra = sorted(set(tables) - set(range(books))) + sorted(set(heads) - set(range(num_heads)))
    if missing or extra:
        raise CheckpointMismatchError(
            f"{source}: the fine stage needs input_embeds_layers.0..{books - 1}"
            + (f" and lm_heads.0..{num_heads - 1}" if not config.tie_word_embeddings else "")
            + f"; missing books {missing}, unexpected indices {extra}")
    params = map_state_dict(
        weights, expected, map_key=_map_key, transform=lambda a, how: _transform(a, how, config),
        skip=lambda k: False, prefix="", source=source, family="Bark fine stage")
    params[("embeddings",)] = np.stack([tables[j] for j in range(books)])
    if not config.tie_word_embeddings:
        if sorted(heads) != list(range(num_heads)):
            raise CheckpointMismatchError(f"{source}: missing lm_heads (have {sorted(heads)})")
        params[("heads",)] = np.stack([heads[k].T for k in range(num_heads)])
    for path in (("embeddings",), ("heads",)):
        if path in params and params[path].shape != expected.get(path):
            raise CheckpointMismatchError(f"{source}: {path[0]} has shape {params[path].shape}, "
                                          f"the config implies {expected.get(path)}")
    require_complete(params, expected, source, "Bark fine stage")
    return unflatten_dict(params)
