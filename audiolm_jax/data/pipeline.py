"""Grain pipelines: decode, resample, random fixed-length crops, batch, shard.

    source -> [this process's shard] -> shuffle(seed) -> repeat
           -> decode + resample + random crop   (Grain reader threads)
           -> drop bad files                     (counted, named in a warning)
           -> batch

The whole pipeline is deterministic for a seed (the crop offsets come from
Grain's per-record RNG, not from thread timing), and its iterator's
`get_state()` is what checkpoints store so a resumed run sees the same batches.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Sequence
from typing import Any

import grain
import jax
import numpy as np

from audiolm_jax.audio.io import BadAudioError, is_silent, load_audio, resample


@dataclasses.dataclass
class BadFileReport:
    """Files the pipeline dropped, with the reason. Thread-safe; one warning per file."""

    files: dict[str, str] = dataclasses.field(default_factory=dict)
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False)

    def add(self, path: str, reason: str) -> None:
        with self._lock:
            if path in self.files:
                return
            self.files[path] = reason
        logging.warning("skipping %s: %s (%d bad files so far)", path, reason, len(self.files))

    @property
    def count(self) -> int:
        return len(self.files)


def decode_record(record: dict[str, Any], sample_rate: int, report: BadFileReport,
                  channels: int = 1) -> np.ndarray | None:
    """The record's audio as [samples, channels] float32 at `sample_rate`, or None if bad."""
    path = record.get("path", "?")
    try:
        if "audio" in record:
            audio = np.asarray(record["audio"], np.float32).reshape(len(record["audio"]), -1)
            if audio.shape[0] == 0:
                raise BadAudioError(f"{path}: no samples")
            if not np.all(np.isfinite(audio)):
                raise BadAudioError(f"{path}: audio contains NaN or inf")
            if channels == 1 and audio.shape[1] > 1:
                audio = audio.mean(axis=1, keepdims=True)
            audio = resample(audio, int(record["sample_rate"]), sample_rate)
        else:
            audio, _ = load_audio(path, sample_rate, mono=channels == 1)
    except BadAudioError as e:
        report.add(path, str(e).removeprefix(f"{path}: "))
        return None
    if is_silent(audio):
        report.add(path, "silent (below -60 dBFS)")
        return None
    if audio.shape[1] != channels:
        report.add(path, f"has {audio.shape[1]} channels, expected {channels}")
        return None
    return audio


def random_crop(audio: np.ndarray, crop_samples: int, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray]:
    """A random window of `crop_samples`; shorter clips are end-padded.

    Returns:
      (audio [crop_samples, channels], mask [crop_samples] bool, False on padding).
    """
    n = audio.shape[0]
    if n >= crop_samples:
        start = int(rng.integers(0, n - crop_samples + 1))
        return audio[start:start + crop_samples], np.ones(crop_samples, bool)
    pad = np.zeros((crop_samples - n, audio.shape[1]), audio.dtype)
    mask = np.concatenate([np.ones(n, bool), np.zeros(crop_samples - n, bool)])
    return np.concatenate([audio, pad]), mask


@dataclasses.dataclass
class AudioPipeline:
    """A Grain dataset of batches and the report of what it dropped.

    `iter(pipeline.dataset)` gives a `grain.DatasetIterator` whose `get_state()` /
    `set_state()` the checkpointer uses.
    """

    dataset: grain.IterDataset
    report: BadFileReport

    def __iter__(self):
        return iter(self.dataset)


def make_audio_pipeline(source: Any, *, sample_rate: int, crop_samples: int, batch_size: int,
                        seed: int, shuffle: bool = True, num_epochs: int | None = None,
                        channels: int = 1, keep_fields: Sequence[str] = (),
                        shard_index: int | None = None, shard_count: int | None = None,
                        num_threads: int = 2, prefetch: int = 4,
                        drop_remainder: bool = True) -> AudioPipeline:
    """Builds the training pipeline over any random-access source.

    Args:
      source: records with `path` (decoded here) or `audio` + `sample_rate`.
      sample_rate: every clip is resampled to this.
      crop_samples: length of each example.
      batch_size: examples per batch on this process (global batch / process count).
      seed: shuffle order and crop offsets.
      num_epochs: None repeats forever.
      keep_fields: integer manifest fields (scalars or arrays, e.g. "speaker" or
        tokenized text) to carry into the batch as int32.
      shard_index, shard_count: this process's slice of the source
        (default `jax.process_index()` of `jax.process_count()`).
      num_threads: Grain reader threads that decode in parallel.

    Returns:
      AudioPipeline yielding {"audio": [batch, crop, channels] float32,
      "mask": [batch, crop] bool, **keep_fields: [batch, ...] int32}.
    """
    if crop_samples <= 0 or batch_size <= 0:
        raise ValueError(f"crop_samples={crop_samples} and batch_size={batch_size} must be > 0")
    shard_index = jax.process_index() if shard_index is None else shard_index
    shard_count = jax.process_count() if shard_count is None else shard_count
    report = BadFileReport()

    ds = grain.MapDataset.source(source)
    if shard_count > 1:
        ds = ds[shard_index::shard_count]
    if shuffle:
        ds = ds.shuffle(seed=seed)
    ds = ds.repeat(num_epochs)

    def load_and_crop(record: dict[str, Any], rng: np.random.Generator) -> dict | None:
        audio = decode_record(record, sample_rate, report, channels)
        if audio is None:
            return None
        audio, mask = random_crop(audio, crop_samples, rng)
        example = {"audio": audio, "mask": mask}
        for field in keep_fields:
            example[field] = np.asarray(record[field], np.int32)
        return example

    ds = ds.random_map(load_and_crop, seed=seed).filter(lambda x: x is not None)
    read = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
    iter_ds = ds.to_iter_dataset(read).batch(batch_size, drop_remainder=drop_remainder)
    return AudioPipeline(iter_ds, report)


def _separated_starts(rng: np.random.Generator, span: int, count: int, gap: int,
                      tries: int = 100) -> list[int]:
    """`count` start offsets in [0, span] at least `gap` apart (fewer if they do not fit)."""
    starts: list[int] = []
    for _ in range(tries):
        if len(starts) == count:
            break
        s = int(rng.integers(0, span + 1))
        if all(abs(s - t) >= gap for t in starts):
            starts.append(s)
    return starts


def make_pair_pipeline(source: Any, groups: Sequence[Sequence[int]], *, sample_rate: int,
                       crop_samples: int, batch_size: int, seed: int,
                       crops_per_group: int = 1, num_epochs: int | None = None,
                       num_threads: int = 2, prefetch: int = 4) -> AudioPipeline:
    """Batches of two different records of one group, cropped at the same time offset.

    For contrastive training on aligned renderings (e.g. the music corpus's
    renderings of one melody, grouped by `melody_id`): the same window of the
    same notes, played by different instruments.

    Args:
      source: random-access records (as for `make_audio_pipeline`).
      groups: lists of source indices; only groups with at least two are used.
      crop_samples: window length; the offset is drawn within the shorter record.
      crops_per_group: pairs per group in a batch, at offsets at least half a window
        apart. With 2 or more, a pair's hardest negatives are other passages of the
        same piece (same key, tempo and instruments), so only the notes tell them
        apart. Groups whose records are too short for that many are skipped.

    Returns:
      AudioPipeline yielding {"audio_a", "audio_b": [batch, crop, 1] float32,
      "mask_a", "mask_b": [batch, crop] bool, "group": [batch] int32}; the
      `crops_per_group` pairs of one group are adjacent rows.
    """
    pairs = [list(g) for g in groups if len(g) >= 2]
    if not pairs:
        raise ValueError("pair pipeline: no group has two or more records")
    if batch_size % crops_per_group:
        raise ValueError(f"batch_size={batch_size} is not a multiple of crops_per_group="
                         f"{crops_per_group}")
    groups_per_batch = batch_size // crops_per_group
    if groups_per_batch > len(pairs):
        raise ValueError(f"batch_size={batch_size} needs {groups_per_batch} groups per batch, "
                         f"more than the {len(pairs)} groups: a batch would hold the same "
                         "group twice (a false negative)")
    report = BadFileReport()
    ds = grain.MapDataset.source(pairs).shuffle(seed=seed).repeat(num_epochs)

    def load_pairs(group: list[int], rng: np.random.Generator) -> dict | None:
        i, j = rng.choice(len(group), 2, replace=False)
        a = decode_record(source[group[i]], sample_rate, report)
        b = decode_record(source[group[j]], sample_rate, report)
        if a is None or b is None:
            return None
        n = min(len(a), len(b))
        starts = _separated_starts(rng, max(n - crop_samples, 0), crops_per_group,
                                   crop_samples // 2)
        if len(starts) < crops_per_group:
            return None
        rows = []
        for start in starts:
            crop_a, mask_a = random_crop(a[start:start + crop_samples], crop_samples, rng)
            crop_b, mask_b = random_crop(b[start:start + crop_samples], crop_samples, rng)
            rows.append((crop_a, crop_b, mask_a & mask_b))
        return {"audio_a": np.stack([r[0] for r in rows]),
                "audio_b": np.stack([r[1] for r in rows]),
                "mask_a": np.stack([r[2] for r in rows]), "mask_b": np.stack([r[2] for r in rows]),
                "group": np.full(crops_per_group, group[0], np.int32)}

    def flatten(batch: dict) -> dict:
        return {k: v.reshape(-1, *v.shape[2:]) for k, v in batch.items()}

    ds = ds.random_map(load_pairs, seed=seed).filter(lambda x: x is not None)
    read = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
    batched = ds.to_iter_dataset(read).batch(groups_per_batch, drop_remainder=True).map(flatten)
    return AudioPipeline(batched, report)
