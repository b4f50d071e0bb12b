"""A small ctypes binding to espeak-ng (the library shipped by `espeakng_loader`).

No system package is needed: `espeakng_loader` carries `libespeak-ng.so` and its
`espeak-ng-data` folder. The binding offers two things:

* `synthesize`: speech audio plus phoneme (IPA) and word events with exact
  sample times.
* `text_to_phonemes`: the library's own text -> IPA conversion, one string per
  clause, phonemes separated by a separator character.

espeak-ng keeps global state (current voice, parameters, the synth callback), so
every call into the library holds one module-level lock. The library is loaded
and initialised lazily, and reloaded before each synthesis (see below). Separate
processes each load their own copy.

What was checked empirically (espeak-ng 1.52, synchronous output, 22050 Hz):

* The event field `sample` is the absolute index, at the native rate, of the
  event within the current `espeak_Synth` call (it restarts at 0 on each call and
  runs on across clauses and sentences). It equals "samples delivered to the
  callback before this buffer + offset in this buffer", and every event arrives
  with the buffer that contains its sample. `audio_position` is the same instant
  in whole milliseconds (floor), so `sample` is the exact one and is what we use.
* Phoneme events carry the IPA name in `id.string` (8 bytes, not NUL-terminated
  when full). Stress marks are glued to the vowel ("ˈoʊ"). Pauses (commas, the
  end of a sentence) appear as phoneme events with an empty name; we use them
  only as the end of the phoneme before them. Rarely a modifier arrives as its
  own event (Scottish "eʲ" as "e", "ʲ"); we merge it into the phoneme before.
* A word event comes at the start of the word's first syllable: usually at its
  first phoneme, but before the previous word's final consonant when espeak
  moves that consonant into the syllable ("will measure": the event for
  "measure" precedes the "l"). `text_position` is 1-based, in characters.
  Unstressed function words get no event of their own ("in the kitchen" gives
  "in", "kitchen"); for digits the positions point into the expanded number.
* espeak-ng is not reproducible across calls by itself: its waveform generator
  keeps a static pitch-flutter phase (and a cycle counter) between utterances,
  and breathy/Klatt variants draw noise from libc `rand()`. The same call gave
  lengths differing by ~0.5% depending on what was spoken before. We reload the
  library before each synthesis and seed `rand()`, after which identical calls
  give identical samples (see `_pristine_engine`, `_seed_noise`).
* `espeak_SetVoiceByName` accepts a voice's name or file identifier ("en-us",
  "gmw/en-US") but not every language code ("en-gb" fails), and silently ignores
  an unknown "+variant". `resolve_voice` therefore maps names and language codes
  itself (from `espeak_ListVoices`) and checks variants against the data folder.
"""

from __future__ import annotations

import ctypes
import functools
import threading
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# espeak_AUDIO_OUTPUT / init options / parameters / flags (speak_lib.h).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS = 0x0001
_INIT_PHONEME_IPA = 0x0002
_PARAM_RATE, _PARAM_VOLUME, _PARAM_PITCH, _PARAM_RANGE = 1, 2, 3, 4
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_EE_OK = 0
_IPA_MODE = 0x02

# espeak_EVENT_TYPE.
EVENT_LIST_TERMINATED = 0
EVENT_WORD = 1
EVENT_SENTENCE = 2
EVENT_MARK = 3
EVENT_PLAY = 4
EVENT_END = 5
EVENT_MSG_TERMINATED = 6
EVENT_PHONEME = 7
EVENT_SAMPLERATE = 8

RATE_RANGE = (80, 450)  # words per minute accepted by espeak-ng
STRESS_MARKS = "ˈˌ"


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p),
                ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint),
                ("text_position", ctypes.c_int), ("length", ctypes.c_int),
                ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _EventId)]


class _Voice(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("languages", ctypes.c_void_p),
                ("identifier", ctypes.c_char_p), ("gender", ctypes.c_ubyte),
                ("age", ctypes.c_ubyte), ("variant", ctypes.c_ubyte),
                ("xx1", ctypes.c_ubyte), ("score", ctypes.c_int), ("spare", ctypes.c_void_p)]


_Callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.POINTER(_Event))


@dataclass(frozen=True)
class SynthResult:
    """One synthesized utterance; all times in seconds from the first sample.

    Attributes:
      audio: [samples] float32 waveform in [-1, 1] at `sample_rate`.
      sample_rate: espeak-ng's native rate (22050 Hz).
      phonemes: [P] IPA phonemes from the phoneme events, pauses excluded.
      phoneme_starts: [P] start of each phoneme, non-decreasing.
      phoneme_ends: [P] start of the next event (phoneme or pause) or the end of
        the audio for the last one.
      words: [W] the text of each word event, i.e. each phonological word; espeak
        merges unstressed function words, so one may be "in the" (see `_word_texts`).
      word_starts: [W] start of each word.
    """
    audio: np.ndarray
    sample_rate: int
    phonemes: list[str]
    phoneme_starts: list[float]
    phoneme_ends: list[float]
    words: list[str] = field(default_factory=list)
    word_starts: list[float] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return self.audio.shape[0] / self.sample_rate


class _Engine:
    """The loaded, initialised library plus the state of the current synthesis."""

    def __init__(self, voices: dict[str, str] | None = None, variants: list[str] | None = None):
        import espeakng_loader  # imported here so the package imports without it

        # RTLD_LOCAL (the default) and no other handle, so `close` really unloads it.
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        _declare(lib)
        self.data_path = Path(espeakng_loader.get_data_path())
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, str(self.data_path).encode(),
                                     _INIT_PHONEME_EVENTS | _INIT_PHONEME_IPA)
        if rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed (data at {self.data_path})")
        self.lib = lib
        self.sample_rate = int(rate)
        self.chunks: list[np.ndarray] = []
        self.events: list[tuple[int, int, int, int, bytes | int]] = []
        self.delivered = 0
        # The ctypes callback must stay referenced as long as the library may call it.
        self._callback = _Callback(self._on_audio)
        lib.espeak_SetSynthCallback(self._callback)
        self.used = False  # True once it has synthesized (its state is no longer pristine)
        self.voice_spec: str | None = None  # the loaded voice, to skip reloading it
        self.voices = voices if voices is not None else _list_voices(lib)
        self.variants = variants if variants is not None else sorted(
            p.name for p in (self.data_path / "voices" / "!v").iterdir() if p.is_file())

    def close(self) -> None:
        """Terminates and unloads the library; this object is unusable afterwards."""
        self.lib.espeak_Terminate()
        handle, self.lib = self.lib._handle, None
        _dlclose(handle)

    def _on_audio(self, wav, num_samples, events) -> int:
        # Never let an exception escape into C; returning 1 aborts synthesis.
        try:
            i = 0
            while events[i].type != EVENT_LIST_TERMINATED:
                ev = events[i]
                payload = bytes(ev.id.string) if ev.type == EVENT_PHONEME else ev.id.number
                self.events.append((ev.type, ev.sample, ev.text_position, ev.length, payload))
                i += 1
            if wav and num_samples > 0:
                self.chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
                self.delivered += num_samples
            return 0
        except Exception:  # pragma: no cover - defensive
            return 1


def _declare(lib: ctypes.CDLL) -> None:
    """Declares argument and return types of the functions we call."""
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_Callback]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                 ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_Synchronize.argtypes = []
    lib.espeak_Synchronize.restype = ctypes.c_int
    lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int,
                                          ctypes.c_int]
    lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
    if hasattr(lib, "espeak_ng_SetRandSeed"):  # espeak-ng >= 1.52
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_ng_SetRandSeed.restype = None
    lib.espeak_Terminate.argtypes = []
    lib.espeak_Terminate.restype = ctypes.c_int
    lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
    lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))


def _list_voices(lib: ctypes.CDLL) -> dict[str, str]:
    """Maps lower-cased voice names, identifiers and language codes to identifiers.

    A language code maps to the voice that lists it with the best (lowest)
    priority, so "en-gb" -> "gmw/en" and "en-us" -> "gmw/en-US".
    """
    table: dict[str, str] = {}
    best: dict[str, tuple[int, str]] = {}
    voices = lib.espeak_ListVoices(None)
    i = 0
    while voices[i]:
        v = voices[i].contents
        ident = v.identifier.decode()
        for key in (v.name.decode(), ident, ident.rsplit("/", 1)[-1]):
            table.setdefault(key.lower(), ident)
        for priority, code in _voice_languages(v.languages):
            if code not in best or priority < best[code][0]:
                best[code] = (priority, ident)
        i += 1
    for code, (_, ident) in best.items():
        table[code] = ident  # language codes win over same-named files
    return table


def _voice_languages(ptr: int) -> list[tuple[int, str]]:
    """Parses espeak_VOICE.languages: (priority byte, NUL-terminated code)*, then 0."""
    out = []
    while True:
        priority = ctypes.c_ubyte.from_address(ptr).value
        if priority == 0:
            return out
        code = ctypes.string_at(ptr + 1)
        out.append((priority, code.decode().lower()))
        ptr += 2 + len(code)


def _seed_noise(engine: _Engine) -> None:
    """Seeds the random generators that espeak-ng's noise sources draw from.

    Some variants (breathy voices, Klatt noise) call libc `rand()`, whose state
    is process-wide and outlives a library reload, and newer versions also
    have their own generator. Seeding both right before each synthesis makes
    the noise, and so the samples, reproducible. Side effect: resets libc's
    `rand()` sequence for the process (Python and numpy do not use it).
    """
    srand = _libc_srand()
    if srand is not None:
        srand(0)
    if hasattr(engine.lib, "espeak_ng_SetRandSeed"):
        engine.lib.espeak_ng_SetRandSeed(0)


@functools.cache
def _libc_srand():
    """libc's `srand` as seen by espeak-ng (the process's C library), or None."""
    try:
        srand = ctypes.CDLL(None).srand
    except (OSError, AttributeError, TypeError):  # e.g. Windows: no process-wide handle
        return None
    srand.argtypes = [ctypes.c_uint]
    srand.restype = None
    return srand


def _dlclose(handle: int) -> None:
    import _ctypes

    close = getattr(_ctypes, "dlclose", None) or getattr(_ctypes, "FreeLibrary", None)
    if close is not None:
        close(handle)


_LOCK = threading.Lock()
_ENGINE: _Engine | None = None


def _engine() -> _Engine:
    """The process's engine, created on first use. Call with `_LOCK` held."""
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = _Engine()
    return _ENGINE


def _pristine_engine() -> _Engine:
    """An engine that has not synthesized yet. Call with `_LOCK` held.

    espeak-ng's waveform generator keeps state from one utterance to the next
    that no API call resets: a function-static pitch-flutter phase, a cycle
    counter and the noise generator. The flutter phase shifts where pitch
    cycles end, so the same text gives different lengths and phoneme times
    depending on what was spoken before. Unloading the library (dlclose) and
    loading it again re-creates all of its static data, so every synthesis
    starts from the same state and is reproducible. It costs ~3 ms per call,
    mostly re-reading the voice's dictionary (about as long as speaking a
    2-second sentence). Another handle on the same library in the process (e.g.
    another espeak binding) would keep it loaded and defeat this.
    """
    global _ENGINE
    if _ENGINE is not None and _ENGINE.used:
        voices, variants = _ENGINE.voices, _ENGINE.variants
        _ENGINE.close()
        _ENGINE = None
        _ENGINE = _Engine(voices, variants)
    return _engine()


def native_sample_rate() -> int:
    """espeak-ng's output rate in Hz (22050)."""
    with _LOCK:
        return _engine().sample_rate


def available_voices() -> list[str]:
    """All names accepted as `voice` (lower-case names, identifiers, language codes)."""
    with _LOCK:
        return sorted(_engine().voices)


def available_variants() -> list[str]:
    """All variant names accepted as `variant` (files in espeak-ng-data/voices/!v)."""
    with _LOCK:
        return list(_engine().variants)


def _resolve(engine: _Engine, voice: str, variant: str | None) -> str:
    """Returns the espeak voice spec "identifier[+variant]" or raises ValueError."""
    if "+" in voice:
        if variant is not None:
            raise ValueError(f"voice {voice!r} already names a variant; do not also pass "
                             f"variant={variant!r}")
        voice, variant = voice.split("+", 1)
    ident = engine.voices.get(voice.strip().lower())
    if ident is None:
        close = [v for v in engine.voices if v.startswith(voice.strip().lower()[:2])][:12]
        raise ValueError(f"unknown espeak-ng voice {voice!r}; similar: {close} "
                         f"(all: espeak.available_voices())")
    if variant is None:
        return ident
    variant = variant.lstrip("+")
    if variant not in engine.variants:
        raise ValueError(f"unknown espeak-ng variant {variant!r}; available: "
                         f"{engine.variants}")
    return f"{ident}+{variant}"


def resolve_voice(voice: str, variant: str | None = None) -> str:
    """Maps a voice name / language code (+ optional variant) to espeak's voice spec.

    Args:
      voice: e.g. "en-us", "en-gb", "en-gb-scotland", "en-029", or "en-us+f3".
      variant: e.g. "f3", "m2", "klatt" (with or without a leading "+").

    Raises:
      ValueError: the voice or the variant is unknown (the message names it).
    """
    with _LOCK:
        return _resolve(_engine(), voice, variant)


def _set_voice(engine: _Engine, voice: str, variant: str | None,
               any_variant: bool = False) -> None:
    """Loads a voice (~1 ms: it reads the language's dictionary).

    Args:
      any_variant: the current voice may keep its variant (text -> phonemes does
        not depend on it), so a voice already loaded with some variant is reused.
    """
    spec = _resolve(engine, voice, variant)
    current = engine.voice_spec
    if current == spec or (any_variant and current is not None
                           and current.split("+", 1)[0] == spec):
        return
    engine.voice_spec = None  # unknown if loading fails part-way
    if engine.lib.espeak_SetVoiceByName(spec.encode()) != _EE_OK:
        raise ValueError(f"espeak-ng could not load voice {spec!r} (from {voice!r})")
    engine.voice_spec = spec


def _check_text(text: str) -> bytes:
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"expected non-empty text, got {text!r}")
    return text.encode("utf-8") + b"\0"


def _check_params(rate: int, pitch: int, pitch_range: int, volume: int) -> None:
    if not RATE_RANGE[0] <= rate <= RATE_RANGE[1]:
        raise ValueError(f"rate {rate} words/min is outside espeak-ng's range {RATE_RANGE}")
    for name, value, hi in (("pitch", pitch, 100), ("pitch_range", pitch_range, 100),
                            ("volume", volume, 200)):
        if not 0 <= value <= hi:
            raise ValueError(f"{name} {value} is outside [0, {hi}]")


def synthesize(text: str, voice: str = "en-us", variant: str | None = None, rate: int = 175,
               pitch: int = 50, pitch_range: int = 50, volume: int = 100) -> SynthResult:
    """Speaks `text` with espeak-ng and returns the audio with phoneme/word timings.

    Args:
      text: plain UTF-8 text (not SSML); numbers are read out by espeak.
      voice: voice name or language code, e.g. "en-us", "en-gb", "en-gb-scotland".
      variant: voice variant changing formants/pitch/synthesizer ("f3", "m2", "klatt").
      rate: speaking rate in words per minute (80..450).
      pitch: base pitch 0..100 (50 = the voice's default).
      pitch_range: pitch variation 0..100 (0 = monotone).
      volume: amplitude 0..200 (100 = default).

    Returns:
      A `SynthResult` at espeak's native rate (22050 Hz).

    Raises:
      ValueError: empty text, unknown voice or variant, parameter out of range, or
        text that produced no phonemes.
    """
    data = _check_text(text)
    _check_params(rate, pitch, pitch_range, volume)
    params = ((_PARAM_RATE, rate), (_PARAM_PITCH, pitch), (_PARAM_RANGE, pitch_range),
              (_PARAM_VOLUME, volume))
    with _LOCK:
        engine = _pristine_engine()
        chunks, events = _run_synth(engine, data, voice, variant, params)
    audio = (np.concatenate(chunks).astype(np.float32) / 32768.0 if chunks
             else np.zeros(0, np.float32))
    return _assemble(text, audio, engine.sample_rate, events)


def _run_synth(engine: _Engine, data: bytes, voice: str, variant: str | None,
               params: tuple[tuple[int, int], ...]) -> tuple[list[np.ndarray], list[tuple]]:
    """One espeak_Synth call; returns the int16 chunks and raw events. Hold `_LOCK`."""
    engine.used = True
    engine.voice_spec = None  # always load the voice: that also resets the parameters
    _set_voice(engine, voice, variant)
    for param, value in params:
        engine.lib.espeak_SetParameter(param, int(value), 0)
    engine.chunks, engine.events, engine.delivered = [], [], 0
    _seed_noise(engine)
    err = engine.lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8,
                                  None, None)
    engine.lib.espeak_Synchronize()
    chunks, events = engine.chunks, engine.events
    engine.chunks, engine.events = [], []
    if err != _EE_OK:
        raise RuntimeError(f"espeak_Synth failed with error {err}")
    return chunks, events


def _assemble(text: str, audio: np.ndarray, sample_rate: int,
              events: list[tuple[int, int, int, int, bytes | int]]) -> SynthResult:
    """Turns raw events (type, sample, text_position, length, payload) into timings."""
    n = audio.shape[0]
    marks = []  # (sample, name); name "" marks a pause, kept to end the phoneme before it
    word_events = []  # (sample, 1-based text position)
    for etype, sample, pos, _, payload in events:
        sample = min(max(int(sample), 0), n)
        if etype == EVENT_PHONEME:
            # A full 8-byte name can cut a UTF-8 character: drop the partial bytes.
            marks.append((sample, payload.split(b"\0", 1)[0].decode("utf-8", "ignore")))
        elif etype == EVENT_WORD:
            word_events.append((sample, pos))
    words = _word_texts(text, [pos for _, pos in word_events])
    word_starts = [sample / sample_rate for sample, _ in word_events]
    phonemes, starts, ends = [], [], []
    for i, (sample, name) in enumerate(marks):
        if not name:
            continue
        end = max(marks[i + 1][0] if i + 1 < len(marks) else n, sample) / sample_rate
        if phonemes and _is_modifier(name) and marks[i - 1][1]:
            # A lone modifier ("ʲ" after "e" in Scottish "eʲ") is part of the
            # previous phoneme: text_to_phonemes writes them as one unit.
            phonemes[-1] += name
            ends[-1] = end
            continue
        phonemes.append(name)
        starts.append(sample / sample_rate)
        ends.append(end)
    if not phonemes:
        raise ValueError(f"espeak-ng produced no phonemes for {text!r}")
    return SynthResult(audio=audio, sample_rate=sample_rate, phonemes=phonemes,
                       phoneme_starts=starts, phoneme_ends=ends, words=words,
                       word_starts=word_starts)


def _is_modifier(name: str) -> bool:
    """Only modifier letters / combining marks (e.g. "ʲ", "ː"), and no stress mark."""
    return all(unicodedata.category(c) in ("Lm", "Mn") and c not in STRESS_MARKS
               for c in name)


_PUNCT = " \t\n\r.,;:!?\"()[]{}"


def _word_texts(text: str, positions: list[int]) -> list[str]:
    """The text of each word event: from its position up to the next event's.

    espeak merges unstressed function words into the next phonological word
    ("in the kitchen" gives events for "in" and "kitchen" only, and the phonemes
    of "the" follow those of "in"), so a word runs until the next event and may
    hold several text words ("in the"). Positions of words read from digits are
    unreliable (espeak points into the expanded number), so for text with
    digits the slices can be off.
    """
    out = []
    for i, pos in enumerate(positions):
        end = positions[i + 1] - 1 if i + 1 < len(positions) else len(text)
        if end <= pos - 1:  # non-increasing positions (numbers): fall back to one char run
            end = len(text)
        piece = text[pos - 1:end].strip(_PUNCT)
        out.append(" ".join(piece.split()))
    return out


def text_to_phonemes(text: str, voice: str = "en-us", separator: str = "_") -> list[str]:
    """espeak-ng's text -> IPA conversion (no audio), one string per clause.

    Within a clause, words are separated by spaces and the phonemes of a word by
    `separator`; stress marks stay glued to their vowel.

    Args:
      text: plain UTF-8 text.
      voice: voice name or language code (a variant does not change phonemes).
      separator: one ASCII character put between the phonemes of a word.

    Returns:
      [clauses] strings, e.g. ["h_ə_l_ˈoʊ w_ˈɜː_l_d"] for "hello world".
    """
    if len(separator) != 1 or not separator.isascii() or separator.isspace():
        raise ValueError(f"separator must be one non-space ASCII character, got {separator!r}")
    data = _check_text(text)
    mode = _IPA_MODE | (ord(separator) << 8)  # bits 8-23: separator between phonemes
    with _LOCK:
        engine = _engine()
        _set_voice(engine, voice, None, any_variant=True)
        buf = ctypes.create_string_buffer(data)
        ptr = ctypes.c_void_p(ctypes.addressof(buf))
        clauses = []
        # espeak advances `ptr` one clause per call and sets it to NULL at the end.
        while ptr.value:
            out = engine.lib.espeak_TextToPhonemes(ctypes.byref(ptr), _CHARS_UTF8, mode)
            if out:
                clauses.append(out.decode("utf-8", "replace"))
    return clauses
