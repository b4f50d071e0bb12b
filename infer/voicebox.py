r"""Voicebox's tasks from the command line: TTS, editing, denoising, continuation.

    python infer/voicebox.py tts --checkpoint DIR --prompt P.wav --prompt-text "..." \
        --text "..." OUT.wav
    python infer/voicebox.py edit --checkpoint DIR --audio IN.wav --transcript "..." \
        --new-transcript "..." OUT.wav
    python infer/voicebox.py denoise --checkpoint DIR --audio IN.wav --transcript "..." \
        --start 1.2 --end 2.0 OUT.wav
    python infer/voicebox.py continue --checkpoint DIR --prompt P.wav --prompt-text "..." \
        --text "..." OUT.wav

Every subcommand takes `--steps`, `--method`, `--guidance` and `--seed` (see
`infer/tts.py`), reads any sample rate (resampled with a notice) and writes a
16-bit WAV at 24 kHz.

- `edit` aligns the audio to its transcript, regenerates the phones that differ
  in the new transcript (durations from the duration model, the rest of the
  audio as context) and keeps everything else.
- `denoise` regenerates the span [start, end) seconds from the audio around it
  and the transcript's phones in it; the output has the input's length.
- `continue` writes the prompt followed by the new speech.
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

from audiolm_jax.audio.io import BadAudioError, save_audio
from infer.tts import add_sampling_flags, network_passes, read_wav, sampling_kwargs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("tts", "edit", "denoise", "continue"):
        command = commands.add_parser(name)
        command.add_argument("output", metavar="OUT.wav")
        command.add_argument("--checkpoint", required=True, help="a Voicebox bundle directory")
        if name in ("tts", "continue"):
            command.add_argument("--prompt", required=True)
            command.add_argument("--prompt-text", required=True)
            command.add_argument("--text", required=True)
        else:
            command.add_argument("--audio", required=True)
            command.add_argument("--transcript", required=True)
        if name == "edit":
            command.add_argument("--new-transcript", required=True)
        if name == "denoise":
            command.add_argument("--start", type=float, required=True, help="seconds")
            command.add_argument("--end", type=float, required=True, help="seconds")
        add_sampling_flags(command)
    return parser


def run(args: argparse.Namespace):
    from audiolm_jax.models.voicebox.inference import load

    sampling = sampling_kwargs(args)
    voice = load(args.checkpoint)
    if args.command in ("tts", "continue"):
        prompt, rate = read_wav(args.prompt)
        if args.command == "tts":
            return voice.tts(args.text, prompt, rate, args.prompt_text, **sampling)
        return voice.continue_speech(prompt, rate, args.prompt_text, args.text, **sampling)
    audio, rate = read_wav(args.audio)
    if args.command == "edit":
        return voice.edit(audio, rate, args.transcript, args.new_transcript, **sampling)
    return voice.denoise(audio, rate, args.transcript, args.start, args.end, **sampling)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="notice: %(message)s")
    try:
        start = time.perf_counter()
        audio, rate = run(args)
        elapsed = time.perf_counter() - start
        save_audio(args.output, audio, rate)
        print(f"{args.command}: {len(audio) / rate:.2f} s -> {args.output} "
              f"({elapsed:.1f} s, model loading and compilation included; "
              f"{network_passes(args)} network passes)")
        return 0
    except (FileNotFoundError, ValueError, BadAudioError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
