r"""How fast Voicebox's Grain pipeline makes training batches on this host.

    python benchmarks/voicebox_data_rate.py [--size tiny|base] [--manifest DIR]
        [--batches 40] [--threads 1,2] [--batch-size N]

Reads the aligned records the trainer would (the built-in speech corpus, or
`--manifest DIR` holding a `manifest.jsonl` such as `python -m
audiolm_jax.data.align_manifest` writes), builds `data.aligned.make_aligned_pipeline`
with the config's crop, phone and pairing settings, and times `--batches`
batches after a warm-up batch, once per `--threads` value (Grain's read
threads). Per row: batches/s (train steps per second it can feed at this batch
size), valid mel frames/s (frames the loss can see, padding excluded), seconds of
audio/s, and the share of frame slots filled. Decoding, resampling to the config's 24 kHz and cropping run in
the pipeline; the log-mel is computed inside the jitted train step, so it is not
counted here.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # `python benchmarks/x.py`: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from audiolm_jax.data.aligned import (
    PAUSE_SECONDS,
    AlignedExample,
    build_vocab,
    make_aligned_pipeline,
)
from audiolm_jax.data.builder import source_from_config
from audiolm_jax.data.sources import ManifestSource, split_held_out_speakers


def rate(source, vocab, config, *, batch_size: int, threads: int, batches: int) -> dict:
    """Times `batches` batches (after one warm-up batch) of a fresh pipeline."""
    shapes = AlignedExample(config.data.max_frames, config.data.max_phones,
                            config.mel.hop_length,
                            pause_seconds=config.data.get("pause_seconds", PAUSE_SECONDS),
                            pair_probability=config.data.get("pair_probability", 0.0))
    pipeline = make_aligned_pipeline(source, vocab=vocab, sample_rate=config.mel.sample_rate,
                                     shapes=shapes, batch_size=batch_size, seed=0,
                                     num_threads=threads, shard_index=0, shard_count=1)
    iterator = iter(pipeline)
    next(iterator)
    frames = 0
    start = time.perf_counter()
    for _ in range(batches):
        batch = next(iterator)
        frames += int(np.sum(batch["frame_valid"]))
    seconds = time.perf_counter() - start
    frame_rate = config.mel.sample_rate / config.mel.hop_length
    return {"batches_per_s": batches / seconds, "frames_per_s": frames / seconds,
            "audio_s_per_s": frames / frame_rate / seconds,
            "fill": frames / (batches * batch_size * config.data.max_frames)}


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["tiny", "base"], default="tiny")
    parser.add_argument("--manifest", default=None,
                        help="folder with an aligned manifest.jsonl (default: the built-in corpus)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="default: the config's data.batch_size")
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--threads", default="1,2", help="Grain read threads, comma-separated")
    args = parser.parse_args(argv)

    config = importlib.import_module(f"configs.voicebox.{args.size}").get_config()
    source = (ManifestSource(args.manifest) if args.manifest
              else source_from_config(config.data, progress=False))
    records = [source[i] for i in range(len(source))]
    vocab = build_vocab(records)
    train_source, _ = split_held_out_speakers(source, config.data.held_out_speakers,
                                              seed=config.data.seed)
    batch_size = args.batch_size or config.data.batch_size
    lines = [f"{source!r}; configs/voicebox/{args.size}.py: batch {batch_size} x "
             f"{config.data.max_frames} frames ({config.mel.sample_rate} Hz, hop "
             f"{config.mel.hop_length}), pair probability "
             f"{config.data.get('pair_probability', 0.0)}", "",
             "| read threads | batches / s | valid frames / s | audio s / s | frames filled |",
             "|---:|---:|---:|---:|---:|"]
    print("\n".join(lines), flush=True)
    for threads in (int(t) for t in args.threads.split(",")):
        r = rate(train_source, vocab, config, batch_size=batch_size, threads=threads,
                 batches=args.batches)
        line = (f"| {threads} | {r['batches_per_s']:.2f} | {r['frames_per_s']:,.0f} | "
                f"{r['audio_s_per_s']:.1f} | {r['fill']:.0%} |")
        lines.append(line)
        print(line, flush=True)
    return "\n".join(lines)


if __name__ == "__main__":
    main()
