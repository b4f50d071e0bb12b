"""Praat TextGrids (Montreal Forced Aligner output) -> the phone fields of aligned records.

MFA writes one TextGrid per utterance with a "words" and a "phones" interval
tier (times in seconds). `read_textgrid` reads one (through `praatio`, the
`align` extra), `to_record_fields` turns it into the `phonemes`,
`phoneme_starts`, `phoneme_ends` fields that `audiolm_jax.data.aligned` trains
Voicebox on:

    alignment = read_textgrid("mfa_out/spk1/utt1.TextGrid")
    check_transcript(alignment, "Hello world.")             # words must match the text
    fields = to_record_fields(alignment)                   # ARPAbet -> espeak IPA
    fields = to_espeak_record_fields(alignment, "Hello world.")   # espeak's phones, MFA's times

Silence intervals ("", "sil", "sp") are dropped: the gaps they leave become
`<pause>` phones in `aligned.insert_pauses`, as in every other aligned source.
Spoken noise ("spn", MFA's phone for a word missing from its dictionary) has no
phones to give, so such an utterance is refused (`TextGridError`, naming the
word) rather than having speech labelled as a pause.

Which phones. Voicebox phonemizes text with espeak-ng at inference and refuses
phones its training data never had, so the training phones must be espeak's.
Two ways there:

* `to_record_fields`: MFA's own phones, each mapped through a table
  (`ARPABET_TO_IPA` for MFA's `english_us_arpa` models; any dict or file for
  other phone sets; `mapping=None` keeps IPA phones as they are). Faithful to
  what MFA heard, but a phone-by-phone table cannot reproduce espeak's
  context-dependent spellings (see the table's comment), so espeak gives
  phones at inference (e.g. "ɾ", "ɑːɹ", "əl") that such a manifest never has.
* `to_espeak_record_fields`: espeak's phones of the transcript (exactly what
  inference will feed the model, stress in context included), each timed by the
  MFA phones it lines up with (`transfer_times`, a minimum-cost alignment of
  the two sequences). The same phones as the built-in corpus and the CTC
  aligner give; the path `align_manifest` takes by default.

Every refusal is a `TextGridError` whose message names the file (and the
phone, word and time where there is one); its `kind` is a short category for
summaries.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from audiolm_jax.text.phonemizer import WORD_BOUNDARY, phonemize, strip_stress

# Interval labels MFA (and Kaldi-style aligners) use for silence; compared lower-cased.
SILENCE_LABELS = frozenset({"", "sil", "sp", "<sil>", "<eps>", "silence"})
# Spoken noise: what MFA aligns to a word missing from its dictionary ("spn" phone,
# "<unk>" word in some versions). No phones can be given for it.
NOISE_LABELS = frozenset({"spn", "<unk>", "<spn>", "<oov>"})
# Audio may be this much shorter than the TextGrid (MFA's xmax is the audio length
# rounded; one 20 ms frame of slack covers rounding and resampling).
DURATION_TOLERANCE = 0.02
# Mean cost per phone of `transfer_times` above which espeak's phones of a transcript
# are taken not to line up with the TextGrid's: a wrong phone mapping or voice. Own
# transcripts of ARPAbet TextGrids cost 0.03-0.33 (short sentences dense in flaps and
# r-coloured vowels the most), ARPAbet labels left unmapped 0.82-0.89. It is no check
# of the transcript (another sentence costs 0.42-0.65): `check_transcript` is.
MAX_TRANSFER_COST = 0.5
# Adjacent TextGrid intervals share their boundary; a larger gap is a dropped silence.
_TOUCH_SECONDS = 1e-3

_STRESS_MARKS = {"0": "", "1": "ˈ", "2": "ˌ"}   # ARPAbet stress digit -> espeak's mark

# ARPAbet (CMUdict, MFA's english_us_arpa) -> IPA as espeak-ng's en-us writes it.
# Each entry is checked against `phonemize` of an English word that spells it the
# same way in both ("father" F AA1 DH ER0 -> f ˈɑː ð ɚ, "cup", "sofa", "bird", ...:
# tests/test_textgrid.py::test_arpabet_table_matches_espeak, every ARPAbet phone).
#
# Stress: the entry of a bare vowel is its stressed form; the digit glues espeak's
# mark to it (AH1 -> "ˈʌ", AH2 -> "ˌʌ", AA0 -> "ɑː"). An entry with the digit is
# used verbatim: where espeak spells the unstressed vowel differently it has one
# (AH0 -> "ə", ER0 -> "ɚ", IY0 -> "i"). Voicebox's phones keep stress marks ("ˈʌ"
# and "ʌ" are different phones), as espeak writes them at inference.
#
# Where espeak differs, so that no table can match it phone for phone:
# * r-coloured vowels: espeak writes a vowel before a coda r as one phone ("car"
#   ˈɑːɹ, "four" ˈɔːɹ, "air" ˈɛɹ, "near" ˈɪɹ, "sure" ˈʊɹ, "fire" ˈaɪɚ); ARPAbet has
#   two (AA1 R) and the table gives two ("ˈɑː", "ɹ"). Before a vowel both agree
#   ("very" ɛ ɹ i). ER itself maps one to one ("bird" ˈɜː, "father" ɚ).
# * allophones ARPAbet does not write: the flap ɾ ("butter", "city"), glottal
#   stop ʔ and syllabic n̩ ("button"), syllabic əl ("bottle", one phone in espeak
#   for AH0 L), ᵻ in "-es"/"-ed" ("roses", CMU IH0), ɐ for some word-initial
#   schwas ("about"), "iə" ("idea", "really").
# * stress in context: espeak unstresses function words in a sentence ("but" ˌʌ,
#   "her" ɜː) where CMUdict gives the word's citation stress (AH1, ER1).
# * diphthongs are single phones on both sides (AY -> aɪ, AW -> aʊ, EY -> eɪ,
#   OW -> oʊ, OY -> ɔɪ), as are the affricates (CH -> tʃ, JH -> dʒ).
# * AA -> ɑː ("father", "pot"), AO -> ɔː ("bought", "all", "talk"). espeak has a
#   short ɔ for CMUdict's AO before f, s, θ, ŋ, n ("off", "lost", "long", "gone")
#   and ɑː in some words ("dog", "office"): the "cloth" words, where the two
#   dictionaries disagree.
# * G is IPA "ɡ" (U+0261), not the Latin "g", as espeak writes it.
ARPABET_TO_IPA: dict[str, str] = {
    # vowels (bare = stressed form; see above)
    "AA": "ɑː",  "AE": "æ",  "AH": "ʌ",  "AH0": "ə",  "AO": "ɔː", "AW": "aʊ",
    "AY": "aɪ",  "EH": "ɛ",  "ER": "ɜː", "ER0": "ɚ",  "EY": "eɪ", "IH": "ɪ",
    "IY": "iː",  "IY0": "i", "OW": "oʊ", "OY": "ɔɪ",  "UH": "ʊ",  "UW": "uː",
    # consonants
    "B": "b",  "CH": "tʃ", "D": "d",  "DH": "ð", "F": "f",  "G": "ɡ",  "HH": "h",
    "JH": "dʒ", "K": "k",  "L": "l",  "M": "m",  "N": "n",  "NG": "ŋ", "P": "p",
    "R": "ɹ",  "S": "s",  "SH": "ʃ", "T": "t",  "TH": "θ", "V": "v",  "W": "w",
    "Y": "j",  "Z": "z",  "ZH": "ʒ",
}

# First characters that make a phone a vowel (for `transfer_times`' costs).
_VOWELS = set("aeiouyæɑɒɔəɚɛɜɝɞɪʊʌɐᵻʉɨøœɤɯɘɵ")


class TextGridError(ValueError):
    """A TextGrid that cannot give an utterance's alignment; the message names the file.

    Attributes:
      kind: a short category ("missing tier", "unknown phones", ...) for summaries.
    """

    def __init__(self, message: str, kind: str = "bad TextGrid"):
        super().__init__(message)
        self.kind = kind


class Interval(NamedTuple):
    """One labelled interval of a tier (seconds)."""

    start: float
    end: float
    label: str


@dataclasses.dataclass(frozen=True)
class TextGridAlignment:
    """The word and phone tiers of one TextGrid (intervals with empty labels left out).

    Attributes:
      path: the file (named in every error).
      duration: [] seconds, the TextGrid's end time (xmax).
      phones: [P] the phone tier's labelled intervals, silence included.
      words: [W] the word tier's labelled intervals, or None without a word tier.
    """

    path: str
    duration: float
    phones: tuple[Interval, ...]
    words: tuple[Interval, ...] | None

    def spoken_words(self) -> list[Interval]:
        """[W'] the word intervals that are not silence."""
        return [w for w in self.words or () if not is_silence(w.label)]

    def word_at(self, time: float) -> str | None:
        """The label of the word interval holding `time` (seconds), if any."""
        for w in self.words or ():
            if w.start <= time < w.end:
                return w.label
        return None


def is_silence(label: str) -> bool:
    return label.strip().lower() in SILENCE_LABELS


def is_noise(label: str) -> bool:
    return label.strip().lower() in NOISE_LABELS


# ------------------------------------------------------------------ reading


def read_textgrid(path: str | os.PathLike, *, phone_tier: str = "phones",
                  word_tier: str | None = "words") -> TextGridAlignment:
    """Reads the phone (and word) tier of a TextGrid (long or short text format).

    A tier is found by its name, case-insensitively, or as MFA names it in a file of
    several speakers ("<speaker> - phones") when exactly one tier has that ending.

    Args:
      path: the TextGrid file.
      phone_tier: name of the phone tier.
      word_tier: name of the word tier; None to read phones only (then
        `check_transcript` cannot be used).

    Returns:
      The `TextGridAlignment`.

    Raises:
      TextGridError: unreadable file, or a tier missing (the tiers present are
        listed) or not an interval tier.
    """
    try:
        from praatio import textgrid as praat
    except ImportError as e:
        raise ImportError("reading TextGrids needs praatio: pip install 'audiolm-jax[align]'"
                          ) from e
    path = str(path)
    if not Path(path).is_file():
        raise TextGridError(f"{path}: no such TextGrid", kind="no TextGrid")
    try:
        grid = praat.openTextgrid(path, includeEmptyIntervals=False, reportingMode="silence")
    except Exception as e:  # noqa: BLE001 - praatio raises IndexError, ValueError, ... on junk
        raise TextGridError(f"{path}: not a readable TextGrid ({type(e).__name__}: {e})",
                            kind="unreadable TextGrid") from e
    phones = _tier_intervals(grid, phone_tier, path)
    words = _tier_intervals(grid, word_tier, path) if word_tier else None
    return TextGridAlignment(path=path, duration=float(grid.maxTimestamp), phones=phones,
                             words=words)


def _tier_intervals(grid, name: str, path: str) -> tuple[Interval, ...]:
    """The labelled intervals of tier `name` (see `read_textgrid` for how it is found)."""
    from praatio import textgrid as praat

    names = list(grid.tierNames)
    found = [n for n in names if n == name] or [n for n in names if n.lower() == name.lower()]
    if not found:   # MFA, several speakers in one file: "<speaker> - words"
        found = [n for n in names if n.lower().endswith(f" - {name.lower()}")]
    if len(found) != 1:
        what = "several tiers" if found else "no tier"
        raise TextGridError(f"{path}: {what} named {name!r}; its tiers are "
                            f"{', '.join(map(repr, names)) or 'none'}", kind="missing tier")
    tier = grid.getTier(found[0])
    if not isinstance(tier, praat.IntervalTier):
        raise TextGridError(f"{path}: tier {found[0]!r} is not an interval tier",
                            kind="missing tier")
    return tuple(Interval(float(s), float(e), str(label).strip())
                 for s, e, label in tier.entries if str(label).strip())


# ------------------------------------------------------------------ mappings


def load_mapping(path: str | os.PathLike) -> dict[str, str]:
    """A phone mapping from a file: a JSON object {phone: ipa}, or TSV lines
    `phone<TAB>ipa` (blank lines and lines starting with "#" ignored).

    Raises:
      ValueError: naming the file and line of a malformed entry.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            table = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not JSON ({e})") from e
        if not isinstance(table, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in table.items()):
            raise ValueError(f"{path}: expected a JSON object of phone -> IPA strings")
        return dict(table)
    table = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.rstrip("\r\n").split("\t")
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            raise ValueError(f"{path}:{number}: expected 'phone<TAB>ipa', got {line!r}")
        table[parts[0].strip()] = parts[1].strip()
    return table


def resolve_mapping(mapping: Mapping[str, str] | str | os.PathLike | None
                    ) -> Mapping[str, str] | None:
    """A mapping given as a dict, a file (`load_mapping`) or None (identity)."""
    if mapping is None or isinstance(mapping, Mapping):
        return mapping
    return load_mapping(mapping)


def map_phone(label: str, mapping: Mapping[str, str] | None, keep_stress: bool = True
              ) -> str | None:
    """One phone label -> its IPA phone, or None when the mapping has no entry.

    An exact entry is used verbatim; otherwise a trailing stress digit 0/1/2 is split
    off, the bare phone looked up, and espeak's mark ("", "ˈ", "ˌ") glued in front.
    `mapping=None` keeps the label (phones that are IPA already).
    """
    if mapping is None:
        phone = label
    elif label in mapping:
        phone = mapping[label]
    elif label[-1:] in _STRESS_MARKS and label[:-1] in mapping:
        phone = _STRESS_MARKS[label[-1]] + mapping[label[:-1]]
    else:
        return None
    return phone if keep_stress else strip_stress(phone)


# ------------------------------------------------------------------ checks


def normalize_words(text: str) -> list[str]:
    """Words for comparing a transcript with a word tier: lower case, punctuation
    dropped, hyphens split ("Well-known!" -> ["well", "known"]); apostrophes inside a
    word kept ("don't"), curly ones made straight."""
    text = text.lower().replace("’", "'").replace("‘", "'")
    return [w.strip("'") for w in re.findall(r"[\w']+", text) if w.strip("'")]


def check_transcript(alignment: TextGridAlignment, text: str) -> None:
    """Checks that the word tier spells `text` (`normalize_words` on both sides).

    A word labelled "<unk>" (MFA's out-of-dictionary word, in some versions) stands
    for any one word: the utterance is refused later, by its "spn" phones, naming it.

    Raises:
      TextGridError: no word tier, or the first word that differs (with its time).
    """
    if alignment.words is None:
        raise TextGridError(f"{alignment.path}: read without a word tier; cannot check the "
                            "transcript", kind="missing tier")
    grid_words: list[tuple[str, float]] = []
    for w in alignment.spoken_words():
        grid_words += [(token, w.start) for token in (
            [w.label.lower()] if is_noise(w.label) else normalize_words(w.label))]
    said = normalize_words(text)
    for i, (want, (got, at)) in enumerate(zip(said, grid_words)):
        if want != got and not is_noise(got):
            raise TextGridError(
                f"{alignment.path}: its words do not match the transcript: word {i + 1} is "
                f"{got!r} (at {at:.2f} s) in the TextGrid, {want!r} in the transcript "
                f"{text!r}", kind="words do not match transcript")
    if len(said) != len(grid_words):
        extra = (f"the transcript goes on with {' '.join(said[len(grid_words):])!r}"
                 if len(said) > len(grid_words) else
                 f"the TextGrid goes on with {' '.join(w for w, _ in grid_words[len(said):])!r}")
        raise TextGridError(f"{alignment.path}: its words do not match the transcript "
                            f"{text!r}: {len(grid_words)} words in the TextGrid, {len(said)} "
                            f"in the transcript ({extra})", kind="words do not match transcript")


def check_duration(alignment: TextGridAlignment, audio_seconds: float,
                   tolerance: float = DURATION_TOLERANCE) -> None:
    """Checks that the TextGrid (its end and its last phone) fits the audio.

    Args:
      audio_seconds: the audio's length in seconds.
      tolerance: seconds the TextGrid may run past the audio.

    Raises:
      TextGridError: naming both lengths.
    """
    last = max((p.end for p in alignment.phones if not is_silence(p.label)), default=0.0)
    longest = max(alignment.duration, last)
    if longest > audio_seconds + tolerance:
        raise TextGridError(f"{alignment.path}: the TextGrid lasts {longest:.3f} s, its audio "
                            f"{audio_seconds:.3f} s (more than {tolerance * 1000:.0f} ms "
                            "shorter): not this audio's alignment?", kind="longer than audio")


# ------------------------------------------------------------------ record fields


def _speech_phones(alignment: TextGridAlignment) -> list[Interval]:
    """The non-silent phone intervals; spoken noise refused, naming its word."""
    phones = []
    for p in alignment.phones:
        if is_silence(p.label):
            continue
        if is_noise(p.label):
            word = alignment.word_at((p.start + p.end) / 2)
            raise TextGridError(
                f"{alignment.path}: phone {p.label!r} at {p.start:.2f}-{p.end:.2f} s"
                + (f" (word {word!r})" if word else "")
                + " is spoken noise: the word is not in the aligner's dictionary. Add it "
                "(e.g. with `mfa g2p`) and align again", kind="out-of-dictionary word")
        phones.append(p)
    if not phones:
        raise TextGridError(f"{alignment.path}: the phone tier has no phones (only silence)",
                            kind="no phones")
    return phones


def mapped_phones(alignment: TextGridAlignment,
                  mapping: Mapping[str, str] | str | os.PathLike | None = ARPABET_TO_IPA,
                  keep_stress: bool = True) -> tuple[list[str], list[float], list[float]]:
    """The TextGrid's speech phones through `mapping` (see `to_record_fields`).

    Returns:
      (phonemes [P], starts [P], ends [P]) in seconds.
    """
    table = resolve_mapping(mapping)
    speech = _speech_phones(alignment)
    phonemes = [map_phone(p.label, table, keep_stress) for p in speech]
    unknown: dict[str, float] = {}
    for p, phone in zip(speech, phonemes):
        if not phone:
            unknown.setdefault(p.label, p.start)
    if unknown:
        named = ", ".join(f"{label!r} (first at {t:.2f} s)" for label, t in unknown.items())
        raise TextGridError(f"{alignment.path}: phones {named} are not in the phone mapping "
                            f"({len(table or {})} entries); give a mapping that has them",
                            kind="unknown phones")
    return phonemes, [p.start for p in speech], [p.end for p in speech]


def _times(values: Sequence[float]) -> list[float]:
    # 5 decimals = 10 us, as the built-in corpus stores them.
    return [round(float(v), 5) for v in values]


def _word_fields(alignment: TextGridAlignment) -> dict:
    words = alignment.spoken_words()
    if not words:
        return {}
    return {"words": [w.label for w in words], "word_starts": _times(w.start for w in words),
            "word_ends": _times(w.end for w in words)}


def to_record_fields(alignment: TextGridAlignment,
                     mapping: Mapping[str, str] | str | os.PathLike | None = ARPABET_TO_IPA,
                     *, keep_stress: bool = True) -> dict:
    """The aligned-record fields of a TextGrid, with its own phones mapped to IPA.

    Args:
      alignment: from `read_textgrid`.
      mapping: phone -> IPA: `ARPABET_TO_IPA` (default), any dict, a JSON/TSV file
        (`load_mapping`), or None to keep the labels (IPA phone sets). See
        `map_phone` for stress digits.
      keep_stress: keep espeak's stress marks (Voicebox's phones have them).

    Returns:
      {"phonemes": [P] str, "phoneme_starts": [P], "phoneme_ends": [P]} in seconds,
      silence left out (its gaps become `<pause>` in `aligned.insert_pauses`), plus
      "words", "word_starts", "word_ends" [W] when there is a word tier.

    Raises:
      TextGridError: phones missing from the mapping (each named with its first
        time), spoken noise (naming the word), or no phones at all.
    """
    phonemes, starts, ends = mapped_phones(alignment, mapping, keep_stress)
    return {"phonemes": phonemes, "phoneme_starts": _times(starts),
            "phoneme_ends": _times(ends), **_word_fields(alignment)}


def to_espeak_record_fields(alignment: TextGridAlignment, text: str, *,
                            mapping: Mapping[str, str] | str | os.PathLike | None
                            = ARPABET_TO_IPA, voice: str = "en-us",
                            max_cost: float = MAX_TRANSFER_COST) -> dict:
    """The aligned-record fields with espeak's phones of `text`, timed by the TextGrid.

    espeak-ng phonemizes the transcript as Voicebox does at inference (stress marks
    kept); `transfer_times` lines those phones up with the TextGrid's mapped phones
    and gives each the time of the phones it lines up with. Use `check_transcript`
    first: the text must be what the TextGrid aligned.

    Args:
      alignment: from `read_textgrid`.
      text: the utterance's transcript.
      mapping: as in `to_record_fields` (only used to line the phones up, so a rough
        mapping of an IPA phone set, or None, does; a dict must still cover every
        phone label, or `TextGridError` names the missing ones).
      voice: the espeak voice Voicebox will phonemize with.
      max_cost: the largest mean cost per phone accepted.

    Returns:
      As `to_record_fields`, the phonemes being espeak's.

    Raises:
      TextGridError: as `to_record_fields`, or when the two phone sequences differ
        too much (mean cost above `max_cost`).
    """
    source, starts, ends = mapped_phones(alignment, mapping, keep_stress=True)
    target = [p for p in phonemize(text, voice=voice) if p != WORD_BOUNDARY]
    if not target:
        raise TextGridError(f"{alignment.path}: espeak ({voice}) gives no phones for the "
                            f"transcript {text!r}", kind="no phones")
    new_starts, new_ends, cost = transfer_times(target, source, starts, ends)
    if cost > max_cost:
        raise TextGridError(
            f"{alignment.path}: espeak's phones of the transcript ({' '.join(target)}) and "
            f"the TextGrid's ({' '.join(source)}) differ too much (cost {cost:.2f} per phone "
            f"> {max_cost}): a wrong transcript, voice or phone mapping?",
            kind="phones differ from espeak's")
    return {"phonemes": target, "phoneme_starts": _times(new_starts),
            "phoneme_ends": _times(new_ends), **_word_fields(alignment)}


# ------------------------------------------------------------------ time transfer


def _is_vowel(phone: str) -> bool:
    return phone[:1] in _VOWELS


_SYLLABIC = "\u0329"   # combining mark of a syllabic consonant ("n̩")


def _comparable(phone: str) -> str:
    """A phone as `phone_cost` compares it: stress dropped, a syllabic consonant
    spelled with its schwa ("n̩" -> "ən", as ARPAbet writes it: AH0 N)."""
    phone = strip_stress(phone)
    return "ə" + phone.replace(_SYLLABIC, "") if _SYLLABIC in phone else phone


def phone_cost(a: str, b: str) -> float:
    """How unlike two phones are (stress ignored): 0 the same; 0.3 one contains the
    other at an end (espeak's "ɑːɹ" against "ɑː" or "ɹ", "əl" against "ə", "i"
    against "iː", "n̩" against "n"); 0.6 two vowels; 0.8 two consonants ("ɾ" against
    "t"); 1 a vowel against a consonant."""
    a, b = _comparable(a), _comparable(b)
    if a == b:
        return 0.0
    if a.startswith(b) or b.startswith(a) or a.endswith(b) or b.endswith(a):
        return 0.3
    if _is_vowel(a) == _is_vowel(b):
        return 0.6 if _is_vowel(a) else 0.8
    return 1.0


_GAP_COST = 0.5   # a phone on one side only (espeak's "ʔ", or the "ɹ" of "ɑːɹ" + "ɹ")


def _line_up(target: Sequence[str], source: Sequence[str]) -> tuple[list[tuple], float]:
    """Minimum-cost alignment (edit distance with `phone_cost`).

    Returns:
      ([(target index or None, source index or None)] in order, total cost).
    """
    n, m = len(target), len(source)
    cost = np.zeros((n + 1, m + 1))
    cost[:, 0] = np.arange(n + 1) * _GAP_COST
    cost[0, :] = np.arange(m + 1) * _GAP_COST
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost[i, j] = min(cost[i - 1, j - 1] + phone_cost(target[i - 1], source[j - 1]),
                             cost[i - 1, j] + _GAP_COST, cost[i, j - 1] + _GAP_COST)
    pairs = []
    i, j = n, m
    while i or j:
        if i and j and np.isclose(cost[i, j], cost[i - 1, j - 1]
                                  + phone_cost(target[i - 1], source[j - 1])):
            i, j = i - 1, j - 1
            pairs.append((i, j))
        elif i and np.isclose(cost[i, j], cost[i - 1, j] + _GAP_COST):
            i -= 1
            pairs.append((i, None))
        else:
            j -= 1
            pairs.append((None, j))
    return pairs[::-1], float(cost[n, m])


def _touch(starts: Sequence[float], ends: Sequence[float], first: int, second: int) -> bool:
    """Whether source phone `first` ends where `second` (the next one) starts: no silence
    interval was dropped between them."""
    return starts[second] - ends[first] < _TOUCH_SECONDS


def transfer_times(target: Sequence[str], source: Sequence[str], starts: Sequence[float],
                   ends: Sequence[float]) -> tuple[list[float], list[float], float]:
    """Times for the phones `target` from an alignment of the phones `source`.

    The two sequences are lined up at minimum cost (`phone_cost`, a gap costing 0.5).
    A target phone takes the span of the source phones lined up with it; a source
    phone lined up with nothing joins the target phone before or after it, whichever
    is more like it (`phone_cost`: "ɑː" + "ɹ" lined up against "ɑːɹ" gives it both),
    preferring a neighbour it touches in time (never across a dropped silence);
    target phones lined up with nothing share the span of their neighbour (the one
    before, else the one after) in equal parts.

    Args:
      target: [T] phones to time (espeak's).
      source: [S] timed phones (the TextGrid's, mapped).
      starts, ends: [S] seconds, ordered.

    Returns:
      (starts [T], ends [T] in seconds, ordered and not overlapping; mean cost per
      phone, total / max(T, S)).
    """
    pairs, total = _line_up(target, source)
    # The target phone before and after each step of the path (None at the ends).
    before, after = [None] * len(pairs), [None] * len(pairs)
    last = None
    for k, (t, _) in enumerate(pairs):
        last = before[k] = t if t is not None else last
    last = None
    for k in reversed(range(len(pairs))):
        last = after[k] = pairs[k][0] if pairs[k][0] is not None else last
    owned: list[list[int]] = [[] for _ in target]
    for k, (t, s) in enumerate(pairs):
        if s is None:
            continue
        if t is None:   # a source phone alone joins the likelier neighbour (ties: before)
            options = [n for n in (before[k], after[k]) if n is not None]
            # ... on its side of any silence: joining across one would swallow the pause.
            touching = [n for n, side in ((before[k], s - 1), (after[k], s + 1))
                        if n is not None and 0 <= side < len(source)
                        and _touch(starts, ends, min(s, side), max(s, side))]
            t = min(touching or options, key=lambda n: phone_cost(target[n], source[s]))
        owned[t].append(s)
    span = [(min(starts[s] for s in o), max(ends[s] for s in o)) if o else None
            for o in owned]
    i = 0
    while i < len(span):
        if span[i] is not None:
            i += 1
            continue
        j = i
        while j < len(span) and span[j] is None:
            j += 1
        # target phones i..j-1 have no time: share the neighbour's span.
        if i > 0:
            share = [i - 1, *range(i, j)]
        elif j < len(span):
            share = [*range(i, j), j]
        else:
            raise ValueError("no target phone could be timed")   # S == 0
        lo, hi = span[i - 1] if i > 0 else span[j]
        edges = np.linspace(lo, hi, len(share) + 1)
        for k, index in enumerate(share):
            span[index] = (float(edges[k]), float(edges[k + 1]))
        i = j
    return ([s for s, _ in span], [e for _, e in span],
            total / max(len(target), len(source)))
