"""The built-in `speech` corpus, "tiny" size (fast, no network)."""

import json

import numpy as np
import pytest
import soundfile as sf

from audiolm_jax.data.corpora import common
from audiolm_jax.data.corpora.speech import build_speech_corpus, make_sentence, number_words
from audiolm_jax.text.phonemizer import phonemize
from audiolm_jax.text.vocab import PhonemeVocab

VOWEL_CHARS = set("aeiouɑɐɒæɔəɘɛɜɞɪʊʌʉɨyø")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpora")
    folder = build_speech_corpus("tiny", seed=0, root=root, progress=False)
    return folder, common.read_manifest(folder)


def _audio(folder, row):
    audio, sr = sf.read(folder / row["audio"], dtype="float32")
    return audio, sr


def test_layout_and_fields(tiny):
    folder, rows = tiny
    assert folder.name == "speech-tiny-seed0-v1"
    info = common.read_info(folder)
    assert info["num_items"] == len(rows) == 24
    assert info["total_seconds"] == pytest.approx(
        sum(r["num_samples"] / r["sample_rate"] for r in rows), abs=0.01)
    speakers = {r["speaker"] for r in rows}
    assert len(speakers) == 4
    assert len({r["speaker_name"] for r in rows}) == 4
    for row in rows:
        for key in ("id", "audio", "sample_rate", "num_samples", "text", "speaker",
                    "speaker_name", "phonemes", "phoneme_starts", "phoneme_ends",
                    "phoneme_words", "words", "word_starts"):
            assert key in row, key
        assert row["sample_rate"] == common.SAMPLE_RATE
        assert 4 <= len(row["text"].split()) <= 15
        assert not any(c.isdigit() for c in row["text"])  # numbers are spelled out
        n = len(row["phonemes"])
        assert n > 0 and all(row["phonemes"])
        assert len(row["phoneme_starts"]) == len(row["phoneme_ends"]) == len(row["phoneme_words"]) == n
        assert len(row["words"]) == len(row["word_starts"]) == max(row["phoneme_words"]) + 1
        assert " ".join(row["words"]).split() == [w.strip(".,?!") for w in row["text"].split()]
        sidecar = (folder / row["audio"]).with_suffix(".txt").read_text().strip()
        assert sidecar == row["text"]


def test_audio_and_alignments(tiny):
    folder, rows = tiny
    for row in rows:
        audio, sr = _audio(folder, row)
        assert sr == 24_000 and audio.shape == (row["num_samples"],)
        assert 0.5 < np.abs(audio).max() <= 0.91  # peak-normalised to 0.9
        dur = row["num_samples"] / sr
        starts, ends = np.array(row["phoneme_starts"]), np.array(row["phoneme_ends"])
        assert np.all(np.diff(starts) >= 0) and np.all(ends >= starts)
        assert np.all(np.diff(row["phoneme_words"]) >= 0)
        assert 0.05 < starts[0] and ends[-1] < dur - 0.05  # padded with silence
        assert np.all(np.diff(row["word_starts"]) > 0)


def test_alignment_matches_energy(tiny):
    """Sound starts during the first phoneme and stops near the last one's end
    (a time offset or a 22.05 vs 24 kHz scale error breaks this), and vowels are
    loud where the alignment says they are."""
    folder, rows = tiny
    ratios = []
    for row in rows:
        audio, sr = _audio(folder, row)
        starts, ends = row["phoneme_starts"], row["phoneme_ends"]
        loud = np.flatnonzero(np.abs(audio) > 0.01 * np.abs(audio).max())
        onset, offset = loud[0] / sr, loud[-1] / sr
        assert abs(onset - starts[0]) <= 0.01, (row["id"], onset, starts[0])
        # Some variants (f2-f5, m2) add a faint echo of up to 130 ms after speech ends.
        assert ends[-1] - 0.03 <= offset <= ends[-1] + 0.15, (row["id"], offset, ends[-1])
        lead = audio[: int(starts[0] * sr)]
        win = int(0.03 * sr)
        vowel_rms = [np.sqrt(np.mean(audio[int(s * sr):int(s * sr) + win] ** 2))
                     for p, s in zip(row["phonemes"], starts) if set(p) & VOWEL_CHARS]
        ratios.append(np.median(vowel_rms) / (np.sqrt(np.mean(lead ** 2)) + 1e-4))
    assert min(ratios) > 20


def test_words_agree_with_phonemize(tiny):
    _, rows = tiny
    agree = 0
    for row in rows:
        grouped = []
        for i, (p, w) in enumerate(zip(row["phonemes"], row["phoneme_words"])):
            if i and w != row["phoneme_words"][i - 1]:
                grouped.append("|")
            grouped.append(p)
        accent = row["speaker_name"].split("+")[0]
        agree += grouped == phonemize(row["text"], voice=accent)
    assert agree >= 0.9 * len(rows)
    vocab = PhonemeVocab.from_corpus(rows)
    for row in rows:
        assert vocab.unk_id not in vocab.encode(row["phonemes"])


def test_deterministic_and_seeded(tiny, tmp_path):
    folder, rows = tiny
    again = build_speech_corpus("tiny", seed=0, root=tmp_path / "a", progress=False, workers=2)
    assert common.read_manifest(again) == rows
    for row in rows:
        a, _ = _audio(folder, row)
        b, _ = _audio(again, row)
        assert np.array_equal(a, b), row["id"]
    other = common.read_manifest(build_speech_corpus("tiny", seed=1, root=tmp_path / "b",
                                                     progress=False))
    assert [r["text"] for r in other] != [r["text"] for r in rows]
    assert {r["speaker_name"] for r in other} != {r["speaker_name"] for r in rows}


def test_cache_is_reused(tiny):
    folder, _ = tiny
    stamp = (folder / "info.json").stat().st_mtime_ns
    assert build_speech_corpus("tiny", seed=0, root=folder.parent, progress=False) == folder
    assert (folder / "info.json").stat().st_mtime_ns == stamp
    assert json.loads((folder / "info.json").read_text())["name"] == "speech"


def test_sentences_and_numbers():
    rng = np.random.default_rng(0)
    texts = [make_sentence(rng) for _ in range(300)]
    assert all(4 <= len(t.split()) <= 15 for t in texts)
    assert any(t.endswith("?") for t in texts) and any(t.endswith("!") for t in texts)
    assert len(set(texts)) > 290
    assert number_words(0) == "zero"
    assert number_words(42) == "forty two"
    assert number_words(312) == "three hundred and twelve"
    assert number_words(12_005) == "twelve thousand and five"
    assert number_words(99_999) == "ninety nine thousand nine hundred and ninety nine"
    with pytest.raises(ValueError):
        number_words(-1)


def test_unknown_size(tmp_path):
    with pytest.raises(ValueError, match="huge"):
        build_speech_corpus("huge", root=tmp_path)
