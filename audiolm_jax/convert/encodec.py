"""Hugging Face EnCodec checkpoints -> this project's `Codec` (no torch needed).

Reads a directory as `EncodecModel.save_pretrained` writes it: `config.json`
plus `model.safetensors` (or shards `model-0000x-of-0000y.safetensors` listed
in `model.safetensors.index.json`), with `safetensors.numpy` and numpy only.

The key mapping is the table in `audiolm_jax/models/codec/seanet.py`'s docstring:
`{encoder,decoder}.layers.{i}` -> `params/{encoder,decoder}/layers_{i}`,
`block.{j}` -> `block_{j}`, `conv.`/`lstm.` dropped, both weight-norm
spellings (`conv.weight_g`/`conv.weight_v` and
`conv.parametrizations.weight.original0`/`original1`), time group norm
(`conv.weight`, `norm.weight` -> `norm/scale`, `norm.bias`), kernels permuted
to channels last, LSTM matrices transposed; and the quantizer buffers
`quantizer.layers.{i}.codebook.{inited,cluster_size,embed,embed_avg}` ->
`codebook/quantizer/layers_{i}/{initialized,cluster_size,embed,embed_avg}`.

Every checkpoint key must land on a variable of the model that `config.json`
describes, with the shape that model's `init` gives, and every variable must
be filled: anything else (a checkpoint of another architecture, a
config.json that does not belong to the weights) is a
`CheckpointMismatchError` naming the key and both shapes.

A codec stored inside another model's checkpoint (MusicGen's 32 kHz EnCodec:
`audio_encoder.*` in `model.safetensors`, its config the `audio_encoder`
sub-dict of config.json) converts from the state dict and that sub-dict with
`encodec_from_state(..., prefix="audio_encoder.")`, other keys ignored.

    config, variables = load_hf_encodec("encodec_24khz/")    # in memory
    convert_encodec("encodec_24khz/", "exports/encodec_24khz")  # to an export
    model, variables = load_codec("exports/encodec_24khz")

    hf = read_hf_config("musicgen-small/")                   # a MusicGen checkpoint
    config, variables = encodec_from_state(read_safetensors_dir("musicgen-small/"),
                                           hf["audio_encoder"], prefix="audio_encoder.")
    save_codec_export("exports/encodec_32khz", config, variables)
"""

from __future__ import annotations

import functools
import json
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

from audiolm_jax.convert.hf import CONFIG_FILE, read_hf_config, read_safetensors_dir
from audiolm_jax.models.codec.model import Codec, CodecConfig
from audiolm_jax.models.codec.seanet import decoder_plan
from audiolm_jax.training.checkpointing import CheckpointMismatchError
from audiolm_jax.training.export import MODEL_FILE, load_exported, save_exported

MODEL_NAME = "codec"
"""The model name of codec exports (`save_exported` / `load_exported`)."""


# Below a conv module (`EncodecConv1d` / `EncodecConvTranspose1d`): HF key -> Flax path.
_CONV_KEYS = {
    "conv.weight_g": ("weight_g",),
    "conv.weight_v": ("weight_v",),
    "conv.parametrizations.weight.original0": ("weight_g",),
    "conv.parametrizations.weight.original1": ("weight_v",),
    "conv.weight": ("weight",),
    "conv.bias": ("bias",),
    "norm.weight": ("norm", "scale"),
    "norm.bias": ("norm", "bias"),
}
# Non-persistent buffers of `EncodecConv1d`, derived from the architecture; older
# checkpoints may carry them. They hold no weights, so they are skipped.
_DERIVED_BUFFERS = ("stride", "kernel_size", "padding_total")
_CODEBOOK_KEYS = {"inited": "initialized", "cluster_size": "cluster_size", "embed": "embed",
                  "embed_avg": "embed_avg"}

_SEANET_KEY = re.compile(
    r"(?P<part>encoder|decoder)\.layers\.(?P<i>\d+)\."
    r"(?:(?:block\.(?P<j>\d+)|(?P<shortcut>shortcut))\.)?(?P<rest>.+)")
_LSTM_KEY = re.compile(r"lstm\.(?P<name>(weight|bias)_(ih|hh)_l\d+)")
_CODEBOOK_KEY = re.compile(r"quantizer\.layers\.(?P<i>\d+)\.codebook\.(?P<name>\w+)")

# Kernel permutations from torch's layout to channels last.
_CONV_PERM = (2, 1, 0)  # torch Conv1d [out, in, K] -> [K, in, out]
_CONV_T_PERM = (2, 0, 1)  # torch ConvTranspose1d [in, out, K] -> [K, in, out]


# ----------------------------------------------------------------------------- key mapping


def _conv_transpose_layers(config: CodecConfig) -> set[int]:
    return {i for i, spec in enumerate(decoder_plan(config.seanet))
            if spec.kind == "conv_transpose"}


def _map_key(key: str, conv_transposes: set[int]) -> tuple[tuple[str, ...], tuple[int, ...] | str]:
    """(Flax path, transform) of one HF key; transform is a permutation, "T",
    "scalar" or "" (as is). Raises KeyError for a key of no known kind."""
    match = _CODEBOOK_KEY.fullmatch(key)
    if match and match["name"] in _CODEBOOK_KEYS:
        name = _CODEBOOK_KEYS[match["name"]]
        return (("codebook", "quantizer", f"layers_{match['i']}", name),
                "scalar" if name == "initialized" else "")
    match = _SEANET_KEY.fullmatch(key)
    if match is None:
        raise KeyError(key)
    part, i, rest = match["part"], int(match["i"]), match["rest"]
    path: tuple[str, ...] = ("params", part, f"layers_{i}")
    if match["j"] is not None:
        path += (f"block_{match['j']}",)
    elif match["shortcut"]:
        path += ("shortcut",)
    lstm = _LSTM_KEY.fullmatch(rest)
    if lstm and len(path) == 3:
        return path + (lstm["name"],), ("T" if lstm["name"].startswith("weight") else "")
    if rest in _CONV_KEYS:
        # Only the decoder's top-level upsampling layers are transposed convs.
        transposed = part == "decoder" and len(path) == 3 and i in conv_transposes
        return path + _CONV_KEYS[rest], (_CONV_T_PERM if transposed else _CONV_PERM)
    raise KeyError(key)


def _transform(value: np.ndarray, how: tuple[int, ...] | str) -> np.ndarray:
    if how == "scalar":
        return value.reshape(())
    if how == "T":
        return value.T if value.ndim == 2 else value
    if isinstance(how, tuple) and value.ndim == 3:
        return value.transpose(how)
    return value


def _hf_shape(shape: tuple[int, ...], how: tuple[int, ...] | str) -> tuple[int, ...]:
    """The checkpoint-layout shape of a Flax shape (inverse of `_transform`)."""
    if how == "scalar":
        return (1,)
    if how == "T" and len(shape) == 2:
        return shape[::-1]
    if isinstance(how, tuple) and len(shape) == 3:
        out = [0] * 3
        for k, axis in enumerate(how):
            out[axis] = shape[k]
        return tuple(out)
    return shape


def expected_variable_shapes(config: CodecConfig) -> dict[tuple[str, ...], jax.ShapeDtypeStruct]:
    """Flattened shapes of a `Codec(config)`'s variables, from an abstract `init`."""
    return dict(_expected_variable_shapes(config))


@functools.lru_cache(maxsize=8)
def _expected_variable_shapes(config: CodecConfig) -> dict[tuple[str, ...], jax.ShapeDtypeStruct]:
    model = Codec(config)
    dummy = jax.ShapeDtypeStruct((1, config.hop_length, config.seanet.audio_channels),
                                 jnp.float32)
    shapes = jax.eval_shape(lambda key, x: model.init(key, x, train=False),
                            jax.random.key(0, impl="rbg"), dummy)
    return flatten_dict(nn.unbox(shapes))


def variables_from_state_dict(state_dict: Mapping[str, np.ndarray], config: CodecConfig,
                              source: str = "the checkpoint") -> dict:
    """A Hugging Face EnCodec state dict as this project's codec variables.

    Args:
      state_dict: HF key -> numpy array (torch tensors work too via
        `np.asarray`), as `read_safetensors_dir` returns.
      config: the codec the weights belong to (`CodecConfig.from_encodec_config`).
      source: how to name the checkpoint in errors (e.g. its path).

    Returns:
      {"params": {"encoder": ..., "decoder": ...}, "codebook": {"quantizer": ...}},
      float32 numpy arrays shaped like `Codec(config).init`'s.

    Raises:
      CheckpointMismatchError: naming the key and both shapes when a weight
        does not fit the model of `config`, or naming the keys that have no
        place in it or that it lacks.
    """
    expected = expected_variable_shapes(config)
    conv_transposes = _conv_transpose_layers(config)
    flat: dict[tuple[str, ...], np.ndarray] = {}
    origin: dict[tuple[str, ...], str] = {}
    unknown: list[str] = []
    for key in sorted(state_dict):
        if _SEANET_KEY.fullmatch(key) and key.rsplit(".", 1)[-1] in _DERIVED_BUFFERS:
            continue
        try:
            path, how = _map_key(key, conv_transposes)
        except KeyError:
            unknown.append(key)
            continue
        value = np.asarray(state_dict[key])
        if path not in expected:
            unknown.append(key)
            continue
        want = tuple(expected[path].shape)
        if value.shape != _hf_shape(want, how) and not (how == "scalar" and value.size == 1):
            raise CheckpointMismatchError(
                f"{source}: weight {key!r} has shape {tuple(value.shape)}, but the model "
                f"described by the config expects {_hf_shape(want, how)} (Flax "
                f"{'/'.join(path)} {want}); the weights belong to another architecture "
                "or config.json does not match them")
        if path in flat:
            raise CheckpointMismatchError(
                f"{source}: {key!r} and {origin[path]!r} both map to {'/'.join(path)} (two "
                "weight-norm spellings in one checkpoint?)")
        flat[path] = _transform(value, how).astype(np.float32)
        origin[path] = key
    if unknown:
        shown = ", ".join(repr(k) for k in unknown[:8])
        more = f" and {len(unknown) - 8} more" if len(unknown) > 8 else ""
        raise CheckpointMismatchError(
            f"{source}: {len(unknown)} weight(s) have no place in the model described by the "
            f"config: {shown}{more} (another architecture, or a config.json that does not "
            "match the weights)")
    missing = sorted("/".join(p) for p in expected if p not in flat)
    if missing:
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more"
                                          if len(missing) > 8 else "")
        raise CheckpointMismatchError(
            f"{source}: the model described by the config needs {len(missing)} variable(s) "
            f"the checkpoint lacks: {shown}")
    return unflatten_dict(flat)


# ----------------------------------------------------------------------------- public API


def encodec_from_state(state: Mapping[str, np.ndarray], hf_config: Mapping[str, Any] | Any,
                       prefix: str = "", source: str = "the checkpoint"
                       ) -> tuple[CodecConfig, dict]:
    """An EnCodec from a state dict and its Hugging Face config, possibly inside a bigger model.

    For a codec stored in another model's checkpoint, e.g. a MusicGen
    (`MusicgenForConditionalGeneration`) directory: its weights are the
    `audio_encoder.*` keys of `model.safetensors` and its config the
    `audio_encoder` sub-dict of config.json.

    Args:
      state: key -> array (numpy, or anything `np.asarray` takes), e.g.
        `read_safetensors_dir(musicgen_dir)`. Keys outside `prefix` are ignored.
      hf_config: the `transformers.EncodecConfig` of the codec, as a dict
        (config.json, or the `audio_encoder` sub-dict of a MusicGen's) or object.
      prefix: the codec's keys start with this (e.g. "audio_encoder."; a
        missing trailing dot is added); "" takes the whole state dict.
      source: how to name the checkpoint in errors (e.g. its path).

    Returns:
      (CodecConfig, variables {"params", "codebook"} as float32 numpy arrays),
      as `load_hf_encodec` returns.

    Raises:
      ValueError: hf_config declares a model_type other than "encodec", or asks
        for something the codec does not support.
      CheckpointMismatchError: no key under `prefix`, or the weights under it
        do not fit hf_config (naming the key and both shapes, the keys with no
        place, or the variables nothing fills).
    """
    model_type = (hf_config.get("model_type") if isinstance(hf_config, Mapping)
                  else getattr(hf_config, "model_type", None))
    if model_type not in (None, "encodec"):
        raise ValueError(f"{source}: the codec's config declares model_type {model_type!r}, "
                         "not 'encodec'")
    config = CodecConfig.from_encodec_config(hf_config)
    if prefix and not prefix.endswith("."):
        prefix += "."
    if prefix:
        sub = {key[len(prefix):]: value for key, value in state.items()
               if key.startswith(prefix)}
        if not sub:
            heads = sorted({key.split(".", 1)[0] + "." for key in state})
            shown = ", ".join(repr(h) for h in heads[:8]) + (" ..." if len(heads) > 8 else "")
            raise CheckpointMismatchError(
                f"{source}: no weight starts with {prefix!r} (its keys start with {shown})")
        source = f"{source} (keys under {prefix!r})"
    else:
        sub = state
    return config, variables_from_state_dict(sub, config, source=source)


def save_codec_export(out_dir: str | os.PathLike, config: CodecConfig, variables: dict,
                      source: str | None = None) -> Path:
    """Writes a codec as this project's export (what `load_codec` reads).

    Args:
      out_dir: the export directory (created; an earlier export there is replaced).
      config: the codec.
      variables: {"params", "codebook"} (numpy or jax arrays).
      source: where the weights came from, for the record.

    Returns:
      The absolute export directory.
    """
    return save_exported(out_dir, MODEL_NAME, config.to_dict(), variables, source=source)


def load_hf_encodec(hf_dir: str | os.PathLike) -> tuple[CodecConfig, dict]:
    """Reads a Hugging Face EnCodec directory.

    Returns:
      (CodecConfig, variables {"params", "codebook"} as float32 numpy arrays).

    Raises:
      FileNotFoundError: no config.json or no safetensors weights (naming the directory).
      ValueError: config.json's model_type is not "encodec", or it asks for
        something the codec does not support.
      CheckpointMismatchError: the weights do not fit config.json.
    """
    hf_dir = Path(hf_dir)
    hf_config = read_hf_config(hf_dir, model_type="encodec")
    config = CodecConfig.from_encodec_config(hf_config)
    state_dict = read_safetensors_dir(hf_dir)
    return config, variables_from_state_dict(state_dict, config, source=str(hf_dir))


def convert_encodec(hf_dir: str | os.PathLike, out_dir: str | os.PathLike
                    ) -> tuple[CodecConfig, dict, Path]:
    """Converts a Hugging Face EnCodec directory into an export (`save_exported`).

    Returns:
      (config, variables, the absolute export directory).
    """
    config, variables = load_hf_encodec(hf_dir)
    out = save_codec_export(out_dir, config, variables,
                            source=f"huggingface-encodec:{Path(hf_dir).absolute()}")
    return config, variables, out


def _is_hf_encodec_dir(path: Path) -> bool:
    file = path / CONFIG_FILE
    if not file.is_file():
        return False
    try:
        return json.loads(file.read_text()).get("model_type") == "encodec"
    except (json.JSONDecodeError, AttributeError):
        return False


def load_codec(path: str | os.PathLike) -> tuple[Codec, dict]:
    """A codec and its variables from an export, a training workdir or an HF directory.

    Args:
      path: an export directory (`model.json`, e.g. from `convert_encodec`), a
        training workdir holding one in `export/`, or a Hugging Face EnCodec
        directory (converted in memory).

    Returns:
      (Codec, variables {"params", "codebook"}).

    Raises:
      FileNotFoundError: naming the path when it holds none of these.
      CheckpointMismatchError: the export holds another model.
    """
    path = Path(path)
    if not (path / MODEL_FILE).is_file():
        if (path / "export" / MODEL_FILE).is_file():
            path = path / "export"
        elif _is_hf_encodec_dir(path):
            config, variables = load_hf_encodec(path)
            return Codec(config), jax.tree.map(jnp.asarray, variables)
        else:
            raise FileNotFoundError(
                f"{path} holds no codec: expected {path / MODEL_FILE} (an export), "
                f"{path / 'export' / MODEL_FILE} (a training workdir) or a Hugging Face "
                "EnCodec directory (config.json + model.safetensors)")
    config_dict, variables = load_exported(path, expected_model=MODEL_NAME)
    return Codec(CodecConfig.from_dict(config_dict)), variables
