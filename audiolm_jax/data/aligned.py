"""Phone-aligned speech: durations in frames, frame-level phones, and their Grain pipeline.

Voicebox (and later NaturalSpeech 2) train on utterances whose phones are
aligned to the audio. A record carries the alignment as the built-in speech
corpus does (`phonemes`, `phoneme_starts`, `phoneme_ends` in seconds), whether
it came from the corpus or from the CTC forced aligner
(`audiolm_jax.eval.align`) run over any folder of transcribed wavs.

The phone sequence of an utterance is `[<sil>] + phonemes + [<sil>]`: the
leading and trailing silence are phones of their own, so durations tile every
frame. Frame `t` of a centred STFT with hop `h` sits at `t * h` samples; phone
`p` owns frames `[b_p, b_{p+1})` with `b_p = round(start_p * frame_rate)`,
every phone at least one frame long (a gap between phones joins the phone
before it). `sum(durations) == num_frames` exactly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import grain
import jax
import numpy as np

from audiolm_jax.data.pipeline import AudioPipeline, BadFileReport, decode_record
from audiolm_jax.text.vocab import PhonemeVocab

SILENCE = "<sil>"
PAUSE = "<pause>"
PAUSE_SECONDS = 0.05    # gaps at least this long between phones become a `PAUSE`


def num_frames(num_samples: int, hop_length: int) -> int:
    """Frames of a centred STFT of `num_samples` samples: `1 + num_samples // hop`."""
    return 1 + num_samples // hop_length


def phone_durations(starts: Sequence[float], ends: Sequence[float], total_frames: int,
                    frame_rate: float) -> np.ndarray:
    """Frames per phone of `[<sil>] + phones + [<sil>]`, summing to `total_frames`.

    Args:
      starts, ends: [P] phone times in seconds (non-decreasing).
      total_frames: frames of the utterance.
      frame_rate: frames per second.

    Returns:
      [P + 2] int32, each >= 1 (the silences may be 0 when there is no room).

    Raises:
      ValueError: when the phones do not fit the frames (P + 0 > total_frames) or
        the times are not ordered.
    """
    starts, ends = np.asarray(starts, np.float64), np.asarray(ends, np.float64)
    count = len(starts)
    if len(ends) != count or count == 0:
        raise ValueError(f"need as many phone starts as ends (got {count} and {len(ends)}), "
                         "at least one")
    if np.any(np.diff(starts) < 0) or np.any(ends < starts):
        raise ValueError("phone times must be ordered: starts non-decreasing, end >= start")
    if count > total_frames:
        raise ValueError(f"{count} phones do not fit {total_frames} frames")
    bounds = np.round(np.append(starts, ends[-1]) * frame_rate).astype(np.int64)
    bounds = np.clip(bounds, 0, total_frames)
    # Every phone at least one frame: push boundaries right, then (when the end is
    # reached) left again from the end.
    for i in range(1, count + 1):
        bounds[i] = max(bounds[i], bounds[i - 1] + 1)
    bounds[count] = min(bounds[count], total_frames)
    for i in range(count - 1, -1, -1):
        bounds[i] = min(bounds[i], bounds[i + 1] - 1)
    if bounds[0] < 0:
        raise ValueError(f"{count} phones do not fit {total_frames} frames")
    durations = np.diff(np.concatenate([[0], bounds, [total_frames]]))
    return durations.astype(np.int32)


def frame_phones(phone_ids: Sequence[int], durations: Sequence[int]) -> np.ndarray:
    """[sum(durations)] ids: each phone id repeated for its frames."""
    return np.repeat(np.asarray(phone_ids, np.int32), np.asarray(durations, np.int64))


def insert_pauses(phonemes: Sequence[str], starts: Sequence[float], ends: Sequence[float],
                  min_gap: float = PAUSE_SECONDS
                  ) -> tuple[list[str], list[float], list[float]]:
    """The alignment with a `PAUSE` phone in every gap of at least `min_gap` seconds.

    Args:
      phonemes, starts, ends: [P] an alignment (seconds).
      min_gap: the shortest gap that is a pause (<= 0: none inserted).

    Returns:
      (phonemes, starts, ends), each [P + pauses].
    """
    out_p, out_s, out_e = [], [], []
    for i, (p, s, e) in enumerate(zip(phonemes, starts, ends, strict=True)):
        if i and min_gap > 0 and s - out_e[-1] >= min_gap:
            out_p.append(PAUSE)
            out_s.append(out_e[-1])
            out_e.append(float(s))
        out_p.append(p)
        out_s.append(float(s))
        out_e.append(float(e))
    return out_p, out_s, out_e


def join_utterances(first: dict[str, Any], first_samples: int, second: dict[str, Any],
                    sample_rate: int) -> dict[str, Any]:
    """The alignment of two utterances back to back (the audio is their concatenation).

    The second's phone times are shifted by the first's length, so the first's
    trailing and the second's leading silence form one gap between them (a
    `PAUSE` once `insert_pauses` runs).

    Returns:
      a record with `phonemes`, `phoneme_starts`, `phoneme_ends` and
      `prompt_samples` (= first_samples, where the second begins).
    """
    offset = first_samples / sample_rate
    return {
        "phonemes": [*first["phonemes"], *second["phonemes"]],
        "phoneme_starts": [*map(float, first["phoneme_starts"]),
                           *(float(t) + offset for t in second["phoneme_starts"])],
        "phoneme_ends": [*map(float, first["phoneme_ends"]),
                         *(float(t) + offset for t in second["phoneme_ends"])],
        "prompt_samples": int(first_samples),
    }


def phone_sequence(phonemes: Sequence[str], vocab: PhonemeVocab) -> list[int]:
    """Ids of `[<sil>] + phonemes + [<sil>]` (unknown phonemes map to `<unk>`)."""
    return vocab.encode([SILENCE, *phonemes, SILENCE])


def build_vocab(records: Sequence[dict]) -> PhonemeVocab:
    """The phone vocabulary of aligned records: `<sil>` and `<pause>` first after the
    specials, then every phoneme in sorted order."""
    phonemes = sorted({p for r in records for p in r["phonemes"]})
    return PhonemeVocab([SILENCE, PAUSE, *phonemes])


def speech_frames(frame_ids: Any, valid: Any, vocab: PhonemeVocab) -> Any:
    """[..., frames] bool: valid frames whose phone is speech (not `<sil>` or `<pause>`).
    Works on numpy and jax arrays alike."""
    silent = [vocab.encode([token])[0] for token in (SILENCE, PAUSE) if token in vocab]
    speech = valid
    for token_id in silent:
        speech = speech & (frame_ids != token_id)
    return speech


@dataclasses.dataclass(frozen=True)
class AlignedExample:
    """Shapes of one padded example (all static), and how utterances become examples.

    Attributes:
      max_frames, max_phones: the padded lengths.
      hop_length: samples per frame.
      pause_seconds: the shortest gap that becomes a `PAUSE` phone (0: none).
      pair_probability: the chance an utterance is joined after another of its
        speaker when both fit `max_frames` (`join_utterances`).
    """

    max_frames: int
    max_phones: int
    hop_length: int
    pause_seconds: float = PAUSE_SECONDS
    pair_probability: float = 0.0

    @property
    def max_samples(self) -> int:
        # The centred STFT of (max_frames - 1) * hop samples has exactly max_frames frames.
        return (self.max_frames - 1) * self.hop_length


def aligned_example(record: dict[str, Any], audio: np.ndarray | None, vocab: PhonemeVocab,
                    shapes: AlignedExample, sample_rate: int,
                    rng: np.random.Generator | None = None,
                    num_samples: int | None = None) -> dict[str, np.ndarray]:
    """One padded training example of an aligned utterance.

    Utterances longer than `max_frames` are cropped to a random window of whole
    frames (the frame phones follow the crop; the phone sequence and durations
    stay those of the whole utterance, cut to `max_phones`).

    Args:
      record: with `phonemes`, `phoneme_starts`, `phoneme_ends`.
      audio: [samples] mono at `sample_rate`; None for the phone fields only (the
        duration model's), then `num_samples` gives the length.

    Returns:
      audio [max_samples] float32; frame_phones [max_frames] int32; frame_valid
      [max_frames] bool; prompt_frames [] int32 (frames of the first utterance of a
      joined pair, else 0); phones [max_phones] int32; durations [max_phones] int32;
      phone_valid [max_phones] bool.
    """
    hop = shapes.hop_length
    frames = num_frames(len(audio) if audio is not None else int(num_samples), hop)
    phonemes, starts, ends = insert_pauses(record["phonemes"], record["phoneme_starts"],
                                           record["phoneme_ends"], shapes.pause_seconds)
    ids = phone_sequence(phonemes, vocab)
    durations = phone_durations(starts, ends, frames, sample_rate / hop)
    n = min(len(ids), shapes.max_phones)
    phones = np.zeros(shapes.max_phones, np.int32)
    phones[:n] = ids[:n]
    dur = np.zeros(shapes.max_phones, np.int32)
    dur[:n] = durations[:n]
    example = {"phones": phones, "durations": dur,
               "phone_valid": np.arange(shapes.max_phones) < n}
    if audio is None:
        return example
    per_frame = frame_phones(ids, durations)
    start = 0
    if frames > shapes.max_frames:
        rng = rng or np.random.default_rng(0)
        start = int(rng.integers(0, frames - shapes.max_frames + 1))
    used = min(frames - start, shapes.max_frames)
    out_audio = np.zeros(shapes.max_samples, np.float32)
    piece = audio[start * hop:start * hop + shapes.max_samples]
    out_audio[:len(piece)] = piece
    frame_ids = np.zeros(shapes.max_frames, np.int32)
    frame_ids[:used] = per_frame[start:start + used]
    # Frames past the audio's own (a crop that ends within a frame) stay invalid.
    used = min(used, num_frames(len(piece), hop))
    prompt = record.get("prompt_samples", 0) // hop - start
    return {**example, "audio": out_audio, "frame_phones": frame_ids,
            "frame_valid": np.arange(shapes.max_frames) < used,
            "prompt_frames": np.int32(np.clip(prompt, 0, used) if prompt > 0 else 0)}


def make_aligned_pipeline(source: Any, *, vocab: PhonemeVocab, sample_rate: int,
                          shapes: AlignedExample, batch_size: int, seed: int,
                          shuffle: bool = True, num_epochs: int | None = None,
                          shard_index: int | None = None, shard_count: int | None = None,
                          num_threads: int = 2, prefetch: int = 4,
                          drop_remainder: bool = True, with_audio: bool = True) -> AudioPipeline:
    """Batches of `aligned_example`s over any source of aligned records.

    Records without an alignment, or whose phones do not fit their frames, are
    skipped and counted in the report (with the reason), as are undecodable files.
    With `with_audio=False` (the duration model) only the phone fields are made and
    records that give `num_samples` and `sample_rate` are not decoded at all.

    Returns:
      AudioPipeline yielding the fields of `aligned_example`, batched.
    """
    shard_index = jax.process_index() if shard_index is None else shard_index
    shard_count = jax.process_count() if shard_count is None else shard_count
    report = BadFileReport()
    ds = grain.MapDataset.source(source)
    if shard_count > 1:
        ds = ds[shard_index::shard_count]
    if shuffle:
        ds = ds.shuffle(seed=seed)
    ds = ds.repeat(num_epochs)
    shard_size = len(range(len(source))[shard_index::shard_count])
    what = f"{source!r}" + (f" (shard {shard_index} of {shard_count})" if shard_count > 1 else "")
    pairing = shapes.pair_probability > 0
    if pairing:
        same_speaker = _speaker_partners(source)

    def samples_of(record: dict[str, Any]) -> int | None:
        if "num_samples" in record and "sample_rate" in record:
            return round(int(record["num_samples"]) * sample_rate / int(record["sample_rate"]))
        return None

    def partner(record: dict[str, Any], rng: np.random.Generator, samples: int
                ) -> tuple[dict, np.ndarray | None] | None:
        """Another utterance of the record's speaker that fits `max_frames` with it, and
        its audio (None without audio)."""
        candidates = same_speaker.get(record.get("speaker"), ())
        if len(candidates) < 2 or rng.random() >= shapes.pair_probability:
            return None
        pick = int(rng.integers(len(candidates)))
        other = source[int(candidates[pick])]
        if other.get("path") == record.get("path"):   # itself: its neighbour in the list
            other = source[int(candidates[(pick + 1) % len(candidates)])]
        if other.get("path") in report.files:
            return None
        other_samples = samples_of(other)
        fits = lambda n: num_frames(samples + n, shapes.hop_length) <= shapes.max_frames
        if other_samples is not None and not fits(other_samples):
            return None
        if not with_audio:
            return (other, None) if other_samples is not None else None
        audio = decode_record(other, sample_rate, report)
        if audio is None or not fits(len(audio)):
            return None
        return other, audio[:, 0]

    def load(record: dict[str, Any], rng: np.random.Generator) -> dict | None:
        path = record.get("path", "?")
        if path in report.files:
            return None
        if not all(k in record for k in ("phonemes", "phoneme_starts", "phoneme_ends")):
            report.add(path, "no phone alignment (phonemes, phoneme_starts, phoneme_ends)")
            report.check_some_usable(shard_size, what)
            return None
        num_samples = samples_of(record) if not with_audio else None
        if num_samples is not None:
            audio = None
        else:
            audio = decode_record(record, sample_rate, report)
            if audio is None:
                report.check_some_usable(shard_size, what)
                return None
            num_samples = len(audio)
            audio = audio[:, 0] if with_audio else None
        found = partner(record, rng, num_samples) if pairing else None
        if found is not None:
            # The partner speaks first: the record is what gets continued.
            other, other_audio = found
            other_samples = len(other_audio) if other_audio is not None else samples_of(other)
            record = join_utterances(other, other_samples, record, sample_rate)
            num_samples += other_samples
            if audio is not None:
                audio = np.concatenate([other_audio, audio])
        try:
            example = aligned_example(record, audio, vocab, shapes, sample_rate, rng,
                                      num_samples)
        except ValueError as e:
            report.add(path, f"bad alignment: {e}")
            report.check_some_usable(shard_size, what)
            return None
        report.add_good(path)
        return example

    ds = ds.random_map(load, seed=seed).filter(lambda x: x is not None)
    read = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
    return AudioPipeline(ds.to_iter_dataset(read).batch(batch_size,
                                                        drop_remainder=drop_remainder), report)


def _speaker_partners(source: Any) -> dict[Any, np.ndarray]:
    """{speaker: indices of its aligned records}; empty when records name no speaker."""
    groups: dict[Any, list[int]] = {}
    for i in range(len(source)):
        record = source[i]
        if "speaker" in record and "phonemes" in record:
            groups.setdefault(record["speaker"], []).append(i)
    return {k: np.asarray(v) for k, v in groups.items()}
