r"""MuLan from the command line: embed a folder of audio or a list of captions, rank clips for text.

    # embed every clip under a folder (and, with an rvq.npz in the export, its MuLan tokens)
    python infer/mulan.py --model runs/mulan_tiny/export --audio clips/ --output emb/
    # embed captions (one per line)
    python infer/mulan.py --model runs/mulan_tiny/export --captions captions.txt --output emb/
    # rank the clips for a text query (embeds the folder, or reuses --output's audio.npz)
    python infer/mulan.py --model runs/mulan_tiny/export --audio clips/ --output emb/ \
        --query "a slow piano melody in A minor" --top 5

Writes `OUTPUT/audio.npz` (`files`, `embeddings` [N, E], and `tokens` [N, Q] when
the export has residual codebooks), `OUTPUT/text.npz` (`captions`, `embeddings`,
`tokens`) and `OUTPUT/skipped.txt` (unreadable files or clips shorter than the
model's window, with the reason). Audio of any sample rate is resampled;
multi-channel audio is averaged. Every file is written atomically; both .npz
record `model_fingerprint` (the export's weights fingerprint) and, with
tokens, `rvq_fingerprint`. Residual codebooks that record the fingerprint of
another model's weights (fitted on another model's embeddings) are refused,
naming both; `--force` uses them anyway.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # `python infer/x.py`: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from tqdm.auto import tqdm

from audiolm_jax.audio.io import load_audio
from audiolm_jax.files import fingerprint, save_npz_atomic, write_text_atomic
from audiolm_jax.quantization.residual_kmeans import ResidualKMeans
from audiolm_jax.tokenizers.mulan import RVQ_FILE, MuLanEmbedder
from audiolm_jax.training.export import MODEL_FILE, exported_fingerprint

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a MuLan export (train/mulan.py)")
    parser.add_argument("--audio", help="folder of audio to embed (searched recursively)")
    parser.add_argument("--captions", help="text file, one caption per line")
    parser.add_argument("--query", help="rank the --audio clips for this text")
    parser.add_argument("--top", type=int, default=10, help="clips to print for --query")
    parser.add_argument("--output", required=True, help="folder for the .npz files")
    parser.add_argument("--force", action="store_true",
                        help="use residual codebooks fitted on another model's embeddings")
    return parser


def model_fingerprint(mulan: MuLanEmbedder, path: Path) -> str:
    """The export's recorded weights fingerprint, else computed from the loaded weights."""
    recorded = exported_fingerprint(path) if (path / MODEL_FILE).is_file() else None
    return recorded or fingerprint({"params": mulan.params})


def embed_folder(mulan: MuLanEmbedder, folder: Path, out: Path
                 ) -> tuple[list[str], np.ndarray]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) under {folder}")
    names, embeddings, skipped = [], [], []
    for path in tqdm(files, desc="embedding audio"):
        relative = str(path.relative_to(folder))
        try:
            audio, sample_rate = load_audio(path, mulan.sample_rate)
            embeddings.append(mulan.embed_audio(audio, sample_rate))
        except Exception as e:  # noqa: BLE001 (any decode or length problem is reported)
            skipped.append(f"{relative}: {e}")
            continue
        names.append(relative)
    write_text_atomic(out / "skipped.txt", "".join(f"{s}\n" for s in skipped))
    if not names:
        raise ValueError(f"none of the {len(files)} files could be embedded: {skipped[:3]}")
    return names, np.stack(embeddings)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if not (args.audio or args.captions):
            raise ValueError("give --audio FOLDER and/or --captions FILE")
        if args.query and not args.audio:
            raise ValueError("--query ranks the clips of --audio FOLDER")
        mulan = MuLanEmbedder.load(args.model)
        weights = model_fingerprint(mulan, Path(args.model))
        rvq_file = Path(args.model) / RVQ_FILE
        rvq = ResidualKMeans.load(rvq_file, expect={"dim": mulan.config.embed_dim},
                                  encoder_fingerprint=weights, force=args.force) \
            if rvq_file.is_file() else None
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        recorded = {"model_fingerprint": np.asarray(weights)}
        if rvq is not None:
            recorded["rvq_fingerprint"] = np.asarray(rvq.fingerprint)
        tokens = (lambda e: {"tokens": rvq.encode(e)}) if rvq is not None else (lambda e: {})
        if args.captions:
            captions = [line.strip() for line in Path(args.captions).read_text().splitlines()
                        if line.strip()]
            if not captions:
                raise ValueError(f"{args.captions} has no captions")
            text = mulan.embed_text(captions)
            save_npz_atomic(out / "text.npz", captions=np.asarray(captions), embeddings=text,
                            **tokens(text), **recorded)
            print(f"{len(captions)} captions -> {out / 'text.npz'}")
        if args.audio:
            names, audio = embed_folder(mulan, Path(args.audio), out)
            save_npz_atomic(out / "audio.npz", files=np.asarray(names), embeddings=audio,
                            **tokens(audio), **recorded)
            skipped = len((out / "skipped.txt").read_text().splitlines())
            print(f"{len(names)} clips -> {out / 'audio.npz'}; {skipped} skipped")
            if args.query:
                order, scores = mulan.rank(args.query, audio)
                print(f"clips for {args.query!r}:")
                for rank, (i, score) in enumerate(zip(order[:args.top], scores), start=1):
                    print(f"  {rank:3d}. {score:+.3f}  {names[i]}")
        return 0
    except (FileNotFoundError, ValueError) as e:  # CheckpointMismatchError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
