r"""The built-in corpus's training speech after a vocoder or Griffin-Lim round trip.

    # the recognizer's extra training speech (made once; read by data.extra_folders):
    python benchmarks/resynthesized_speech.py runs/resynth --through vocoder,griffin_lim \
        [--utterances 400] [--vocoder vocoder_tiny]

Every clip a generator here makes is a log-mel decoded by a vocoder, so the
project's recognizer judges vocoded speech it never heard in training. This
writes `--utterances` clips of the corpus's training speakers (spread evenly over
them; the held-out speakers are never used) through each decoder:
`OUT/<through>/<nn>.wav` + `<nn>.txt`, the layout `data.extra_folders` and
`benchmarks/tts_eval.py --eval-set` read. `vocoder` is the log-mel (the
vocoder's own settings) decoded by `--vocoder` (the committed `vocoder_tiny` by
default); `griffin_lim` the same mel inverted by Griffin-Lim, the no-training
baseline. Audio at the vocoder's rate (24 kHz). Prints the seconds written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from audiolm_jax.audio.io import load_audio, save_audio

DECODERS = ("vocoder", "griffin_lim")


def spread(records: list[dict], count: int) -> list[dict]:
    """`count` records taking turns over the speakers (each speaker's in corpus order)."""
    by_speaker: dict = {}
    for record in records:
        by_speaker.setdefault(record["speaker"], []).append(record)
    queues = list(by_speaker.values())
    chosen: list[dict] = []
    while len(chosen) < count and any(queues):
        for queue in queues:
            if queue and len(chosen) < count:
                chosen.append(queue.pop(0))
    if len(chosen) < count:
        raise SystemExit(f"the corpus's training speakers have {len(chosen)} utterances, fewer "
                         f"than {count}")
    return chosen


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--through", default="vocoder,griffin_lim",
                        help=f"comma-separated subset of {','.join(DECODERS)}")
    parser.add_argument("--utterances", type=int, default=400)
    parser.add_argument("--vocoder", default=None,
                        help="vocoder export or committed name (default: the committed one)")
    args = parser.parse_args(argv)
    through = args.through.split(",")
    unknown = sorted(set(through) - set(DECODERS))
    if unknown:
        raise SystemExit(f"--through {unknown}: expected some of {list(DECODERS)}")

    from tqdm.auto import tqdm

    from audiolm_jax.eval.tts_harness import MelDecoder, builtin_records
    from audiolm_jax.models.vocoder import DEFAULT_VOCODER

    records = spread(builtin_records(held_out=False), args.utterances)
    decoders = {"vocoder": lambda: MelDecoder(args.vocoder or DEFAULT_VOCODER),
                "griffin_lim": lambda: MelDecoder(None)}
    seconds = 0.0
    for name in through:
        decoder = decoders[name]()
        folder = args.out / name
        folder.mkdir(parents=True, exist_ok=True)
        for i, record in enumerate(tqdm(records, desc=name, unit="clip")):
            audio, _ = load_audio(record["path"], sample_rate=decoder.sample_rate)
            # exact=False: one compile per whole second of length, not per clip.
            resynth = decoder.decode(decoder.mel(audio[:, 0], exact=False))
            save_audio(folder / f"{i:03d}.wav", resynth, decoder.sample_rate)
            (folder / f"{i:03d}.txt").write_text(record["text"] + "\n", encoding="utf-8")
            seconds += len(resynth) / decoder.sample_rate
    print(f"{len(through)} decoder(s) x {len(records)} clips ({seconds / 60:.1f} min) -> "
          f"{args.out}")
    return seconds


if __name__ == "__main__":
    main()
