"""What every built-in corpus shares: the on-disk layout, the cache and the manifest.

A built corpus is a folder::

    <root>/<name>-<size>-seed<seed>-v<version>/
        info.json          name, size, seed, version, num_items, total_seconds,
                           build_seconds, bytes
        manifest.jsonl     one JSON object per item (see below)
        audio/<id>.flac    mono, 16-bit PCM, `sample_rate` Hz
        audio/<id>.txt     the item's text (transcript or caption), so the folder
                           is also a plain "audio folder with sidecar text"

Every manifest row has at least ``id``, ``audio`` (path relative to the corpus
folder), ``sample_rate``, ``num_samples`` and ``text``; each corpus adds its own
fields (phoneme alignments for speech, notes and melody ids for music).

A corpus is built into a temporary folder and renamed into place only when
complete, so an interrupted build never leaves a half corpus in the cache.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

SAMPLE_RATE = 24_000
SIZES = ("tiny", "default")


def default_cache_dir() -> Path:
    """`$AUDIOLM_JAX_CACHE`, else `~/.cache/audiolm_jax`."""
    env = os.environ.get("AUDIOLM_JAX_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "audiolm_jax"


def corpus_dirname(name: str, size: str, seed: int, version: int) -> str:
    return f"{name}-{size}-seed{seed}-v{version}"


def check_size(size: str) -> None:
    if size not in SIZES:
        raise ValueError(f"unknown corpus size {size!r}; expected one of {SIZES}")


def write_item(corpus_dir: Path, item_id: str, audio: np.ndarray, sample_rate: int,
               text: str, **fields: Any) -> dict:
    """Writes `audio/<item_id>.flac` and its `.txt` sidecar; returns the manifest row.

    Args:
      audio: [samples] float waveform in [-1, 1].
    """
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1 or audio.size == 0:
        raise ValueError(f"item {item_id}: expected a non-empty 1-D waveform, got {audio.shape}")
    if not np.all(np.isfinite(audio)):
        raise ValueError(f"item {item_id}: waveform has NaN/inf")
    rel = Path("audio") / f"{item_id}.flac"
    path = corpus_dir / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16", format="FLAC")
    path.with_suffix(".txt").write_text(text + "\n", encoding="utf-8")
    return {"id": item_id, "audio": str(rel), "sample_rate": sample_rate,
            "num_samples": int(audio.shape[0]), "text": text, **fields}


def read_manifest(corpus_dir: str | os.PathLike) -> list[dict]:
    path = Path(corpus_dir) / "manifest.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: not a built corpus folder")
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def read_info(corpus_dir: str | os.PathLike) -> dict:
    return json.loads((Path(corpus_dir) / "info.json").read_text())


def _folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def cached_corpus_problem(corpus_dir: Path) -> str | None:
    """Why a cached corpus folder cannot be used (None when it is complete).

    Cheap: reads info.json and the manifest and checks that every audio file is
    there with a non-zero size (no decoding).
    """
    try:
        info = read_info(corpus_dir)
        rows = read_manifest(corpus_dir)
    except (OSError, ValueError) as e:
        return f"unreadable info.json or manifest.jsonl: {e}"
    if info.get("num_items") != len(rows):
        return f"info.json says {info.get('num_items')} items, manifest has {len(rows)}"
    for row in rows:
        path = corpus_dir / row["audio"]
        if not path.is_file() or path.stat().st_size == 0:
            return f"missing audio file {path}"
    return None


def build_cached(name: str, size: str, seed: int, version: int,
                 build_fn: Callable[[Path], list[dict]],
                 root: str | os.PathLike | None = None, rebuild: bool = False) -> Path:
    """Returns the folder of a built corpus, building it first if it is not cached.

    Args:
      build_fn: writes the items into the folder it is given (with `write_item`)
        and returns the manifest rows, in order.
      root: cache folder; `default_cache_dir()/corpora` when None.
      rebuild: build even when a cached copy exists.
    """
    check_size(size)
    root = Path(root) if root is not None else default_cache_dir() / "corpora"
    final = root / corpus_dirname(name, size, seed, version)
    if final.is_dir() and not rebuild:
        problem = cached_corpus_problem(final)
        if problem is None:
            return final
        logging.warning("cached corpus %s is damaged (%s); rebuilding it", final, problem)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    try:
        start = time.perf_counter()
        rows = build_fn(tmp)
        with (tmp / "manifest.jsonl").open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        info = {
            "name": name, "size": size, "seed": seed, "version": version,
            "num_items": len(rows),
            "total_seconds": round(sum(r["num_samples"] / r["sample_rate"] for r in rows), 3),
            "build_seconds": round(time.perf_counter() - start, 2),
        }
        info["bytes"] = _folder_bytes(tmp)
        (tmp / "info.json").write_text(json.dumps(info, indent=2))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
