"""Small numpy/scipy synthesizer for the built-in `music` corpus.

Every sound is computed with whole-array numpy operations or scipy filters
(`lfilter` / `sosfilt`), never a per-sample Python loop, so a 10 s clip with a
few hundred notes renders in tens of milliseconds.

Timbres (`TIMBRES`, name -> `Timbre`):

    organ         additive drawbar harmonics, tremolo
    fm_epiano     2-operator FM, ratio 1, decaying index (electric piano)
    fm_bell       2-operator FM, ratio 3.5 (inharmonic bell)
    pluck         Karplus-Strong string (comb filter through `lfilter`)
    saw_lead      band-limited saw through a low-pass with a filter envelope
    square_lead   band-limited square through a low-pass
    flute         near-sine with delayed vibrato and band-passed breath noise
    pad           three detuned saws, low-passed, slow attack and release
    sine_bass     sine + 2nd harmonic, soft saturation
    synth_bass    saw bass with a fast filter envelope
    pluck_bass    dark Karplus-Strong string

Drums (`DRUMS`): kick (pitched sine sweep), snare (noise + tone), closed and
open hi-hat (high-passed noise bursts).

A timbre renders one note as ``fn(freq_hz, duration_s, sr, rng) -> [samples]``;
`Timbre.render` scales it to a common loudness. The waveform is `duration + release` long so the note's
tail rings past its note-off. Velocity and mixing gains are applied by callers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import signal

# ---------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------


def midi_to_hz(midi: float | np.ndarray) -> float | np.ndarray:
    """Equal temperament, A4 = MIDI 69 = 440 Hz."""
    return 440.0 * 2.0 ** ((np.asarray(midi, dtype=np.float64) - 69.0) / 12.0)


def num_samples(seconds: float, sr: int) -> int:
    """At least one sample, so zero-length notes never produce empty arrays."""
    return max(1, int(round(seconds * sr)))


def release_gate(n: int, duration: float, release: float, sr: int) -> np.ndarray:
    """1 until note-off, then a linear fade to 0 over `release` seconds.

    Returns:
      [n] float64 gain.
    """
    t = np.arange(n) / sr
    return np.clip(1.0 - (t - duration) / max(release, 1e-4), 0.0, 1.0)


def adsr(duration: float, sr: int, attack: float, decay: float, sustain: float,
         release: float) -> np.ndarray:
    """Attack-decay-sustain-release envelope for a note held `duration` seconds.

    The release starts from whatever level the envelope has at note-off, so a
    note shorter than attack+decay fades out smoothly instead of jumping.

    Returns:
      [num_samples(duration + release)] float64 envelope in [0, 1].
    """
    n = num_samples(duration + release, sr)
    t = np.arange(n) / sr
    ads = np.interp(t, [0.0, attack, attack + decay], [0.0, 1.0, sustain])
    return ads * release_gate(n, duration, release, sr)


def percussive(duration: float, sr: int, attack: float, tau: float,
               release: float) -> np.ndarray:
    """Short attack then exponential decay (time constant `tau`), damped at note-off.

    Returns:
      [num_samples(duration + release)] float64 envelope in [0, 1].
    """
    n = num_samples(duration + release, sr)
    t = np.arange(n) / sr
    env = np.minimum(t / max(attack, 1e-4), 1.0) * np.exp(-t / tau)
    return env * release_gate(n, duration, release, sr)


def _polyblep(t: np.ndarray, dt: np.ndarray) -> np.ndarray:
    """Polynomial band-limited step residual; removes most aliasing of a jump.

    Args:
      t: [n] phase in [0, 1).
      dt: [n] phase increment per sample (freq / sr).
    """
    out = np.zeros_like(t)
    lo = t < dt
    x = t[lo] / dt[lo]
    out[lo] = 2 * x - x * x - 1.0
    hi = t > 1.0 - dt
    x = (t[hi] - 1.0) / dt[hi]
    out[hi] = x * x + 2 * x + 1.0
    return out


def _phase(freq: float | np.ndarray, n: int, sr: int, phase0: float = 0.0
           ) -> tuple[np.ndarray, np.ndarray]:
    """Cycle phase in [0, 1) and per-sample increment for a (possibly varying) freq.

    Returns:
      ([n] phase, [n] increment), both float64.
    """
    inc = np.broadcast_to(np.asarray(freq, dtype=np.float64) / sr, (n,))
    phase = (phase0 + np.cumsum(inc) - inc[0]) % 1.0
    return phase, inc


def saw(freq: float | np.ndarray, n: int, sr: int, phase0: float = 0.0) -> np.ndarray:
    """Band-limited (PolyBLEP) sawtooth in [-1, 1]. Returns [n]."""
    t, dt = _phase(freq, n, sr, phase0)
    return 2.0 * t - 1.0 - _polyblep(t, dt)


def square(freq: float | np.ndarray, n: int, sr: int, phase0: float = 0.0) -> np.ndarray:
    """Band-limited (PolyBLEP) square wave in [-1, 1]. Returns [n]."""
    t, dt = _phase(freq, n, sr, phase0)
    naive = np.where(t < 0.5, 1.0, -1.0)
    return naive + _polyblep(t, dt) - _polyblep((t + 0.5) % 1.0, dt)


def sine_phase(freq: float | np.ndarray, n: int, sr: int) -> np.ndarray:
    """Running phase in radians of a (possibly time-varying) frequency. Returns [n]."""
    inc = np.broadcast_to(np.asarray(freq, dtype=np.float64), (n,)) * (2 * np.pi / sr)
    return np.cumsum(inc) - inc[0]


@lru_cache(maxsize=512)
def _butter_sos(kind: str, cutoff: tuple[float, ...] | float, sr: int, order: int) -> np.ndarray:
    # Cached: a clip asks for the same few filters hundreds of times.
    return signal.butter(order, cutoff, btype=kind, fs=sr, output="sos")


def _safe_cutoff(hz: float, sr: int) -> float:
    """Keeps a cutoff strictly inside (0, Nyquist) and rounds it for the cache."""
    return float(round(min(max(hz, 20.0), 0.45 * sr)))


def lowpass(x: np.ndarray, cutoff: float, sr: int, order: int = 2) -> np.ndarray:
    """Butterworth low-pass. Args: x [n]. Returns [n]."""
    return signal.sosfilt(_butter_sos("lowpass", _safe_cutoff(cutoff, sr), sr, order), x)


def highpass(x: np.ndarray, cutoff: float, sr: int, order: int = 2) -> np.ndarray:
    """Butterworth high-pass. Args: x [n]. Returns [n]."""
    return signal.sosfilt(_butter_sos("highpass", _safe_cutoff(cutoff, sr), sr, order), x)


def bandpass(x: np.ndarray, lo: float, hi: float, sr: int, order: int = 2) -> np.ndarray:
    """Butterworth band-pass. Args: x [n]. Returns [n]."""
    band = (_safe_cutoff(lo, sr), _safe_cutoff(max(hi, lo * 1.1), sr))
    return signal.sosfilt(_butter_sos("bandpass", band, sr, order), x)


def swept_lowpass(x: np.ndarray, lo: float, hi: float, env: np.ndarray, sr: int) -> np.ndarray:
    """Cheap filter envelope: crossfade between a dark and a bright low-pass.

    A true time-varying filter needs a per-sample recursion; blending two fixed
    filters with the envelope sounds close enough and stays vectorised.

    Args:
      x: [n] source; env: [n] in [0, 1], 1 = bright.
    """
    dark = lowpass(x, lo, sr)
    return dark + env * (lowpass(x, hi, sr) - dark)


def _normalize(x: np.ndarray) -> np.ndarray:
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    return x / peak if peak > 1e-9 else x


def karplus_strong(freq: float, n: int, sr: int, rng: np.random.Generator,
                   t60: float, brightness: float = 1.0) -> np.ndarray:
    """Plucked string: a noise burst recirculating through a damped, tuned delay loop.

    The loop is z^-N, a 2-tap average (half a sample of delay, the string's
    high-frequency loss) and a first-order all-pass for the fractional part of
    the period, so pitch is exact instead of rounded to whole samples. Written
    as one IIR filter, it runs in a single `lfilter` call.

    Args:
      t60: seconds for the fundamental to decay by 60 dB.
      brightness: excitation low-pass as a multiple of Nyquist (1 = raw noise).

    Returns:
      [n] float64, RMS 0.5 over the first 100 ms.
    """
    period = sr / freq
    delay = int(period - 0.6)  # keeps the all-pass delay in [0.1, 1.1): well-behaved
    frac = period - 0.5 - delay
    c = (1.0 - frac) / (1.0 + frac)
    g = 10.0 ** (-3.0 / (t60 * freq))  # loop gain per period for the wanted T60
    # 1 / (1 - g z^-N (1 + z^-1)/2 (c + z^-1)/(1 + c z^-1)), cleared of fractions.
    a = np.zeros(delay + 3)
    a[0], a[1] = 1.0, c
    a[delay] += -g * c / 2
    a[delay + 1] += -g * (1 + c) / 2
    a[delay + 2] += -g / 2
    burst = rng.uniform(-1.0, 1.0, size=delay + 1)
    if brightness < 1.0:
        burst = lowpass(burst, brightness * sr / 2, sr)
    excitation = np.zeros(n)
    m = min(n, burst.size)
    excitation[:m] = burst[:m] - burst[:m].mean()  # no DC: the loop would hold it for seconds
    y = signal.lfilter([1.0, c], a, excitation)
    # Normalise the first 100 ms by RMS, not by peak: the raw burst's peak varies a
    # lot with pitch (a short loop at high notes), its loudness much less.
    head = y[: max(delay + 1, int(0.1 * sr))]
    rms = float(np.sqrt(np.mean(head ** 2)))
    return y * (0.5 / rms) if rms > 1e-9 else y


# ---------------------------------------------------------------------------
# Timbres
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Timbre:
    """One instrument voice.

    Attributes:
      name: registry key, stored in manifests.
      words: caption phrases describing it, e.g. ("FM electric piano", ...).
      release: seconds the note rings after note-off.
      fn: (freq_hz, duration_s, sr, rng) -> [num_samples(duration + release)].
      gain: loudness calibration, so every timbre's held note has an RMS of
        about 0.45 (0.4 for basses) and a role's level does not depend on
        which instrument plays it.
    """

    name: str
    words: tuple[str, ...]
    release: float
    fn: Callable[[float, float, int, np.random.Generator], np.ndarray]
    gain: float = 1.0

    def render(self, midi: float, duration: float, sr: int, rng: np.random.Generator) -> np.ndarray:
        """Renders one note, MIDI pitch `midi`, held `duration` s.

        Returns:
          [num_samples(duration + release)] float64, RMS ~0.45 while held.
        """
        out = self.fn(float(midi_to_hz(midi)), float(duration), sr, rng)
        return self.gain * np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def _time(duration: float, release: float, sr: int) -> np.ndarray:
    return np.arange(num_samples(duration + release, sr)) / sr


def _organ(f: float, dur: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    rel = 0.08
    t = _time(dur, rel, sr)
    ratios = np.array([1, 2, 3, 4, 6, 8], dtype=np.float64)
    weights = np.array([1.0, 0.6, 0.4, 0.25, 0.15, 0.1])
    keep = ratios * f < 0.45 * sr  # drop drawbars above Nyquist instead of aliasing
    x = weights[keep] @ np.sin(2 * np.pi * f * np.outer(ratios[keep], t))
    tremolo = 1.0 + 0.06 * np.sin(2 * np.pi * 5.5 * t)
    return _normalize(x) * tremolo / 1.06 * adsr(dur, sr, 0.01, 0.08, 0.85, rel)


def _fm(f: float, t: np.ndarray, ratio: float, index: np.ndarray) -> np.ndarray:
    """Two-operator FM (phase modulation): sin(wc t + I(t) sin(wm t))."""
    return np.sin(2 * np.pi * f * t + index * np.sin(2 * np.pi * f * ratio * t))


def _fm_epiano(f: float, dur: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    rel = 0.15
    t = _time(dur, rel, sr)
    index = 1.8 * np.exp(-t / 0.25) + 0.25  # bright "bark" at the hit, mellow after
    tau = float(np.clip(1.4 * (261.6 / f) ** 0.4, 0.4, 3.0))  # high keys die faster
    x = _fm(f, t, 1.0, index)
    if 14 * f < 0.45 * sr:  # the metallic tine click of a Rhodes-style piano
        x = x + 0.15 * np.sin(2 * np.pi * 14 * f * t) * np.exp(-t / 0.015)
    return x / 1.15 * percussive(dur, sr, 0.003, tau, rel)


def _fm_bell(f: float, dur: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    rel = 0.8  # bells keep ringing after the key is released
    t = _time(dur, rel, sr)
    index = 2.0 * np.exp(-t / 0.6) + 0.2
    return _fm(f, t, 3.5, index) * percussive(dur, sr, 0.002, 1.2, rel)


def _pluck(f: float, dur: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    rel = 0.06
    n = num_samples(dur + rel, sr)
    t60 = float(np.clip(2.5 * (220.0 / f) ** 0.5, 0.6, 4.0))
    return karplus_strong(f, n, sr, rng, t60) * release_gate(n, dur, rel, sr)


def _saw_lead(f: float, dur: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    rel = 0.1
    t = _time(dur, rel, sr)
    vibrato = 1.0 + 0.003 * np.sin(2 * np.pi * 5.0 * t) * np.clip((t - 0.25) / 0.3, 0, 1)
    x = saw(f * vibrato, t.size, sr, phase0=rng.uniform())
    x = swept_lowpass(x, 2 * f, 7 * f, np.exp(-t / 0.15), sr)
    return _normalize(x) * adsr(dur, sr, 0.01, 0.1, 0.8, rel)


def _square_lead(f: float, dur: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    rel = 0.06
    t = _time(dur, rel, sr)
    x = lowpass(square(f, t.size, sr, phase0=rng.uniform()), 5 * f, sr)
    return _normalize(x) * adsr(dur, sr, 0.005, 0.05, 0.7, rel)


def _flute(f: float, dur: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    rel = 0.1
    t = _time(dur, rel, sr)
    depth = 0.004 * np.clip((t - 0.2) / 0.4, 0, 1)  # vibrato grows in, as players do
    ph = sine_phase(f * (1.0 + depth * np.sin(2 * np.pi * 5.0 * t)), t.size, sr)
    x = np.sin(ph) + 0.25 * np.sin(2 * ph) + 0.1 * np.sin(3 * ph)
    breath = bandpass(rng.standard_normal(t.size), 0.8 * f, 3.0 * f, sr)
    x = x / 1.35 + 0.08 * _normalize(breath)
    return x * adsr(dur, sr, 0.06, 0.1, 0.85, rel)


def _pad(f: float, dur: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    rel = 0.6
    t = _time(dur, rel, sr)
    detune = 2.0 ** (np.array([-7.0, 0.0, 7.0]) / 1200)  # +-7 cents: slow chorus beating
    x = sum(saw(f * d, t.size, sr, phase0=rng.uniform()) for d in detune)
    x = lowpass(x, min(4 * f, 2500.0), sr)
    return _normalize(x) * adsr(dur, sr, 0.35, 0.3, 0.8, rel)


def _sine_bass(f: float, dur: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    rel = 0.06
    t = _time(dur, rel, sr)
    x = np.sin(2 * np.pi * f * t) + 0.2 * np.sin(4 * np.pi * f * t)
    # Soft saturation adds upper harmonics so the bass is audible on small speakers.
    x = np.tanh(1.5 * x) / np.tanh(1.5 * 1.2)
    return x * adsr(dur, sr, 0.005, 0.1, 0.85, rel)


def _synth_bass(f: float, dur: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    rel = 0.05
    t = _time(dur, rel, sr)
    x = saw(f, t.size, sr, phase0=rng.uniform())
    x = swept_lowpass(x, max(2 * f, 120.0), 8 * f, np.exp(-t / 0.08), sr)
    return _normalize(x) * adsr(dur, sr, 0.003, 0.15, 0.7, rel)


def _pluck_bass(f: float, dur: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    rel = 0.06
    n = num_samples(dur + rel, sr)
    x = karplus_strong(f, n, sr, rng, t60=1.5, brightness=min(0.9, 8 * f / (sr / 2)))
    return x * release_gate(n, dur, rel, sr)


# Words are noun phrases that also work as modifiers: "a plucked string melody",
# "played on plucked string". Gains from measuring held notes across the range.
TIMBRES: dict[str, Timbre] = {t.name: t for t in (
    Timbre("organ", ("organ", "drawbar organ"), 0.08, _organ, 0.95),
    Timbre("fm_epiano", ("FM electric piano", "electric piano"), 0.15, _fm_epiano, 1.1),
    Timbre("fm_bell", ("FM bell", "bell-like FM synth"), 0.8, _fm_bell, 0.8),
    Timbre("pluck", ("plucked-string", "plucked string"), 0.06, _pluck, 1.6),
    Timbre("saw_lead", ("saw synth", "sawtooth synth"), 0.1, _saw_lead, 1.1),
    Timbre("square_lead", ("square-wave synth", "chiptune square"), 0.06, _square_lead, 0.72),
    Timbre("flute", ("synth flute", "breathy flute"), 0.1, _flute, 1.0),
    Timbre("pad", ("warm synth pad", "soft pad"), 0.6, _pad, 1.5),
    Timbre("sine_bass", ("sine bass", "deep sine bass"), 0.06, _sine_bass, 0.62),
    Timbre("synth_bass", ("synth bass", "filtered saw bass"), 0.05, _synth_bass, 1.05),
    Timbre("pluck_bass", ("plucked bass", "picked bass"), 0.06, _pluck_bass, 1.4),
)}

MELODY_TIMBRES = ("organ", "fm_epiano", "fm_bell", "pluck", "saw_lead", "square_lead", "flute")
CHORD_TIMBRES = ("pad", "organ", "fm_epiano", "pluck")
BASS_TIMBRES = ("sine_bass", "synth_bass", "pluck_bass")

# ---------------------------------------------------------------------------
# Drums
# ---------------------------------------------------------------------------


def kick(sr: int, rng: np.random.Generator) -> np.ndarray:
    """Sine sweep 145 -> 45 Hz plus a click. Returns [0.35 s], peak ~1."""
    t = np.arange(num_samples(0.35, sr)) / sr
    body = np.sin(sine_phase(45.0 + 100.0 * np.exp(-t / 0.04), t.size, sr)) * np.exp(-t / 0.18)
    click = rng.standard_normal(t.size) * np.exp(-t / 0.003)
    return _normalize(body + 0.3 * lowpass(click, 3000.0, sr))


def snare(sr: int, rng: np.random.Generator) -> np.ndarray:
    """Band-passed noise (the wires) plus a 185 Hz tone (the shell). Returns [0.25 s]."""
    t = np.arange(num_samples(0.25, sr)) / sr
    wires = bandpass(rng.standard_normal(t.size), 1200.0, 7000.0, sr) * np.exp(-t / 0.07)
    shell = np.sin(2 * np.pi * 185.0 * t) * np.exp(-t / 0.05)
    return _normalize(_normalize(wires) + 0.6 * shell)


def hihat(sr: int, rng: np.random.Generator, open_: bool = False) -> np.ndarray:
    """High-passed noise burst; open hats ring longer. Returns [0.08 or 0.3 s]."""
    length, tau = (0.3, 0.12) if open_ else (0.08, 0.02)
    t = np.arange(num_samples(length, sr)) / sr
    return _normalize(highpass(rng.standard_normal(t.size), 7000.0, sr, order=4) * np.exp(-t / tau))


DRUMS: dict[str, Callable[[int, np.random.Generator], np.ndarray]] = {
    "kick": kick,
    "snare": snare,
    "hat": hihat,
    "open_hat": lambda sr, rng: hihat(sr, rng, open_=True),
}
