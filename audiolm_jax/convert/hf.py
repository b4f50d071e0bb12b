"""Generic readers and checkers for Hugging Face / PyTorch checkpoints.

Every importer in `convert/` reads `config.json` and safetensors shards with
these, places each mapped tensor with `place_checked` (shape checked against
the Flax model's own) and finishes with `require_complete`, so a checkpoint of
another architecture fails naming the first key or shape that does not fit.
No unpickling: only safetensors are read.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from audiolm_jax.training.checkpointing import CheckpointMismatchError
from audiolm_jax.training.export import MODEL_FILE, load_exported, read_json, save_exported
from audiolm_jax.training.state import count_params  # noqa: F401  (re-exported for importers)

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"


def _safetensors_numpy():
    import ml_dtypes  # noqa: F401  (a jax dependency; lets numpy read bfloat16 tensors)

    try:
        import safetensors.numpy
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("reading Hugging Face checkpoints needs the `safetensors` package "
                          "(pip install safetensors)") from e
    return safetensors.numpy


def read_hf_config(hf_dir: str | os.PathLike, model_type: str | None = None) -> dict:
    """The `config.json` of a Hugging Face model directory.

    Args:
      hf_dir: the directory.
      model_type: the `model_type` it must declare (e.g. "encodec"), or None.

    Raises:
      FileNotFoundError: naming the directory and file when it is missing.
      ValueError: when the file is not JSON or declares another model_type.
    """
    hf_dir = Path(hf_dir)
    if not hf_dir.is_dir():
        raise FileNotFoundError(f"Hugging Face model directory {hf_dir} does not exist")
    file = hf_dir / CONFIG_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{hf_dir} has no {CONFIG_FILE}: expected a directory written "
                                f"by save_pretrained (found: {_listing(hf_dir)})")
    config = read_json(file)
    if model_type is not None and config.get("model_type") != model_type:
        raise ValueError(f"{file} describes model_type {config.get('model_type')!r}, not "
                         f"{model_type!r}")
    return config


def _listing(directory: Path, limit: int = 12) -> str:
    names = sorted(p.name for p in directory.iterdir())
    if not names:
        return "nothing"
    return ", ".join(names[:limit]) + (f", ... ({len(names)} files)" if len(names) > limit else "")


def read_safetensors_dir(hf_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every tensor of a Hugging Face directory's safetensors file(s), as numpy arrays.

    Reads `model.safetensors`, or the shards named by `model.safetensors.index.json`.

    Raises:
      FileNotFoundError: naming the directory when it has no safetensors
        weights (e.g. only a torch `pytorch_model.bin`), or a missing shard.
      ValueError: when shards repeat a key.
    """
    st = _safetensors_numpy()
    hf_dir = Path(hf_dir)
    single, index = hf_dir / SAFETENSORS_FILE, hf_dir / SAFETENSORS_INDEX
    if single.is_file():
        files = [single]
    elif index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise ValueError(f"{index} is not a safetensors index (no weight_map): {e}") from e
        files = [hf_dir / name for name in sorted(set(weight_map.values()))]
        for file in files:
            if not file.is_file():
                raise FileNotFoundError(f"shard {file} listed in {index} does not exist")
    else:
        hint = (" (only PyTorch .bin weights: re-save them with safetensors, e.g. "
                "save_pretrained(..., safe_serialization=True))"
                if any(hf_dir.glob("*.bin")) else "")
        raise FileNotFoundError(f"{hf_dir} has no {SAFETENSORS_FILE} or {SAFETENSORS_INDEX}"
                                f"{hint}; found: {_listing(hf_dir)}")
    tensors: dict[str, np.ndarray] = {}
    for file in files:
        try:
            part = st.load_file(str(file))
        except Exception as e:  # safetensors raises its own error types
            raise ValueError(f"cannot read {file} as safetensors: {e}") from e
        repeated = sorted(set(part) & set(tensors))
        if repeated:
            raise ValueError(f"{file} repeats keys already read from another shard: "
                             f"{repeated[:5]}")
        tensors.update(part)
    return tensors


def read_torch_file(file: Path) -> Any:
    """What `torch.load(file, weights_only=True)` returns: tensors and plain containers
    only, never arbitrary pickled objects.

    Raises:
      ImportError: torch is not installed (nothing is unpickled without it).
      ValueError: the file holds more than weights_only accepts.
    """
    try:
        import torch
    except ImportError as e:
        raise ImportError(f"reading {file} needs torch (pip install torch), or convert it to "
                          f"{SAFETENSORS_FILE} first; this importer never unpickles without "
                          "torch's weights_only loader") from e
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError and friends
        raise ValueError(f"{file} is not a plain state dict torch.load(weights_only=True) "
                         f"accepts: {e}") from e


def place_checked(params: dict, path: tuple[str, ...], array: np.ndarray, key: str,
                  hf_shape: tuple[int, ...], expected: Mapping[tuple[str, ...], tuple[int, ...]],
                  source: str) -> None:
    """Puts a converted weight at `path`, or names the key that has no place or the wrong shape.

    Raises:
      CheckpointMismatchError: `path` is not in `expected`, or `array` has another shape.
    """
    if path not in expected:
        raise CheckpointMismatchError(f"{source}: key {key!r} has no place in a model with "
                                      f"this config (would be {'/'.join(path)})")
    if array.shape != expected[path]:
        raise CheckpointMismatchError(
            f"{source}: {key!r} has shape {tuple(hf_shape)}, but config.json implies "
            f"{expected[path]} after conversion (for {'/'.join(path)})")
    params[path] = array


def map_state_dict(state_dict: Mapping[str, Any], expected: Mapping[tuple[str, ...], Any], *,
                   map_key: Callable[[str], tuple[tuple[str, ...], Any] | None],
                   transform: Callable[[np.ndarray, Any], np.ndarray],
                   skip: Callable[[str], bool], prefix: str, source: str, family: str
                   ) -> dict[tuple[str, ...], np.ndarray]:
    """Maps and places every weight of a state dict; the importers' shared loop.

    Args:
      state_dict: HF key -> array.
      expected: Flax path -> shape (from an abstract init).
      map_key: key without `prefix` -> (Flax path, how), None for a key of no known kind.
      transform: (float32 array, how) -> the array in Flax layout.
      skip: key without `prefix` -> whether it holds nothing this model needs (heads).
      prefix: the task wrapper's prefix (e.g. `"hubert."`), removed when present.
      source, family: for messages.

    Returns:
      Flax path -> float32 array, each placed with `place_checked`.
    """
    params: dict[tuple[str, ...], np.ndarray] = {}
    for key, value in state_dict.items():
        short = key.removeprefix(prefix)
        if skip(short):
            continue
        mapped = map_key(short)
        if mapped is None:
            raise CheckpointMismatchError(f"{source}: unexpected {family} key {key!r}")
        path, how = mapped
        array = transform(np.asarray(value, np.float32), how)
        place_checked(params, path, array, key, np.shape(value), expected, source)
    return params


def require_complete(params: Mapping[tuple[str, ...], Any],
                     expected: Mapping[tuple[str, ...], Any], source: str, family: str) -> None:
    """Raises CheckpointMismatchError naming (up to 5) expected weights the checkpoint lacked."""
    missing = sorted("/".join(p) for p in expected if p not in params)
    if missing:
        raise CheckpointMismatchError(f"{source}: missing {family} weights for {missing[:5]}"
                                      f"{' ...' if len(missing) > 5 else ''}")


def load_hf_dir(hf_dir: str | os.PathLike, model_type: str, config_cls: Any,
                variables_from_state_dict: Callable[..., dict]) -> tuple[Any, dict]:
    """(config, variables) from a Hugging Face directory of `model_type`.

    `config_cls.from_hf(config.json)` gives the config and
    `variables_from_state_dict(safetensors, config, source=...)` the variables.
    """
    config = config_cls.from_hf(read_hf_config(hf_dir, model_type=model_type))
    return config, variables_from_state_dict(read_safetensors_dir(hf_dir), config,
                                             source=str(hf_dir))


def convert_to_export(hf_dir: str | os.PathLike, out_dir: str | os.PathLike, model_name: str,
                      load_hf: Callable[[str | os.PathLike], tuple[Any, dict]], source: str
                      ) -> tuple[Any, dict, Path]:
    """`load_hf(hf_dir)` -> (dataclass config, variables), written as a `model_name` export.

    Returns:
      (config, variables, the export directory).
    """
    config, variables = load_hf(hf_dir)
    out = save_exported(out_dir, model_name, dataclasses.asdict(config), variables,
                        source=f"{source}:{Path(hf_dir).absolute()}")
    return config, variables, out


def load_export_or_hf(path: str | os.PathLike, model_name: str, config_cls: type,
                      load_hf: Callable[[str | os.PathLike], tuple[Any, dict]]
                      ) -> tuple[Any, dict]:
    """(config, variables) from a `model_name` export, else from a Hugging Face directory.

    Raises:
      CheckpointMismatchError: an export of another model, or an HF directory of
        another architecture.
      FileNotFoundError: naming the path when it holds neither.
    """
    path = Path(path)
    if (path / MODEL_FILE).is_file():
        config_dict, variables = load_exported(path, expected_model=model_name)
        return config_cls(**config_dict), variables
    config, variables = load_hf(path)
    return config, jax.tree.map(jnp.asarray, variables)
