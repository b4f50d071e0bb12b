r"""PNMI table of a semantic encoder: k-means tokens of every layer vs baselines and chance.

    .venv/bin/python benchmarks/semantic_pnmi.py --encoder runs/semantic_tiny/export \
        [--split speakers|clips] [--ks 100 500 1024] [--steps 300] [--layers 1 2 3 4]

    # The clips of the training speakers only, as a folder to pretrain an encoder on
    # (train/w2v_bert.py --config.data.source=folder --config.data.folder=DIR):
    .venv/bin/python benchmarks/semantic_pnmi.py --write-train-speakers DIR

For the built-in speech corpus (resampled to the encoder's rate), every clip
goes through the encoder once; for each feature set and k, mini-batch k-means
is fitted on the training frames and PNMI, phone purity and cluster purity are
measured on the held-out frames. Two splits:

- `speakers` (default): the 6 held-out speakers of `train/ctc.py` (seed 0,
  speakers 1, 12, 14, 23, 28, 36: 173 clips); k-means is fitted on the other 42
  speakers' frames. The encoder must not have seen those 6 speakers either:
  pretrain it on `--write-train-speakers`'s folder (the script cannot check).
- `clips`: the held-out 5 % of clips (`split_holdout`, seed 0), which the
  pretraining split of `train/w2v_bert.py` on the whole corpus never saw, but
  whose speakers it (and k-means) did.

Rows: each encoder layer; the encoder's own input (the normalized, stacked
log-mel filterbank) and 24 kHz 80-band log-mel frames (`pnmi_logmel_baseline.py`)
as baselines, clustered on the same frames; chance (each row's held-out tokens
permuted across frames, which keeps the token marginal and breaks the alignment
with phones, mean of 5 permutations; and uniform random tokens in [0, k)); and
the ceiling, the phone labels themselves as tokens (PNMI and phone purity 1 for
any k >= the number of phone labels), next to the same labels one frame late,
the cost of a 20 ms misalignment alone. PNMI is a plug-in estimate, biased
upwards with few frames per (phone, token) cell: that bias is what the chance
rows measure, and the margin column subtracts it. Phones come from espeak's
alignment (stress removed, uncovered frames "sil"), read at each frame's centre.
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
from audiolm_jax.data.sources import (
    ManifestSource,
    SubsetSource,
    split_held_out_speakers,
    split_holdout,
)
from audiolm_jax.eval.phonetic import frame_phone_labels, phonetic_scores
from audiolm_jax.quantization.minibatch_kmeans import fit_minibatch_kmeans

BASELINE = "fbank"
LOGMEL = "logmel"
HELD_OUT_SPEAKERS, SPEAKER_SEED = 6, 0   # train/ctc.py's tiny config
CHANCE_PERMUTATIONS = 5


def held_out_speakers(source, num: int = HELD_OUT_SPEAKERS,
                      seed: int = SPEAKER_SEED) -> list[int]:
    """The speakers `train/ctc.py` holds out (`split_held_out_speakers`, same draw)."""
    _, held = split_held_out_speakers(source, num, seed=seed)
    return sorted({int(held[i]["speaker"]) for i in range(len(held))})


def split(source, kind: str) -> tuple[list[int], list[int], str]:
    """(train indices, held-out indices, description) of `source` for a split kind."""
    if kind == "clips":
        train, held = split_holdout(source, 0.05, seed=0)
        return (list(train.indices), list(held.indices),
                "held-out 5 % of clips (split_holdout seed 0; their speakers are in training)")
    if kind != "speakers":
        raise ValueError(f"unknown split {kind!r}")
    records = [source[i] for i in range(len(source))]
    held = set(held_out_speakers(source))
    train = [i for i, r in enumerate(records) if r["speaker"] not in held]
    test = [i for i, r in enumerate(records) if r["speaker"] in held]
    return train, test, f"held-out speakers {sorted(held)} (no clip of theirs in training)"


def write_train_speakers(source, folder: Path) -> int:
    """Symlinks every training speaker's clip (and its .txt) into `folder`."""
    train, _, _ = split(source, "speakers")
    folder.mkdir(parents=True, exist_ok=True)
    for i in train:
        audio = Path(source[i]["path"])
        for path in (audio, audio.with_suffix(".txt")):
            link = folder / path.name
            if path.exists() and not link.exists():
                link.symlink_to(path)
    return len(train)


@functools.lru_cache(maxsize=1)
def _front_end(fbank):
    from audiolm_jax.audio.fbank import stacked_features
    return jax.jit(lambda audio, lengths: stacked_features(audio, lengths, fbank)[0])


def encoder_input(encoder, audio: np.ndarray) -> np.ndarray:
    """The w2v-BERT encoder's input frames (normalized stacked fbank), [frames, 160]."""
    fbank = encoder.module.config.fbank
    # Whole-second buckets (one compile each); statistics use the true length only.
    padded = np.pad(audio, (0, -len(audio) % encoder.sample_rate))
    features = _front_end(fbank)(padded[None], np.array([len(audio)]))
    return np.asarray(features[0, : fbank.num_frames(len(audio))])


def featurize(encoder, source, layers: list[int], vocab: dict[str, int]
              ) -> tuple[dict, list[np.ndarray]]:
    """Per clip of `source`: {layer or BASELINE: [[frames, d]] per clip}, phone ids per clip."""
    # A frame's centre: w2v-BERT frame j spans samples [320 j, 320 j + 560) at 16 kHz,
    # centred 0.375 frames after (j + 0.5) / rate; HuBERT's receptive field is centred.
    shift = 0.375 / encoder.frame_rate if encoder.family == "w2v_bert" else 0.0
    feats: dict = {key: [] for key in [BASELINE] * (encoder.family == "w2v_bert") + layers}
    phones = []
    for i in tqdm(range(len(source)), desc="encoder"):
        record = source[i]
        audio, _ = load_audio(record["path"], encoder.sample_rate)
        audio = audio.mean(axis=1)
        states = encoder.layer_features(audio, layers) if layers else []
        for layer, x in zip(layers, states):
            feats[layer].append(np.asarray(x))
        if BASELINE in feats:
            inputs = encoder_input(encoder, audio)
            feats[BASELINE].append(inputs[: len(states[0])] if layers else inputs)
        num_frames = len(states[0]) if layers else len(inputs)
        starts = np.asarray(record["phoneme_starts"]) - shift
        ends = np.asarray(record["phoneme_ends"]) - shift
        phones.append(frame_phone_labels(record["phonemes"], starts, ends, num_frames,
                                         encoder.frame_rate, vocab))
    return feats, phones


def random_batches(x: np.ndarray, size: int, seed: int):
    """Endless batches of `size` random rows of `x`."""
    rng = np.random.default_rng(seed)
    while True:
        yield x[rng.integers(0, len(x), size)]


def fit_and_predict(train_x: np.ndarray, test_x: np.ndarray, k: int, steps: int, batch: int
                    ) -> tuple[np.ndarray, float]:
    """Held-out token ids of k-means fitted on standardized `train_x`, and the fit seconds."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-5
    start = time.perf_counter()
    model, _ = fit_minibatch_kmeans(random_batches((train_x - mean) / std, batch, seed=k), k,
                                    num_steps=steps, seed=0, progress=False)
    return np.asarray(model.predict((test_x - mean) / std)), time.perf_counter() - start


def shuffled_pnmi(phones: np.ndarray, tokens: np.ndarray, seed: int = 0) -> float:
    """Mean PNMI of `tokens` permuted across frames (same marginal, no alignment)."""
    rng = np.random.default_rng(seed)
    return float(np.mean([phonetic_scores(phones, rng.permutation(tokens)).pnmi
                          for _ in range(CHANCE_PERMUTATIONS)]))


def late(phones_per_clip: list[np.ndarray]) -> np.ndarray:
    """Each clip's phone labels one frame late (its first frame repeated)."""
    return np.concatenate([np.concatenate([p[:1], p[:-1]]) for p in phones_per_clip])


def row(name: str, k: int | str, scores, shuffled: float | None, seconds: float | None) -> str:
    margin = "" if shuffled is None else f"{scores.pnmi - shuffled:+.3f}"
    chance = "" if shuffled is None else f"{shuffled:.3f}"
    fit = "" if seconds is None else f"{seconds:.0f}"
    return (f"| {name} | {k} | {scores.pnmi:.3f} | {chance} | {margin} | "
            f"{scores.phone_purity:.3f} | {scores.cluster_purity:.3f} | {fit} |")


HEADER = ("| features | k | PNMI | shuffled-token PNMI | PNMI − shuffled | phone purity | "
          "cluster purity | fit s |\n|---|---:|---:|---:|---:|---:|---:|---:|")


def chance_rows(phones: np.ndarray, phones_per_clip: list[np.ndarray], ks: list[int],
                seed: int = 0) -> list[str]:
    """Uniform random tokens at each k, and the oracle ceiling rows."""
    rng = np.random.default_rng(seed)
    lines = []
    for k in ks:
        draws = [phonetic_scores(phones, rng.integers(0, k, len(phones)))
                 for _ in range(CHANCE_PERMUTATIONS)]
        mean = {f: float(np.mean([getattr(d, f) for d in draws]))
                for f in ("pnmi", "phone_purity", "cluster_purity")}
        lines.append(f"| chance: uniform random tokens (mean of {CHANCE_PERMUTATIONS}) | {k} | "
                     f"{mean['pnmi']:.3f} |  |  | {mean['phone_purity']:.3f} | "
                     f"{mean['cluster_purity']:.3f} |  |")
    oracle = phonetic_scores(phones, phones)
    lines.append(row("ceiling: the phone labels as tokens", "any ≥ labels", oracle,
                     shuffled_pnmi(phones, phones), None))
    lines.append(row("reference: phone labels one frame (20 ms) late", "any ≥ labels",
                     phonetic_scores(phones, late(phones_per_clip)),
                     shuffled_pnmi(phones, phones), None))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", help="export or Hugging Face directory")
    parser.add_argument("--split", choices=["speakers", "clips"], nargs="+",
                        default=["speakers"], help="held-out split(s) to score")
    parser.add_argument("--ks", type=int, nargs="+", default=[100, 500, 1024])
    parser.add_argument("--layers", type=int, nargs="*", default=None,
                        help="hidden-state indices (default: 1 .. num_layers; none given: "
                        "baselines and chance only, w2v-BERT encoders)")
    parser.add_argument("--steps", type=int, default=300, help="mini-batch k-means updates")
    parser.add_argument("--batch", type=int, default=8192, help="frames per k-means batch")
    parser.add_argument("--limit", type=int, default=None,
                        help="only the first N clips of the corpus (a quick check)")
    parser.add_argument("--no-logmel", action="store_true", help="skip the 24 kHz log-mel row")
    parser.add_argument("--write-train-speakers", type=Path, default=None, metavar="DIR",
                        help="only symlink the training speakers' clips into DIR and exit")
    args = parser.parse_args()

    source = ManifestSource(build_corpus("speech", size="default"))
    if args.limit:
        source = SubsetSource(source, list(range(args.limit)))
    if args.write_train_speakers is not None:
        count = write_train_speakers(source, args.write_train_speakers)
        print(f"{count} clips of the training speakers in {args.write_train_speakers}")
        return
    if not args.encoder:
        parser.error("--encoder is required")

    from audiolm_jax.tokenizers.semantic import load_semantic_encoder
    encoder = load_semantic_encoder(args.encoder)
    layers = (list(range(1, encoder.num_layers + 1)) if args.layers is None else args.layers)
    if not layers and encoder.family != "w2v_bert":
        parser.error("--layers with no indices needs a w2v_bert encoder (its fbank input)")
    vocab: dict[str, int] = {}
    feats, phones = featurize(encoder, source, layers, vocab)
    names = {BASELINE: "encoder input: stacked filterbank (baseline)"}
    names.update({layer: f"layer {layer}" for layer in layers})
    if not args.no_logmel:
        from pnmi_logmel_baseline import frames_and_labels
        logmel = frames_and_labels(source, {}, "log-mel")
        feats[LOGMEL] = [m for m, _ in logmel]
        names[LOGMEL] = "24 kHz log-mel, 80 bands (baseline)"
        logmel_phones = [p for _, p in logmel]

    for kind in args.split:
        train, test, description = split(source, kind)
        test_phones = np.concatenate([phones[i] for i in test])
        print(f"\n{encoder.name} from {args.encoder}; split: {description}: {len(train)} train "
              f"clips, {len(test)} held-out clips ({len(test_phones)} frames at "
              f"{encoder.frame_rate:g} Hz), {len(vocab)} phone labels\n\n{HEADER}")
        for line in chance_rows(test_phones, [phones[i] for i in test], args.ks):
            print(line, flush=True)
        for key, per_clip in feats.items():
            labels = (np.concatenate([logmel_phones[i] for i in test]) if key == LOGMEL
                      else test_phones)
            train_x = np.concatenate([per_clip[i] for i in train])
            test_x = np.concatenate([per_clip[i] for i in test])
            for k in args.ks:
                tokens, seconds = fit_and_predict(train_x, test_x, k, args.steps, args.batch)
                print(row(names[key], k, phonetic_scores(labels, tokens),
                          shuffled_pnmi(labels, tokens), seconds), flush=True)
    jax.clear_caches()


if __name__ == "__main__":
    main()
