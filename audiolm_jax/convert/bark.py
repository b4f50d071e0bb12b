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

`convert_bark(HF_DIR, OUT_DIR)` (`python -m audiolm_jax.convert bark`) reads a
whole `BarkModel` directory (`suno/bark`, `suno/bark-small`: `config.json`,
`model.safetensors` or `pytorch_model.bin`, `generation_config.json`, and the
BERT tokenizer), converts the three stages and the EnCodec codec
(`convert.encodec`), and writes one export (`models.bark.load` reads it).

`fine_stage_params` maps the fine stage (`fine_acoustics.` or a bare
`BarkFineModel`) onto `models.bark.BarkFine`: the same blocks, the per-book
`input_embeds_layers.j` stacked into `embeddings` [books, V, E], and the heads
`lm_heads.k` either checked equal to the embedding they are tied to (the
published checkpoints; a file that stores only one of a tied pair is fine) or,
untied, stacked into `heads` [heads, E, V].
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from audiolm_jax.convert.hf import (
    SAFETENSORS_FILE,
    SAFETENSORS_INDEX,
    _listing,
    map_state_dict,
    read_hf_config,
    read_safetensors_dir,
    read_torch_file,
    require_complete,
)
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


# ----------------------------------------------------------------------------- whole model

TORCH_FILE = "pytorch_model.bin"
GENERATION_FILE = "generation_config.json"
# Where each part of a `BarkModel` state dict lives, and its config.json entry.
PARTS = {"semantic": ("semantic.", "semantic_config"),
         "coarse": ("coarse_acoustics.", "coarse_acoustics_config"),
         "fine": ("fine_acoustics.", "fine_acoustics_config"),
         "codec": ("codec_model.", "codec_config")}


def read_weights(hf_dir: Path) -> dict[str, np.ndarray]:
    """`model.safetensors` (or its shards), else `pytorch_model.bin` through
    `torch.load(weights_only=True)` (a clear message when torch is missing)."""
    if (hf_dir / SAFETENSORS_FILE).is_file() or (hf_dir / SAFETENSORS_INDEX).is_file():
        return read_safetensors_dir(hf_dir)
    file = hf_dir / TORCH_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{hf_dir} has neither {SAFETENSORS_FILE} nor {TORCH_FILE}; "
                                f"found: {_listing(hf_dir)}")
    state = read_torch_file(file)
    return {k: v.float().numpy() for k, v in state.items() if hasattr(v, "numpy")}


def generation_settings(hf_dir: Path) -> dict[str, dict]:
    """The three stages' generation settings from `generation_config.json` (Bark's
    defaults for what it lacks); sampling fields are left to the caller."""
    from audiolm_jax.models.bark.generation import CoarseSettings, FineSettings, SemanticSettings

    data = {}
    if (hf_dir / GENERATION_FILE).is_file():
        data = json.loads((hf_dir / GENERATION_FILE).read_text())
    semantic = data.get("semantic_config", {})
    coarse = {**data.get("coarse_acoustics_config", {}),
              **{k: semantic[k] for k in ("semantic_rate_hz", "semantic_vocab_size",
                                          "semantic_pad_token") if k in semantic}}
    fine = dict(data.get("fine_acoustics_config", {}))
    if "semantic_vocab_size" in semantic:
        fine["semantic_vocab_size"] = semantic["semantic_vocab_size"]
    for settings in (coarse, fine):
        if "codebook_size" in data:
            settings["codebook_size"] = data["codebook_size"]
        if "n_coarse_codebooks" in coarse:
            settings["n_coarse_codebooks"] = coarse["n_coarse_codebooks"]

    def pick(cls, values):
        names = {f.name for f in dataclasses.fields(cls)}
        return dataclasses.asdict(cls(**{k: v for k, v in values.items() if k in names}))

    return {"semantic": pick(SemanticSettings, semantic), "coarse": pick(CoarseSettings, coarse),
            "fine": pick(FineSettings, fine)}


def load_hf_bark(hf_dir: str | os.PathLike) -> tuple[dict, dict]:
    """(config, variables) of a Hugging Face `BarkModel` directory, as the export holds them:
    config `{"semantic", "coarse", "fine": BarkStageConfig dicts, "codec": CodecConfig
    dict, "generation": {stage: settings}}`, variables `{"semantic", "coarse", "fine":
    {"params"}, "codec": {"params", "codebook"}}`.

    Raises:
      FileNotFoundError: no config.json or weights.
      ValueError: a config of another model_type, a part whose weights or config are
        missing (named), or weights that do not fit the config (CheckpointMismatchError).
    """
    from audiolm_jax.convert.encodec import variables_from_state_dict
    from audiolm_jax.models.codec.model import CodecConfig

    hf_dir = Path(hf_dir)
    hf_config = read_hf_config(hf_dir, model_type="bark")
    weights = read_weights(hf_dir)
    for part, (prefix, entry) in PARTS.items():
        if not hf_config.get(entry):
            raise ValueError(f"{hf_dir}/config.json has no {entry}: a BarkModel needs its "
                             f"{part} part")
        if not any(k.startswith(prefix) for k in weights):
            raise CheckpointMismatchError(f"{hf_dir}: no {prefix}* weights: the {part} part is "
                                          "missing (a BarkModel directory holds all four parts)")
    config, variables = {}, {}
    for part in ("semantic", "coarse", "fine"):
        prefix, entry = PARTS[part]
        stage = BarkStageConfig.from_hf(hf_config[entry])
        convert = fine_stage_params if part == "fine" else causal_stage_params
        params = convert(weights, stage, prefix=prefix, source=f"{hf_dir} ({part})")
        config[part], variables[part] = stage.to_dict(), {"params": params}
    codec_config = CodecConfig.from_encodec_config(hf_config["codec_config"])
    variables["codec"] = variables_from_state_dict(
        {k.removeprefix("codec_model."): v for k, v in weights.items()
         if k.startswith("codec_model.")}, codec_config, source=f"{hf_dir} (codec)")
    config["codec"] = codec_config.to_dict()
    config["generation"] = generation_settings(hf_dir)
    return config, variables


def convert_bark(hf_dir: str | os.PathLike, out_dir: str | os.PathLike
                 ) -> tuple[dict, dict, Path]:
    """Converts a Hugging Face `BarkModel` directory into one export, with its tokenizer
    (`tokenizer.json`) when the directory has one.

    Returns:
      (config, variables, the absolute export directory).
    """
    from audiolm_jax.models.bark import MODEL_NAME
    from audiolm_jax.text.wordpiece import TOKENIZER_FILE, VOCAB_FILE, WordPieceTokenizer
    from audiolm_jax.training.export import MODEL_FILE, save_exported

    config, variables = load_hf_bark(hf_dir)
    hf_dir, out = Path(hf_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / MODEL_FILE).unlink(missing_ok=True)     # a half-written export is not an export
    if (hf_dir / TOKENIZER_FILE).is_file() or (hf_dir / VOCAB_FILE).is_file():
        WordPieceTokenizer.from_hf_dir(hf_dir).save(out / TOKENIZER_FILE)
    else:
        logging.warning("%s has no %s or %s: the export takes token ids only (no text)",
                        hf_dir, TOKENIZER_FILE, VOCAB_FILE)
    path = save_exported(out, MODEL_NAME, config, variables,
                         source=f"huggingface-bark:{hf_dir.absolute()}")
    return config, variables, path
