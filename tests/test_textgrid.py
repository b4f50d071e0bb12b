"""MFA TextGrids -> aligned records and manifests (audiolm_jax.data.textgrid, align_manifest).

Every TextGrid here is written by the test itself (praatio), in the shape the
Montreal Forced Aligner writes: "words" and "phones" interval tiers, ARPAbet
phones with stress digits, "sil" at the ends and "sp" in pauses.
"""

from __future__ import annotations

import json

import ml_collections
import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("praatio")

from praatio import textgrid as praat  # noqa: E402
from praatio.utilities.constants import Interval  # noqa: E402

from audiolm_jax.data import align_manifest, aligned  # noqa: E402
from audiolm_jax.data import textgrid as tg  # noqa: E402
from audiolm_jax.data.builder import source_from_config  # noqa: E402
from audiolm_jax.data.sources import ManifestSource  # noqa: E402
from audiolm_jax.text.phonemizer import phonemize, phonemize_words  # noqa: E402

SAMPLE_RATE = 16_000
PHONE_SECONDS = 0.08
LEAD = 0.1       # "sil" before and after the speech
PAUSE = 0.2      # "sp" where the word list has ","

# CMUdict pronunciations (what MFA's english_us_arpa dictionary gives).
CMU = {
    "the": "DH AH0", "cat": "K AE1 T", "but": "B AH1 T", "a": "AH0", "dog": "D AO1 G",
    "my": "M AY1", "father": "F AA1 DH ER0", "judges": "JH AH1 JH IH0 Z", "boy": "B OY1",
    "car": "K AA1 R", "little": "L IH1 T AH0 L", "button": "B AH1 T AH0 N",
}


def mfa_tiers(words: list[str]) -> tuple[list[tuple], list[tuple], float]:
    """(word intervals, phone intervals, end time) as MFA aligns `words` ("," = a pause):
    every phone PHONE_SECONDS long, LEAD of "sil" at both ends, PAUSE of "sp"."""
    t, word_tier, phone_tier = LEAD, [], [(0.0, LEAD, "sil")]
    for word in words:
        if word == ",":
            phone_tier.append((t, t + PAUSE, "sp"))
            t += PAUSE
            continue
        start = t
        for phone in CMU[word].split():
            phone_tier.append((t, t + PHONE_SECONDS, phone))
            t += PHONE_SECONDS
        word_tier.append((start, t, word))
    phone_tier.append((t, t + LEAD, "sil"))
    return word_tier, phone_tier, t + LEAD


def write_textgrid(path, tiers: dict[str, list[tuple]], end: float):
    """A long-format TextGrid with interval tiers {name: [(start, end, label)]}."""
    grid = praat.Textgrid()
    for name, entries in tiers.items():
        intervals = [Interval(round(s, 5), round(e, 5), label) for s, e, label in entries]
        grid.addTier(praat.IntervalTier(name, intervals, 0.0, round(end, 5)))
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(str(path), format="long_textgrid", includeBlankSpaces=True)
    return path


def write_wav(path, seconds: float):
    """Quiet noise of `seconds` at SAMPLE_RATE (TextGrids never look at the samples)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    noise = np.random.default_rng(0).normal(0, 0.05, round(seconds * SAMPLE_RATE))
    sf.write(path, noise.astype(np.float32), SAMPLE_RATE)
    return path


def write_utterance(root, rel: str, words: list[str], text: str, textgrid_root=None,
                    audio_seconds: float | None = None):
    """WAV_DIR/rel.wav + rel.txt, and its TextGrid under `textgrid_root` (default root).
    Returns (wav path, TextGrid path)."""
    word_tier, phone_tier, end = mfa_tiers(words)
    wav = write_wav(root / f"{rel}.wav", audio_seconds or end)
    (root / f"{rel}.txt").write_text(text + "\n", encoding="utf-8")
    grid = write_textgrid((textgrid_root or root) / f"{rel}.TextGrid",
                          {"words": word_tier, "phones": phone_tier}, end)
    return wav, grid


@pytest.fixture
def cat_grid(tmp_path):
    """'The cat, but a dog.': a TextGrid with silences at both ends and a pause."""
    words = ["the", "cat", ",", "but", "a", "dog"]
    word_tier, phone_tier, end = mfa_tiers(words)
    return write_textgrid(tmp_path / "cat.TextGrid", {"words": word_tier, "phones": phone_tier},
                          end)


# ------------------------------------------------------------------ the mapping


def test_arpabet_table_matches_espeak():
    """Every ARPAbet phone, in a word where espeak's en-us spelling is one phone per
    ARPAbet phone, maps to exactly espeak's phone (stress marks included)."""
    words = {
        "father": "F AA1 DH ER0", "cat": "K AE1 T", "cup": "K AH1 P", "sofa": "S OW1 F AH0",
        "bought": "B AO1 T", "cow": "K AW1", "hide": "HH AY1 D", "bed": "B EH1 D",
        "bird": "B ER1 D", "bait": "B EY1 T", "sit": "S IH1 T", "beat": "B IY1 T",
        "happy": "HH AE1 P IY0", "go": "G OW1", "boy": "B OY1", "book": "B UH1 K",
        "moon": "M UW1 N", "chin": "CH IH1 N", "judge": "JH AH1 JH", "sing": "S IH1 NG",
        "rice": "R AY1 S", "show": "SH OW1", "thin": "TH IH1 N", "vast": "V AE1 S T",
        "wow": "W AW1", "yes": "Y EH1 S", "zoo": "Z UW1", "measure": "M EH1 ZH ER0",
        "glad": "G L AE1 D", "pee": "P IY1", "knee": "N IY1",
    }
    covered = {p.rstrip("012") for pron in words.values() for p in pron.split()}
    assert covered == {p.rstrip("0") for p in tg.ARPABET_TO_IPA}
    # Commas make each word its own clause: citation stress, as CMUdict gives it.
    espeak = phonemize_words(", ".join(words))
    assert len(espeak) == len(words)
    for (word, pron), want in zip(words.items(), espeak):
        got = [tg.map_phone(p, tg.ARPABET_TO_IPA) for p in pron.split()]
        assert got == want, word


def test_stress_digits():
    table = tg.ARPABET_TO_IPA
    assert [tg.map_phone(p, table) for p in ("AH0", "AH1", "AH2", "ER0", "ER1", "IY0", "IY1",
                                             "AA0", "AA2")] == \
        ["ə", "ˈʌ", "ˌʌ", "ɚ", "ˈɜː", "i", "ˈiː", "ɑː", "ˌɑː"]
    assert tg.map_phone("AH1", table, keep_stress=False) == "ʌ"
    assert tg.map_phone("T", table) == "t"
    assert tg.map_phone("T1", table) == "ˈt"          # a digit on anything is a stress mark
    assert tg.map_phone("XX", table) is None
    assert tg.map_phone("AH1", {"AH1": "A", "AH": "B"}) == "A"   # exact entries verbatim
    assert tg.map_phone("ɑː", None) == "ɑː"           # identity for IPA phone sets


def test_user_mappings_from_dict_json_tsv_and_identity(tmp_path):
    word_tier = [(0.1, 0.3, "ah")]
    grid = write_textgrid(tmp_path / "ipa.TextGrid", {
        "words": word_tier, "phones": [(0.1, 0.2, "ɑː"), (0.2, 0.3, "aj")]}, 0.4)
    alignment = tg.read_textgrid(grid)
    assert tg.to_record_fields(alignment, None)["phonemes"] == ["ɑː", "aj"]
    assert tg.to_record_fields(alignment, {"ɑː": "ɑː", "aj": "aɪ"})["phonemes"] == ["ɑː", "aɪ"]
    (tmp_path / "map.json").write_text(json.dumps({"ɑː": "ɑː", "aj": "aɪ"}), encoding="utf-8")
    (tmp_path / "map.tsv").write_text("# MFA -> espeak\nɑː\tɑː\n\naj\taɪ\n", encoding="utf-8")
    for path in ("map.json", "map.tsv"):
        assert tg.to_record_fields(alignment, tmp_path / path)["phonemes"] == ["ɑː", "aɪ"]
    (tmp_path / "bad.tsv").write_text("ɑː ɑː\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.tsv:1: expected 'phone<TAB>ipa'"):
        tg.load_mapping(tmp_path / "bad.tsv")


# ------------------------------------------------------------------ fields


def test_fields_and_times(cat_grid):
    alignment = tg.read_textgrid(cat_grid)
    fields = tg.to_record_fields(alignment)
    # silence ("sil" at the ends, "sp" in the pause) left out; stress digits as marks
    assert fields["phonemes"] == ["ð", "ə", "k", "ˈæ", "t", "b", "ˈʌ", "t", "ə", "d", "ˈɔː",
                                  "ɡ"]
    starts = [LEAD + PHONE_SECONDS * i for i in range(5)] + \
        [LEAD + PAUSE + PHONE_SECONDS * i for i in range(5, 12)]
    np.testing.assert_allclose(fields["phoneme_starts"], starts, atol=1e-5)
    np.testing.assert_allclose(fields["phoneme_ends"], np.add(starts, PHONE_SECONDS), atol=1e-5)
    assert fields["words"] == ["the", "cat", "but", "a", "dog"]
    np.testing.assert_allclose(fields["word_starts"][2], LEAD + PAUSE + 5 * PHONE_SECONDS,
                               atol=1e-5)
    assert alignment.duration == pytest.approx(2 * LEAD + PAUSE + 12 * PHONE_SECONDS)


def test_silence_gap_becomes_a_pause(cat_grid):
    fields = tg.to_record_fields(tg.read_textgrid(cat_grid))
    phonemes, starts, ends = aligned.insert_pauses(
        fields["phonemes"], fields["phoneme_starts"], fields["phoneme_ends"])
    assert phonemes.count(aligned.PAUSE) == 1
    at = phonemes.index(aligned.PAUSE)
    assert phonemes[at - 1:at + 2] == ["t", aligned.PAUSE, "b"]
    assert ends[at] - starts[at] == pytest.approx(PAUSE, abs=1e-5)


def test_espeak_fields_take_espeak_phones_and_textgrid_times(cat_grid):
    text = "The cat, but a dog."
    alignment = tg.read_textgrid(cat_grid)
    tg.check_transcript(alignment, text)
    fields = tg.to_espeak_record_fields(alignment, text)
    # espeak's own phones in context ("but" ˌʌ, "a" ɐ, "dog" ˈɑː), not CMUdict's
    assert fields["phonemes"] == [p for p in phonemize(text) if p != "|"]
    starts, ends = np.array(fields["phoneme_starts"]), np.array(fields["phoneme_ends"])
    assert np.all(ends > starts) and np.all(starts[1:] >= ends[:-1] - 1e-9)
    mapped = tg.to_record_fields(alignment)
    np.testing.assert_allclose(starts, mapped["phoneme_starts"])   # one to one here
    phonemes, *_ = aligned.insert_pauses(fields["phonemes"], starts, ends)
    assert phonemes.count(aligned.PAUSE) == 1


def test_transfer_times_merges_and_splits():
    # espeak's "ˈɑːɹ" takes the time of ARPAbet's AA1 and R; "ʔ" shares "t"'s slot.
    starts, ends, cost = tg.transfer_times(
        ["k", "ˈɑːɹ", "ʔ", "n̩"], ["k", "ˈɑː", "ɹ", "t", "ə", "n"],
        [0.0, 0.1, 0.2, 0.3, 0.4, 0.5], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    np.testing.assert_allclose(starts, [0.0, 0.1, 0.3, 0.4])
    np.testing.assert_allclose(ends, [0.1, 0.3, 0.4, 0.6])
    assert 0 < cost < tg.MAX_TRANSFER_COST
    # a phone espeak has and the alignment lacks shares its neighbour's span
    starts, ends, _ = tg.transfer_times(["a", "ʔ", "b"], ["a", "b"], [0.0, 0.2], [0.2, 0.3])
    np.testing.assert_allclose(starts, [0.0, 0.1, 0.2])
    np.testing.assert_allclose(ends, [0.1, 0.2, 0.3])
    # a phone the alignment has and espeak lacks ("t" before a silence) joins the side
    # it touches: the 0.3-0.8 s silence stays a gap for insert_pauses.
    starts, ends, _ = tg.transfer_times(["k", "æ", "d", "ɑː", "ɡ"],
                                        ["k", "æ", "t", "d", "ɑː", "ɡ"],
                                        [0.0, 0.1, 0.2, 0.8, 0.9, 1.0],
                                        [0.1, 0.2, 0.3, 0.9, 1.0, 1.1])
    np.testing.assert_allclose(starts, [0.0, 0.1, 0.8, 0.9, 1.0])
    np.testing.assert_allclose(ends, [0.1, 0.3, 0.9, 1.0, 1.1])


def test_espeak_fields_refuse_phones_that_do_not_line_up(tmp_path):
    words = ["my", "father", "judges", "the", "boy"]
    word_tier, phone_tier, end = mfa_tiers(words)
    grid = write_textgrid(tmp_path / "x.TextGrid", {"words": word_tier, "phones": phone_tier}, end)
    alignment = tg.read_textgrid(grid)
    assert tg.to_espeak_record_fields(alignment, "My father judges the boy.")
    # ARPAbet labels taken as IPA (the wrong mapping) line up with nothing
    with pytest.raises(tg.TextGridError, match=r"x.TextGrid: espeak's phones .* differ too much"):
        tg.to_espeak_record_fields(alignment, "My father judges the boy.", mapping=None)


# ------------------------------------------------------------------ bad input


def test_missing_tier_lists_the_tiers(tmp_path):
    grid = write_textgrid(tmp_path / "t.TextGrid", {"words": [(0.1, 0.2, "a")],
                                                    "segments": [(0.1, 0.2, "AH0")]}, 0.3)
    with pytest.raises(tg.TextGridError, match=r"t.TextGrid: no tier named 'phones'; its tiers "
                                               r"are 'words', 'segments'") as e:
        tg.read_textgrid(grid)
    assert e.value.kind == "missing tier"
    assert tg.read_textgrid(grid, phone_tier="segments").phones[0].label == "AH0"


def test_point_tier_is_refused(tmp_path):
    grid = praat.Textgrid()
    grid.addTier(praat.PointTier("phones", [(0.1, "AH0")], 0.0, 0.3))
    grid.save(str(tmp_path / "p.TextGrid"), format="long_textgrid", includeBlankSpaces=True)
    with pytest.raises(tg.TextGridError, match=r"p.TextGrid: tier 'phones' is not an interval"):
        tg.read_textgrid(tmp_path / "p.TextGrid", word_tier=None)


def test_speaker_prefixed_tiers_are_found(tmp_path):
    grid = write_textgrid(tmp_path / "t.TextGrid", {"spk1 - words": [(0.1, 0.2, "a")],
                                                    "spk1 - phones": [(0.1, 0.2, "AH0")]}, 0.3)
    assert tg.to_record_fields(tg.read_textgrid(grid))["phonemes"] == ["ə"]


def test_unreadable_textgrid_is_named(tmp_path):
    path = tmp_path / "junk.TextGrid"
    path.write_text("not a TextGrid\n")
    with pytest.raises(tg.TextGridError, match=r"junk.TextGrid: not a readable TextGrid"):
        tg.read_textgrid(path)


def test_unknown_phones_are_named_with_file_and_time(tmp_path):
    grid = write_textgrid(tmp_path / "u.TextGrid", {
        "words": [(0.1, 0.4, "ax")],
        "phones": [(0.1, 0.2, "AX0"), (0.2, 0.3, "T"), (0.3, 0.4, "AX0"), (0.4, 0.5, "Q")]}, 0.6)
    with pytest.raises(tg.TextGridError,
                       match=r"u.TextGrid: phones 'AX0' \(first at 0.10 s\), 'Q' \(first at "
                             r"0.40 s\) are not in the phone mapping") as e:
        tg.to_record_fields(tg.read_textgrid(grid))
    assert e.value.kind == "unknown phones"


def test_words_must_match_the_transcript(cat_grid):
    alignment = tg.read_textgrid(cat_grid)
    tg.check_transcript(alignment, "THE Cat... but -- a dog!")   # case and punctuation
    with pytest.raises(tg.TextGridError, match=r"cat.TextGrid: its words do not match the "
                                               r"transcript: word 4 is 'a' \(at 0.94 s\) in the "
                                               r"TextGrid, 'the' in the transcript"):
        tg.check_transcript(alignment, "The cat, but the dog.")
    with pytest.raises(tg.TextGridError, match=r"5 words in the TextGrid, 6 in the transcript "
                                               r"\(the transcript goes on with 'barked'\)"):
        tg.check_transcript(alignment, "The cat, but a dog barked.")


def test_normalize_words():
    assert tg.normalize_words("Don’t stop—well-known, 'quoted' CAPS!") == \
        ["don't", "stop", "well", "known", "quoted", "caps"]


def test_out_of_dictionary_word_is_refused_naming_it(tmp_path):
    grid = write_textgrid(tmp_path / "oov.TextGrid", {
        "words": [(0.1, 0.3, "the"), (0.3, 0.7, "<unk>")],
        "phones": [(0.1, 0.2, "DH"), (0.2, 0.3, "AH0"), (0.3, 0.7, "spn")]}, 0.8)
    alignment = tg.read_textgrid(grid)
    tg.check_transcript(alignment, "The zorblax.")     # "<unk>" stands for any one word
    with pytest.raises(tg.TextGridError, match=r"oov.TextGrid: phone 'spn' at 0.30-0.70 s "
                                               r"\(word '<unk>'\) is spoken noise") as e:
        tg.to_record_fields(alignment)
    assert e.value.kind == "out-of-dictionary word"


def test_textgrid_longer_than_audio(cat_grid):
    alignment = tg.read_textgrid(cat_grid)
    tg.check_duration(alignment, alignment.duration - 0.01)        # within one 20 ms frame
    with pytest.raises(tg.TextGridError, match=r"cat.TextGrid: the TextGrid lasts 1.360 s, "
                                               r"its audio 1.000 s"):
        tg.check_duration(alignment, 1.0)


# ------------------------------------------------------------------ manifests


@pytest.fixture
def mfa_corpus(tmp_path):
    """WAV_DIR/<speaker>/<utt>.wav + .txt and MFA's TG_DIR/<speaker>/<utt>.TextGrid: two
    good utterances, one without a TextGrid, one whose words differ, one whose TextGrid
    outlasts its audio."""
    wavs, grids = tmp_path / "wavs", tmp_path / "mfa"
    write_utterance(wavs, "anna/u1", ["the", "cat", ",", "but", "a", "dog"], "The cat, but a dog.",
                    grids)
    write_utterance(wavs, "bob/u2", ["my", "father", "judges", "the", "boy"],
                    "My father judges the boy.", grids)
    wav, grid = write_utterance(wavs, "bob/u3", ["the", "boy"], "The boy.", grids)
    grid.unlink()
    write_utterance(wavs, "bob/u4", ["the", "dog"], "The cat.", grids)
    write_utterance(wavs, "anna/u5", ["a", "little", "car"], "A little car.", grids,
                    audio_seconds=0.3)
    return wavs, grids


def test_cli_builds_a_manifest_voicebox_reads(mfa_corpus, tmp_path, capsys):
    wavs, grids = mfa_corpus
    out = tmp_path / "out"
    assert align_manifest.main([str(wavs), str(out), "--textgrids", str(grids),
                                "--no-progress"]) == 0
    summary = capsys.readouterr().out
    assert "2 of 5 utterances" in summary and "2 speakers" in summary
    for kind in ("1 no TextGrid", "1 words do not match transcript", "1 longer than audio"):
        assert kind in summary
    skipped = (out / "skipped.tsv").read_text(encoding="utf-8").splitlines()
    assert len(skipped) == 4 and skipped[0] == "path\tkind\treason"
    assert any("u3.wav\tno TextGrid" in line for line in skipped)

    # The trainers reach it as --config.data.source=manifest --config.data.folder=OUT.
    source = source_from_config(ml_collections.ConfigDict({"source": "manifest",
                                                           "folder": str(out)}))
    records = [source[i] for i in range(len(source))]
    assert [r["id"] for r in records] == ["anna/u1", "bob/u2"]
    assert [r["speaker"] for r in records] == ["anna", "bob"]
    assert records[0]["path"] == str((wavs / "anna/u1.wav").resolve())   # outside OUT_DIR
    assert records[1]["phonemes"] == [p for p in phonemize(records[1]["text"]) if p != "|"]
    vocab = aligned.build_vocab(records)
    shapes = aligned.AlignedExample(max_frames=200, max_phones=40, hop_length=160)
    for record in records:
        audio, sr = sf.read(record["path"], dtype="float32")
        example = aligned.aligned_example(record, audio, vocab, shapes, sr)
        n = int(example["phone_valid"].sum())
        assert example["durations"][:n].sum() == aligned.num_frames(len(audio), 160)
        if record["id"] == "anna/u1":    # its "sp" is a pause phone
            assert aligned.PAUSE in vocab.decode(example["phones"][:n])


def test_mapped_phones_report_what_espeak_would_add(mfa_corpus, tmp_path):
    wavs, grids = mfa_corpus
    report = align_manifest.build_aligned_manifest(wavs, wavs, textgrid_dir=grids,
                                                   phones="mapped", progress=False)
    rows = [json.loads(line) for line in report.manifest.read_text().splitlines()]
    assert rows[0]["audio"] == "anna/u1.wav"              # inside OUT_DIR: relative
    assert rows[0]["phonemes"][:5] == ["ð", "ə", "k", "ˈæ", "t"]
    # espeak writes "but" ˌʌ, "a" ɐ, "judges" ᵻ: phones this manifest never has
    assert {"ˌʌ", "ɐ", "ᵻ"} <= set(report.missing_phones)
    assert "Voicebox refuses text with them" in report.summary()


def test_flat_layout_and_lab_transcripts(tmp_path):
    wavs = tmp_path / "flat"
    write_utterance(wavs, "u1", ["the", "cat"], "the cat")
    (wavs / "u1.txt").rename(wavs / "u1.lab")
    report = align_manifest.build_aligned_manifest(wavs, tmp_path / "out", progress=False)
    assert report.rows == 1 and report.speakers == 0
    assert "no speaker folders" in report.summary()
    assert "speaker" not in ManifestSource(tmp_path / "out")[0]


def test_nothing_usable_is_an_error(tmp_path, capsys):
    wavs = tmp_path / "wavs"
    write_wav(wavs / "s/u1.wav", 0.5)
    (wavs / "s/u1.txt").write_text("hello")
    assert align_manifest.main([str(wavs), str(tmp_path / "out"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "no usable utterance" in err and "1 no TextGrid" in err
    assert not (tmp_path / "out" / "manifest.jsonl").exists()


def test_recognizer_path_uses_the_ctc_aligner(tmp_path, monkeypatch):
    wavs = tmp_path / "wavs"
    write_wav(wavs / "s/u1.wav", 0.5)
    (wavs / "s/u1.txt").write_text("The cat.")
    calls = []

    class FakeAligner:
        def __init__(self, recognizer, voice):
            calls.append((recognizer, voice))

        def __call__(self, audio_path, text):
            return {"phonemes": ["k"], "phoneme_starts": [0.1], "phoneme_ends": [0.2]}

    monkeypatch.setattr(align_manifest, "_CtcAligner", FakeAligner)
    assert align_manifest.main([str(wavs), str(tmp_path / "out"), "--recognizer", "ctc_tiny",
                                "--no-progress"]) == 0
    assert calls == [("ctc_tiny", "en-us")]
    assert ManifestSource(tmp_path / "out")[0]["phonemes"] == ["k"]
