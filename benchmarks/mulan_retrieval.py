r"""Held-out text <-> music retrieval: trained MuLan exports against chance and a bag-of-words baseline.

    python benchmarks/mulan_retrieval.py --export tiny=runs/mulan_tiny/export \
        [--export minilm=runs/mulan_minilm/export] [--fraction 0.15 --seed 0]

The held-out split is the trainers' (`split_holdout_groups` by `melody_id` with
the same fraction and seed), so neither the clips nor the captions were seen.
Each caption's own clip is the one relevant item (mAP is then the mean
reciprocal rank).

Baseline, fitted on the training pairs only: captions as TF-IDF bags of words
(unigrams and bigrams), clips as hand-made features (mean and standard
deviation over time of a 64-band log-mel, plus the mean of the peak-relative
semitone profile and of its chroma), joined by CCA; retrieval by cosine in the
CCA space.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from tqdm.auto import tqdm

from audiolm_jax.audio.pitch import chroma, relative_log_semitones, semitone_magnitude
from audiolm_jax.audio.spectral import log_mel_spectrogram
from audiolm_jax.data.corpora.music import build_music_corpus
from audiolm_jax.data.pipeline import BadFileReport, decode_record
from audiolm_jax.data.sources import ManifestSource, split_holdout_groups
from audiolm_jax.eval.retrieval import chance_metrics, metrics_table, retrieval_metrics
from audiolm_jax.tokenizers.mulan import MuLanEmbedder

SR = 16_000


def handmade_features(audio: np.ndarray) -> np.ndarray:
    mel = np.asarray(log_mel_spectrogram(audio[None], SR, n_fft=1024, hop_length=320,
                                         n_mels=64))[0]
    semis = np.asarray(semitone_magnitude(audio[None], SR))[0]
    profile = np.asarray(relative_log_semitones(semis)).mean(axis=0)
    pitch_classes = np.asarray(chroma(semis, 36)).mean(axis=0)
    pitch_classes /= pitch_classes.sum() + 1e-8
    return np.concatenate([mel.mean(0), mel.std(0), profile, pitch_classes])


def bag_of_words_similarity(train_captions, train_audio, test_captions, test_audio,
                            components: int) -> np.ndarray:
    from sklearn.cross_decomposition import CCA
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.preprocessing import StandardScaler

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2)
    text_train = vectorizer.fit_transform(train_captions).toarray()
    text_test = vectorizer.transform(test_captions).toarray()
    scaler = StandardScaler().fit(train_audio)
    cca = CCA(n_components=components, max_iter=2000).fit(text_train,
                                                         scaler.transform(train_audio))
    t, a = cca.transform(text_test, scaler.transform(test_audio))
    t /= np.linalg.norm(t, axis=1, keepdims=True) + 1e-8
    a /= np.linalg.norm(a, axis=1, keepdims=True) + 1e-8
    return t @ a.T


def load(source, desc: str) -> tuple[list[np.ndarray], list[str]]:
    report = BadFileReport()
    clips, captions = [], []
    for i in tqdm(range(len(source)), desc=desc):
        record = source[i]
        audio = decode_record(record, SR, report)
        if audio is not None:
            clips.append(audio[:, 0])
            captions.append(record["caption"])
    return clips, captions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--export", action="append", default=[], metavar="NAME=PATH",
                        help="a MuLan export to evaluate (repeatable)")
    parser.add_argument("--corpus_size", default="default")
    parser.add_argument("--fraction", type=float, default=0.15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cca_components", type=int, default=16)
    args = parser.parse_args()

    source = ManifestSource(build_music_corpus(args.corpus_size))
    train, held = split_holdout_groups(source, "melody_id", args.fraction, seed=args.seed)
    test_clips, test_captions = load(held, "held-out clips")
    train_clips, train_captions = load(train, "training clips (baseline)")
    relevant = np.eye(len(test_clips), dtype=bool)
    rows_t2m = {"chance": chance_metrics(relevant)}
    rows_m2t = {"chance": chance_metrics(relevant)}

    start = time.perf_counter()
    features = lambda clips: np.stack([handmade_features(c) for c in tqdm(clips, "features")])
    sim = bag_of_words_similarity(train_captions, features(train_clips), test_captions,
                                  features(test_clips), args.cca_components)
    rows_t2m["bag of words + CCA"] = retrieval_metrics(sim, relevant)
    rows_m2t["bag of words + CCA"] = retrieval_metrics(sim.T, relevant)
    print(f"baseline fitted on {len(train_clips)} pairs in {time.perf_counter() - start:.1f} s")

    for spec in args.export:
        name, _, path = spec.partition("=")
        mulan = MuLanEmbedder.load(path or name)
        audio = np.stack([mulan.embed_audio(c, SR) for c in tqdm(test_clips, f"embed {name}")])
        sim = mulan.embed_text(test_captions) @ audio.T
        rows_t2m[f"MuLan {name}"] = retrieval_metrics(sim, relevant)
        rows_m2t[f"MuLan {name}"] = retrieval_metrics(sim.T, relevant)

    print(f"\nheld-out: {len(test_clips)} clips of {len(test_clips) // 3 or 1} unseen melodies "
          f"(fraction {args.fraction}, seed {args.seed})\n")
    print("text -> music\n" + metrics_table(rows_t2m) + "\n")
    print("music -> text\n" + metrics_table(rows_m2t))


if __name__ == "__main__":
    main()
