r"""PNMI baseline: k-means on raw log-mel frames of the built-in speech corpus.

    .venv/bin/python benchmarks/pnmi_logmel_baseline.py [--ks 100 500 1024] [--steps 300]

The floor any semantic encoder's tokens must clear (issue 4): 80-band log-mel
frames at 50 Hz (hop 480 at 24 kHz, 1024-point FFT), standardized with the
training split's mean and variance, clustered with mini-batch k-means on the
training clips; PNMI, phone purity and cluster purity on the held-out 5 % of
clips (`split_holdout`, seed 0), phones from espeak's alignment with stress
marks removed and uncovered frames labelled "sil".
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import numpy as np
from tqdm.auto import tqdm

from audiolm_jax.audio.io import load_audio
from audiolm_jax.audio.spectral import log_mel_spectrogram
from audiolm_jax.data.corpora import build_corpus
from audiolm_jax.data.sources import ManifestSource, split_holdout
from audiolm_jax.eval.phonetic import frame_phone_labels, phonetic_scores
from audiolm_jax.quantization.minibatch_kmeans import fit_minibatch_kmeans

SAMPLE_RATE, HOP = 24_000, 480
FRAME_RATE = SAMPLE_RATE / HOP


def frames_and_labels(source, vocab: dict[str, int], desc: str):
    """Per-clip (log-mel [F, 80], phone ids [F]) for every record of `source`."""
    featurize = jax.jit(lambda a: log_mel_spectrogram(a, SAMPLE_RATE, n_fft=1024,
                                                      hop_length=HOP, n_mels=80))
    out = []
    for i in tqdm(range(len(source)), desc=desc):
        record = source[i]
        audio, _ = load_audio(record["path"], SAMPLE_RATE)
        audio = audio[:, 0]
        # Pad to whole seconds so jit compiles once per length bucket, not per clip;
        # with center=True the clip itself has 1 + len // HOP frames.
        padded = np.pad(audio, (0, -len(audio) % SAMPLE_RATE))
        mel = np.asarray(featurize(padded))[:1 + len(audio) // HOP]
        labels = frame_phone_labels(record["phonemes"], record["phoneme_starts"],
                                    record["phoneme_ends"], mel.shape[0], FRAME_RATE, vocab)
        out.append((mel, labels))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ks", type=int, nargs="+", default=[100, 500, 1024])
    parser.add_argument("--steps", type=int, default=300, help="mini-batch k-means updates")
    parser.add_argument("--batch", type=int, default=8192, help="frames per k-means batch")
    args = parser.parse_args()

    source = ManifestSource(build_corpus("speech", size="default"))
    train, held_out = split_holdout(source, 0.05, seed=0)
    vocab: dict[str, int] = {}
    train_data = frames_and_labels(train, vocab, "train clips")
    test_data = frames_and_labels(held_out, vocab, "held-out clips")
    train_x = np.concatenate([m for m, _ in train_data])
    mean, std = train_x.mean(0), train_x.std(0) + 1e-5
    train_x = (train_x - mean) / std
    test_x = (np.concatenate([m for m, _ in test_data]) - mean) / std
    test_phones = np.concatenate([p for _, p in test_data])
    print(f"{len(train)} train clips ({len(train_x)} frames), {len(held_out)} held-out clips "
          f"({len(test_x)} frames), {len(vocab)} phone labels")

    def batches(seed: int):
        rng = np.random.default_rng(seed)
        while True:
            yield train_x[rng.integers(0, len(train_x), args.batch)]

    print("\n| features | k | PNMI | phone purity | cluster purity | fit s |\n"
          "|---|---:|---:|---:|---:|---:|")
    for k in args.ks:
        start = time.perf_counter()
        model, _ = fit_minibatch_kmeans(batches(k), k, num_steps=args.steps, seed=0,
                                        progress=False, metadata={"features": "log-mel 80"})
        seconds = time.perf_counter() - start
        scores = phonetic_scores(test_phones, model.predict(test_x))
        print(f"| log-mel (baseline) | {k} | {scores.pnmi:.3f} | {scores.phone_purity:.3f} | "
              f"{scores.cluster_purity:.3f} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
