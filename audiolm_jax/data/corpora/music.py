"""The built-in `music` corpus: synthesized music with captions, notes and melody pairs.

Each *piece* (one `melody_id`) is composed from a seeded generator: a key
(12 tonics), a mode (major / minor / dorian), a tempo (60-160 bpm), a time
signature, a diatonic chord progression, a phrase-structured melody and a bass
line on the chord roots. The piece is then *rendered* several times with
different instrumentations (melody timbre always differs; chord and bass
timbres, chord comping style and drum density are re-drawn), so items sharing a
`melody_id` have identical `notes` and different sound: the pairs for melody
conditioning.

Manifest row (beyond `common`'s id / audio / sample_rate / num_samples / text)::

    caption          same as `text`, e.g. "a slow plucked-string melody in A minor
                     at 80 bpm with soft drums"
    melody_id        int, shared by the renderings of one piece
    rendering        int, index of this rendering within the piece
    instruments      {"melody": timbre, "bass": timbre, "chords": timbre?}
    comping          how the chords are played: sustain / stabs / arpeggio / strum
    key, mode        "A", "minor"
    tempo_bpm        int (quarter notes per minute)
    time_signature   "4/4", "3/4" or "6/8"
    drums            "none", "soft" or "busy"
    notes            [[onset_s, duration_s, midi_pitch, velocity, role], ...],
                     role "melody" or "bass", sorted by onset
    chords           [[onset_s, duration_s, symbol], ...], e.g. [0.0, 3.0, "Am"]

Public API: `build_music_corpus`, plus the steps it is made of
(`compose_piece`, `plan_renderings`, `render_tracks`, `mix_tracks`,
`make_caption`) for tests and for anyone who wants the stems.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from audiolm_jax.data.corpora import common
from audiolm_jax.data.corpora.synth import (
    BASS_TIMBRES,
    CHORD_TIMBRES,
    DRUMS,
    MELODY_TIMBRES,
    TIMBRES,
    num_samples,
)

NAME = "music"
VERSION = 1
SAMPLE_RATE = common.SAMPLE_RATE


@dataclass(frozen=True)
class SizeConfig:
    """How much to build: `melodies * renderings` clips of `clip_seconds` each."""

    melodies: int
    renderings: int
    clip_seconds: float
    workers: int  # processes; 1 builds in-process


SIZE_CONFIGS = {
    "tiny": SizeConfig(melodies=4, renderings=2, clip_seconds=4.0, workers=1),
    # 128 * 3 * 10 s = 3840 s: just over the one-hour floor.
    "default": SizeConfig(melodies=128, renderings=3, clip_seconds=10.0, workers=2),
}

# ---------------------------------------------------------------------------
# Music theory tables
# ---------------------------------------------------------------------------

KEY_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
SCALES = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),   # natural minor
    "dorian": (0, 2, 3, 5, 7, 9, 10),
}
MODE_PROBS = {"major": 0.45, "minor": 0.4, "dorian": 0.15}

# Progressions as 0-based scale degrees, one chord per bar, looped.
PROGRESSIONS = {
    "major": ((0, 4, 5, 3), (0, 3, 4, 0), (5, 3, 0, 4), (0, 5, 3, 4), (1, 4, 0, 0),
              (0, 3, 0, 4), (3, 0, 4, 5)),
    "minor": ((0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 6), (0, 3, 6, 2), (0, 5, 3, 4),
              (5, 6, 0, 0)),
    "dorian": ((0, 3, 0, 3), (0, 1, 0, 6), (0, 3, 6, 0), (0, 6, 3, 0)),
}

TRIAD_QUALITY = {(4, 7): "", (3, 7): "m", (3, 6): "dim", (4, 8): "aug"}


@dataclass(frozen=True)
class Meter:
    """A time signature, measured in quarter-note beats.

    Attributes:
      beats: bar length in quarter notes (6/8 = 3).
      strong: beat positions that take chord tones in the melody.
      cells: one-bar melody rhythms (durations in beats, each sums to `beats`).
      cadences: one-bar rhythms ending on a long note, for phrase ends.
      bass: pattern name -> [(position, duration, kind)], kind in
        root / fifth / octave / approach.
      drums: density -> instrument -> 16th-note steps within the bar.
    """

    beats: float
    strong: tuple[float, ...]
    cells: tuple[tuple[float, ...], ...]
    cadences: tuple[tuple[float, ...], ...]
    bass: dict
    drums: dict
    stabs: tuple[float, ...]
    strums: tuple[float, ...]


METERS = {
    "4/4": Meter(
        beats=4.0, strong=(0.0, 2.0),
        cells=((1, 1, 1, 1), (2, 1, 1), (1, 1, 2), (0.5, 0.5, 1, 2), (1.5, 0.5, 2),
               (1, 0.5, 0.5, 1, 1), (0.5, 0.5, 0.5, 0.5, 2), (3, 1), (2, 2),
               (1.5, 0.5, 1, 1), (0.5, 0.5, 0.5, 0.5, 1, 1), (0.5,) * 8),
        cadences=((1, 1, 2), (2, 2), (4,), (1.5, 0.5, 2)),
        bass={"whole": ((0, 4, "root"),),
              "half": ((0, 2, "root"), (2, 2, "fifth")),
              "quarters": ((0, 1, "root"), (1, 1, "root"), (2, 1, "octave"), (3, 1, "approach")),
              "eighths": tuple((i * 0.5, 0.5, "root") for i in range(8)),
              "push": ((0, 1.5, "root"), (1.5, 0.5, "root"), (2, 1, "fifth"), (3, 1, "root"))},
        drums={"soft": {"kick": (0, 8), "snare": (4, 12), "hat": (0, 4, 8, 12)},
               "busy": {"kick": (0, 6, 8), "snare": (4, 12), "ghost": (7, 15),
                        "hat": (0, 2, 4, 6, 8, 10, 12), "open_hat": (14,)}},
        stabs=(0, 1, 2, 3), strums=(0, 2)),
    "3/4": Meter(
        beats=3.0, strong=(0.0,),
        cells=((1, 1, 1), (2, 1), (1, 2), (1.5, 0.5, 1), (0.5, 0.5, 1, 1), (3,),
               (1, 0.5, 0.5, 1), (0.5,) * 6),
        cadences=((1, 2), (3,), (2, 1)),
        bass={"whole": ((0, 3, "root"),),
              "half": ((0, 2, "root"), (2, 1, "fifth")),
              "quarters": ((0, 1, "root"), (1, 1, "fifth"), (2, 1, "approach")),
              "eighths": tuple((i * 0.5, 0.5, "root") for i in range(6))},
        drums={"soft": {"kick": (0,), "snare": (4, 8), "hat": (0, 4, 8)},
               "busy": {"kick": (0, 6), "snare": (4, 8), "ghost": (10,),
                        "hat": (0, 2, 4, 6, 8, 10)}},
        stabs=(1, 2), strums=(0,)),
    "6/8": Meter(
        beats=3.0, strong=(0.0, 1.5),
        cells=((1.5, 1.5), (1, 0.5, 1, 0.5), (0.5, 0.5, 0.5, 1.5), (1.5, 0.5, 0.5, 0.5),
               (1, 0.5, 1.5), (0.5,) * 6, (3,)),
        cadences=((1, 0.5, 1.5), (3,), (1.5, 1.5)),
        bass={"whole": ((0, 3, "root"),),
              "half": ((0, 1.5, "root"), (1.5, 1.5, "fifth")),
              "quarters": ((0, 1, "root"), (1, 0.5, "fifth"), (1.5, 1, "octave"),
                           (2.5, 0.5, "approach")),
              "eighths": tuple((i * 0.5, 0.5, "root") for i in range(6))},
        drums={"soft": {"kick": (0,), "snare": (6,), "hat": (0, 2, 4, 6, 8, 10)},
               "busy": {"kick": (0, 4, 10), "snare": (6,), "ghost": (8,),
                        "hat": (0, 1, 2, 4, 6, 7, 8, 10)}},
        stabs=(0, 1.5), strums=(0, 1.5)),
}
METER_PROBS = {"4/4": 0.6, "3/4": 0.25, "6/8": 0.15}

MELODY_RANGE = (0, 9)      # scale degrees above the melody tonic (about an octave and a third)
CHORD_VOICING_LOW = 50     # chord tones are voiced in [50, 62): below most of the melody
BASS_HIGHEST = 50          # bass roots live in MIDI 36..50

# ---------------------------------------------------------------------------
# Data types
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Note:
    """One note; times in seconds (rounded to ms, the same values the audio uses)."""

    onset: float
    duration: float
    pitch: int
    velocity: int
    role: str

    def to_json(self) -> list:
        return [self.onset, self.duration, self.pitch, self.velocity, self.role]


@dataclass(frozen=True)
class Chord:
    """One bar's chord: symbol (e.g. "F#m") and its voicing (MIDI pitches)."""

    onset: float
    duration: float
    symbol: str
    pitches: tuple[int, ...]


@dataclass(frozen=True)
class Piece:
    """Everything shared by the renderings of one melody."""

    melody_id: int
    tonic: int            # pitch class, 0 = C
    mode: str
    tempo_bpm: int
    meter: str
    clip_seconds: float
    chords: tuple[Chord, ...]
    melody: tuple[Note, ...]
    bass: tuple[Note, ...]

    @property
    def key(self) -> str:
        return KEY_NAMES[self.tonic]

    @property
    def beat_seconds(self) -> float:
        return 60.0 / self.tempo_bpm

    @property
    def notes(self) -> list[Note]:
        """Melody and bass, sorted by onset (melody first on ties)."""
        return sorted(self.melody + self.bass, key=lambda n: (n.onset, n.role != "melody", n.pitch))


@dataclass(frozen=True)
class Rendering:
    """How one rendering of a piece sounds.

    Attributes:
      instruments: role -> timbre name; "chords" may be absent (melody + bass only).
      drums: "none", "soft" or "busy".
      comping: how chords are played: "sustain", "stabs", "arpeggio" or "strum".
    """

    index: int
    instruments: dict[str, str] = field(hash=False)
    drums: str
    comping: str


def _rng(*entropy: int) -> np.random.Generator:
    """Independent stream per (seed, melody, purpose, ...): items never share state,
    so the build is identical in any order or number of worker processes."""
    return np.random.default_rng([int(e) for e in entropy])


# ---------------------------------------------------------------------------
# Composition
# ---------------------------------------------------------------------------


def _degree_semitones(scale: tuple[int, ...], degree: int) -> int:
    """Semitones above the tonic of a (possibly negative or >7) scale degree."""
    return 12 * (degree // 7) + scale[degree % 7]


def _is_chord_tone(degree: int, chord_root: int) -> bool:
    return (degree - chord_root) % 7 in (0, 2, 4)


def _nearest_chord_tone(rng: np.random.Generator, cur: int, chord_root: int,
                        lo: int, hi: int) -> int:
    """A chord tone close to `cur`: the nearest most of the time, else the next nearest."""
    cands = [d for d in range(lo, hi + 1) if _is_chord_tone(d, chord_root)]
    cands.sort(key=lambda d: (abs(d - cur), rng.random()))
    return cands[0] if rng.random() < 0.7 or len(cands) < 2 else cands[1]


def _step(rng: np.random.Generator, cur: int, lo: int, hi: int) -> int:
    """Mostly stepwise motion in the scale, reflected back into range."""
    nxt = cur + int(rng.choice([-2, -1, 0, 1, 2], p=[0.12, 0.35, 0.06, 0.35, 0.12]))
    if nxt < lo or nxt > hi:
        nxt = 2 * cur - nxt
    return int(np.clip(nxt, lo, hi))


def _pick_cell(rng: np.random.Generator, cells, beat_seconds: float) -> tuple[float, ...]:
    """A rhythm cell whose average note length suits the tempo (~0.4 s per note)."""
    mean_s = np.array([sum(c) / len(c) * beat_seconds for c in cells])
    w = np.exp(-2.0 * np.abs(np.log(mean_s / 0.4)))
    return cells[int(rng.choice(len(cells), p=w / w.sum()))]


def _bar_melody(rng: np.random.Generator, rhythm, chord_root: int, cur: int, meter: Meter,
                cadence: bool = False) -> tuple[list[tuple[float, float, int | None]], int]:
    """Pitches for one bar: chord tones on strong beats, steps in between.

    Returns:
      ([(position_beats, duration_beats, degree or None for a rest)], last degree).
    """
    lo, hi = MELODY_RANGE
    out, pos = [], 0.0
    for i, dur in enumerate(rhythm):
        strong = pos in meter.strong or dur >= 1.5
        cur = _nearest_chord_tone(rng, cur, chord_root, lo, hi) if strong else _step(rng, cur, lo, hi)
        rest = not strong and i > 0 and rng.random() < 0.07
        out.append((pos, float(dur), None if rest else cur))
        pos += dur
    if cadence:  # resolve: end on the tonic when the chord allows, else on its root
        target = 0 if _is_chord_tone(0, chord_root) else chord_root % 7
        cands = [d for d in range(lo, hi + 1) if d % 7 == target]
        cur = min(cands, key=lambda d: abs(d - cur))
        out[-1] = (out[-1][0], out[-1][1], cur)
    return out, cur


def _transpose_bar(rng: np.random.Generator, bar, chord_root: int):
    """The same rhythm and contour moved so it starts on a chord tone: a motif
    sequence, which is what makes a melody sound composed rather than random."""
    lo, hi = MELODY_RANGE
    first = next(d for _, _, d in bar if d is not None)
    shift = _nearest_chord_tone(rng, first, chord_root, lo, hi) - first
    moved = [(p, dur, None if d is None else d + shift) for p, dur, d in bar]
    if all(d is None or lo <= d <= hi for _, _, d in moved):
        return moved
    return None


def _compose_melody(rng: np.random.Generator, meter: Meter, chord_roots: list[int],
                    beat_seconds: float) -> list[tuple[float, float, int, bool]]:
    """Four-bar phrases: motif bar A, bar B, A's contour on the new chord, cadence.

    Later phrases repeat the first two bars most of the time (AABA-like repetition).

    Returns:
      [(onset_beats, duration_beats, degree, accented)] in time order.
    """
    motif = [_pick_cell(rng, meter.cells, beat_seconds) for _ in range(2)]
    cur = int(rng.integers(2, 6))
    bars: list[list] = []
    for b, root in enumerate(chord_roots):
        phrase_bar = b % 4
        bar = None
        if phrase_bar < 2 and b >= 4 and chord_roots[b - 4] == root and rng.random() < 0.7:
            bar = bars[b - 4]
        elif phrase_bar == 2:
            bar = _transpose_bar(rng, bars[b - 2], root)
        if bar is None:
            cadence = phrase_bar == 3
            rhythm = (_pick_cell(rng, meter.cadences, beat_seconds) if cadence
                      else motif[phrase_bar % 2])
            bar, cur = _bar_melody(rng, rhythm, root, cur, meter, cadence=cadence)
        else:
            cur = next(d for _, _, d in reversed(bar) if d is not None)
        bars.append(bar)
    out = []
    for b, bar in enumerate(bars):
        for pos, dur, deg in bar:
            if deg is not None:
                out.append((b * meter.beats + pos, dur, deg, pos in meter.strong))
    return out


def _compose_bass(rng: np.random.Generator, meter: Meter, chord_roots: list[int],
                  scale: tuple[int, ...], tonic: int, tempo: int) -> list[tuple[float, float, int]]:
    """A bass pattern (whole notes ... eighth pulses) on each bar's chord root.

    Returns:
      [(onset_beats, duration_beats, midi)].
    """
    names = sorted(meter.bass)
    # Busy patterns at slow tempi sound frantic, long notes at fast tempi sound empty.
    busyness = {"whole": 0, "half": 1, "push": 2, "quarters": 2, "eighths": 3}
    pref = (tempo - 60) / 100 * 3
    w = np.array([np.exp(-abs(busyness[n] - pref)) for n in names])
    pattern = meter.bass[names[int(rng.choice(len(names), p=w / w.sum()))]]
    base = 36 + tonic

    def root_midi(root: int) -> int:
        m = base + _degree_semitones(scale, root)
        return m - 12 if m > BASS_HIGHEST else m

    out = []
    for b, root in enumerate(chord_roots):
        r = root_midi(root)
        nxt = chord_roots[(b + 1) % len(chord_roots)]
        midis = {
            "root": r,
            "fifth": r + _degree_semitones(scale, root + 4) - _degree_semitones(scale, root),
            "octave": r + 12,
            # the scale step just below the next root leads the ear into the next bar
            "approach": root_midi(nxt) - (_degree_semitones(scale, nxt) - _degree_semitones(scale, nxt - 1)),
        }
        for pos, dur, kind in pattern:
            out.append((b * meter.beats + pos, float(dur), midis[kind]))
    return out


def _chord(scale: tuple[int, ...], tonic: int, root: int) -> tuple[str, tuple[int, ...]]:
    """Diatonic triad on scale degree `root`: (symbol, voicing in [50, 62))."""
    pcs = [(tonic + _degree_semitones(scale, root + k)) % 12 for k in (0, 2, 4)]
    quality = TRIAD_QUALITY[((pcs[1] - pcs[0]) % 12, (pcs[2] - pcs[0]) % 12)]
    voicing = tuple(sorted(CHORD_VOICING_LOW + (pc - CHORD_VOICING_LOW) % 12 for pc in pcs))
    return KEY_NAMES[pcs[0]] + quality, voicing


def _clip_notes(events, clip_seconds: float, role: str) -> tuple[Note, ...]:
    """Seconds, rounded to ms; drops notes starting in the last 50 ms, cuts the rest at the end."""
    out = []
    for onset, dur, pitch, vel in events:
        onset = round(onset, 3)
        if onset < clip_seconds - 0.05:
            dur = round(max(0.03, min(dur, clip_seconds - onset)), 3)
            out.append(Note(onset, dur, int(pitch), int(vel), role))
    return tuple(out)


def compose_piece(melody_id: int, rng: np.random.Generator, clip_seconds: float) -> Piece:
    """Draws key, mode, tempo, meter, progression, melody and bass for one piece.

    Args:
      rng: the piece's own generator (see `_rng`); the only source of randomness.
      clip_seconds: length of the rendered clips; notes past it are dropped.
    """
    tonic = int(rng.integers(12))
    mode = str(rng.choice(list(MODE_PROBS), p=list(MODE_PROBS.values())))
    tempo = int(rng.integers(60, 161))
    meter_name = str(rng.choice(list(METER_PROBS), p=list(METER_PROBS.values())))
    meter, scale, spb = METERS[meter_name], SCALES[mode], 60.0 / tempo
    bar_s = meter.beats * spb
    n_bars = math.ceil(clip_seconds / bar_s)
    prog = PROGRESSIONS[mode][int(rng.integers(len(PROGRESSIONS[mode])))]
    roots = [prog[b % len(prog)] for b in range(n_bars)]

    chords = []
    for b, root in enumerate(roots):
        if b * bar_s < clip_seconds - 0.05:
            symbol, voicing = _chord(scale, tonic, root)
            dur = min(bar_s, clip_seconds - b * bar_s)
            chords.append(Chord(round(b * bar_s, 3), round(dur, 3), symbol, voicing))

    legato = rng.uniform(0.7, 0.95)  # articulation: detached ... smooth
    melody_base = 57 + (tonic - 57) % 12  # tonic between A3 and G#4
    melody = []
    for onset, dur, deg, accent in _compose_melody(rng, meter, roots, spb):
        vel = (100 if accent else 84) + rng.integers(-8, 9)
        melody.append((onset * spb, max(0.06, dur * spb * legato),
                       melody_base + _degree_semitones(scale, deg), np.clip(vel, 40, 120)))
    bass = []
    for onset, dur, midi in _compose_bass(rng, meter, roots, scale, tonic, tempo):
        vel = 92 + (8 if onset % meter.beats == 0 else 0) + rng.integers(-6, 7)
        bass.append((onset * spb, max(0.06, dur * spb * 0.88), midi, np.clip(vel, 40, 120)))

    return Piece(melody_id=melody_id, tonic=tonic, mode=mode, tempo_bpm=tempo,
                 meter=meter_name, clip_seconds=clip_seconds, chords=tuple(chords),
                 melody=_clip_notes(melody, clip_seconds, "melody"),
                 bass=_clip_notes(bass, clip_seconds, "bass"))


# ---------------------------------------------------------------------------
# Instrumentation
# ---------------------------------------------------------------------------

COMPING = {  # styles that suit each chord timbre (a pad arpeggio is mush)
    "pad": ("sustain",),
    "organ": ("sustain", "stabs"),
    "fm_epiano": ("stabs", "sustain", "arpeggio"),
    "pluck": ("arpeggio", "strum"),
}
DRUM_LEVELS = ("none", "soft", "busy")


def plan_renderings(piece: Piece, n: int, rng: np.random.Generator) -> list[Rendering]:
    """`n` instrumentations of one piece, each with a different melody timbre.

    Args:
      n: at most `len(MELODY_TIMBRES)` (7).
    """
    if not 1 <= n <= len(MELODY_TIMBRES):
        raise ValueError(f"renderings per melody must be in [1, {len(MELODY_TIMBRES)}], got {n}")
    leads = rng.choice(MELODY_TIMBRES, size=n, replace=False)
    drum_p = ((0.4, 0.45, 0.15) if piece.tempo_bpm < 80 else
              (0.15, 0.35, 0.5) if piece.tempo_bpm > 130 else (0.25, 0.4, 0.35))
    plans = []
    for i, lead in enumerate(leads):
        instruments = {"melody": str(lead), "bass": str(rng.choice(BASS_TIMBRES))}
        comping = "none"
        if rng.random() > 0.12:  # some renderings are just melody, bass (and drums)
            chord_timbre = str(rng.choice([c for c in CHORD_TIMBRES if c != lead]))
            instruments["chords"] = chord_timbre
            comping = str(rng.choice(COMPING[chord_timbre]))
        drums = str(rng.choice(DRUM_LEVELS, p=drum_p))
        plans.append(Rendering(index=i, instruments=instruments, drums=drums, comping=comping))
    return plans


# ---------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------

ROLE_GAINS = {"melody": 1.0, "bass": 0.55, "chords": 0.22, "drums": 0.6}


def _velocity_gain(velocity: float) -> float:
    return (velocity / 127.0) ** 1.6  # a rough loudness curve: soft notes really are soft


def _add(track: np.ndarray, x: np.ndarray, onset: float, gain: float, sr: int) -> None:
    """Mixes `x` into `track` at `onset` seconds, cutting whatever runs past the end."""
    i = int(round(onset * sr))
    if i >= track.size:
        return
    m = min(x.size, track.size - i)
    track[i:i + m] += gain * x[:m]


def _render_notes(events, timbre: str, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """events: [(onset_s, duration_s, midi, velocity)]. Returns [n] float64."""
    track = np.zeros(n)
    voice = TIMBRES[timbre]
    for onset, dur, midi, vel in events:
        _add(track, voice.render(midi, dur, sr, rng), onset, _velocity_gain(vel), sr)
    return track


def _comp_events(piece: Piece, comping: str) -> list[tuple[float, float, int, int]]:
    """The chord notes actually played for a comping style. Returns [(onset, dur, midi, vel)]."""
    meter, spb = METERS[piece.meter], piece.beat_seconds
    out = []
    for ch in piece.chords:
        p = ch.pitches
        if comping == "sustain":
            out += [(ch.onset, ch.duration * 0.97, m, 70) for m in p]
        elif comping == "stabs":
            for k, pos in enumerate(meter.stabs):
                out += [(ch.onset + pos * spb, 0.4 * spb, m, 82 if k == 0 else 72) for m in p]
        elif comping == "arpeggio":
            cycle = (p[0], p[1], p[2], p[0] + 12, p[2], p[1])
            for k in range(int(round(meter.beats * 2))):
                out.append((ch.onset + 0.5 * k * spb, spb, cycle[k % len(cycle)], 74 if k else 84))
        elif comping == "strum":
            for pos in meter.strums:  # 15 ms between strings, low to high
                out += [(ch.onset + pos * spb + 0.015 * j, 1.5 * spb, m, 76) for j, m in enumerate(p)]
    return [e for e in out if e[0] < piece.clip_seconds]


def _drum_events(piece: Piece, density: str, rng: np.random.Generator
                 ) -> list[tuple[float, str, float]]:
    """Drum hits from the meter's pattern, with per-bar fills when busy.

    Returns:
      [(onset_s, drum name, velocity)].
    """
    if density == "none":
        return []
    meter, step_s = METERS[piece.meter], piece.beat_seconds / 4
    steps, pattern = int(meter.beats * 4), METERS[piece.meter].drums[density]
    soft = 0.75 if density == "soft" else 1.0
    base_vel = {"kick": 105, "snare": 100, "ghost": 45, "hat": 60, "open_hat": 65}
    out = []
    for b in range(math.ceil(piece.clip_seconds / (meter.beats * piece.beat_seconds))):
        hits = {k: list(v) for k, v in pattern.items()}
        if density == "busy" and rng.random() < 0.4:  # an extra syncopated kick
            hits["kick"].append(int(rng.choice([s for s in range(steps) if s % 2 and s not in hits["kick"]])))
        if density == "busy" and rng.random() < 0.25:  # a 16th-note hat run on the last beat
            hits["hat"] += [s for s in range(steps - 4, steps) if s not in hits["hat"]]
        for name, ss in hits.items():
            for s in ss:
                accent = 12 if name == "hat" and s % 4 == 0 else 0
                vel = (base_vel[name] + accent + rng.integers(-6, 7)) * soft
                out.append(((b * steps + s) * step_s, name, float(vel)))
    return [e for e in out if e[0] < piece.clip_seconds]


def render_tracks(piece: Piece, rendering: Rendering, rng: np.random.Generator,
                  sr: int = SAMPLE_RATE) -> dict[str, np.ndarray]:
    """Renders each role of one rendering separately (stems), before gains.

    Returns:
      role -> [num_samples(piece.clip_seconds)] float64; roles "melody", "bass",
      and "chords" / "drums" when the rendering has them.
    """
    n = num_samples(piece.clip_seconds, sr)
    inst = rendering.instruments
    as_events = lambda notes: [(x.onset, x.duration, x.pitch, x.velocity) for x in notes]
    tracks = {
        "melody": _render_notes(as_events(piece.melody), inst["melody"], n, sr, rng),
        "bass": _render_notes(as_events(piece.bass), inst["bass"], n, sr, rng),
    }
    if "chords" in inst:
        tracks["chords"] = _render_notes(_comp_events(piece, rendering.comping),
                                         inst["chords"], n, sr, rng)
    hits = _drum_events(piece, rendering.drums, rng)
    if hits:
        # One sample per drum per rendering, like a drum machine; ghost notes are quiet snares.
        kit = {name: fn(sr, rng) for name, fn in DRUMS.items()}
        kit["ghost"] = kit["snare"]
        drums = np.zeros(n)
        for onset, name, vel in hits:
            _add(drums, kit[name], onset, _velocity_gain(vel), sr)
        tracks["drums"] = drums
    return tracks


def mix_tracks(tracks: dict[str, np.ndarray], sr: int = SAMPLE_RATE, peak: float = 0.9) -> np.ndarray:
    """Sums stems with `ROLE_GAINS`, soft-limits with tanh, peak-normalises.

    The mix is first scaled to a fixed RMS so the tanh acts as the same gentle
    limiter on every clip (it squashes drum transients, not the sustained
    melody), then rescaled so the loudest sample is `peak`.

    Returns:
      [samples] float32 in [-peak, peak], finite.
    """
    # A bad stem (NaN/inf) is silenced on its own instead of poisoning the whole mix.
    mix = sum(ROLE_GAINS[role] * np.nan_to_num(np.asarray(x, dtype=np.float64), nan=0.0,
                                               posinf=0.0, neginf=0.0)
              for role, x in tracks.items())
    n = mix.size
    fade_in, fade_out = min(n, int(0.005 * sr)), min(n, int(0.05 * sr))
    mix[:fade_in] *= np.linspace(0.0, 1.0, fade_in)      # no click at the start ...
    mix[n - fade_out:] *= np.linspace(1.0, 0.0, fade_out)  # ... nor where notes are cut
    rms = float(np.sqrt(np.mean(mix ** 2)))
    if rms < 1e-9:
        return np.zeros(n, dtype=np.float32)
    limited = np.tanh(mix * (0.3 / rms))
    return (limited * (peak / np.max(np.abs(limited)))).astype(np.float32)


# ---------------------------------------------------------------------------
# Captions
# ---------------------------------------------------------------------------

MOODS = {"major": ("happy", "bright", "cheerful", "uplifting"),
         "minor": ("melancholic", "sad", "dark", "moody"),
         "dorian": ("wistful", "mellow", "soulful")}
DRUM_WORDS = {"none": ("no drums", "no percussion"),
              "soft": ("soft drums", "light drums", "gentle percussion"),
              "busy": ("busy drums", "energetic drums", "a driving drum beat")}
NOUNS = ("melody", "tune", "theme", "piece")
METER_WORDS = {"4/4": ("", "4/4"), "3/4": ("waltz-time", "3/4"), "6/8": ("lilting 6/8", "6/8")}
COMPING_WORDS = {"sustain": "sustained {} chords", "stabs": "short {} stabs",
                 "arpeggio": "arpeggiated {}", "strum": "strummed {} chords", }
TEMPLATES = (
    "a {tempo} {lead} {noun} in {key} at {bpm} bpm with {drums}",
    "{tempo} {lead} {noun} in {key}, {bpm} bpm, {drums} and a {bass}",
    "{mood} {noun} in {key} played on {lead}, {tempo} at {bpm} bpm, with {chords} and {drums}",
    "{key} {noun}, {mood} and {tempo} ({bpm} bpm): {lead} lead, {chords}, a {bass}, {drums}",
    "a {tempo}, {mood} {meter} {noun} in {key} at {bpm} bpm: {lead} over {chords}, {drums}",
    "{lead} {noun}, {key}, {bpm} bpm, {tempo} and {mood}, with a {bass} and {drums}",
)


def tempo_word(bpm: int) -> str:
    """slow (< 80) / moderate (< 110) / upbeat (< 135) / fast."""
    return "slow" if bpm < 80 else "moderate" if bpm < 110 else "upbeat" if bpm < 135 else "fast"


def key_name(piece: Piece) -> str:
    """E.g. "A minor", "D major", "E dorian"."""
    return f"{piece.key} {piece.mode}"


def make_caption(piece: Piece, rendering: Rendering, rng: np.random.Generator) -> str:
    """A caption from the parameters; always names the key, the tempo word and the bpm.

    E.g. "a slow plucked-string melody in A minor at 80 bpm with soft drums".
    """
    pick = lambda options: str(options[int(rng.integers(len(options)))])
    inst = rendering.instruments
    chords = (COMPING_WORDS[rendering.comping].format(pick(TIMBRES[inst["chords"]].words))
              if "chords" in inst else "")
    words = {
        "tempo": tempo_word(piece.tempo_bpm), "mood": pick(MOODS[piece.mode]),
        "lead": pick(TIMBRES[inst["melody"]].words), "noun": pick(NOUNS),
        "key": key_name(piece), "bpm": piece.tempo_bpm, "drums": pick(DRUM_WORDS[rendering.drums]),
        "bass": pick(TIMBRES[inst["bass"]].words), "chords": chords,
        "meter": pick(METER_WORDS[piece.meter]),
    }
    # Only templates that fit: "over no chords" is not a phrase.
    templates = [t for t in TEMPLATES if "chords" in inst or "{chords}" not in t]
    text = " ".join(pick(templates).format(**words).split())  # collapses an empty {meter}
    return re.sub(r"\ba (?=[aeiou]|FM\b)", "an ", text)  # "an upbeat", "an FM bell"


# ---------------------------------------------------------------------------
# Corpus
# ---------------------------------------------------------------------------


def manifest_fields(piece: Piece, rendering: Rendering, caption: str) -> dict:
    """The music-specific manifest fields (see the module docstring)."""
    return {
        "caption": caption, "melody_id": piece.melody_id, "rendering": rendering.index,
        "instruments": dict(rendering.instruments), "comping": rendering.comping,
        "key": piece.key, "mode": piece.mode, "tempo_bpm": piece.tempo_bpm,
        "time_signature": piece.meter, "drums": rendering.drums,
        "notes": [n.to_json() for n in piece.notes],
        "chords": [[c.onset, c.duration, c.symbol] for c in piece.chords],
    }


def item_id(melody_id: int, rendering: int) -> str:
    return f"music_{melody_id:05d}_r{rendering}"


def _build_melody(job: tuple[Path, int, int, SizeConfig]) -> list[dict]:
    """Composes one piece and writes all its renderings. Runs in worker processes."""
    corpus_dir, seed, melody_id, cfg = job
    piece = compose_piece(melody_id, _rng(seed, melody_id, 0), cfg.clip_seconds)
    rows = []
    for plan in plan_renderings(piece, cfg.renderings, _rng(seed, melody_id, 1)):
        audio = mix_tracks(render_tracks(piece, plan, _rng(seed, melody_id, 2, plan.index)))
        caption = make_caption(piece, plan, _rng(seed, melody_id, 3, plan.index))
        rows.append(common.write_item(corpus_dir, item_id(melody_id, plan.index), audio,
                                      SAMPLE_RATE, caption, **manifest_fields(piece, plan, caption)))
    return rows


def build_music_corpus(size: str = "default", seed: int = 0,
                       root: str | os.PathLike | None = None, rebuild: bool = False,
                       progress: bool = True, workers: int | None = None) -> Path:
    """Builds (or finds in the cache) the synthesized music corpus; returns its folder.

    Args:
      size: "tiny" (4 melodies x 2 renderings x 4 s) or "default"
        (128 melodies x 3 renderings x 10 s = 3840 s).
      seed: non-negative; the same seed gives identical manifests and audio.
      root: cache folder (see `common.build_cached`).
      rebuild: build even when cached.
      progress: show a tqdm bar over melodies.
      workers: processes (default: the size's, at most the CPU count). Output is
        the same for any value: every melody has its own random streams and
        rows are collected in melody order.
    """
    common.check_size(size)
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    cfg = SIZE_CONFIGS[size]
    workers = max(1, min(workers or cfg.workers, os.cpu_count() or 1, cfg.melodies))

    def build(corpus_dir: Path) -> list[dict]:
        jobs = [(corpus_dir, seed, m, cfg) for m in range(cfg.melodies)]
        bar = tqdm(total=len(jobs), desc=f"music corpus ({size})", unit="melody",
                   disable=not progress)
        rows: list[dict] = []
        with bar:
            if workers == 1:
                results = map(_build_melody, jobs)
                pool = None
            else:
                # spawn, not fork: the parent may hold JAX / thread pools that fork breaks.
                pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
                results = pool.map(_build_melody, jobs, chunksize=1)  # ordered
            try:
                for melody_rows in results:
                    rows.extend(melody_rows)
                    bar.update(1)
            finally:
                if pool is not None:
                    pool.shutdown(cancel_futures=True)
        return rows

    return common.build_cached(name=NAME, size=size, seed=seed, version=VERSION,
                               build_fn=build, root=root, rebuild=rebuild)
