r"""PNMI table of a semantic encoder: k-means tokens of every layer vs the filterbank baseline.

    .venv/bin/python benchmarks/semantic_pnmi.py --encoder runs/semantic_tiny/export \
        [--ks 100 500 1024] [--steps 300] [--layers 1 2 3 4]

For the built-in speech corpus (resampled to the encoder's rate), every clip
goes through the encoder once; for each layer and k, mini-batch k-means is
fitted on the training clips' frames and PNMI, phone purity and cluster purity
are measured on the held-out 5 % (`split_holdout`, seed 0: the clips the
encoder's pretraining never saw). The baseline row clusters the encoder's own
input, the normalized, stacked log-mel filterbank frames, on the same frames
and labels. Phones come from espeak's alignment (stress removed, uncovered
frames "sil"), read at each frame's centre.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import numpy as np
from tqdm.auto import tqdm

from audiolm_jax.audio.io import load_audio
from audiolm_jax.data.corpora import build_corpus
from audiolm_jax.data.sources import ManifestSource, split_holdout
from audiolm_jax.eval.phonetic import frame_phone_labels, phonetic_scores
from audiolm_jax.quantization.minibatch_kmeans import fit_minibatch_kmeans
from audiolm_jax.tokenizers.semantic import SemanticEncoder, load_semantic_encoder

BASELINE = "fbank"


@functools.lru_cache(maxsize=1)
def _front_end(fbank):
    from audiolm_jax.audio.fbank import stacked_features
    return jax.jit(lambda audio, lengths: stacked_features(audio, lengths, fbank)[0])


def encoder_input(encoder: SemanticEncoder, audio: np.ndarray) -> np.ndarray:
    """The w2v-BERT encoder's input frames (normalized stacked fbank), [frames, 160]."""
    fbank = encoder.module.config.fbank
    # Whole-second buckets (one compile each); statistics use the true length only.
    padded = np.pad(audio, (0, -len(audio) % encoder.sample_rate))
    features = _front_end(fbank)(padded[None], np.array([len(audio)]))
    return np.asarray(features[0, : fbank.num_frames(len(audio))])


def featurize(encoder: SemanticEncoder, source, layers: list[int], vocab: dict[str, int],
              desc: str) -> tuple[dict, np.ndarray]:
    """{layer or BASELINE: [frames, d]} over all clips of `source`, and phone ids [frames]."""
    # A frame's centre: w2v-BERT frame j spans samples [320 j, 320 j + 560) at 16 kHz,
    # centred 0.375 frames after (j + 0.5) / rate; HuBERT's receptive field is centred.
    shift = 0.375 / encoder.frame_rate if encoder.family == "w2v_bert" else 0.0
    feats: dict = {key: [] for key in [BASELINE] * (encoder.family == "w2v_bert") + layers}
    phones = []
    for i in tqdm(range(len(source)), desc=desc):
        record = source[i]
        audio, _ = load_audio(record["path"], encoder.sample_rate)
        audio = audio.mean(axis=1)
        states = encoder.layer_features(audio, layers)
        for layer, x in zip(layers, states):
            feats[layer].append(x)
        if BASELINE in feats:
            feats[BASELINE].append(encoder_input(encoder, audio)[: len(states[0])])
        starts = np.asarray(record["phoneme_starts"]) - shift
        ends = np.asarray(record["phoneme_ends"]) - shift
        phones.append(frame_phone_labels(record["phonemes"], starts, ends, len(states[0]),
                                         encoder.frame_rate, vocab))
    return {k: np.concatenate(v) for k, v in feats.items()}, np.concatenate(phones)


def random_batches(x: np.ndarray, size: int, seed: int):
    """Endless batches of `size` random rows of `x`."""
    rng = np.random.default_rng(seed)
    while True:
        yield x[rng.integers(0, len(x), size)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", required=True, help="export or Hugging Face directory")
    parser.add_argument("--ks", type=int, nargs="+", default=[100, 500, 1024])
    parser.add_argument("--layers", type=int, nargs="*", default=None,
                        help="hidden-state indices (default: 1 .. num_layers)")
    parser.add_argument("--steps", type=int, default=300, help="mini-batch k-means updates")
    parser.add_argument("--batch", type=int, default=8192, help="frames per k-means batch")
    args = parser.parse_args()

    encoder = load_semantic_encoder(args.encoder)
    layers = args.layers or list(range(1, encoder.num_layers + 1))
    source = ManifestSource(build_corpus("speech", size="default"))
    train, held_out = split_holdout(source, 0.05, seed=0)
    vocab: dict[str, int] = {}
    train_x, _ = featurize(encoder, train, layers, vocab, "train clips")
    test_x, test_phones = featurize(encoder, held_out, layers, vocab, "held-out clips")
    print(f"{encoder.name} from {args.encoder}: {len(train)} train clips, {len(held_out)} "
          f"held-out clips ({len(test_phones)} frames at {encoder.frame_rate:g} Hz), "
          f"{len(vocab)} phone labels")
    print("\n| features | k | PNMI | phone purity | cluster purity | fit s |\n"
          "|---|---:|---:|---:|---:|---:|")
    for key in train_x:
        x = train_x[key]
        mean, std = x.mean(0), x.std(0) + 1e-5
        x = (x - mean) / std
        test = (test_x[key] - mean) / std
        name = "fbank input (baseline)" if key == BASELINE else f"layer {key}"
        for k in args.ks:
            start = time.perf_counter()
            model, _ = fit_minibatch_kmeans(random_batches(x, args.batch, seed=k), k,
                                            num_steps=args.steps, seed=0, progress=False)
            seconds = time.perf_counter() - start
            scores = phonetic_scores(test_phones, model.predict(test))
            print(f"| {name} | {k} | {scores.pnmi:.3f} | {scores.phone_purity:.3f} | "
                  f"{scores.cluster_purity:.3f} | {seconds:.0f} |", flush=True)
    jax.clear_caches()


if __name__ == "__main__":
    main()
