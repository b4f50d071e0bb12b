r"""Folder mode of `infer/codec.py` against one command per file.

    python benchmarks/codec_cli_folder.py [--files 78] [--per-file 3] [--bucket-seconds 1]

Takes the first `--files` clips of the built-in speech corpus (the default
size, built and cached on first use), a codec of `configs/codec/tiny.py`'s
shape with random weights (speed does not depend on the weights), and times:

- one `infer/codec.py roundtrip IN_FOLDER/ OUT_FOLDER/` (one start-up, one
  compile per length bucket), as a subprocess, wall clock;
- `--per-file` separate `infer/codec.py roundtrip IN.wav OUT.wav` commands
  (start-up and compile every time), from which the cost of the whole folder
  file by file is extrapolated.

Prints a markdown table. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]


def make_export(out: Path) -> Path:
    from audiolm_jax.models.codec.train import codec_config_from
    from audiolm_jax.training.export import save_exported
    from configs.codec import tiny
    from tests.tiny_codec import random_variables

    config = codec_config_from(tiny.get_config())
    return save_exported(out, "codec", config.to_dict(), random_variables(config))


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=78)
    parser.add_argument("--per-file", type=int, default=3)
    parser.add_argument("--bucket-seconds", type=float, default=1.0)
    args = parser.parse_args()

    from audiolm_jax.data.corpora import build_corpus
    from audiolm_jax.data.sources import ManifestSource

    source = ManifestSource(build_corpus("speech", size="default"))
    work = Path(tempfile.mkdtemp(prefix="codec_cli_"))
    try:
        clips = work / "clips"
        clips.mkdir()
        seconds = 0.0
        for i in range(args.files):
            row = source[i]
            shutil.copy(row["path"], clips / f"{i:03d}{Path(row['path']).suffix}")
            seconds += sf.info(row["path"]).duration
        export = make_export(work / "codec")
        cli = [sys.executable, "infer/codec.py", "roundtrip"]
        folder_s = timed(cli + [str(clips), str(work / "out"), "--checkpoint", str(export),
                                "--bucket-seconds", str(args.bucket_seconds)])
        files = sorted(clips.iterdir())[:args.per_file]
        single = [timed(cli + [str(f), str(work / f"single_{f.stem}.wav"), "--checkpoint",
                               str(export)]) for f in files]
        per_file = sum(single) / len(single)
        print(f"{args.files} speech clips ({seconds:.0f} s of audio), configs/codec/tiny.py "
              f"shape, random weights, bucket {args.bucket_seconds:g} s\n")
        print("| how | wall clock | per file |")
        print("|---|---:|---:|")
        print(f"| one command per file (mean of {len(single)}, extrapolated) | "
              f"{per_file * args.files:.0f} s | {per_file:.1f} s |")
        print(f"| one folder command | {folder_s:.0f} s | {folder_s / args.files:.2f} s |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
