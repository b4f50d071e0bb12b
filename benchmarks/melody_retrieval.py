r"""Held-out melody retrieval across instrumentations, against chance and hand-made features.

    python benchmarks/melody_retrieval.py --export runs/melody_tiny/export [--fraction 0.15]

Two tasks on the melodies the trainer held out (`split_holdout_groups` by
`melody_id`, same fraction and seed):

1. **across renderings**: every aligned window (offsets 0, 3, 6 s) of every
   held-out clip queries all other windows; the other renderings of its melody
   at the same offset are relevant (the trainer's held-out metric).
2. **whistled query**: the melody line alone, re-synthesized with a plain sine
   timbre and no bass, chords or drums (the notes of the piece, as a hum or a
   whistle would give them), queries the full mixes; the mixes of its melody at
   its offset are relevant. The model never trained on melody-only audio.

Baselines on the same windows: cosine between the time-aligned sequences of
(a) chroma and (b) the peak-relative log semitone frames the model reads.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from tqdm.auto import tqdm

from audiolm_jax.audio.io import resample
from audiolm_jax.audio.pitch import chroma, relative_log_semitones, semitone_magnitude
from audiolm_jax.data.corpora import music
from audiolm_jax.data.pipeline import BadFileReport
from audiolm_jax.data.sources import ManifestSource, split_holdout_groups
from audiolm_jax.eval.retrieval import chance_metrics, metrics_table, retrieval_metrics
from audiolm_jax.tokenizers.mulan import MelodyTokenizer
from train.melody import EVAL_OFFSETS_SECONDS, held_out_windows

WHISTLE_TIMBRE = "sine_bass"   # a plain sine voice: the closest synth to a hum or a whistle


def sequence_features(windows: np.ndarray, sample_rate: int, kind: str) -> np.ndarray:
    """[N, S] -> [N, frames * bins] unit vectors of time-aligned pitch frames."""
    out = []
    for w in windows:
        mag = np.asarray(semitone_magnitude(w[None], sample_rate))[0]
        frames = (np.asarray(chroma(mag, 36)) if kind == "chroma"
                  else np.asarray(relative_log_semitones(mag)))
        frames = frames - frames.mean(axis=1, keepdims=True)
        v = frames.reshape(-1)
        out.append(v / (np.linalg.norm(v) + 1e-8))
    return np.stack(out)


def whistled_windows(source, labels_of_group, sample_rate: int, window: int, corpus_seed: int,
                     clip_seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """The melody line of each held-out piece on a sine voice, at the evaluation offsets."""
    windows, labels = [], []
    melody_ids = sorted({int(source[i]["melody_id"]) for i in range(len(source))})
    for melody_id in tqdm(melody_ids, desc="whistled queries"):
        piece = music.compose_piece(melody_id, music._rng(corpus_seed, melody_id, 0),
                                    clip_seconds)
        plan = music.Rendering(index=99, instruments={"melody": WHISTLE_TIMBRE,
                                                      "bass": WHISTLE_TIMBRE},
                               drums="none", comping="sustain")
        track = music.render_tracks(piece, plan, np.random.default_rng(melody_id))["melody"]
        track = 0.5 * track / (np.max(np.abs(track)) + 1e-8)
        audio = resample(track[:, None].astype(np.float32), music.SAMPLE_RATE, sample_rate)[:, 0]
        for k, offset in enumerate(EVAL_OFFSETS_SECONDS):
            start = int(offset * sample_rate)
            if start + window <= len(audio):
                windows.append(audio[start:start + window])
                labels.append(labels_of_group(melody_id, k))
    return np.stack(windows), np.asarray(labels)


def score(query: np.ndarray, candidates: np.ndarray, q_labels, c_labels, exclude_self: bool):
    sim = query @ candidates.T
    relevant = q_labels[:, None] == c_labels[None, :]
    if exclude_self:
        n = len(q_labels)
        others = ~np.eye(n, dtype=bool)
        sim, relevant = sim[others].reshape(n, n - 1), relevant[others].reshape(n, n - 1)
    keep = relevant.any(axis=1)
    return sim[keep], relevant[keep]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--export", required=True, help="a melody-embedder export")
    parser.add_argument("--corpus_size", default="default")
    parser.add_argument("--corpus_seed", type=int, default=0)
    parser.add_argument("--fraction", type=float, default=0.15)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    model = MelodyTokenizer.load(args.export, require_rvq=False)
    cfg = model.config
    source = ManifestSource(music.build_music_corpus(args.corpus_size, seed=args.corpus_seed))
    _, held = split_holdout_groups(source, "melody_id", args.fraction, seed=args.seed)
    mixes, labels = held_out_windows(held, cfg, "melody_id", BadFileReport())
    label = lambda melody_id, k: melody_id * len(EVAL_OFFSETS_SECONDS) + k
    whistles, whistle_labels = whistled_windows(held, label, cfg.sample_rate, cfg.clip_samples,
                                                args.corpus_seed,
                                                music.SIZE_CONFIGS[args.corpus_size].clip_seconds)

    features = {"model": lambda w: model.embed_window_batch(w),
                "chroma sequence": lambda w: sequence_features(w, cfg.sample_rate, "chroma"),
                "semitone sequence": lambda w: sequence_features(w, cfg.sample_rate, "semitone")}
    across, whistled = {}, {}
    for name, fn in features.items():
        mix_embed = fn(mixes)
        sim, rel = score(mix_embed, mix_embed, labels, labels, exclude_self=True)
        across.setdefault("chance", chance_metrics(rel))
        across[name] = retrieval_metrics(sim, rel)
        sim, rel = score(fn(whistles), mix_embed, whistle_labels, labels, exclude_self=False)
        whistled.setdefault("chance", chance_metrics(rel))
        whistled[name] = retrieval_metrics(sim, rel)

    print(f"\nheld-out: {len(mixes)} windows ({cfg.clip_seconds:g} s at offsets "
          f"{', '.join(f'{o:g}' for o in EVAL_OFFSETS_SECONDS)} s) of {len(held)} clips; "
          f"{len(whistles)} whistled queries\n")
    print("across renderings (mix -> other mixes)\n" + metrics_table(across) + "\n")
    print("whistled melody -> full mixes\n" + metrics_table(whistled))


if __name__ == "__main__":
    main()
