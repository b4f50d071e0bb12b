"""Grain pipelines: decode, resample, random fixed-length crops, batch, shard.

    source -> [this process's shard] -> shuffle(seed) -> repeat
           -> read a random crop + resample      (Grain reader threads)
           -> drop bad files                     (counted, named in a warning)
           -> batch

Crops read only the frames they need: soundfile seeks to a random offset of
the file and decodes the crop (plus a short margin for the resampler), so an
hour-long recording costs about what a one-minute one does. Files soundfile
cannot open (mp3/opus through librosa) and in-memory records are decoded
whole, then cropped.

Bad files (undecodable, truncated, NaN/inf, silent, wrong channel count) are
dropped, counted by reason in `BadFileReport`, and never decoded again. When
every file of a shard has turned out bad the iterator raises `NoUsableAudioError`
naming the source and the counts by reason, instead of spinning forever.

The whole pipeline is deterministic for a seed (the crop offsets come from
Grain's per-record RNG, not from thread timing), and its iterator's
`get_state()` is what checkpoints store so a resumed run sees the same batches.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import struct
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grain
import jax
import numpy as np
import soundfile as sf

from audiolm_jax.audio.io import BadAudioError, is_silent, load_audio, resample


class NoUsableAudioError(ValueError):
    """Every file of a pipeline's shard is bad; the message names the source and the
    counts by reason."""


@dataclasses.dataclass
class BadFileReport:
    """Files the pipeline dropped, with the reason. Thread-safe; one warning per file.

    Attributes:
      files: path -> reason, for every dropped file.
      silent_crops: crops of long files that were silent (dropped; the file is kept).
      good_files: how many distinct files gave at least one example.
    """

    files: dict[str, str] = dataclasses.field(default_factory=dict)
    silent_crops: int = 0
    _good: set = dataclasses.field(default_factory=set, repr=False)
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False)

    def add(self, path: str, reason: str) -> None:
        with self._lock:
            if path in self.files:
                return
            self.files[path] = reason
        logging.warning("skipping %s: %s (%d bad files so far)", path, reason, len(self.files))

    def add_good(self, path: str) -> None:
        with self._lock:
            self._good.add(path)

    def is_good(self, path: str) -> bool:
        """Whether `path` has given an example (its whole-file checks are done)."""
        return path in self._good

    def add_silent_crop(self) -> None:
        with self._lock:
            self.silent_crops += 1

    @property
    def count(self) -> int:
        return len(self.files)

    @property
    def good_files(self) -> int:
        return len(self._good)

    def counts_by_reason(self) -> dict[str, int]:
        """{"cannot decode": 3, "silent": 1, ...}: reasons without their details."""
        return dict(collections.Counter(_reason_kind(r) for r in self.files.values()))

    def check_some_usable(self, total: int, what: str) -> None:
        """Raises NoUsableAudioError once all `total` records of `what` are known bad."""
        if len(self.files) >= total and not self._good:
            counts = ", ".join(f"{n} {kind}" for kind, n in sorted(self.counts_by_reason().items()))
            raise NoUsableAudioError(
                f"{what}: none of its {total} files is usable audio ({counts}); e.g. "
                + "; ".join(f"{p}: {r}" for p, r in list(self.files.items())[:3]))


def _reason_kind(reason: str) -> str:
    """The reason's kind without its details ("cannot decode (…)" -> "cannot decode")."""
    for kind in ("cannot decode", "truncated", "NaN or inf", "silent", "channels", "no samples"):
        if kind in reason:
            return kind
    return reason.split(" (")[0]


def wav_truncation(path: str | Path) -> str | None:
    """Why a WAV file is truncated ("data chunk declares 96000 bytes, 47956 present"), or
    None. libsndfile reads a cut-off WAV silently as a shorter file, so the declared
    size of its `data` chunk is compared with what the file holds."""
    path = Path(path)
    if path.suffix.lower() != ".wav":
        return None
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
            return None
        endian = "<" if head[:4] == b"RIFF" else ">"
        offset = 12
        while offset + 8 <= size:
            f.seek(offset)
            chunk_id, chunk_size = struct.unpack(endian + "4sI", f.read(8))
            if chunk_id == b"data":
                if chunk_size in (0, 0xFFFFFFFF):     # streamed: the size was never filled in
                    return None
                present = size - offset - 8
                if present < chunk_size:
                    return f"truncated: data chunk declares {chunk_size} bytes, {present} present"
                return None
            offset += 8 + chunk_size + (chunk_size & 1)
    return None


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


_RESAMPLER_MARGIN = 256   # source frames read beyond each end of a crop when resampling


def read_crop(record: dict[str, Any], sample_rate: int, crop_samples: int,
              rng: np.random.Generator, report: BadFileReport, channels: int = 1
              ) -> tuple[np.ndarray, np.ndarray] | None:
    """A random `crop_samples` window of the record's audio at `sample_rate`, or None.

    Files soundfile can open are read by seeking: only the window (plus
    `_RESAMPLER_MARGIN` frames each side when resampling) is decoded. Shorter
    files, other formats and in-memory records are decoded whole.

    Returns:
      (audio [crop_samples, channels] float32, mask [crop_samples] bool), or None
      when the file is bad (reported) or the crop is silent (counted).
    """
    path = record.get("path", "?")
    if path in report.files:                   # known bad: never decoded again
        return None

    def whole() -> tuple[np.ndarray, np.ndarray] | None:
        audio = decode_record(record, sample_rate, report, channels)
        if audio is None:
            return None
        report.add_good(path)
        return random_crop(audio, crop_samples, rng)

    info = None
    if "audio" not in record:
        try:
            info = sf.info(path)
        except Exception:  # noqa: BLE001 - not a soundfile format: decoded whole below
            info = None
    if info is None or info.frames == 0:
        return whole()
    if not report.is_good(path):               # checked once per file, not per crop
        truncated = wav_truncation(path)
        if truncated:
            report.add(path, truncated)
            return None
    need = math.ceil(crop_samples * info.samplerate / sample_rate)
    if info.frames <= need + 2 * _RESAMPLER_MARGIN:   # short file: decode it whole
        return whole()
    start = int(rng.integers(0, info.frames - need + 1))
    margin = 0 if info.samplerate == sample_rate else _RESAMPLER_MARGIN
    lo, hi = max(start - margin, 0), min(start + need + margin, info.frames)
    try:
        window, _ = sf.read(path, start=lo, stop=hi, dtype="float32", always_2d=True)
    except Exception as e:  # noqa: BLE001
        report.add(path, f"cannot decode frames {lo}..{hi} ({e})")
        return None
    if window.shape[0] < hi - lo:
        report.add(path, f"truncated: frames {lo}..{hi} of {info.frames} requested, "
                         f"{window.shape[0]} decoded")
        return None
    if not np.all(np.isfinite(window)):
        report.add(path, "audio contains NaN or inf")
        return None
    if channels == 1 and window.shape[1] > 1:
        window = window.mean(axis=1, keepdims=True)
    if window.shape[1] != channels:
        report.add(path, f"has {window.shape[1]} channels, expected {channels}")
        return None
    audio = resample(window, info.samplerate, sample_rate)
    skip = round((start - lo) * sample_rate / info.samplerate)
    audio, mask = random_crop(audio[skip:skip + crop_samples], crop_samples, rng)
    if is_silent(audio):
        # A pause in a long recording is not a bad file; a file that is silent
        # throughout is, and one short enough is checked whole (once).
        if not report.is_good(path) and info.frames <= 60 * info.samplerate:
            if decode_record(record, sample_rate, report, channels) is None:
                return None
            report.add_good(path)
        report.add_silent_crop()
        return None
    report.add_good(path)
    return audio, mask


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

    shard_size = len(range(len(source))[shard_index::shard_count]) if shard_count > 1 else len(
        source)
    what = f"{source!r}" + (f" (shard {shard_index} of {shard_count})" if shard_count > 1 else "")

    def load_and_crop(record: dict[str, Any], rng: np.random.Generator) -> dict | None:
        crop = read_crop(record, sample_rate, crop_samples, rng, report, channels)
        if crop is None:
            report.check_some_usable(shard_size, what)
            return None
        audio, mask = crop
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
