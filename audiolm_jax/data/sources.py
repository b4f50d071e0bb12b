"""Random-access data sources for Grain.

Every source returns dict records. File-backed sources return
`{"path": str, "text": str | None, ...metadata}` and leave decoding to the
pipeline (so decoding runs in Grain's reader threads); in-memory sources such as
TFDS return `{"audio": [samples, channels] float32, "sample_rate": int, ...}`.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from audiolm_jax.audio.io import AUDIO_EXTENSIONS
from audiolm_jax.data.corpora.common import read_manifest


class AudioFolderSource:
    """Every audio file under a folder (recursively, sorted), with optional sidecar text.

    A sidecar is the file with the same stem and suffix `text_suffix` (a transcript
    or caption). Files whose header cannot be read or that hold no samples are
    skipped at construction, counted in `skipped` and named in a warning.

    Args:
      root: the folder.
      extensions: audio suffixes to take (lower case).
      text_suffix: sidecar suffix, or None.
      check_headers: read each header once to drop broken files early.
    """

    def __init__(self, root: str | os.PathLike, extensions: Sequence[str] = AUDIO_EXTENSIONS,
                 text_suffix: str | None = ".txt", check_headers: bool = True):
        self.root = Path(root)
        if not self.root.exists():
            raise FileNotFoundError(f"audio folder {self.root} does not exist")
        if not self.root.is_dir():
            raise NotADirectoryError(f"{self.root} is not a folder")
        exts = tuple(e.lower() for e in extensions)
        paths = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in exts and p.is_file())
        if not paths:
            raise ValueError(f"audio folder {self.root} has no audio files ({', '.join(exts)})")
        self.skipped: list[tuple[str, str]] = []
        if check_headers:
            paths = [p for p in paths if self._header_ok(p)]
        if self.skipped:
            logging.warning("%s: skipped %d unreadable or empty files: %s", self.root,
                            len(self.skipped), ", ".join(f"{p} ({why})" for p, why in self.skipped[:10]))
        if not paths:
            reasons = Counter(why for _, why in self.skipped)
            raise ValueError(f"audio folder {self.root}: none of its {len(self.skipped)} audio "
                             "files is usable (" + ", ".join(
                                 f"{n} {why}" for why, n in sorted(reasons.items())) + ")")
        self.paths = paths
        self.text_suffix = text_suffix

    def _header_ok(self, path: Path) -> bool:
        try:
            info = sf.info(path)
        except Exception:  # noqa: BLE001 - formats soundfile lacks are decoded later by librosa
            if path.suffix.lower() in (".mp3", ".opus") and path.stat().st_size > 0:
                return True
            self.skipped.append((str(path), "unreadable header"))
            return False
        if info.frames == 0:
            self.skipped.append((str(path), "no samples"))
            return False
        return True

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.paths[index]
        text = None
        if self.text_suffix:
            sidecar = path.with_suffix(self.text_suffix)
            if sidecar.is_file():
                text = read_text_sidecar(sidecar)
        return {"path": str(path), "text": text}

    def __repr__(self) -> str:
        return f"AudioFolderSource({self.root}, {len(self)} files)"


_warned_sidecars: set[str] = set()


def read_text_sidecar(path: Path) -> str:
    """The sidecar's text. Text that is not UTF-8 is read with U+FFFD for the bad bytes
    and named in a warning (once per file), rather than stopping training."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError as e:
        if str(path) not in _warned_sidecars:
            _warned_sidecars.add(str(path))
            logging.warning("%s is not UTF-8 (%s); read with replacement characters", path, e)
        return data.decode("utf-8", errors="replace").strip()


class ManifestSource:
    """A built corpus (or any folder with a `manifest.jsonl`): one record per row,
    with `path` resolved and every manifest field kept."""

    def __init__(self, corpus_dir: str | os.PathLike):
        self.root = Path(corpus_dir)
        self.rows = read_manifest(self.root)
        if not self.rows:
            raise ValueError(f"{self.root}/manifest.jsonl has no rows")

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = dict(self.rows[index])
        # The manifest's `audio` is a relative path; records use `audio` for decoded
        # arrays, so the file goes into `path` instead.
        row["path"] = str(self.root / row.pop("audio"))
        return row

    def __repr__(self) -> str:
        return f"ManifestSource({self.root}, {len(self)} items)"


class TfdsSource:
    """A TFDS dataset prepared in `array_record` format, read with `tfds.data_source`.

    Args:
      name: TFDS name, e.g. "librispeech" or "nsynth/full".
      split: e.g. "train".
      data_dir: where it was prepared (nothing is downloaded).
      audio_key, text_key: feature names of the waveform and the text (or None).
      sample_rate: the dataset's sample rate (TFDS audio features do not carry it).
      data_source: an already-open random-access source (for tests and custom readers).
    """

    def __init__(self, name: str, split: str = "train", data_dir: str | None = None,
                 audio_key: str = "audio", text_key: str | None = "text",
                 sample_rate: int = 16_000, data_source: Any = None):
        if data_source is None:
            try:
                import tensorflow_datasets as tfds
            except ImportError as e:
                raise ImportError("TfdsSource needs tensorflow-datasets: "
                                  "pip install 'audiolm-jax[tfds]'") from e
            try:
                data_source = tfds.data_source(name, split=split, data_dir=data_dir,
                                               download=False)
            except Exception as e:  # noqa: BLE001 - tfds raises many kinds
                raise FileNotFoundError(
                    f"TFDS dataset {name!r} split {split!r} is not prepared in array_record "
                    f"format under {data_dir or '~/tensorflow_datasets'}: {e}") from e
        self.name, self.source = name, data_source
        self.audio_key, self.text_key, self.sample_rate = audio_key, text_key, sample_rate

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        example = self.source[index]
        if self.audio_key not in example:
            raise KeyError(f"TFDS {self.name}: no feature {self.audio_key!r}; has {sorted(example)}")
        audio = np.asarray(example[self.audio_key])
        if np.issubdtype(audio.dtype, np.signedinteger):  # TFDS stores int16 PCM
            # / 32768, as soundfile reads the same PCM from a file: in [-1, 1).
            audio = audio.astype(np.float32) / float(-np.iinfo(audio.dtype).min)
        audio = audio.astype(np.float32).reshape(audio.shape[0], -1)
        text = example.get(self.text_key) if self.text_key else None
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        record = {"audio": audio, "sample_rate": self.sample_rate, "text": text,
                  "path": f"tfds:{self.name}[{index}]"}
        # Numeric scalar features (speaker or chapter ids, ...) come along, so
        # `keep_fields` can carry them into the batch.
        for key, value in example.items():
            if key in record or key in (self.audio_key, self.text_key):
                continue
            value = np.asarray(value)
            if value.ndim == 0 and np.issubdtype(value.dtype, np.number):
                record[key] = value.item()
        return record


class SubsetSource:
    """The records of `source` at `indices`, as a source of its own."""

    def __init__(self, source: Any, indices: Sequence[int]):
        self.source = source
        self.indices = [int(i) for i in indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.source[self.indices[index]]

    def __repr__(self) -> str:
        return f"SubsetSource({self.source!r}, {len(self)} items)"


def split_holdout(source: Any, fraction: float, seed: int = 0) -> tuple[SubsetSource, SubsetSource]:
    """Splits a source into (train, held-out) by a seeded permutation of its indices.

    Deterministic for a seed and a source length; at least one record is held
    out and at least one kept for training.
    """
    total = len(source)
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"held-out fraction must be in (0, 1), got {fraction}")
    if total < 2:
        raise ValueError(f"{source!r} has {total} records; a held-out split needs at least 2")
    order = np.random.default_rng(seed).permutation(total)
    held = min(total - 1, max(1, round(fraction * total)))
    return SubsetSource(source, sorted(order[held:])), SubsetSource(source, sorted(order[:held]))


class WithFields:
    """`source`'s records with extra per-record fields (e.g. tokenized captions).

    `fields[name][i]` is added to record `i` under `name`.
    """

    def __init__(self, source: Any, fields: dict[str, Sequence[Any]]):
        for name, values in fields.items():
            if len(values) != len(source):
                raise ValueError(f"field {name!r} has {len(values)} values for {len(source)} "
                                 "records")
        self.source = source
        self.fields = fields

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = dict(self.source[index])
        for name, values in self.fields.items():
            record[name] = values[index]
        return record

    def __repr__(self) -> str:
        return f"WithFields({self.source!r}, {sorted(self.fields)})"


def split_holdout_groups(source: Any, field: str, fraction: float, seed: int = 0
                         ) -> tuple[SubsetSource, SubsetSource]:
    """Like `split_holdout`, but whole groups (records sharing `field`, e.g. every
    rendering of one `melody_id`) go to one side, so no held-out item has a sibling
    in training."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"held-out fraction must be in (0, 1), got {fraction}")
    keys = []
    for i in range(len(source)):
        record = source[i]
        if field not in record:
            raise ValueError(f"record {i} of {source!r} has no {field!r} field to group by")
        keys.append(record[field])
    groups = sorted(set(keys))
    if len(groups) < 2:
        raise ValueError(f"{source!r} has {len(groups)} {field!r} group(s); a held-out split "
                         "needs at least 2")
    order = np.random.default_rng(seed).permutation(len(groups))
    held = min(len(groups) - 1, max(1, round(fraction * len(groups))))
    held_keys = {groups[i] for i in order[:held]}
    train = [i for i, k in enumerate(keys) if k not in held_keys]
    evaluation = [i for i, k in enumerate(keys) if k in held_keys]
    return SubsetSource(source, train), SubsetSource(source, evaluation)


def split_held_out_speakers(source: Any, num_speakers: int, seed: int = 0
                            ) -> tuple[SubsetSource, SubsetSource]:
    """(train, held-out): every utterance of `num_speakers` speakers held out.

    The one speaker split of every speech model (encoder, recognizer, vocoder,
    generators) and of the TTS evaluation set: the speakers are the first
    `num_speakers` of one seeded permutation of the sorted speaker ids, so the
    same seed holds out the same speakers everywhere, and a larger
    `num_speakers` holds out a superset (the recognizer's 6 include the
    generators' 4).
    """
    speakers = {source[i].get("speaker") for i in range(len(source))}
    if None in speakers:
        raise ValueError(f"{source!r} has records without a 'speaker' field; a speaker split "
                         "needs one on every record")
    if not 0 < num_speakers < len(speakers):
        raise ValueError(f"held_out_speakers={num_speakers} must be between 1 and "
                         f"{len(speakers) - 1} ({source!r} has {len(speakers)} speakers)")
    return split_holdout_groups(source, "speaker", num_speakers / len(speakers), seed=seed)


def split_for_evaluation(source: Any, data_config: Any) -> tuple[SubsetSource, SubsetSource]:
    """(train, held-out) as a config's `data` block asks: whole speakers when
    `held_out_speakers` > 0 and the records name their speaker
    (`split_held_out_speakers`), else an `eval_fraction` share of the clips
    (`split_holdout`; said in a warning when speakers were asked for)."""
    num_speakers = data_config.get("held_out_speakers", 0)
    if num_speakers:
        if len(source) and "speaker" in source[0]:
            return split_held_out_speakers(source, num_speakers, seed=data_config.seed)
        logging.warning("data.held_out_speakers=%d, but %r has no 'speaker' field: holding "
                        "out %.0f %% of the clips instead (data.eval_fraction)", num_speakers,
                        source, 100 * data_config.eval_fraction)
    return split_holdout(source, data_config.eval_fraction, seed=data_config.seed)


def group_indices(source: Any, field: str) -> list[list[int]]:
    """Indices of `source` grouped by the value of `field`, groups in first-seen order."""
    groups: dict[Any, list[int]] = {}
    for i in range(len(source)):
        groups.setdefault(source[i][field], []).append(i)
    return list(groups.values())
