r"""Text to music: the project's one music entry point.

    python infer/music.py --model musicgen --checkpoint DIR \
        "a slow plucked-string melody in A minor" out.wav \
        [--seconds 10] [--guidance 3] [--temperature 1] [--top-k 250] [--seed 0] \
        [--num-samples 1] [--prompt clip.wav]

`--checkpoint` is an export of `python -m audiolm_jax.convert musicgen` (from a
Hugging Face facebook/musicgen-small, -medium or -large directory). The caption
is encoded by T5 (cut at 512 tokens, with a notice); the decoder samples codec
frames with classifier-free guidance on the raw logits (MusicGen's defaults:
guidance 3, top-k 250, temperature 1; `--temperature 0` is greedy) and EnCodec
decodes them at 32 kHz. Past the 30 s MusicGen was trained to generate,
`--seconds` is generated in windows, as audiocraft extends: each adds 18 s after
the last 12 s (said when it happens). With `--num-samples N > 1` the outputs are OUT_0.wav ... OUT_{N-1}.wav,
generated as one batch. `--prompt clip.wav` continues a clip (any rate:
resampled; the output is the clip then `--seconds` more). A progress bar follows the generated steps; the real-time
factor printed includes compilation (the first call of a length compiles).
MusicLM will join under its own `--model`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # `python infer/x.py`: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audiolm_jax.audio.io import BadAudioError, load_audio, save_audio

MODELS = ("musicgen",)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=MODELS, default="musicgen")
    parser.add_argument("--checkpoint", required=True, help="the model's export directory")
    parser.add_argument("caption", help="what the music should be")
    parser.add_argument("output", help="output .wav (or .flac)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length (default 10)")
    parser.add_argument("--guidance", type=float, default=3.0,
                        help="classifier-free guidance scale; <= 1 runs without (default 3)")
    parser.add_argument("--temperature", type=float, default=1.0, help="0 is greedy")
    parser.add_argument("--top-k", type=int, default=250)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-samples", type=int, default=1,
                        help="samples of the caption, generated as one batch")
    parser.add_argument("--prompt", help="an audio clip to continue (the output starts with it)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def output_paths(output: str, count: int) -> list[Path]:
    path = Path(output)
    if count == 1:
        return [path]
    return [path.with_name(f"{path.stem}_{i}{path.suffix}") for i in range(count)]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="notice: %(message)s")
    try:
        if args.num_samples < 1:
            raise ValueError(f"--num-samples must be >= 1, got {args.num_samples}")
        from audiolm_jax.models.musicgen import load
        from audiolm_jax.models.musicgen.generation import SamplingSettings

        pipe = load(args.checkpoint)
        settings = SamplingSettings(guidance_scale=args.guidance, temperature=args.temperature,
                                    top_k=args.top_k, top_p=args.top_p)
        clip, clip_rate = (None, None) if args.prompt is None else load_audio(args.prompt)
        start = time.perf_counter()
        audio = pipe.generate([args.caption] * args.num_samples, seconds=args.seconds,
                              settings=settings, seed=args.seed,
                              progress=not args.no_progress,
                              prompt_audio=None if clip is None else clip[:, 0],
                              prompt_sample_rate=clip_rate)
        elapsed = time.perf_counter() - start
        for path, row in zip(output_paths(args.output, args.num_samples), audio):
            save_audio(path, row, pipe.sample_rate)
        seconds = audio.shape[1] / pipe.sample_rate
        passes = "2 passes a step (guided)" if settings.guided else "1 pass a step"
        print(f"{args.num_samples} x {seconds:.2f} s of music at {pipe.sample_rate} Hz -> "
              f"{args.output} (real-time factor {elapsed / (seconds * args.num_samples):.2f}, "
              f"compilation included; {passes})")
        return 0
    except (FileNotFoundError, ValueError, BadAudioError) as e:   # incl. CheckpointMismatchError
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
