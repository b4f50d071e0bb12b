"""The built-in `music` corpus: layout, melody pairs, determinism, and that the
notes in the manifest are really what the audio plays."""

from collections import defaultdict

import librosa
import numpy as np
import pytest
import soundfile as sf

from audiolm_jax.data.corpora import music as M
from audiolm_jax.data.corpora import synth
from audiolm_jax.data.corpora.common import SAMPLE_RATE, read_info, read_manifest

SR = SAMPLE_RATE
FIELDS = {"id", "audio", "sample_rate", "num_samples", "text", "caption", "melody_id",
          "rendering", "instruments", "key", "mode", "tempo_bpm", "time_signature", "drums",
          "notes", "chords", "comping"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(corpus folder, manifest rows) of the tiny corpus, seed 0, built once per module."""
    folder = M.build_music_corpus("tiny", seed=0, root=tmp_path_factory.mktemp("corpora"),
                                  progress=False)
    return folder, read_manifest(folder)


def _load(folder, row) -> np.ndarray:
    audio, sr = sf.read(folder / row["audio"], dtype="float32")
    assert sr == SR
    return audio


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


# ---------------------------------------------------------------------------
# Synth
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(synth.TIMBRES))
def test_timbre_is_in_tune_and_finite(name):
    midi = 40 if "bass" in name else 69
    x = synth.TIMBRES[name].render(midi, 0.6, SR, np.random.default_rng(0))
    assert x.ndim == 1 and x.size == synth.num_samples(0.6 + synth.TIMBRES[name].release, SR)
    assert np.all(np.isfinite(x)) and 0.05 < np.abs(x).max() < 5
    # Strongest spectral peak within half an octave of the note is the note itself
    # (a peak test, not YIN: the FM bell's partials are deliberately inharmonic).
    seg = x[int(0.1 * SR):int(0.5 * SR)] * np.hanning(int(0.4 * SR))
    spec = np.abs(np.fft.rfft(seg, 1 << 17))
    freqs = np.fft.rfftfreq(1 << 17, 1 / SR)
    f0 = float(synth.midi_to_hz(midi))
    band = (freqs > f0 / 1.41) & (freqs < f0 * 1.41)
    peak = freqs[band][np.argmax(spec[band])]
    assert abs(1200 * np.log2(peak / f0)) < 10, f"{name}: peak {peak:.1f} Hz for {f0:.1f} Hz"


def test_drums_are_finite():
    for name, fn in synth.DRUMS.items():
        x = fn(SR, np.random.default_rng(0))
        assert np.all(np.isfinite(x)) and np.isclose(np.abs(x).max(), 1.0), name


# ---------------------------------------------------------------------------
# Corpus layout and pairs
# ---------------------------------------------------------------------------


def test_rows_and_info(tiny):
    folder, rows = tiny
    cfg = M.SIZE_CONFIGS["tiny"]
    assert len(rows) == cfg.melodies * cfg.renderings
    info = read_info(folder)
    assert info["num_items"] == len(rows) and info["bytes"] > 0
    assert info["total_seconds"] == pytest.approx(len(rows) * cfg.clip_seconds)
    for row in rows:
        assert FIELDS <= set(row), FIELDS - set(row)
        assert row["text"] == row["caption"]
        assert (folder / row["audio"]).with_suffix(".txt").read_text().strip() == row["text"]
        assert row["key"] in M.KEY_NAMES and row["mode"] in M.SCALES
        assert 60 <= row["tempo_bpm"] <= 160 and row["drums"] in M.DRUM_LEVELS
        assert set(row["instruments"]) <= {"melody", "bass", "chords"}
        assert all(t in synth.TIMBRES for t in row["instruments"].values())
        assert {n[4] for n in row["notes"]} == {"melody", "bass"}
        for onset, dur, pitch, vel, _ in row["notes"]:
            assert 0 <= onset < cfg.clip_seconds and 0 < dur <= cfg.clip_seconds - onset + 1e-6
            assert 24 <= pitch <= 96 and 1 <= vel <= 127
        assert [n[0] for n in row["notes"]] == sorted(n[0] for n in row["notes"])
        assert row["chords"] and all(isinstance(c[2], str) for c in row["chords"])


def test_melody_pairs_share_notes_not_instruments(tiny):
    _, rows = tiny
    groups = defaultdict(list)
    for row in rows:
        groups[row["melody_id"]].append(row)
    assert len(groups) == M.SIZE_CONFIGS["tiny"].melodies
    for group in groups.values():
        assert len(group) >= 2
        assert sorted(r["rendering"] for r in group) == list(range(len(group)))
        first = group[0]
        for other in group[1:]:
            assert other["notes"] == first["notes"] and other["chords"] == first["chords"]
            assert (other["key"], other["mode"], other["tempo_bpm"]) == \
                (first["key"], first["mode"], first["tempo_bpm"])
        leads = [r["instruments"]["melody"] for r in group]
        assert len(set(leads)) == len(leads), "each rendering needs its own melody timbre"


def test_audio_is_readable_and_sane(tiny):
    folder, rows = tiny
    for row in rows:
        info = sf.info(folder / row["audio"])
        assert info.samplerate == SR and info.channels == 1 and info.frames == row["num_samples"]
        audio = _load(folder, row)
        assert np.all(np.isfinite(audio))
        assert 0.5 < np.abs(audio).max() <= 1.0  # peak-normalised to ~0.9
        assert np.sqrt(np.mean(audio ** 2)) > 0.02  # non-silent


def test_captions_mention_key_and_tempo(tiny):
    _, rows = tiny
    for row in rows:
        cap = row["caption"]
        assert f"{row['key']} {row['mode']}" in cap
        assert f"{row['tempo_bpm']} bpm" in cap
        assert M.tempo_word(row["tempo_bpm"]) in cap
        assert " a upbeat" not in cap and "  " not in cap
    assert len({r["caption"] for r in rows}) == len(rows)


# ---------------------------------------------------------------------------
# Determinism
# ---------------------------------------------------------------------------


def test_same_seed_same_corpus_other_seed_differs(tiny, tmp_path):
    folder, rows = tiny
    again = M.build_music_corpus("tiny", seed=0, root=tmp_path / "a", progress=False)
    assert read_manifest(again) == rows
    for row in rows:
        np.testing.assert_array_equal(_load(again, row), _load(folder, row))
    other = read_manifest(M.build_music_corpus("tiny", seed=1, root=tmp_path / "b",
                                               progress=False))
    assert [r["notes"] for r in other] != [r["notes"] for r in rows]
    assert [r["caption"] for r in other] != [r["caption"] for r in rows]


def test_workers_do_not_change_output(tmp_path):
    """In-process and a 2-process pool give the same bytes in the same order."""
    one = M.build_music_corpus("tiny", seed=3, root=tmp_path / "one", progress=False, workers=1)
    two = M.build_music_corpus("tiny", seed=3, root=tmp_path / "two", progress=False, workers=2)
    assert read_manifest(one) == read_manifest(two)
    for row in read_manifest(one):
        assert (one / row["audio"]).read_bytes() == (two / row["audio"]).read_bytes()


def test_cached_corpus_is_reused(tiny):
    folder, _ = tiny
    stamp = (folder / "info.json").stat().st_mtime_ns
    assert M.build_music_corpus("tiny", seed=0, root=folder.parent, progress=False) == folder
    assert (folder / "info.json").stat().st_mtime_ns == stamp


# ---------------------------------------------------------------------------
# The music is what the manifest says
# ---------------------------------------------------------------------------


def _chroma(audio: np.ndarray) -> np.ndarray:
    """[12] mean CQT chroma from C2 up: fine enough pitch resolution for the bass."""
    c = librosa.feature.chroma_cqt(y=audio, sr=SR, hop_length=2048, tuning=0.0,
                                   fmin=librosa.note_to_hz("C2"), n_octaves=6)
    return c.mean(axis=1)


def test_chroma_matches_key_and_notes(tiny):
    folder, rows = tiny
    notes_best = 0
    for row in rows:
        chroma = _chroma(_load(folder, row))
        tonic = M.KEY_NAMES.index(row["key"])
        scale = np.zeros(12)
        scale[[(tonic + s) % 12 for s in M.SCALES[row["mode"]]]] = 1
        by_key = np.array([_corr(chroma, np.roll(scale, k)) for k in range(12)])
        # The key's scale beats the tritone key (2 shared notes) and other keys on average.
        assert by_key[0] - by_key[6] > 0.3, (row["id"], by_key)
        assert by_key[0] > by_key[1:].mean() + 0.2, (row["id"], by_key)
        # The manifest's notes (duration-weighted pitch classes) line up with the audio
        # better untransposed than transposed.
        hist = np.zeros(12)
        for _, dur, pitch, _, _ in row["notes"]:
            hist[pitch % 12] += dur
        by_shift = [_corr(chroma, np.roll(hist, k)) for k in range(12)]
        notes_best += int(np.argmax(by_shift) == 0)
    assert notes_best >= 0.75 * len(rows)


def _band_peak(spec: np.ndarray, hz: float, width: float) -> float:
    """Max of a [1 << 15 + 1] magnitude spectrum within hz * (1 +- width)."""
    freqs = np.fft.rfftfreq(1 << 16, 1 / SR)
    return float(spec[(freqs > hz * (1 - width)) & (freqs < hz * (1 + width))].max())


def test_melody_note_pitch_in_the_mix(tiny):
    """Over a long melody note, the note's f0 stands out of the mix's spectrum
    (quarter-tones away there is only leakage: no note is ever tuned there)."""
    folder, rows = tiny
    checked = 0
    for row in rows:
        # The note with the most cycles, if it has enough (>= 100 in the window)
        # for a quarter-tone to lie outside the Hann window's main lobe.
        cycles = lambda n: 0.6 * n[1] * float(synth.midi_to_hz(n[2]))
        onset, dur, pitch, _, _ = max((n for n in row["notes"] if n[4] == "melody"), key=cycles)
        if cycles((onset, dur, pitch)) < 100:
            continue
        audio = _load(folder, row)
        a, b = int((onset + 0.2 * dur) * SR), int((onset + 0.8 * dur) * SR)
        spec = np.abs(np.fft.rfft(audio[a:b] * np.hanning(b - a), 1 << 16))
        f0 = float(synth.midi_to_hz(pitch))
        off = max(_band_peak(spec, f0 * 2 ** (0.5 / 12), 0.007),
                  _band_peak(spec, f0 * 2 ** (-0.5 / 12), 0.007))
        assert _band_peak(spec, f0, 0.015) > 2.0 * off, (row["id"], pitch)
        checked += 1
    assert checked >= len(rows) // 2


@pytest.mark.parametrize("lead", [t for t in synth.MELODY_TIMBRES if t != "fm_bell"])
def test_melody_stem_follows_notes(lead):
    """YIN on the melody stem alone tracks every sustained note within 35 cents."""
    piece = M.compose_piece(5, M._rng(0, 5, 0), clip_seconds=4.0)
    plan = M.Rendering(index=0, instruments={"melody": lead, "bass": "sine_bass"},
                       drums="none", comping="none")
    stem = M.render_tracks(piece, plan, M._rng(0, 5, 2, 0))["melody"].astype(np.float32)
    hop = 256
    f0 = librosa.yin(stem, fmin=150, fmax=1500, sr=SR, frame_length=2048, hop_length=hop)
    checked = 0
    for note in piece.melody:
        if note.duration < 0.15:
            continue
        # Middle of the note, away from the attack and from the next note's onset.
        a = int((note.onset + 0.05) * SR / hop) + 4
        b = int((note.onset + note.duration) * SR / hop) - 4
        if b <= a:
            continue
        est = np.median(f0[a:b])
        cents = 1200 * np.log2(est / synth.midi_to_hz(note.pitch))
        assert abs(cents) < 35, (lead, note, est)
        checked += 1
    assert checked >= 3


def test_mix_never_nan_and_peaks_at_0_9():
    n = SR
    silent = M.mix_tracks({"melody": np.zeros(n)})
    assert np.all(silent == 0)
    loud = M.mix_tracks({"melody": np.full(n, 1e6), "drums": np.full(n, np.nan)})
    assert np.all(np.isfinite(loud)) and np.abs(loud).max() == pytest.approx(0.9, abs=1e-6)
