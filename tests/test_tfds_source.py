"""`TfdsSource` over a real ArrayRecord file, read the way `tfds.data_source` reads one.

tensorflow-datasets is not installed here (nor in CI), so the file is written with
`array_record` itself and wrapped in `NpzExamples`, which stands in for what
`tfds.data_source(name, split=...)` returns: random access (`__len__`,
`__getitem__`, `__getitems__`) over the split's ArrayRecord records, each record
deserialized into a dict of numpy features (TFDS's
`features.deserialize_example_np`). For an audio dataset that is an
`Audio(dtype=np.int16)` feature as an int16 array `[samples]` (or
`[samples, channels]`), a `Text` feature as `bytes` and scalar features as numpy
scalars. TFDS serializes `tf.train.Example` protos; the records here are `.npz`
bytes (read with `allow_pickle=False`), which decode to the same dict.
"""

from __future__ import annotations

import io
import sys
import types

import numpy as np
import pytest
import soundfile as sf
from array_record.python.array_record_data_source import ArrayRecordDataSource
from array_record.python.array_record_module import ArrayRecordWriter

from audiolm_jax.data.pipeline import BadFileReport, decode_record, make_audio_pipeline
from audiolm_jax.data.sources import AudioFolderSource, TfdsSource

RATE = 16_000
TEXTS = ["the first utterance", "naïve café — ünïcode", "", "third one", "the last"]


def pcm(i: int, samples: int) -> np.ndarray:
    """Utterance i: a tone at full int16 scale, both extremes included."""
    t = np.arange(samples) / RATE
    wave = np.round(32767.5 * np.sin(2 * np.pi * 220 * (i + 1) * t) - 0.5)
    return np.clip(wave, -32768, 32767).astype(np.int16)


LENGTHS = [4_000, 6_000, 3_000, 5_000, 8_000]


def serialize(example: dict) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **{name: np.asarray(value) for name, value in example.items()})
    return buffer.getvalue()


class NpzExamples:
    """`tfds.data_source`'s interface over an ArrayRecord file of `.npz` records."""

    def __init__(self, path):
        self.records = ArrayRecordDataSource([str(path)])

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: int) -> dict:
        with np.load(io.BytesIO(self.records[key]), allow_pickle=False) as npz:
            example = {}
            for name in npz.files:
                value = npz[name]
                if value.dtype.kind == "S":          # Text features come back as bytes
                    value = bytes(value[()])
                elif value.ndim == 0:                 # scalars as numpy scalars
                    value = value[()]
                example[name] = value
            return example

    def __getitems__(self, keys) -> list[dict]:
        return [self[k] for k in keys]


@pytest.fixture(scope="module")
def array_record(tmp_path_factory):
    """5 utterances (int16 mono PCM, UTF-8 text, int64 speaker) in one ArrayRecord file."""
    path = tmp_path_factory.mktemp("tfds") / "speech-train.array_record-00000-of-00001"
    writer = ArrayRecordWriter(str(path), "group_size:1")
    for i, (text, n) in enumerate(zip(TEXTS, LENGTHS)):
        writer.write(serialize({"audio": pcm(i, n), "text": text.encode("utf-8"),
                                "speaker": np.int64(10 + i)}))
    writer.close()
    return path


@pytest.fixture
def source(array_record):
    return TfdsSource("speech", data_source=NpzExamples(array_record), sample_rate=RATE)


def test_wrapper_reads_back_what_tfds_would_return(array_record):
    examples = NpzExamples(array_record)
    assert len(examples) == 5
    first = examples[1]
    assert sorted(first) == ["audio", "speaker", "text"]
    assert first["audio"].dtype == np.int16 and first["audio"].shape == (6_000,)
    np.testing.assert_array_equal(first["audio"], pcm(1, 6_000))
    assert isinstance(first["text"], bytes) and first["speaker"] == 11


def test_records_are_float_audio_text_and_a_path(source):
    assert len(source) == 5
    for i in range(5):
        record = source[i]
        audio = record["audio"]
        assert audio.dtype == np.float32 and audio.shape == (LENGTHS[i], 1)
        # int16 PCM scaled to about [-1, 1]: full scale in, (almost) full scale out.
        np.testing.assert_allclose(audio[:, 0], pcm(i, LENGTHS[i]) / 32768.0, rtol=1e-4)
        assert np.abs(audio).max() > 0.999
        assert record["text"] == TEXTS[i] and isinstance(record["text"], str)
        assert record["sample_rate"] == RATE
        assert record["path"] == f"tfds:speech[{i}]"
    assert TfdsSource("speech", data_source=source.source, text_key=None)[1]["text"] is None
    assert TfdsSource("speech", data_source=source.source, text_key="caption")[1]["text"] is None


def test_int16_pcm_is_in_range_and_matches_the_same_pcm_from_a_file(source, tmp_path):
    record = source[0]["audio"][:, 0]
    assert record.min() >= -1.0 and record.max() <= 1.0
    sf.write(tmp_path / "utt0.wav", pcm(0, LENGTHS[0]), RATE, subtype="PCM_16")
    from_file = decode_record(AudioFolderSource(tmp_path)[0], RATE, BadFileReport())
    np.testing.assert_array_equal(record, from_file[:, 0])


def test_missing_audio_feature_names_the_features(array_record):
    wrong = TfdsSource("speech", data_source=NpzExamples(array_record), audio_key="speech")
    with pytest.raises(KeyError, match=r"no feature 'speech'; has \['audio', 'speaker', 'text'\]"):
        wrong[0]


def test_flows_through_the_pipeline_to_batches(source):
    """Whole utterances (crop longer than any), in order: each row is its PCM, then
    zero padding under a False mask; a numeric scalar feature (the speaker) rides
    along as int32."""
    assert source[1]["speaker"] == 11
    pipeline = make_audio_pipeline(source, sample_rate=RATE,
                                   crop_samples=8_000, batch_size=2,
                                   seed=0, shuffle=False, num_epochs=1, keep_fields=("speaker",),
                                   num_threads=1, drop_remainder=False)
    batches = list(pipeline)
    assert [b["audio"].shape for b in batches] == [(2, 8_000, 1), (2, 8_000, 1), (1, 8_000, 1)]
    audio = np.concatenate([b["audio"] for b in batches])
    mask = np.concatenate([b["mask"] for b in batches])
    np.testing.assert_array_equal(np.concatenate([b["speaker"] for b in batches]),
                                  [10, 11, 12, 13, 14])
    assert batches[0]["speaker"].dtype == np.int32
    for i, n in enumerate(LENGTHS):
        np.testing.assert_array_equal(audio[i, :n, 0], source[i]["audio"][:, 0])
        assert mask[i].sum() == n and mask[i, :n].all() and not audio[i, n:].any()
    assert pipeline.report.count == 0

    # The source's rate is used: read at 8 kHz, each utterance is half as long.
    half = make_audio_pipeline(source, sample_rate=8_000, crop_samples=8_000, batch_size=5,
                               seed=0, shuffle=False, num_epochs=1, num_threads=1)
    batch = next(iter(half))
    assert batch["mask"].sum(axis=1).tolist() == [n // 2 for n in LENGTHS]


def test_without_tensorflow_datasets_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)   # import fails
    with pytest.raises(ImportError, match=r"pip install 'audiolm-jax\[tfds\]'"):
        TfdsSource("speech")


def test_tfds_data_source_is_opened_without_downloading(monkeypatch, array_record):
    """The path that calls `tfds.data_source`, with a stand-in `tensorflow_datasets`:
    its arguments, and a dataset that is not prepared named in the error."""
    calls = []

    def data_source(name, split, data_dir, download):
        calls.append((name, split, data_dir, download))
        if name == "speech":
            return NpzExamples(array_record)
        raise FileNotFoundError(f"{name} has no dataset_info.json under {data_dir}")

    monkeypatch.setitem(sys.modules, "tensorflow_datasets",
                        types.SimpleNamespace(data_source=data_source))
    source = TfdsSource("speech", split="train[:80%]", data_dir="/data/tfds", sample_rate=RATE)
    assert len(source) == 5 and source[4]["text"] == "the last"
    with pytest.raises(FileNotFoundError, match=r"'no_such_dataset' split 'train' is not "
                       r"prepared in array_record format under /nowhere"):
        TfdsSource("no_such_dataset", data_dir="/nowhere")
    assert calls == [("speech", "train[:80%]", "/data/tfds", False),
                     ("no_such_dataset", "train", "/nowhere", False)]
