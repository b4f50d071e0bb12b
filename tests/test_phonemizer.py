"""espeak-ng binding, phonemizer and phoneme vocabulary (fast, no network)."""

import numpy as np
import pytest

from audiolm_jax.text import espeak
from audiolm_jax.text.phonemizer import WORD_BOUNDARY, phonemize, phonemize_words, strip_stress
from audiolm_jax.text.vocab import PhonemeVocab


def test_phonemize_hello_world():
    ph = phonemize("hello world")
    assert ph.count(WORD_BOUNDARY) == 1
    assert "h" in ph and "w" in ph and "l" in ph
    assert ph[0] == "h" and ph[-1] == "d"
    assert any("ˈ" in p for p in ph)  # stress kept by default
    plain = phonemize("hello world", keep_stress=False)
    assert not any(c in p for p in plain for c in "ˈˌ")
    assert plain == [strip_stress(p) for p in ph]


# espeak-ng's IPA for single words, checked by hand against the words' standard
# pronunciations (General American for en-us, RP for en-gb): the consonants
# /k ʃ θ dʒ w j ð ʒ ŋ tʃ ɹ/, the flap /ɾ/ of American "water" and "butter", the
# r-coloured /ɚ/ against RP's /ə/, the TRAP vowel (/æ/ US, /a/ in espeak's RP),
# the BATH vowel of RP "banana" (/ɑː/), and stress on the right syllable, with a
# secondary stress on "un-" of "understand". (espeak writes the NURSE vowel of
# American "church" as /ɜː/, not /ɝ/, and its reduced vowel as /ɐ/.)
TRANSCRIPTIONS = {
    "en-us": {
        "cat": ["k", "ˈæ", "t"],
        "ship": ["ʃ", "ˈɪ", "p"],
        "thin": ["θ", "ˈɪ", "n"],
        "judge": ["dʒ", "ˈʌ", "dʒ"],
        "water": ["w", "ˈɔː", "ɾ", "ɚ"],
        "yes": ["j", "ˈɛ", "s"],
        "this": ["ð", "ˈɪ", "s"],
        "measure": ["m", "ˈɛ", "ʒ", "ɚ"],
        "sing": ["s", "ˈɪ", "ŋ"],
        "church": ["tʃ", "ˈɜː", "tʃ"],
        "ring": ["ɹ", "ˈɪ", "ŋ"],
        "butter": ["b", "ˈʌ", "ɾ", "ɚ"],
        "banana": ["b", "ɐ", "n", "ˈæ", "n", "ə"],
        "about": ["ɐ", "b", "ˈaʊ", "t"],
        "understand": ["ˌʌ", "n", "d", "ɚ", "s", "t", "ˈæ", "n", "d"],
    },
    "en-gb": {
        "cat": ["k", "ˈa", "t"],
        "water": ["w", "ˈɔː", "t", "ə"],
        "measure": ["m", "ˈɛ", "ʒ", "ə"],
        "butter": ["b", "ˈʌ", "t", "ə"],
        "banana": ["b", "ɐ", "n", "ˈɑː", "n", "ə"],
    },
}


@pytest.mark.parametrize("voice", sorted(TRANSCRIPTIONS))
def test_phonemize_known_words(voice):
    for word, phones in TRANSCRIPTIONS[voice].items():
        assert phonemize(word, voice=voice) == phones, word
        assert phonemize(word, voice=voice, keep_stress=False) == [strip_stress(p)
                                                                   for p in phones], word
    # A phrase is its words' phones with "|" between them.
    assert phonemize("hello world", voice="en-us") == ["h", "ə", "l", "ˈoʊ", "|",
                                                       "w", "ˈɜː", "l", "d"]
    words = list(TRANSCRIPTIONS[voice])[:4]
    expected = [p for w in words for p in TRANSCRIPTIONS[voice][w] + ["|"]][:-1]
    assert phonemize(" ".join(words), voice=voice) == expected
    assert phonemize_words(" ".join(words), voice=voice) == [TRANSCRIPTIONS[voice][w]
                                                             for w in words]


def test_phonemize_accents_and_clauses():
    us = phonemize("Hello world, how are you?", voice="en-us")
    gb = phonemize("Hello world, how are you?", voice="en-gb")
    assert us.count("|") == gb.count("|") == 4  # clause breaks are word breaks too
    assert us != gb  # accents differ ("oʊ" vs "əʊ", rhotic "ɑːɹ")


def test_phonemize_matches_synthesis_events():
    text = "The quick brown fox jumps over the lazy dog."
    words = phonemize_words(text, voice="en-us")
    res = espeak.synthesize(text, voice="en-us")
    assert [p for w in words for p in w] == res.phonemes
    assert len(words) == len(res.words)


def test_unknown_voice_variant_and_empty_text():
    with pytest.raises(ValueError, match="xx-nowhere"):
        phonemize("hello", voice="xx-nowhere")
    with pytest.raises(ValueError, match="xx-nowhere"):
        espeak.synthesize("hello", voice="xx-nowhere")
    with pytest.raises(ValueError, match="nosuchvariant"):
        espeak.synthesize("hello", voice="en-us", variant="nosuchvariant")
    with pytest.raises(ValueError, match="empty"):
        espeak.synthesize("   ")
    with pytest.raises(ValueError, match="empty"):
        phonemize("")
    with pytest.raises(ValueError, match="rate"):
        espeak.synthesize("hello", rate=5)


def test_resolve_voice_names():
    assert espeak.resolve_voice("en-gb") == espeak.resolve_voice("en")
    assert espeak.resolve_voice("en-us+f3").endswith("+f3")
    assert espeak.resolve_voice("en-gb-scotland", "m2").endswith("+m2")
    assert "klatt" in espeak.available_variants()


def test_synthesize_audio_and_timings():
    res = espeak.synthesize("Hello world, how are you today?", voice="en-us", variant="f3",
                            rate=160, pitch=60, pitch_range=40)
    assert res.sample_rate == espeak.native_sample_rate() == 22050
    assert res.audio.dtype == np.float32 and res.audio.ndim == 1
    assert 1.0 < res.duration < 4.0
    assert np.sqrt(np.mean(res.audio ** 2)) > 0.01 and np.abs(res.audio).max() <= 1.0
    starts, ends = np.array(res.phoneme_starts), np.array(res.phoneme_ends)
    assert len(res.phonemes) == len(starts) == len(ends) > 15
    assert all(res.phonemes)  # pauses are not phonemes
    assert np.all(np.diff(starts) >= 0) and np.all(ends >= starts)
    assert starts[0] >= 0 and ends[-1] <= res.duration + 1e-9
    assert res.words == ["Hello", "world", "how", "are", "you", "today"]
    assert np.all(np.diff(res.word_starts) > 0)
    # The comma's pause: silence between "world" and "how".
    d, h = res.words.index("world"), res.words.index("how")
    gap_end = res.word_starts[h]
    gap_start = max(e for s, e in zip(starts, ends) if s < gap_end)
    sr = res.sample_rate
    assert gap_end - gap_start > 0.05
    assert np.abs(res.audio[int(gap_start * sr) + 50:int(gap_end * sr) - 50]).max() < 0.02
    assert d < h


def test_synthesize_is_reproducible():
    args = dict(text="How many candles are on the hill?", voice="en-029", variant="m3",
                rate=170, pitch=45, pitch_range=60)
    first = espeak.synthesize(**args)
    espeak.synthesize("Something else entirely, to change the state.", voice="en-gb",
                      variant="f2")
    again = espeak.synthesize(**args)
    assert np.array_equal(first.audio, again.audio)
    assert first.phoneme_starts == again.phoneme_starts


def test_vocab_round_trip(tmp_path):
    seqs = [phonemize("hello world"), phonemize("the quick brown fox")]
    vocab = PhonemeVocab.build(seqs)
    assert vocab.tokens[:4] == ("<pad>", "<bos>", "<eos>", "<unk>")
    assert (vocab.pad_id, vocab.bos_id, vocab.eos_id, vocab.unk_id) == (0, 1, 2, 3)
    assert "|" in vocab and len(vocab) == 4 + len({p for s in seqs for p in s})
    ids = vocab.encode(seqs[0], add_bos=True, add_eos=True)
    assert ids.dtype == np.int32 and ids.shape == (len(seqs[0]) + 2,)
    assert ids[0] == vocab.bos_id and ids[-1] == vocab.eos_id
    assert vocab.decode(ids, skip_special=True) == seqs[0]
    assert vocab.encode(["h", "zz-not-a-phoneme"]).tolist() == [vocab.encode(["h"])[0], 3]
    path = tmp_path / "vocab.json"
    vocab.save(path)
    assert PhonemeVocab.load(path) == vocab
    # Order-independent ids; stress stripping; building from manifest rows.
    assert PhonemeVocab.build(seqs[::-1]) == vocab
    flat = PhonemeVocab.build(seqs, keep_stress=False)
    assert not any("ˈ" in t for t in flat.tokens)
    rows = [{"phonemes": s} for s in seqs]
    assert PhonemeVocab.from_corpus(rows) == vocab
    with pytest.raises(ValueError):
        vocab.decode([len(vocab)])
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError):
        PhonemeVocab.load(tmp_path / "bad.json")


def test_clauses_split_at_punctuation():
    from audiolm_jax.text.phonemizer import phonemize_clauses

    clauses = phonemize_clauses("Hello there, my friend. How are you?")
    assert len(clauses) == 3 and clauses[0][:2] == ["h", "ə"]
    flat = [p for p in phonemize("Hello there, my friend. How are you?") if p != WORD_BOUNDARY]
    assert [p for c in clauses for p in c] == flat
