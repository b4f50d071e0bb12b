"""Atomic file writes and weight fingerprints: what every tool that writes outputs uses.

Atomic writes: every output (wav, npz, json, metrics tables, configs) is written
to a temporary file in the same folder and renamed over the target, so a crash
mid-write leaves either the old file or the new one, never a truncated one
(`os.replace` is atomic on POSIX within one filesystem).

Fingerprints: a short hash of a variables pytree (every leaf's path, dtype,
shape and bytes). Exports carry the fingerprint of their weights; codes files,
token files and k-means models record the fingerprint of the model they were
made with, and `check_fingerprint` refuses a mismatch naming both.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

FINGERPRINT_CHARS = 16
# Exports committed to the repository (weights/README.md says what made each).
COMMITTED_WEIGHTS = Path(__file__).resolve().parents[1] / "weights"


def resolve_weights(path_or_name: str | os.PathLike) -> Path:
    """An export directory: the path itself when it exists, else the committed export
    of that name under `weights/` (e.g. "ctc_tiny"), else the path unchanged (the
    loader then names what is missing)."""
    path = Path(path_or_name)
    if not path.exists() and len(path.parts) == 1 and (COMMITTED_WEIGHTS / path).is_dir():
        return COMMITTED_WEIGHTS / path
    return path


class FingerprintMismatchError(ValueError):
    """Outputs of one model are used with another one; the message names both fingerprints."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yields a temporary path next to `path`; renames it onto `path` on success.

    On an exception the temporary file is removed and `path` is left as it was.
    The temporary name keeps `path`'s suffix (or `suffix`), so writers that pick
    a format from the suffix (soundfile) still do.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix or path.suffix}",
                               dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Writes UTF-8 `text` to `path` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """Writes `obj` as JSON (UTF-8, non-ASCII kept) to `path` atomically."""
    return write_text_atomic(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def save_npz_atomic(path: str | os.PathLike, compress: bool = False, **arrays: Any) -> Path:
    """`np.savez[_compressed]` to exactly `path` (no ".npz" appended), atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            (np.savez_compressed if compress else np.savez)(f, **arrays)
    return Path(path)


def _leaves_with_paths(tree: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(path, leaf) pairs of nested dicts/lists/tuples in a canonical (sorted-key) order."""
    if hasattr(tree, "unbox") and hasattr(tree, "names"):  # nn.LogicallyPartitioned
        tree = tree.unbox()
    if isinstance(tree, dict) or (hasattr(tree, "items") and hasattr(tree, "keys")):
        for key in sorted(tree.keys(), key=str):
            yield from _leaves_with_paths(tree[key], f"{prefix}/{key}")
    elif isinstance(tree, (list, tuple)):
        for i, item in enumerate(tree):
            yield from _leaves_with_paths(item, f"{prefix}/{i}")
    elif tree is not None:
        yield prefix or "/", tree


def fingerprint(variables: Any) -> str:
    """A 16-hex-digit SHA-256 of a variables pytree: its leaf paths, dtypes, shapes and bytes.

    Equal weights give equal fingerprints on any host; one changed element,
    a renamed leaf or a dtype change gives another. Arrays are fetched to the
    host, so call it once per export, not per step.
    """
    digest = hashlib.sha256()
    for leaf_path, leaf in _leaves_with_paths(variables):
        array = np.ascontiguousarray(np.asarray(leaf))
        digest.update(f"{leaf_path}|{array.dtype.str}|{array.shape}\n".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:FINGERPRINT_CHARS]


def check_fingerprint(expected: str | None, found: str | None, what: str,
                      force: bool = False) -> None:
    """Refuses `what` (e.g. "codes file a.npz") made with another model's weights.

    Args:
      expected: the fingerprint of the model in use.
      found: the fingerprint `what` records (None: made before fingerprints
        existed, accepted).
      force: accept a mismatch (e.g. a command-line `--force`).

    Raises:
      FingerprintMismatchError: naming both fingerprints, unless `force`.
    """
    if found is None or expected is None or found == expected:
        return
    if force:
        logging.warning("%s was made with weights %s, not %s: used anyway (force)", what,
                        found, expected)
        return
    raise FingerprintMismatchError(
        f"{what} was made with the model whose weights have fingerprint {found}, but the "
        f"model loaded now has fingerprint {expected}; pass --force (force=True) to use it "
        "anyway")
