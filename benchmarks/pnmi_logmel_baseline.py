r"""PNMI baseline: k-means on raw log-mel frames of the built-in speech corpus.

    .venv/bin/python benchmarks/pnmi_logmel_baseline.py [--split speakers|clips] \
        [--ks 100 500 1024] [--steps 300]

The floor any semantic encoder's tokens must clear (issue 4): 80-band log-mel
frames at 50 Hz (hop 480 at 24 kHz, 1024-point FFT), standardized with the
training split's mean and variance, clustered with mini-batch k-means on the
training frames; PNMI, phone purity and cluster purity on the held-out frames,
next to the same tokens shuffled across frames (chance) and uniform random
tokens. Splits as in `semantic_pnmi.py`: `speakers` (default; the 6 speakers
`train/ctc.py` holds out) or `clips` (the held-out 5 % of clips,
`split_holdout` seed 0). Phones from espeak's alignment with stress marks
removed and uncovered frames labelled "sil", read at each frame's centre
(`center=True`: frame i is centred at i * hop; before this was accounted for,
labels were read half a frame, 10 ms, late).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import numpy as np
from semantic_pnmi import HEADER, chance_rows, fit_and_predict, row, shuffled_pnmi, split
from tqdm.auto import tqdm

from audiolm_jax.audio.io import load_audio
from audiolm_jax.audio.spectral import log_mel_spectrogram
from audiolm_jax.data.corpora import build_corpus
from audiolm_jax.data.sources import ManifestSource
from audiolm_jax.eval.phonetic import frame_phone_labels, phonetic_scores

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
        # frame_phone_labels reads frame i at (i + 0.5) / rate; with center=True its
        # window is centred at i / rate, so the phone times move half a frame later.
        half = 0.5 / FRAME_RATE
        labels = frame_phone_labels(record["phonemes"],
                                    np.asarray(record["phoneme_starts"]) + half,
                                    np.asarray(record["phoneme_ends"]) + half,
                                    mel.shape[0], FRAME_RATE, vocab)
        out.append((mel, labels))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", choices=["speakers", "clips"], nargs="+",
                        default=["speakers"], help="held-out split(s) to score")
    parser.add_argument("--ks", type=int, nargs="+", default=[100, 500, 1024])
    parser.add_argument("--steps", type=int, default=300, help="mini-batch k-means updates")
    parser.add_argument("--batch", type=int, default=8192, help="frames per k-means batch")
    args = parser.parse_args()

    source = ManifestSource(build_corpus("speech", size="default"))
    vocab: dict[str, int] = {}
    data = frames_and_labels(source, vocab, "clips")
    for kind in args.split:
        train, test, description = split(source, kind)
        train_x = np.concatenate([data[i][0] for i in train])
        test_x = np.concatenate([data[i][0] for i in test])
        test_phones = np.concatenate([data[i][1] for i in test])
        print(f"\nsplit: {description}: {len(train)} train clips ({len(train_x)} frames), "
              f"{len(test)} held-out clips ({len(test_x)} frames), {len(vocab)} phone "
              f"labels\n\n{HEADER}")
        for line in chance_rows(test_phones, [data[i][1] for i in test], args.ks):
            print(line, flush=True)
        for k in args.ks:
            tokens, seconds = fit_and_predict(train_x, test_x, k, args.steps, args.batch)
            print(row("log-mel (baseline)", k, phonetic_scores(test_phones, tokens),
                      shuffled_pnmi(test_phones, tokens), seconds), flush=True)


if __name__ == "__main__":
    main()
