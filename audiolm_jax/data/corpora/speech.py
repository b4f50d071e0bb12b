"""The built-in `speech` corpus: espeak-ng speech from many speakers, with phoneme timings.

Each item is one generated English sentence (4-15 words: statements, questions,
exclamations, sentences with numbers, compound sentences) spoken by one speaker.
A speaker is a fixed combination of an English accent (espeak base voice), a
voice variant (formants, pitch contour, Klatt or the default synthesizer), and
pitch, pitch range and speaking rate. Everything is drawn from
`np.random.default_rng` streams keyed by (seed, purpose, index), so a build is
deterministic and item `i` is the same whatever the size or the worker count.

Processing of each utterance (choices and why):

* espeak-ng speaks at 22050 Hz; we resample to 24 kHz with soxr "HQ" (linear
  phase, zero delay, so event times carry over unchanged).
* No trimming: espeak's own leading/trailing silence is only ~10 ms. Instead we
  pad 0.1-0.3 s of digital silence on each side (drawn per item), so clips have
  a realistic onset/offset, and shift all times by the leading pad.
* Spoken at espeak volume 40 (of 100 default), where no variant we use clips,
  then peak-normalised to 0.9: variants differ a lot in loudness; a fixed peak keeps
  every clip well inside 16-bit range (gain augmentation belongs in the
  training pipeline).
* Numbers are written out in words in the text. espeak's word events for digits
  point at the wrong characters, and spelled-out text matches the audio exactly.

Manifest fields beyond `common`'s (times in seconds, 24 kHz clip time):

    speaker         int, 0..num_speakers-1 (stable across sizes for one seed)
    speaker_name    "accent+variant pitch=P range=R rate=W"
    phonemes        [P] IPA phonemes from espeak's phoneme events, stress marks
                    kept ("ˈoʊ"); pause events (empty names) are not phonemes
    phoneme_starts  [P] non-decreasing
    phoneme_ends    [P] start of the next phoneme or pause; the last one ends where
                    speech ends (before the trailing pad; variants with an echo,
                    e.g. f2-f5 and m2, ring on faintly for up to 130 ms after it)
    phoneme_words   [P] index into `words` of the word each phoneme belongs to
                    (putting "|" where it changes reproduces `phonemize(text)` for
                    nearly every item; see `_phoneme_words`)
    words           [W] the words as espeak groups them (one per word event); an
                    unstressed function word joins the next: "in the", "at the"
    word_starts     [W]
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from audiolm_jax.data.corpora import common

NAME = "speech"
VERSION = 1
PEAK = 0.9
# espeak amplitude 0..200. At 100 several variants saturate 16 bits; 40 keeps every
# variant below ~0.8 of full scale (we peak-normalise afterwards anyway).
VOLUME = 40
PAD_SECONDS = (0.1, 0.3)
NUM_WORDS = (4, 15)

# Per size: number of speakers and either a fixed item count or a target total
# duration (items are added in order until the total reaches it).
_SIZES = {
    "tiny": {"speakers": 4, "items": 24, "seconds": None},
    "default": {"speakers": 48, "items": None, "seconds": 3600.0},
}
_SPEAKER_TABLE = 48  # speakers drawn for every size; smaller sizes use the first ones

# Stream ids for np.random.default_rng([seed, stream, index]).
_STREAM_SPEAKERS, _STREAM_ITEM, _STREAM_ORDER = 0, 1, 2

ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan",
           "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
# Variants that sound like plausible voices (no echo/robot/whisper/novelty ones).
FEMALE_VARIANTS = ("f1", "f2", "f3", "f4", "f5", "Andrea", "Annie", "anika", "belinda",
                   "linda", "steph", "aunty")
# Left out as well: "antonio", "iven", "ed", "paul", "Gene", which saturate espeak's
# 16-bit output even at half volume.
MALE_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "Alex", "Andy", "Denis",
                 "Mike", "david", "edward", "benjamin", "klatt", "klatt2", "klatt3", "quincy",
                 "rob", "robert", "travis", "victor", "max", "michel", "mike2", "adam")
PITCH = (35, 65)        # espeak 0..100, relative to the variant's own pitch
PITCH_RANGE = (30, 80)  # espeak 0..100
RATE = (145, 195)       # words per minute


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker: an espeak voice setting."""
    accent: str
    variant: str
    pitch: int
    pitch_range: int
    rate: int

    @property
    def name(self) -> str:
        return (f"{self.accent}+{self.variant} pitch={self.pitch} range={self.pitch_range} "
                f"rate={self.rate}")


def make_speakers(seed: int, num: int = _SPEAKER_TABLE) -> list[Speaker]:
    """The speaker table of a seed; the first `num` entries.

    Accents cycle through a shuffled `ACCENTS`, gender alternates (flipping every
    full accent cycle so each accent gets both), and variants cycle through
    shuffled per-gender lists, so even 4 speakers differ in accent, gender and
    variant.
    """
    rng = np.random.default_rng([seed, _STREAM_SPEAKERS])
    accents = [ACCENTS[i] for i in rng.permutation(len(ACCENTS))]
    female = [FEMALE_VARIANTS[i] for i in rng.permutation(len(FEMALE_VARIANTS))]
    male = [MALE_VARIANTS[i] for i in rng.permutation(len(MALE_VARIANTS))]
    speakers = []
    for k in range(_SPEAKER_TABLE):
        is_female = (k + k // len(accents)) % 2 == 1
        pool = female if is_female else male
        variant = pool[(k // 2) % len(pool)]
        speakers.append(Speaker(
            accent=accents[k % len(accents)], variant=variant,
            pitch=int(rng.integers(PITCH[0], PITCH[1] + 1)),
            pitch_range=int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1)),
            rate=int(rng.integers(RATE[0], RATE[1] + 1))))
    return speakers[:num]


# ----------------------------------------------------------------------------- sentences

_NAMES = ("Anna", "Peter", "Maria", "James", "Lucy", "Daniel", "Sophie", "Thomas", "Emma",
          "Oliver", "Grace", "Henry", "Alice", "Samuel", "Clara", "Victor", "Nora", "Felix",
          "Ruth", "Oscar", "Helen", "George", "Julia", "Martin", "Rachel", "Walter")
_PEOPLE = ("the old man", "my sister", "our teacher", "the doctor", "a young girl",
           "the farmer", "his brother", "the captain", "her mother", "the children",
           "my neighbour", "the driver", "a tired student", "the baker", "your uncle",
           "the nurse", "a quiet boy", "the soldiers", "my friends", "the engineer")
_ADJECTIVES = ("small", "large", "bright", "heavy", "quiet", "strange", "green", "yellow",
               "broken", "famous", "cold", "warm", "empty", "careful", "ancient", "narrow",
               "wooden", "silver", "gentle", "noisy", "purple", "lonely", "sharp", "soft",
               "rusty", "hungry", "clever", "dusty", "golden", "deep", "modern", "thick")
_NOUNS = ("book", "window", "garden", "bottle", "river", "letter", "table", "bridge",
          "horse", "lamp", "kitchen", "mountain", "basket", "ticket", "pencil", "blanket",
          "engine", "village", "forest", "coffee", "guitar", "camera", "ladder", "pocket",
          "rabbit", "island", "bicycle", "hammer", "violin", "jacket", "candle",
          "compass", "meadow", "puzzle", "spoon", "feather", "castle", "harbour", "lemon",
          "blackboard", "suitcase", "umbrella", "painting", "sandwich", "journey", "whistle")
_PLURALS = ("apples", "boxes", "chairs", "birds", "stones", "coins", "pages", "houses",
            "flowers", "sheep", "cups", "trees", "letters", "bottles", "eggs", "shoes",
            "windows", "candles", "tickets", "questions", "minutes", "miles", "people")
_PLACES = ("in the kitchen", "near the river", "at the station", "behind the house",
           "on the bridge", "under the table", "in the garden", "at the market",
           "by the window", "across the street", "in the library", "on the hill",
           "at school", "in the village", "beside the lake", "at the harbour")
_TIMES = ("yesterday", "this morning", "last night", "every day", "on Sunday", "tomorrow",
          "after lunch", "before dinner", "in the evening", "last summer", "at noon",
          "next week", "twice a year", "right now")
_ADVERBS = ("slowly", "quickly", "carefully", "quietly", "suddenly", "happily", "nearly",
            "finally", "rarely", "always", "never", "often")
# (base, past) forms of transitive verbs.
_VERBS = (("find", "found"), ("carry", "carried"), ("paint", "painted"), ("open", "opened"),
          ("lose", "lost"), ("clean", "cleaned"), ("build", "built"), ("sell", "sold"),
          ("hide", "hid"), ("fix", "fixed"), ("draw", "drew"), ("bring", "brought"),
          ("watch", "watched"), ("move", "moved"), ("borrow", "borrowed"), ("push", "pushed"),
          ("throw", "threw"), ("count", "counted"), ("wash", "washed"), ("catch", "caught"),
          ("keep", "kept"), ("choose", "chose"), ("measure", "measured"), ("touch", "touched"))
_INTRANSITIVE = (("sleep", "slept"), ("laugh", "laughed"), ("wait", "waited"),
                 ("sing", "sang"), ("run", "ran"), ("travel", "travelled"), ("dance", "danced"),
                 ("smile", "smiled"), ("work", "worked"), ("swim", "swam"))
_MODALS = ("will", "can", "should", "might", "must", "could", "would")
_WH = ("Where", "When", "Why", "How")
_CONJUNCTIONS = ("but", "and", "so", "because", "while")
_EXCLAIM = ("What a {adj} {noun}!", "How {adj} the {noun} looks!", "Look at that {adj} {noun}!",
            "Oh no, the {noun} is {adj}!")

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
         "fourteen fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(n: int) -> str:
    """Cardinal number in words, 0 <= n < 1_000_000 ("three hundred and twelve")."""
    if not 0 <= n < 1_000_000:
        raise ValueError(f"number out of range: {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        rest = "" if n % 100 == 0 else " and " + number_words(n % 100)
        return _ONES[n // 100] + " hundred" + rest
    rest = n % 1000
    tail = "" if rest == 0 else (" and " if rest < 100 else " ") + number_words(rest)
    return number_words(n // 1000) + " thousand" + tail


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _object(rng: np.random.Generator) -> str:
    """A noun phrase: determiner, optional adjective, noun."""
    noun = _pick(rng, _NOUNS)
    if rng.random() < 0.5:
        adj = _pick(rng, _ADJECTIVES)
        det = _pick(rng, ("the", "my", "your", "this", "that", "our", _article(adj)))
        return f"{det} {adj} {noun}"
    return f"{_pick(rng, ('the', 'my', 'her', 'his', 'their', _article(noun)))} {noun}"


def _subject(rng: np.random.Generator) -> str:
    return _pick(rng, _NAMES) if rng.random() < 0.5 else _pick(rng, _PEOPLE)


def _number(rng: np.random.Generator) -> str:
    """A number in words, mostly small, sometimes in the hundreds or thousands."""
    kind = rng.random()
    if kind < 0.5:
        return number_words(int(rng.integers(2, 100)))
    if kind < 0.8:
        return number_words(int(rng.integers(100, 1000)))
    return number_words(int(rng.integers(1000, 100_000)))


def _clause(rng: np.random.Generator) -> str:
    """A declarative clause without final punctuation."""
    kind = int(rng.integers(4))
    subj = _subject(rng)
    if kind == 0:
        past = _pick(rng, _VERBS)[1]
        return f"{subj} {past} {_object(rng)} {_pick(rng, _PLACES + _TIMES)}"
    if kind == 1:
        base = _pick(rng, _VERBS)[0]
        return f"{subj} {_pick(rng, _MODALS)} {base} {_object(rng)}"
    if kind == 2:
        past = _pick(rng, _INTRANSITIVE)[1]
        return f"{subj} {_pick(rng, _ADVERBS)} {past} {_pick(rng, _PLACES)}"
    noun = _pick(rng, _NOUNS)
    return f"the {noun} {_pick(rng, ('was', 'is', 'seems', 'looked'))} {_pick(rng, _ADJECTIVES)}"


def _question(rng: np.random.Generator) -> str:
    kind = int(rng.integers(4))
    if kind == 0:
        return f"{_pick(rng, _WH)} did {_subject(rng)} {_pick(rng, _VERBS)[0]} {_object(rng)}?"
    if kind == 1:
        aux = _pick(rng, ("Will", "Can", "Should", "Could", "Did"))
        return f"{aux} {_subject(rng)} {_pick(rng, _INTRANSITIVE)[0]} {_pick(rng, _TIMES)}?"
    if kind == 2:
        return (f"Is the {_pick(rng, _NOUNS)} {_pick(rng, _ADJECTIVES)} or "
                f"{_pick(rng, _ADJECTIVES)}?")
    return f"How many {_pick(rng, _PLURALS)} are {_pick(rng, _PLACES)}?"


def _with_numbers(rng: np.random.Generator) -> str:
    kind = int(rng.integers(4))
    if kind == 0:
        return (f"{_capitalize(_subject(rng))} bought {_number(rng)} {_pick(rng, _PLURALS)} "
                f"for {_number(rng)} dollars.")
    if kind == 1:
        hour = number_words(int(rng.integers(1, 13)))
        minute = int(rng.integers(10, 60))
        return f"The train leaves at {hour} {number_words(minute)} {_pick(rng, _TIMES)}."
    if kind == 2:
        return f"There are {_number(rng)} {_pick(rng, _PLURALS)} {_pick(rng, _PLACES)}."
    floor = _pick(rng, ("first", "second", "third", "fifth", "ninth", "twelfth"))
    return f"Room {_number(rng)} is on the {floor} floor."


def _capitalize(s: str) -> str:
    return s[0].upper() + s[1:]


def make_sentence(rng: np.random.Generator) -> str:
    """One English sentence of `NUM_WORDS` words (counting whitespace-separated tokens)."""
    while True:  # rejection keeps the length range exact; a few draws at most
        kind = rng.random()
        if kind < 0.35:
            text = _capitalize(_clause(rng)) + "."
        elif kind < 0.55:
            text = _question(rng)
        elif kind < 0.75:
            text = _with_numbers(rng)
        elif kind < 0.85:
            template = _pick(rng, _EXCLAIM)
            text = template.format(adj=_pick(rng, _ADJECTIVES), noun=_pick(rng, _NOUNS))
        else:
            text = (f"{_capitalize(_clause(rng))}, {_pick(rng, _CONJUNCTIONS)} "
                    f"{_clause(rng)}.")
        if NUM_WORDS[0] <= len(text.split()) <= NUM_WORDS[1]:
            return text


# ----------------------------------------------------------------------------- items

@dataclass(frozen=True)
class ItemPlan:
    """Everything needed to make item `index`, drawn before synthesis."""
    index: int
    speaker: int
    text: str
    lead: int   # samples of leading silence at 24 kHz
    trail: int  # samples of trailing silence at 24 kHz


def _speaker_of(seed: int, index: int, num_speakers: int) -> int:
    """Balanced assignment: each block of `num_speakers` items is a permutation."""
    block, pos = divmod(index, num_speakers)
    perm = np.random.default_rng([seed, _STREAM_ORDER, block]).permutation(num_speakers)
    return int(perm[pos])


def plan_item(seed: int, index: int, num_speakers: int) -> ItemPlan:
    """Draws item `index`'s sentence, speaker and padding (no synthesis)."""
    rng = np.random.default_rng([seed, _STREAM_ITEM, index])
    text = make_sentence(rng)
    lead, trail = (int(round(rng.uniform(*PAD_SECONDS) * common.SAMPLE_RATE)) for _ in range(2))
    return ItemPlan(index=index, speaker=_speaker_of(seed, index, num_speakers), text=text,
                     lead=lead, trail=trail)


def _resample(audio: np.ndarray, sr_in: int) -> np.ndarray:
    """[n] at sr_in -> [round(n * 24000 / sr_in)] at 24 kHz, zero delay."""
    import soxr  # librosa's own backend; imported lazily to keep imports light

    return soxr.resample(audio, sr_in, common.SAMPLE_RATE, quality="HQ").astype(np.float32)


def _times(values: list[float], offset: float) -> list[float]:
    # 5 decimals = 10 us, finer than one 24 kHz sample (41.7 us); keeps manifests small.
    return [round(v + offset, 5) for v in values]


def _phoneme_words(res, text: str, voice: str) -> tuple[list[int], list[float]]:
    """Which word each phoneme belongs to, and when each word starts.

    espeak puts a word event at the start of the word's first syllable, which can
    begin with the previous word's final consonant ("will measure" -> the event
    for "measure" comes before the "l"), so grouping by event time misplaces
    such consonants. When espeak's text->phoneme conversion gives the same
    phonemes as the synthesis events (nearly always) and the same number of
    words, its word grouping is used instead, so that inserting "|" between
    words reproduces `phonemize(text)`; word starts are then the starts of
    their first phonemes. Otherwise we fall back to event times.

    Returns:
      ([P] word index per phoneme, [W] word start times in seconds).
    """
    from audiolm_jax.text.phonemizer import phonemize_words

    groups = phonemize_words(text, voice=voice)
    if (len(groups) == len(res.words)
            and [p for g in groups for p in g] == list(res.phonemes)):
        index = [w for w, g in enumerate(groups) for _ in g]
        firsts = np.cumsum([0] + [len(g) for g in groups[:-1]])
        return index, [res.phoneme_starts[i] for i in firsts]
    idx = np.searchsorted(np.asarray(res.word_starts), np.asarray(res.phoneme_starts) + 1e-6,
                          side="right") - 1
    return np.maximum(idx, 0).astype(int).tolist(), list(res.word_starts)


def make_item(plan: ItemPlan, speaker: Speaker) -> tuple[np.ndarray, dict]:
    """Synthesizes one planned item.

    Returns:
      ([samples] float32 audio at 24 kHz, the row's extra manifest fields).
    """
    from audiolm_jax.text import espeak

    for volume in (VOLUME, VOLUME // 2):
        res = espeak.synthesize(plan.text, voice=speaker.accent, variant=speaker.variant,
                                rate=speaker.rate, pitch=speaker.pitch,
                                pitch_range=speaker.pitch_range, volume=volume)
        if np.max(np.abs(res.audio)) < 0.999:  # not saturated at 16 bits
            break
    speech = _resample(res.audio, res.sample_rate)
    peak = float(np.max(np.abs(speech)))
    if peak <= 1e-4:
        raise RuntimeError(f"espeak produced silence for {plan.text!r} ({speaker.name})")
    speech *= PEAK / peak
    audio = np.concatenate([np.zeros(plan.lead, np.float32), speech,
                            np.zeros(plan.trail, np.float32)])
    offset = plan.lead / common.SAMPLE_RATE
    speech_end = offset + speech.shape[0] / common.SAMPLE_RATE
    ends = [min(t, speech_end) for t in _times(res.phoneme_ends, offset)]
    phoneme_words, word_starts = _phoneme_words(res, plan.text, speaker.accent)
    fields = {
        "speaker": plan.speaker,
        "speaker_name": speaker.name,
        "phonemes": res.phonemes,
        "phoneme_starts": _times(res.phoneme_starts, offset),
        "phoneme_ends": ends,
        "phoneme_words": phoneme_words,
        "words": res.words,
        "word_starts": _times(word_starts, offset),
    }
    return audio, fields


def _write_items(corpus_dir: str, seed: int, indices: list[int], num_speakers: int,
                 speakers: list[Speaker]) -> list[dict]:
    """Makes and writes items; runs in the worker processes (and in-process)."""
    rows = []
    for index in indices:
        plan = plan_item(seed, index, num_speakers)
        audio, fields = make_item(plan, speakers[plan.speaker])
        rows.append(common.write_item(Path(corpus_dir), f"{index:06d}", audio,
                                      common.SAMPLE_RATE, plan.text, **fields))
    return rows


def _batches(start: int, size: int) -> Iterator[list[int]]:
    while True:
        yield list(range(start, start + size))
        start += size


def _row_batches(corpus_dir: Path, seed: int, num_speakers: int, workers: int,
                 batch: int) -> Iterator[list[dict]]:
    """Endless, ordered stream of written row batches (items 0, 1, 2, ...).

    With workers > 1, batches are made in "spawn" processes (each loads its own
    espeak-ng; spawn avoids forking a possibly multi-threaded parent, e.g. one
    with JAX loaded) while a bounded window of batches is in flight. The rows
    are yielded in item order, so the result does not depend on `workers`.
    """
    speakers = make_speakers(seed, num_speakers)
    args = (str(corpus_dir), seed)
    if workers <= 1:
        for indices in _batches(0, batch):
            yield _write_items(*args, indices, num_speakers, speakers)
        return
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        pending = []
        try:
            for indices in _batches(0, batch):
                pending.append(pool.submit(_write_items, *args, indices, num_speakers,
                                           speakers))
                if len(pending) >= 2 * workers:
                    yield pending.pop(0).result()
        finally:
            for fut in pending:
                fut.cancel()


def _build(corpus_dir: Path, size: str, seed: int, workers: int, progress: bool) -> list[dict]:
    """Writes the items of one size; returns their rows in order."""
    from tqdm.auto import tqdm

    cfg = _SIZES[size]
    limit_items, limit_seconds = cfg["items"], cfg["seconds"]
    batch = 1 if limit_items is not None and limit_items < 64 else 16
    bar = tqdm(total=limit_items or limit_seconds, disable=not progress,
               desc=f"speech corpus ({size})", unit="item" if limit_items else "s",
               bar_format=None if limit_items else "{l_bar}{bar}| {n:.0f}/{total:.0f} s "
               "[{elapsed}<{remaining}]")
    rows: list[dict] = []
    seconds = 0.0
    stream = _row_batches(corpus_dir, seed, cfg["speakers"], workers, batch)
    try:
        for batch_rows in stream:
            for row in batch_rows:
                if _done(len(rows), seconds, limit_items, limit_seconds):
                    _remove_item(corpus_dir, row)  # made ahead by a worker, not needed
                    continue
                rows.append(row)
                dur = row["num_samples"] / row["sample_rate"]
                seconds += dur
                bar.update(1 if limit_items else min(dur, max(limit_seconds - bar.n, 0)))
            if _done(len(rows), seconds, limit_items, limit_seconds):
                break
    finally:
        stream.close()  # stops the workers; cancelled batches never start
        bar.close()
    _remove_strays(corpus_dir, rows)
    return rows


def _done(num_rows: int, seconds: float, limit_items: int | None,
          limit_seconds: float | None) -> bool:
    if limit_items is not None:
        return num_rows >= limit_items
    return seconds >= limit_seconds


def _remove_item(corpus_dir: Path, row: dict) -> None:
    path = corpus_dir / row["audio"]
    path.unlink(missing_ok=True)
    path.with_suffix(".txt").unlink(missing_ok=True)


def _remove_strays(corpus_dir: Path, rows: list[dict]) -> None:
    """Deletes audio a worker wrote for a batch that finished after the stop."""
    keep = {Path(r["audio"]).stem for r in rows}
    for path in (corpus_dir / "audio").glob("*"):
        if path.stem not in keep:
            path.unlink()


def default_workers(size: str) -> int:
    """In-process for "tiny" (start-up would cost more than it saves); otherwise one
    process per available core, at most 4 (the parent only collects rows)."""
    if size == "tiny":
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


def build_speech_corpus(size: str = "default", seed: int = 0,
                        root: str | os.PathLike | None = None, rebuild: bool = False,
                        progress: bool = True, workers: int | None = None) -> Path:
    """Builds (or finds in the cache) the `speech` corpus; returns its folder.

    Args:
      size: "tiny" (24 items, 4 speakers, a few seconds) or "default" (48
        speakers, items until the total reaches one hour).
      seed: selects sentences, speakers and padding; the same seed gives the
        same manifest and audio.
      root: cache folder (`common.default_cache_dir()/corpora` when None).
      rebuild: build even when a cached copy exists.
      progress: show a tqdm progress bar.
      workers: processes synthesizing in parallel (None: `default_workers`).
        The output does not depend on it. With workers > 1, code that calls this
        from a script needs the usual `if __name__ == "__main__":` guard.

    Returns:
      The corpus folder (see `common` for the layout and this module for fields).
    """
    common.check_size(size)
    workers = default_workers(size) if workers is None else int(workers)
    return common.build_cached(
        name=NAME, size=size, seed=seed, version=VERSION,
        build_fn=lambda folder: _build(folder, size, seed, workers, progress),
        root=root, rebuild=rebuild)
