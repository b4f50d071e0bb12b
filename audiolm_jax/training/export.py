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
from audiolm_jax.files import fingerprint, resolve_weights, write_text_atomic
from audiolm_jax.training.checkpointing import CheckpointMismatchError

FORMAT_VERSION = 1
MODEL_FILE = "model.json"
VARIABLES_DIR = "variables"


STORAGE_DTYPES = ("float16", "bfloat16")


def save_exported(out_dir: str | os.PathLike, model_name: str, config: dict,
                  variables: dict, source: str | None = None,
                  storage_dtype: str | None = None) -> Path:
    """Writes an exported model.

    Args:
      out_dir: the export directory (created; an earlier export there is replaced).
      model_name: the model family, e.g. "codec"; `load_exported` checks it.
      config: JSON-serializable config dict (e.g. `CodecConfig.to_dict()`).
      variables: the variables pytree ({"params": ..., ...}); boxed
        (logically partitioned) leaves are unboxed, arrays may be numpy or jax.
      source: where the weights came from (a checkpoint path, a Hugging Face
        directory), for the record.
      storage_dtype: "float16" or "bfloat16" stores floating arrays at half size (for
        weights committed to the repository); `load_exported` hands them back as
        float32. None keeps every dtype.

    Returns:
      The absolute export directory.
    """
    if storage_dtype is not None and storage_dtype not in STORAGE_DTYPES:
        raise ValueError(f"storage_dtype must be one of {STORAGE_DTYPES} or None, "
                         f"got {storage_dtype!r}")
    out = Path(out_dir).absolute()
    out.mkdir(parents=True, exist_ok=True)
    device = jax.devices()[0]

    def place(x):
        x = jnp.asarray(x)
        if storage_dtype is not None and jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(storage_dtype)
        return jax.device_put(x, device)

    plain = jax.tree.map(place, meta.unbox(variables))
    fields = {"model": model_name, "config": config, "source": source,
              "fingerprint": fingerprint(plain), "format_version": FORMAT_VERSION}
    if storage_dtype is not None:
        fields["storage_dtype"] = storage_dtype
    try:
        header = json.dumps(fields, indent=2)
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
    path = resolve_weights(path)
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
      path: the export directory, or the name of one committed under `weights/`
        (`files.resolve_weights`).
      expected_model: the model family the caller needs; None accepts any.

    Returns:
      (config dict, variables pytree of jax arrays on the default device).

    Raises:
      FileNotFoundError: naming the path when it has no model.json or no variables.
      CheckpointMismatchError: naming both models when the export holds
        another model than `expected_model`.
    """
    path = resolve_weights(path).absolute()
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
    if header.get("storage_dtype"):   # half-size storage: compute in float32 as trained
        variables = jax.tree.map(
            lambda x: x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x,
            variables)
    return dict(header["config"]), _to_dict(variables)


def repack_exported(src: str | os.PathLike, dst: str | os.PathLike,
                    storage_dtype: str | None = "float16", source: str | None = None) -> Path:
    """Copies an export with its floating arrays stored as `storage_dtype` (the form
    of the weights committed under `weights/`); `source` replaces the recorded one."""
    header = read_model_file(src)
    config, variables = load_exported(src)
    return save_exported(dst, header["model"], config, variables,
                         source=source or header.get("source"), storage_dtype=storage_dtype)


def main(argv: list[str] | None = None) -> None:
    """`python -m audiolm_jax.training.export SRC DST [--dtype float16] [--source TEXT]`."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m audiolm_jax.training.export",
        description="Re-save an export with half-size floating arrays (weights for the repo).")
    parser.add_argument("src", help="an export directory (has model.json)")
    parser.add_argument("dst", help="where the repacked export goes (replaced)")
    parser.add_argument("--dtype", default="float16", choices=STORAGE_DTYPES + ("float32",))
    parser.add_argument("--source", default=None,
                        help="what to record as the weights' origin (e.g. the recipe command)")
    args = parser.parse_args(argv)
    out = repack_exported(args.src, args.dst, None if args.dtype == "float32" else args.dtype,
                          args.source)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"{out}: {size / 2**20:.1f} MiB ({args.dtype})")


def _to_dict(tree: Any) -> Any:
    """Plain nested dicts (Orbax may hand back other mappings)."""
    if isinstance(tree, dict) or hasattr(tree, "items"):
        return {k: _to_dict(v) for k, v in tree.items()}
    return tree


if __name__ == "__main__":
    main()
