"""Exported models: a config and the variables of one model, ready for inference.

Every model of the project exports the same way, whether its weights come
from a training run or from a converted public checkpoint:

    out_dir/model.json   {"model": name, "config": {...}, "source": ...,
                          "fingerprint": hash of the weights, "format_version": 1}
    out_dir/variables/   the variables pytree (plain arrays) as an Orbax
                         `StandardCheckpointer` checkpoint

`model.json` is written last (atomically), so a directory that has one holds a
complete export. Its `fingerprint` (`audiolm_jax.files.fingerprint`) is what
codes, token and k-means files record, so outputs of one trained model are
never silently read with another of the same config. `load_exported` checks the model name (a codec export is never loaded
as a language model) and restores the arrays onto the default device.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from flax.linen import meta

from audiolm_jax.families import canonical_model_name
from audiolm_jax.files import fingerprint, write_text_atomic
from audiolm_jax.training.checkpointing import CheckpointMismatchError

FORMAT_VERSION = 1
MODEL_FILE = "model.json"
VARIABLES_DIR = "variables"


def save_exported(out_dir: str | os.PathLike, model_name: str, config: dict,
                  variables: dict, source: str | None = None) -> Path:
    """Writes an exported model.

    Args:
      out_dir: the export directory (created; an earlier export there is replaced).
      model_name: the model family, e.g. "codec"; `load_exported` checks it.
      config: JSON-serializable config dict (e.g. `CodecConfig.to_dict()`).
      variables: the variables pytree ({"params": ..., ...}); boxed
        (logically partitioned) leaves are unboxed, arrays may be numpy or jax.
      source: where the weights came from (a checkpoint path, a Hugging Face
        directory), for the record.

    Returns:
      The absolute export directory.
    """
    out = Path(out_dir).absolute()
    out.mkdir(parents=True, exist_ok=True)
    device = jax.devices()[0]
    plain = jax.tree.map(lambda x: jax.device_put(jnp.asarray(x), device), meta.unbox(variables))
    try:
        header = json.dumps({"model": model_name, "config": config, "source": source,
                             "fingerprint": fingerprint(plain),
                             "format_version": FORMAT_VERSION}, indent=2)
    except TypeError as e:
        raise TypeError(f"the config of model {model_name!r} is not JSON-serializable: {e}") from e
    (out / MODEL_FILE).unlink(missing_ok=True)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(out / VARIABLES_DIR, plain, force=True)
    checkpointer.wait_until_finished()
    checkpointer.close()
    write_text_atomic(out / MODEL_FILE, header + "\n")
    return out


def exported_fingerprint(path: str | os.PathLike) -> str | None:
    """The weights fingerprint recorded in an export's model.json (None for exports
    written before fingerprints existed)."""
    return read_model_file(path).get("fingerprint")


def read_json(file: Path) -> Any:
    """The parsed JSON file; a ValueError naming the file when it is not JSON."""
    try:
        return json.loads(Path(file).read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{file} is not valid JSON: {e}") from e


def read_model_file(path: str | os.PathLike) -> dict:
    """The parsed `model.json` of an export directory.

    Raises:
      FileNotFoundError: naming the path when it has no model.json.
      ValueError: when model.json is not a valid export header.
    """
    path = Path(path)
    file = path / MODEL_FILE
    if not file.is_file():
        what = "does not exist" if not path.exists() else f"has no {MODEL_FILE}"
        raise FileNotFoundError(f"{path} is not an exported model: it {what} (expected "
                                f"{file}, written by save_exported)")
    header = read_json(file)
    missing = [k for k in ("model", "config", "format_version") if k not in header]
    if missing:
        raise ValueError(f"{file} lacks the field(s) {missing}")
    if header["format_version"] > FORMAT_VERSION:
        raise ValueError(f"{file} has format_version {header['format_version']}; this version "
                         f"of audiolm_jax reads up to {FORMAT_VERSION}")
    header["model"] = canonical_model_name(header.get("model"))
    return header


def load_exported(path: str | os.PathLike, expected_model: str | None = None
                  ) -> tuple[dict, dict]:
    """Reads an exported model.

    Args:
      path: the export directory.
      expected_model: the model family the caller needs; None accepts any.

    Returns:
      (config dict, variables pytree of jax arrays on the default device).

    Raises:
      FileNotFoundError: naming the path when it has no model.json or no variables.
      CheckpointMismatchError: naming both models when the export holds
        another model than `expected_model`.
    """
    path = Path(path).absolute()
    header = read_model_file(path)
    if expected_model is not None and header["model"] != canonical_model_name(expected_model):
        raise CheckpointMismatchError(
            f"{path} holds an exported {header['model']!r} model, not {expected_model!r}")
    directory = path / VARIABLES_DIR
    if not directory.is_dir():
        raise FileNotFoundError(f"{path} has {MODEL_FILE} but no {VARIABLES_DIR}/ directory")
    checkpointer = ocp.StandardCheckpointer()
    try:
        tree = checkpointer.metadata(directory).item_metadata.tree
        sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        target = jax.tree.map(
            lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=sharding), tree)
        variables = checkpointer.restore(directory, target)
    finally:
        checkpointer.close()
    return dict(header["config"]), _to_dict(variables)


def _to_dict(tree: Any) -> Any:
    """Plain nested dicts (Orbax may hand back other mappings)."""
    if isinstance(tree, dict) or hasattr(tree, "items"):
        return {k: _to_dict(v) for k, v in tree.items()}
    return tree
