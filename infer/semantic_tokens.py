r"""Semantic tokens for a folder of audio: one `.npy` of int32 ids per file.

    python infer/semantic_tokens.py --encoder runs/semantic_tiny/export \
        --kmeans runs/semantic_tiny/kmeans_l3_k500.npz --input clips/ --output tokens/
    python infer/semantic_tokens.py --encoder HF_OR_EXPORT_DIR --fit-kmeans 500 --layer 6 \
        --input clips/ --output tokens/ [--dedup]

`--encoder` is a w2v-BERT or HuBERT export, or a Hugging Face directory of
either. With `--fit-kmeans K`, k-means is first fitted on `--layer`'s
activations over the input files and saved as `OUTPUT/kmeans.npz`. Audio at
other sample rates is resampled on load, multi-channel audio is averaged.
Writes `OUTPUT/<relative path>.npy` per file, `OUTPUT/tokens.jsonl` (file,
number of tokens, frame rate, layer, k) and `OUTPUT/skipped.txt` for files that
could not be tokenized (unreadable, shorter than one frame), with the reason.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # `python infer/x.py`: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from tqdm.auto import tqdm

from audiolm_jax.audio.io import load_audio
from audiolm_jax.quantization.minibatch_kmeans import KMeansModel
from audiolm_jax.tokenizers.semantic import (
    SemanticTokenizer,
    fit_semantic_kmeans,
    load_semantic_encoder,
)

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", required=True, help="export or Hugging Face directory")
    parser.add_argument("--input", required=True, help="folder of audio (searched recursively)")
    parser.add_argument("--output", required=True, help="folder for the token files")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--kmeans", help="a saved k-means model (.npz)")
    group.add_argument("--fit-kmeans", type=int, metavar="K",
                       help="fit K clusters on the input files first")
    parser.add_argument("--layer", type=int, help="hidden state to cluster (with --fit-kmeans; "
                        "with --kmeans it must match the model's)")
    parser.add_argument("--kmeans-steps", type=int, default=300)
    parser.add_argument("--dedup", action="store_true", help="drop consecutive repeated ids")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        encoder = load_semantic_encoder(args.encoder)
        files = sorted(p for p in Path(args.input).rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) under "
                                    f"{args.input}")
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        clips, skipped = {}, []
        for path in tqdm(files, desc="loading"):
            try:
                audio, _ = load_audio(path, encoder.sample_rate)
            except Exception as e:  # noqa: BLE001 (any decoder failure is reported, not fatal)
                skipped.append(f"{path.relative_to(args.input)}: unreadable ({e})")
                continue
            audio = audio.mean(axis=1)
            if len(audio) < encoder.min_samples():
                skipped.append(f"{path.relative_to(args.input)}: {len(audio)} samples is shorter "
                               f"than one frame ({encoder.min_samples()} at "
                               f"{encoder.sample_rate} Hz)")
                continue
            clips[path] = audio
        if not clips:
            raise ValueError(f"none of the {len(files)} files could be tokenized: {skipped[:3]}")
        if args.fit_kmeans:
            if args.layer is None:
                raise ValueError("--fit-kmeans needs --layer")
            kmeans = fit_semantic_kmeans(encoder, args.layer, list(clips.values()),
                                         args.fit_kmeans, num_steps=args.kmeans_steps,
                                         batch_frames=min(8192, 64 * args.fit_kmeans))
            kmeans.save(out / "kmeans.npz")
        else:
            expect = {"dim": encoder.hidden_size}
            if args.layer is not None:
                expect["layer"] = args.layer
            kmeans = KMeansModel.load(args.kmeans, expect=expect)
        tokenizer = SemanticTokenizer(encoder, kmeans)
        with open(out / "tokens.jsonl", "w") as manifest:
            for path, audio in tqdm(clips.items(), desc="tokenizing"):
                ids = tokenizer.tokenize(audio, encoder.sample_rate, dedup=args.dedup)
                relative = path.relative_to(args.input)
                target = (out / relative).with_suffix(".npy")
                target.parent.mkdir(parents=True, exist_ok=True)
                np.save(target, ids)
                manifest.write(json.dumps({
                    "file": str(relative), "tokens": str(target.relative_to(out)),
                    "num_tokens": int(len(ids)), "frame_rate": encoder.frame_rate,
                    "layer": tokenizer.layer, "k": tokenizer.vocab_size,
                    "dedup": args.dedup}) + "\n")
        (out / "skipped.txt").write_text("".join(f"{s}\n" for s in skipped))
        print(f"{len(clips)} files -> {out} ({encoder.name}, layer {tokenizer.layer}, "
              f"k={tokenizer.vocab_size}, {encoder.frame_rate:g} tokens/s"
              f"{', deduplicated' if args.dedup else ''}); {len(skipped)} skipped")
        return 0
    except (FileNotFoundError, ValueError) as e:  # CheckpointMismatchError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
