r"""Semantic tokens for a folder of audio: one `.npy` of int32 ids per file.

    python infer/semantic_tokens.py --encoder runs/semantic_tiny/export \
        --kmeans runs/semantic_tiny/kmeans_l3_k500.npz --input clips/ --output tokens/
    python infer/semantic_tokens.py --encoder HF_OR_EXPORT_DIR --fit-kmeans 500 --layer 6 \
        --input clips/ --output tokens/ [--dedup] [--max-kmeans-frames 100000]

`--encoder` is a w2v-BERT or HuBERT export, or a Hugging Face directory of
either. Audio at other sample rates is resampled on load, multi-channel audio
is averaged.

- **Streaming**: the folder is walked file by file; one clip is decoded,
  tokenized and written at a time, so memory does not grow with the folder.
- **k-means**: with `--fit-kmeans K`, k-means is first fitted on `--layer`'s
  activations over the input files (a first pass over the folder) and saved as
  `OUTPUT/kmeans.npz`; the frames go through a uniform reservoir sample of at
  most `--max-kmeans-frames` (default 100 000: 100k x 1024 dims x 4 bytes =
  410 MB at most), so fitting memory is bounded too. The model records the
  encoder's weights fingerprint. With `--kmeans`, a model fitted on another
  encoder's features (same shape, other weights) is refused, naming both
  fingerprints; `--force` uses it anyway.
- **Length buckets**: w2v-BERT pads each clip to a length bucket (`--bucket-seconds`
  times 1, 2, 3, 4, 6, 8, 12, 16, ...) and passes the real length, which its
  front end and attention mask honour; only the real frames are kept, so the
  encoder compiles once per bucket and the tokens equal the unpadded clip's.
  HuBERT has no attention mask and a GroupNorm over time, so padding would
  change its frames: it runs every clip at its exact length (one compile per
  distinct length). See `audiolm_jax.tokenizers.semantic`.
- **Outputs**: `OUTPUT/<relative path, extension kept>.npy` per file (`a.wav` ->
  `a.wav.npy`, `a.flac` -> `a.flac.npy`, so two files that differ only in their
  extension never overwrite each other); `OUTPUT/tokens.jsonl`, one line per file
  (file, token file, number of tokens, frame rate, layer, k, dedup and the
  `encoder_fingerprint` and `kmeans_fingerprint` the tokens were made with);
  `OUTPUT/skipped.txt` for files that could not be tokenized (unreadable,
  shorter than one frame), with the reason. Every file is written atomically.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

if __package__ in (None, ""):  # `python infer/x.py`: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from tqdm.auto import tqdm

from audiolm_jax.audio.io import load_audio
from audiolm_jax.files import atomic_path, write_text_atomic
from audiolm_jax.quantization.minibatch_kmeans import KMeansModel
from audiolm_jax.tokenizers.semantic import (
    DEFAULT_MAX_KMEANS_FRAMES,
    SemanticEncoder,
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
    parser.add_argument("--max-kmeans-frames", type=int, default=DEFAULT_MAX_KMEANS_FRAMES,
                        help="with --fit-kmeans: fit on a uniform sample of at most this many "
                             "frames (bounds memory)")
    parser.add_argument("--bucket-seconds", type=float, default=1.0,
                        help="w2v-BERT: pad clips to this many seconds times 1, 2, 3, 4, 6, 8, "
                             "... (one compile per bucket)")
    parser.add_argument("--dedup", action="store_true", help="drop consecutive repeated ids")
    parser.add_argument("--force", action="store_true",
                        help="use a --kmeans model fitted on another encoder's features")
    return parser


def token_path(out: Path, relative: Path) -> Path:
    """`OUTPUT/<relative path>.npy`, the audio extension kept (`a.wav` -> `a.wav.npy`)."""
    return out / relative.parent / f"{relative.name}.npy"


def save_tokens(path: Path, ids: np.ndarray) -> None:
    """`np.save` to exactly `path`, atomically (through a file object: no suffix added)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, np.asarray(ids, np.int32))


def iter_clips(files: Sequence[Path], root: Path, encoder: SemanticEncoder,
               skipped: dict[str, str], desc: str) -> Iterator[tuple[Path, np.ndarray]]:
    """(relative path, mono audio at the encoder's rate), one file at a time.

    Files that cannot be used are recorded in `skipped` (relative path: reason)
    and left out; files already in `skipped` are not decoded again.
    """
    for path in tqdm(files, desc=desc, dynamic_ncols=True):
        relative = path.relative_to(root)
        if str(relative) in skipped:
            continue
        try:
            audio, _ = load_audio(path, encoder.sample_rate)
        except Exception as e:  # noqa: BLE001 (any decoder failure is reported, not fatal)
            skipped[str(relative)] = f"unreadable ({e})"
            continue
        audio = audio.mean(axis=1)
        if len(audio) < encoder.min_samples():
            skipped[str(relative)] = (f"{len(audio)} samples is shorter than one frame "
                                      f"({encoder.min_samples()} at {encoder.sample_rate} Hz)")
            continue
        yield relative, audio


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.bucket_seconds <= 0:
            raise ValueError(f"--bucket-seconds must be positive, got {args.bucket_seconds:g}")
        encoder = load_semantic_encoder(args.encoder)
        encoder.bucket_seconds = args.bucket_seconds
        root = Path(args.input)
        files = sorted(p for p in root.rglob("*")
                       if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) under "
                                    f"{args.input}")
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        skipped: dict[str, str] = {}
        if args.fit_kmeans:
            if args.layer is None:
                raise ValueError("--fit-kmeans needs --layer")
            clips = (audio for _, audio in iter_clips(files, root, encoder, skipped,
                                                      "k-means features"))
            try:
                kmeans = fit_semantic_kmeans(encoder, args.layer, clips, args.fit_kmeans,
                                             num_steps=args.kmeans_steps,
                                             batch_frames=min(8192, 64 * args.fit_kmeans),
                                             max_frames=args.max_kmeans_frames)
            except ValueError as e:
                if len(skipped) == len(files):
                    raise ValueError(f"none of the {len(files)} files could be tokenized: "
                                     f"{list(skipped.items())[:3]}") from e
                raise
            kmeans.save(out / "kmeans.npz")
        else:
            expect = {"dim": encoder.hidden_size}
            if args.layer is not None:
                expect["layer"] = args.layer
            kmeans = KMeansModel.load(args.kmeans, expect=expect)
            if kmeans.encoder_fingerprint is not None:
                kmeans.check_encoder(encoder.fingerprint, f"k-means model {args.kmeans}",
                                     force=args.force)
        tokenizer = SemanticTokenizer(encoder, kmeans, force=args.force)
        fingerprints = tokenizer.fingerprints
        written, lengths = 0, set()
        with atomic_path(out / "tokens.jsonl") as tmp, open(tmp, "w", encoding="utf-8") as manifest:
            for relative, audio in iter_clips(files, root, encoder, skipped, "tokenizing"):
                ids = tokenizer.tokenize(audio, encoder.sample_rate, dedup=args.dedup)
                lengths.add(encoder.padded_length(len(audio)))
                target = token_path(out, relative)
                save_tokens(target, ids)
                manifest.write(json.dumps({
                    "file": str(relative), "tokens": str(target.relative_to(out)),
                    "num_tokens": int(len(ids)), "frame_rate": encoder.frame_rate,
                    "layer": tokenizer.layer, "k": tokenizer.vocab_size,
                    "dedup": args.dedup, **fingerprints}) + "\n")
                written += 1
        write_text_atomic(out / "skipped.txt",
                          "".join(f"{name}: {reason}\n" for name, reason in skipped.items()))
        if not written:
            raise ValueError(f"none of the {len(files)} files could be tokenized: "
                             f"{list(skipped.items())[:3]}")
        shapes = (("length bucket" if encoder.pads_exactly else "distinct length")
                  + "s" * (len(lengths) != 1))
        print(f"{written} files -> {out} ({encoder.name}, layer {tokenizer.layer}, "
              f"k={tokenizer.vocab_size}, {encoder.frame_rate:g} tokens/s"
              f"{', deduplicated' if args.dedup else ''}); {len(skipped)} skipped; "
              f"{len(lengths)} {shapes}, encoder compiled {encoder.traces}x; encoder "
              f"{fingerprints['encoder_fingerprint']}, k-means "
              f"{fingerprints['kmeans_fingerprint']}")
        return 0
    except (FileNotFoundError, ValueError) as e:  # CheckpointMismatchError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
