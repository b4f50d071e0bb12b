"""The TTS judges against known answers, and the harness end to end on wav folders."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil

import numpy as np
import pytest

from audiolm_jax.audio.io import save_audio
from audiolm_jax.eval import tts, tts_harness

SENTENCES = ("The cat sat on the warm mat.", "Please open the window now.")


@pytest.fixture(scope="module")
def judges():
    return tts.Judges.load(closed_vocabulary=SENTENCES)


@pytest.fixture(scope="module")
def eval_root(tmp_path_factory):
    """Two espeak speakers (22.05 kHz) each reading both sentences."""
    from audiolm_jax.text import espeak

    root = tmp_path_factory.mktemp("eval_set")
    for speaker, (voice, variant, pitch) in {"anna": ("en-us", "f2", 60),
                                             "ben": ("en-gb", "m3", 40)}.items():
        for i, text in enumerate(SENTENCES):
            result = espeak.synthesize(text, voice=voice, variant=variant, rate=160,
                                       pitch=pitch, pitch_range=50, volume=100)
            audio = result.audio.astype(np.float32)
            save_audio(root / speaker / f"u{i}.wav", 0.8 * audio / np.abs(audio).max(),
                       result.sample_rate)
            (root / speaker / f"u{i}.txt").write_text(text + "\n")
    return root


# ----------------------------------------------------------------------------- metrics


def test_text_normalization_and_error_rates():
    assert tts.normalize_text("Well\u2014it\u2019s the Smiths' car, isn't it?") == \
        "well it's the smiths car isn't it"
    assert tts.word_error_rate(["The cat sat."], ["the cat sat"]) == 0.0
    assert tts.word_error_rate(["one two three four five"], ["one two THREE for five"]) == 0.2
    # corpus level: 1 edit over 5 + 2 reference words
    assert tts.word_error_rate(["a b c d e", "f g"], ["a b c d e", "f"]) == pytest.approx(1 / 7)
    assert tts.char_error_rate(["abcd"], ["abxd"]) == 0.25
    assert tts.char_errors("a b", "ab") == (1, 3)      # the space counts
    with pytest.raises(ValueError, match="2 references but 1"):
        tts.word_error_rate(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="empty"):
        tts.word_error_rate([""], ["a"])


def test_summary_is_corpus_level_and_skips_missing_metrics():
    scores = [{"word_errors": 1, "words": 5, "similarity": 0.5},
              {"word_errors": 0, "words": 5, "similarity": 1.0, "dnsmos_ovrl": 3.0}]
    summary = tts.summarize(scores)
    assert summary == {"wer": 0.1, "similarity": 0.75, "dnsmos_ovrl": 3.0}


class FixedRecognizer:
    """A duck-typed PhonemeRecognizer that always hears `phones`."""

    sample_rate = tts.JUDGE_RATE

    def __init__(self, phones):
        self.phones = phones

    def recognize(self, audio, rate):
        return list(self.phones)


def test_phoneme_judge_counts_phone_edits_against_espeak():
    judge = tts.PhonemeJudge(FixedRecognizer([]), name="fixed")
    reference = judge.reference("cat")
    assert reference == ["k", "a", "t"] or reference == ["k", "æ", "t"]
    judges = tts.Judges(phonemes=tts.PhonemeJudge(FixedRecognizer(reference[:2] + ["s"])))
    score = judges.score(np.zeros(16_000, np.float32), 16_000, "cat")
    assert (score["phone_errors"], score["phones"]) == (1, 3)   # one substitution in 3


def test_closed_vocabulary_names_words_the_dictionary_lacks():
    asr = tts.PocketSphinx(["the zxqvw cat"])
    assert asr.missing_words == ["zxqvw"]
    assert "closed vocabulary (2 words)" in asr.name


def test_judges_on_known_audio(judges, eval_root):
    anna, rate = tts_harness.EvalSet.read(eval_root).speakers["anna"][0].load()
    heard = judges.at_judge_rate(anna, rate)
    same = tts.cosine(judges.speaker.embed(heard), judges.speaker.embed(heard))
    assert same == pytest.approx(1.0, abs=1e-5)
    # A different sentence of the same speaker is closer than the other speaker's.
    other_utt, _ = tts_harness.EvalSet.read(eval_root).speakers["anna"][1].load()
    ben, _ = tts_harness.EvalSet.read(eval_root).speakers["ben"][0].load()
    embed = lambda a: judges.speaker.embed(judges.at_judge_rate(a, rate))  # noqa: E731
    assert tts.cosine(embed(anna), embed(other_utt)) > tts.cosine(embed(anna), embed(ben))
    sine = 0.5 * np.sin(2 * np.pi * 440 * np.arange(3 * 16_000) / 16_000).astype(np.float32)
    tone, speech = judges.dnsmos.score(sine), judges.dnsmos.score(heard)
    assert tone["dnsmos_ovrl"] < 2.0 < speech["dnsmos_ovrl"]
    assert set(tone) == {"dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "p808_mos"}
    # The closed vocabulary hears the sentence's words (espeak defeats the open one).
    closed = judges.closed_asr.transcribe(heard)
    assert tts.word_errors(SENTENCES[0], closed)[0] <= 2, closed


# ----------------------------------------------------------------------------- harness


def test_harness_end_to_end_on_wav_folders(judges, eval_root, tmp_path, caplog):
    outputs = tmp_path / "outputs"
    shutil.copytree(eval_root, outputs)
    (outputs / "ben" / "u1.wav").unlink()                     # one output missing
    eval_set = tts_harness.EvalSet.read(eval_root)
    cases = eval_set.cases()
    assert [(c.target.key, c.prompt.key) for c in cases] == [
        ("anna/u0", "anna/u1"), ("anna/u1", "anna/u0"), ("ben/u0", "ben/u1"),
        ("ben/u1", "ben/u0")]

    class Broken(tts_harness.System):
        name = "broken"

        def load(self):
            raise RuntimeError("weights not found")

    systems = [tts_harness.GroundTruth(), tts_harness.OtherSpeaker(eval_set),
               tts_harness.Noise(), tts_harness.WavFolder("outside", outputs), Broken()]
    # DNSMOS is tested above and is the slowest judge; a fresh resampler has seen no rate.
    judges = dataclasses.replace(judges, dnsmos=None, _resample=tts._Resampler())
    with caplog.at_level(logging.INFO):
        results = [tts_harness.evaluate_system(s, cases, judges, progress=False)
                   for s in systems]
    assert sum("resampling 22050 Hz" in r.message for r in caplog.records) == 1   # said once
    truth, other, noise, outside, broken = results
    assert truth.scores.keys() == other.scores.keys() == noise.scores.keys() == {
        c.target.key for c in cases}
    # A copy of the ground truth scores exactly what the ground truth scores.
    assert outside.scores["anna/u0"] == truth.scores["anna/u0"]
    assert other.other_text == 0 and "word_errors" in other.scores["anna/u0"]
    assert list(outside.failures) == ["ben/u1"] and "missing" in outside.failures["ben/u1"]
    assert broken.load_error == "RuntimeError: weights not found" and not broken.scores
    t, o, n = truth.summary(), other.summary(), noise.summary()
    assert t["similarity"] > o["similarity"] and t["similarity"] > n["similarity"]
    assert n["wer"] == 1.0 and "dnsmos_ovrl" not in t
    table = tts_harness.markdown_table(results, judges)
    assert table.count("\n") == 2 + len(systems)
    assert "**1 failed**" in table and "**cannot load**: RuntimeError" in table
    assert "| ground truth | 4/4 |" in table and "| outside | 3/4 |" in table
    report = tts_harness.results_json(results, eval_set, judges)
    json.dumps(report)
    assert report["systems"][3]["failures"].keys() == {"ben/u1"}


def test_griffin_lim_and_lookup_rows(judges, eval_root):
    eval_set = tts_harness.EvalSet.read(eval_root)
    case = eval_set.cases()[0]
    gl = tts_harness.Resynthesis(tts_harness.MelDecoder, "gl", "")
    gl.load()
    audio, rate = gl.synthesize(case)
    target, _ = case.target.load(rate)
    assert rate == 24_000 and abs(len(audio) - len(target)) < 256
    means = tts_harness.PhoneMeans(["k", "a", "t"], np.zeros((3, 100), np.float32),
                                   np.full(100, -10.0, np.float32), np.zeros(100, np.float32))
    lookup = tts_harness.PhoneLookup(lambda: means, tts_harness.MelDecoder)
    lookup.load()
    with pytest.raises(tts_harness.NotApplicable, match="no alignment"):
        lookup.synthesize(case)
    aligned = tts_harness.Case(tts_harness.Utterance(
        "anna", "u0", case.target.path, case.target.text,
        {"phonemes": ["k", "ˈa", "t"], "starts": [0.1, 0.2, 0.3], "ends": [0.2, 0.3, 0.4]}),
        case.prompt)
    audio, rate = lookup.synthesize(aligned)
    assert len(audio) == len(target) // 256 * 256
    # The alignment's phones (stress removed) are the PER reference.
    judge = tts.Judges(phonemes=tts.PhonemeJudge(FixedRecognizer(["k", "a", "t"])))
    scored = tts_harness.evaluate_system(tts_harness.GroundTruth(), [aligned], judge,
                                         progress=False)
    assert not scored.failures
    assert (scored.scores["anna/u0"]["phone_errors"], scored.scores["anna/u0"]["phones"]) == (0, 3)
    quiet = np.abs(audio[: int(0.05 * rate)]).max()
    assert quiet < np.abs(audio[int(0.15 * rate): int(0.35 * rate)]).max()


def test_eval_set_bad_input(tmp_path, eval_root):
    with pytest.raises(tts_harness.EvalSetError, match="does not exist"):
        tts_harness.EvalSet.read(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(tts_harness.EvalSetError, match="no <speaker>"):
        tts_harness.EvalSet.read(tmp_path / "empty")
    root = tmp_path / "set"
    shutil.copytree(eval_root, root)
    (root / "ben" / "u1.txt").unlink()                        # ben: one usable utterance
    (root / "anna" / "u2.wav").write_bytes((root / "anna" / "u0.wav").read_bytes())
    eval_set = tts_harness.EvalSet.read(root)
    assert list(eval_set.speakers) == ["anna"]
    assert len(eval_set.speakers["anna"]) == 2
    assert any("u2.wav: no transcript" in s for s in eval_set.skipped)
    assert any("ben: one usable utterance" in s for s in eval_set.skipped)


def test_system_specs():
    system = tts_harness.parse_system("vb-16=voicebox:/some/bundle:steps=8,guidance=0.7")
    assert system.name == "vb-16" and system.sampling["num_steps"] == 8
    assert "32 network passes" in system.note          # 8 midpoint steps x 2 for guidance
    for spec, message in [("vb", "expected NAME=KIND:DIR"), ("a=bark:x", "unknown kind"),
                          ("a=voicebox:x:steps", "not key=value"),
                          ("a=voicebox:x:temperature=1", "unexpected keyword")]:
        with pytest.raises(ValueError, match=message):
            tts_harness.parse_system(spec)


def test_another_speaker_falls_back_to_another_sentence(eval_root):
    full = tts_harness.EvalSet.read(eval_root)
    anna, ben = full.speakers["anna"], full.speakers["ben"]
    renamed = [dataclasses.replace(u, text=f"Something else {i}.") for i, u in enumerate(ben)]
    eval_set = tts_harness.EvalSet(eval_root, {"anna": anna, "ben": renamed}, [])
    other = tts_harness.OtherSpeaker(eval_set)
    case = eval_set.cases()[1]                          # anna/u1
    assert not other.says_target_text(case)
    np.testing.assert_array_equal(other.synthesize(case)[0], renamed[1].load()[0])
    assert tts_harness.OtherSpeaker(full).says_target_text(case)
    result = tts_harness.evaluate_system(other, eval_set.cases()[:1],
                                         tts.Judges(asr=None), progress=False)
    assert result.other_text == 1 and "word_errors" not in result.scores["anna/u0"]


def test_committed_recognizer_loads_by_name_and_hears_espeak(eval_root):
    from audiolm_jax.eval.sequence import per
    from audiolm_jax.models.ctc import DEFAULT_RECOGNIZER

    judge = tts.PhonemeJudge(DEFAULT_RECOGNIZER)
    errors = []
    for speaker in ("anna", "ben"):
        for i, text in enumerate(SENTENCES):
            audio, rate = tts_harness.EvalSet.read(eval_root).speakers[speaker][i].load()
            errors.append(per([judge.reference(text)], [judge.recognizer.recognize(audio, rate)]))
    assert np.mean(errors) < 0.5, errors     # chance (a unigram predictor) is about 0.9
