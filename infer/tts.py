r"""Text to speech in the voice of a prompt: the project's one TTS entry point.

    python infer/tts.py --model voicebox --checkpoint DIR --prompt P.wav \
        --prompt-text "What the prompt says." --text "What to say." OUT.wav \
        [--steps 8 --method midpoint --guidance 0.7 --seed 0]
    python infer/tts.py --model bark --checkpoint DIR --text "What to say." OUT.wav \
        [--voice PROMPT.npz] [--temperature 0.7 --top-k 50 --seed 0]
    python infer/tts.py --model f5tts --checkpoint DIR --prompt P.wav \
        --prompt-text "What the prompt says." --text "What to say." OUT.wav \
        [--vocoder VOCOS_DIR] [--steps 32 --method euler --guidance 2 --duration S]

`--checkpoint` is the model's bundle directory: for Voicebox a folder with
`bundle.json` naming its audio model, duration model, vocoder and the
recognizer that aligns the prompt (`audiolm_jax.models.voicebox.inference.Bundle`).
The prompt (3-10 s is best; at least 1 s) may have any sample rate (resampled,
with a notice) and channel count (mixed down). The output is a 16-bit WAV at
the model's rate (24 kHz). Prints the duration and the real-time factor.

For Bark, `--checkpoint` is an export of `python -m audiolm_jax.convert bark`
and the voice is a history prompt `.npz` (`semantic_prompt`, `coarse_prompt`,
`fine_prompt`, as suno ships them), or none; `--temperature` applies to every
stage (0: greedy).

For F5-TTS, `--checkpoint` is an export of `python -m audiolm_jax.convert f5tts`
(or a `train/f5tts.py` work directory) and the mel is decoded by a
vocos-mel-24khz export (`python -m audiolm_jax.convert vocos`): `--vocoder`, or
the one the export names. Its defaults are the package's: 32 Euler steps,
guidance 2 in its convention `v + (v - v_null) * 2`, sway -1 (64 network
passes). Text longer than the context is split at punctuation and the pieces
joined with a 0.15 s cross-fade; `--duration` sets the new speech's seconds
(one piece). Characters outside the vocabulary are an error naming them
unless `--drop-unknown`. Other models (VALL-E, NaturalSpeech 2) join under their own
`--model`; `infer/voicebox.py` has Voicebox's other tasks (edit, denoise,
continue).
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
from audiolm_jax.sampling.ode import NFE_PER_STEP

MODELS = ("voicebox", "bark", "f5tts")
# The flags each model needs; the others it refuses to ignore silently.
REQUIRED = {"voicebox": ("prompt", "prompt_text"), "bark": (),
            "f5tts": ("prompt", "prompt_text")}
# Each flow model's own sampling defaults (its published convention), used where the
# command line leaves `--steps`, `--method` or `--guidance` out.
SAMPLING_DEFAULTS = {"voicebox": dict(steps=8, method="midpoint", guidance=0.7),
                     "f5tts": dict(steps=32, method="euler", guidance=2.0)}


def add_sampling_flags(parser: argparse.ArgumentParser) -> None:
    """The one convention of every flow or diffusion model here: `--steps` are solver
    steps; network passes = steps x the method's evaluations per step, x 2 with
    guidance (printed with the result)."""
    parser.add_argument("--steps", type=int, default=8,
                        help="ODE solver steps (midpoint: 2 network evaluations each)")
    parser.add_argument("--method", default="midpoint", choices=sorted(NFE_PER_STEP))
    parser.add_argument("--guidance", type=float, default=0.7,
                        help="classifier-free guidance: Voicebox's alpha, "
                             "(1 + alpha) v_cond - alpha v_uncond (0: none)")
    parser.add_argument("--seed", type=int, default=0)


def sampling_kwargs(args: argparse.Namespace) -> dict:
    if args.steps < 1:
        raise ValueError(f"--steps must be at least 1, got {args.steps}")
    return dict(num_steps=args.steps, method=args.method, guidance=args.guidance,
                seed=args.seed)


def network_passes(args: argparse.Namespace) -> int:
    """Network passes of one sampling: solver evaluations, doubled by guidance."""
    return NFE_PER_STEP[args.method] * args.steps * (2 if args.guidance else 1)


def read_wav(path: str) -> tuple:
    """(audio [samples, channels], sample rate) at the file's own rate."""
    return load_audio(path, None, mono=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", metavar="OUT.wav")
    parser.add_argument("--model", required=True, choices=MODELS)
    parser.add_argument("--checkpoint", required=True,
                        help="the model's bundle directory (voicebox) or export (bark, f5tts)")
    parser.add_argument("--prompt", help="voicebox, f5tts: a recording of the voice to use")
    parser.add_argument("--prompt-text", help="voicebox, f5tts: the words of the prompt")
    parser.add_argument("--voice", help="bark: a history prompt .npz (default: none)")
    parser.add_argument("--text", required=True, help="the words to say")
    add_sampling_flags(parser)
    parser.add_argument("--temperature", type=float, default=0.7,
                        help="bark: sampling temperature of every stage (0: greedy)")
    parser.add_argument("--top-k", type=int, default=0, help="bark: top-k (0: off)")
    parser.add_argument("--vocoder", help="f5tts: a vocos-mel-24khz export (default: the one "
                                          "the checkpoint names)")
    parser.add_argument("--duration", type=float, default=None,
                        help="f5tts: seconds of new speech (default: from the prompt's rate)")
    parser.add_argument("--drop-unknown", action="store_true",
                        help="f5tts: leave out characters the vocabulary lacks (default: error)")
    # Per-model defaults (SAMPLING_DEFAULTS) fill these in after parsing.
    parser.set_defaults(steps=None, method=None, guidance=None)
    return parser


def fill_sampling_defaults(args: argparse.Namespace) -> None:
    for name, value in SAMPLING_DEFAULTS.get(args.model, {}).items():
        if getattr(args, name) is None:
            setattr(args, name, value)


def f5tts_tts(args: argparse.Namespace) -> tuple:
    """(audio [samples], rate, seconds generating, network passes) from an F5-TTS export."""
    from audiolm_jax.models import f5tts

    if args.steps < 1:
        raise ValueError(f"--steps must be at least 1, got {args.steps}")
    model = f5tts.load(args.checkpoint)
    prompt, rate = read_wav(args.prompt)
    speech = model.tts(args.text, prompt, rate, args.prompt_text, vocoder=args.vocoder,
                       seed=args.seed, steps=args.steps, cfg_strength=args.guidance,
                       method=args.method, duration_seconds=args.duration,
                       unknown="drop" if args.drop_unknown else "error")
    if len(speech.chunks) > 1:
        logging.info("the text was split into %d pieces, joined with a cross-fade",
                     len(speech.chunks))
    return speech.audio, speech.sample_rate, speech.seconds, speech.passes


def bark_tts(args: argparse.Namespace) -> tuple:
    """(audio [samples], rate) from an imported Bark."""
    import jax

    from audiolm_jax.models import bark
    from audiolm_jax.models.bark.pipeline import Voice

    pipeline = bark.load(args.checkpoint)
    voice = Voice.load(args.voice) if args.voice else None
    t = args.temperature
    audio, lengths = pipeline.speak([args.text], voice=voice, key=jax.random.key(args.seed),
                                    temperatures=(t, t, t), top_k=args.top_k)
    return audio[0, :lengths[0]], pipeline.sample_rate


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="notice: %(message)s")
    missing = [f"--{f.replace('_', '-')}" for f in REQUIRED[args.model]
               if getattr(args, f) is None]
    if missing:
        print(f"error: --model {args.model} needs {' and '.join(missing)}", file=sys.stderr)
        return 1
    fill_sampling_defaults(args)
    try:
        start = time.perf_counter()
        passes = None if args.model == "bark" else network_passes(args)
        if args.model == "bark":
            audio, out_rate = bark_tts(args)
        elif args.model == "f5tts":
            audio, out_rate, elapsed, passes = f5tts_tts(args)
            start = time.perf_counter() - elapsed
        else:
            from audiolm_jax.models.voicebox.inference import load

            sampling = sampling_kwargs(args)
            voice = load(args.checkpoint)
            prompt, rate = read_wav(args.prompt)
            start = time.perf_counter()
            audio, out_rate = voice.tts(args.text, prompt, rate, args.prompt_text, **sampling)
        elapsed = time.perf_counter() - start
        save_audio(args.output, audio, out_rate)
        seconds = len(audio) / out_rate
        passes = "" if passes is None else f", {passes} network passes"
        print(f"{seconds:.2f} s of speech -> {args.output} (real-time factor "
              f"{elapsed / max(seconds, 1e-9):.2f}, compilation included{passes})")
        return 0
    except (FileNotFoundError, ValueError, BadAudioError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
