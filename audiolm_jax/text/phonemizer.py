"""Text -> IPA phoneme units with espeak-ng (see `audiolm_jax.text.espeak`).

`phonemize` uses espeak-ng's own text-to-phoneme conversion, so its units are the
same phoneme names that the phoneme events of `espeak.synthesize` carry (and
that the built-in `speech` corpus stores). Differences from the event sequence:

* `phonemize` marks word boundaries with "|"; the events have no boundary
  token (the corpus stores word timings instead).
* Events include pauses (empty names), which are dropped on both sides.
* Otherwise the sequences match one-to-one: all 1385 sentences of the default
  built-in corpus (8 accents). The one split seen in the events (Scottish "eʲ"
  as "e" + "ʲ") is merged back by `espeak.synthesize`. A phoneme name longer
  than the 8 bytes an event can carry would come out truncated there.
* Numbers and abbreviations are expanded the same way on both sides.
"""

from __future__ import annotations

from audiolm_jax.text import espeak

WORD_BOUNDARY = "|"
_SEPARATOR = "_"  # put by espeak between the phonemes of a word (never in IPA output)


def strip_stress(phoneme: str) -> str:
    """Removes the primary/secondary stress marks "ˈ" and "ˌ" from one unit."""
    return phoneme.translate({ord(c): None for c in espeak.STRESS_MARKS})


def phonemize_words(text: str, voice: str = "en-us", keep_stress: bool = True) -> list[list[str]]:
    """IPA phonemes grouped by (phonological) word.

    Args:
      text: plain text; numbers and abbreviations are expanded by espeak.
      voice: espeak voice name or language code ("en-us", "en-gb", ...).
      keep_stress: keep "ˈ"/"ˌ" glued to the stressed vowels.

    Returns:
      [words][phonemes] IPA strings; words without phonemes are dropped.
    """
    words = []
    for clause in espeak.text_to_phonemes(text, voice=voice, separator=_SEPARATOR):
        for word in clause.split():
            units = [u for u in word.split(_SEPARATOR) if u]
            if not keep_stress:
                units = [s for s in map(strip_stress, units) if s]
            if units:
                words.append(units)
    return words


def phonemize_clauses(text: str, voice: str = "en-us", keep_stress: bool = True
                      ) -> list[list[str]]:
    """IPA phonemes grouped by clause: espeak splits text at punctuation (, ; : . ! ?),
    where a speaker pauses. [clauses][phonemes], without word boundaries; clauses
    without phonemes are dropped."""
    clauses = []
    for clause in espeak.text_to_phonemes(text, voice=voice, separator=_SEPARATOR):
        units = [u for word in clause.split() for u in word.split(_SEPARATOR) if u]
        if not keep_stress:
            units = [s for s in map(strip_stress, units) if s]
        if units:
            clauses.append(units)
    return clauses


def phonemize(text: str, voice: str = "en-us", keep_stress: bool = True) -> list[str]:
    """IPA phoneme units of `text` with "|" between words.

    Args:
      text: plain text (not empty).
      voice: espeak voice name or language code ("en-us", "en-gb", ...).
      keep_stress: keep "ˈ"/"ˌ" glued to the stressed vowels (as espeak writes
        them, e.g. "ˈoʊ"); False strips them.

    Returns:
      [units] e.g. ["h", "ə", "l", "ˈoʊ", "|", "w", "ˈɜː", "l", "d"] for "hello world".

    Raises:
      ValueError: empty text or unknown voice.
    """
    out: list[str] = []
    for word in phonemize_words(text, voice=voice, keep_stress=keep_stress):
        if out:
            out.append(WORD_BOUNDARY)
        out.extend(word)
    return out
