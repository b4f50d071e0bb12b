r"""Vocoder: audio -> its log-mel -> audio again, or a saved log-mel -> audio.

    python infer/vocoder.py roundtrip IN.wav OUT.wav [--checkpoint DIR] [--plot spec.png]
    python infer/vocoder.py decode MEL.npy OUT.wav [--checkpoint DIR] [--channels-first]
    python infer/vocoder.py features IN.wav MEL.npy [--checkpoint DIR]

`--checkpoint` is a vocoder export (`model.json` + `variables/`, from
`train/vocoder.py` or `python -m audiolm_jax.convert vocos`), a training work
directory holding one in `export/`, a `vocos` package directory
(config.yaml + pytorch_model.bin / model.safetensors, converted in memory), or
the name of a committed vocoder; the default is the committed tiny vocoder
(`weights/vocoder_tiny`, 24 kHz speech, silence floored at 1e-5).

- `roundtrip` computes the features with the checkpoint's own mel settings (a
  vocoder must be fed exactly what it was trained on), decodes them and prints
  the log-mel L1 and the multi-resolution mel distance to the input, and the
  real-time factor.
- `decode` reads `[frames, n_mels]` (channels last, as `features` writes and
  Voicebox generates), or `[n_mels, frames]` with `--channels-first` (the
  `vocos` package's layout); a leading batch axis of 1 is dropped.
- Input at another sample rate is resampled (soxr) and stereo is mixed down,
  each with a printed notice. Outputs are float32 WAVs, unnormalized (no
  clipping), written atomically.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # `python infer/x.py`: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import jax.numpy as jnp
import numpy as np

from audiolm_jax.audio.io import BadAudioError, load_audio, save_audio
from audiolm_jax.eval import audio_metrics
from audiolm_jax.eval.plots import plot_spectrograms
from audiolm_jax.files import atomic_path
from audiolm_jax.models import vocoder as vocoder_lib


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, inp, out, what in (
            ("roundtrip", "IN", "OUT", "audio -> features -> audio (with metrics)"),
            ("decode", "MEL", "OUT", "a saved log-mel .npy -> audio"),
            ("features", "IN", "MEL", "audio -> the vocoder's log-mel .npy [frames, n_mels]")):
        command = commands.add_parser(name, help=what, description=what)
        command.add_argument("input", metavar=inp)
        command.add_argument("output", metavar=out)
        command.add_argument("--checkpoint", default=vocoder_lib.DEFAULT_VOCODER,
                             help="vocoder export, training workdir, vocos directory or "
                                  f"committed name (default: {vocoder_lib.DEFAULT_VOCODER})")
        if name == "roundtrip":
            command.add_argument("--plot", help="write input-vs-output spectrograms (PNG)")
        if name == "decode":
            command.add_argument("--channels-first", action="store_true",
                                 help="MEL is [n_mels, frames] (the vocos package's layout)")
    return parser


def read_audio(path: str, sample_rate: int) -> np.ndarray:
    """[samples] mono float32 at `sample_rate`, with a notice when it had to convert."""
    import soundfile as sf

    try:
        info = sf.info(path)
        native_rate, channels = info.samplerate, info.channels
    except Exception:  # noqa: BLE001 - other formats: load_audio decodes them (librosa)
        native_rate, channels = None, 1
    audio, _ = load_audio(path, sample_rate, mono=True)
    if native_rate is not None and native_rate != sample_rate:
        print(f"notice: {path} is {native_rate} Hz; resampled to the vocoder's {sample_rate} Hz")
    if channels > 1:
        print(f"notice: {path} has {channels} channels; mixed down to mono")
    return audio[:, 0]


def read_mel(path: str, config: vocoder_lib.VocosConfig, channels_first: bool) -> np.ndarray:
    """[frames, n_mels] float32 from a .npy, checked against the vocoder's mel bands."""
    try:
        mel = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a numpy .npy array ({e})") from e
    if mel.ndim == 3 and mel.shape[0] == 1:
        mel = mel[0]
    if mel.ndim != 2:
        raise ValueError(f"{path}: expected a log-mel [frames, {config.n_mels}], got shape "
                         f"{mel.shape}")
    if channels_first:
        mel = mel.T
    if mel.shape[1] != config.n_mels:
        hint = (" (it looks like [n_mels, frames]: pass --channels-first)"
                if mel.shape[0] == config.n_mels else "")
        raise ValueError(f"{path}: {mel.shape[1]} mel bands, the vocoder reads "
                         f"{config.n_mels}{hint}")
    if not np.all(np.isfinite(mel)):
        raise ValueError(f"{path}: the log-mel holds NaN or inf")
    return mel.astype(np.float32)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config, variables = vocoder_lib.load(args.checkpoint)
        if config.features != "mel":
            raise ValueError(f"{args.checkpoint} decodes {config.features!r} features; this "
                             "tool drives mel vocoders")
        model = vocoder_lib.Vocos(config)
        decode = jax.jit(lambda v, mel: model.apply(v, mel))
        features = jax.jit(lambda a: vocoder_lib.mel_features(a, config))
        start = time.perf_counter()
        if args.command == "decode":
            mel = read_mel(args.input, config, args.channels_first)
        else:
            audio = read_audio(args.input, config.sample_rate)
            mel = np.asarray(features(audio[None]))[0]
        if args.command == "features":
            with atomic_path(args.output) as tmp:
                np.save(tmp, mel)
            print(f"{mel.shape[0]} frames x {mel.shape[1]} mel bands -> {args.output}")
            return 0
        out = np.asarray(decode(variables, mel[None]))[0]
        elapsed = time.perf_counter() - start
        save_audio(args.output, out, config.sample_rate, subtype="FLOAT")
        seconds = len(out) / config.sample_rate
        line = (f"{mel.shape[0]} frames -> {seconds:.2f} s at {config.sample_rate} Hz -> "
                f"{args.output} (real-time factor {elapsed / max(seconds, 1e-9):.3f}, "
                "compilation included)")
        if args.command == "roundtrip":
            n = min(len(out), len(audio))
            ref, est = jnp.asarray(audio[None, :n, None]), jnp.asarray(out[None, :n, None])
            l1 = float(jnp.mean(jnp.abs(features(est[..., 0]) - features(ref[..., 0]))))
            distance = float(audio_metrics.mel_distance(est, ref, config.sample_rate)[0])
            line += f"; log-mel L1 {l1:.3f}, mel distance {distance:.3f}"
            if args.plot:
                fps = config.frame_rate
                plot_spectrograms([("input", mel), ("vocoded", np.asarray(features(est[..., 0]))[0])],
                                  args.plot, title=f"vocoder round trip of {Path(args.input).name}",
                                  frames_per_second=fps)
        print(line)
        return 0
    except (FileNotFoundError, ValueError, BadAudioError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
