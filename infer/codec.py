r"""Codec round trip: audio -> codes (.npz) -> audio, offline or streamed.

    python infer/codec.py encode IN.wav OUT.npz --checkpoint DIR [--bandwidth 6]
    python infer/codec.py decode IN.npz OUT.wav --checkpoint DIR
    python infer/codec.py roundtrip IN.wav OUT.wav --checkpoint DIR [--bandwidth 6] \
        [--plot spectrograms.png]

`--checkpoint` is an exported codec (`model.json` + `variables/`, as written by
`python -m audiolm_jax.convert` or a codec trainer), a training work directory
holding one in `export/`, or a Hugging Face EnCodec directory (see
`audiolm_jax.convert.encodec.load_codec`).

- `--bandwidth` is in kbit/s, one of the model's `target_bandwidths`; by
  default the largest (all codebooks).
- `--stream --chunk-ms N` runs a causal codec chunk by chunk
  (`audiolm_jax.models.codec.streaming`), as a live link would, feeding N ms of
  audio (or of code frames) at a time. The codes and the audio are those of
  the offline path.
- Input at another sample rate is resampled (soxr) and a stereo file given to
  a mono codec is mixed down, a mono file given to a stereo codec duplicated,
  each with a printed notice.

The .npz holds `codes` [windows, frames, n_q] int32 (one window unless the
codec encodes in windows, `chunk_length_s`; a short last window is
zero-padded), `scales` [windows] (only for codecs that normalize),
`num_samples`, `window_frames` [windows], `sample_rate`, `bandwidth` (kbps),
`config` (the codec's `CodecConfig` as JSON) and `format_version`. `decode`
refuses codes made by another codec (naming the differing config field) and
codes outside the codebooks (naming the value).

Each command prints a summary: duration, bitrate, codes shape and the
real-time factor (processing time / audio duration, below 1 is faster than
real time; it includes XLA compilation unless `--warmup` runs everything once
first); `roundtrip` adds SI-SNR and mel distance.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python infer/codec.py`: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from audiolm_jax.audio.io import load_audio, resample, save_audio
from audiolm_jax.models.codec.inference import EncodedAudio, decode_audio, encode_audio
from audiolm_jax.models.codec.model import Codec
from audiolm_jax.quantization.vq import check_codes, num_quantizers_to_bandwidth

NPZ_FORMAT_VERSION = 1
NPZ_KEYS = ("codes", "num_samples", "window_frames", "sample_rate", "bandwidth", "config",
            "format_version")

# Fields of CodecConfig that only matter for training: codes stay valid across them.
TRAINING_ONLY_FIELDS = frozenset({"quantizer_dropout", "commitment_weight", "ema_decay",
                                  "kmeans_init", "kmeans_iters", "threshold_ema_dead_code"})


class CodecCliError(ValueError):
    """A problem with the user's input; main prints it as `error: ...` and exits 1."""


# ----------------------------------------------------------------------------- input audio


def load_input(path: str | os.PathLike, model: Codec) -> np.ndarray:
    """Reads audio for `model`: [samples, audio_channels] float32 at its sample rate.

    Mixes down or duplicates channels and resamples, printing a notice for each.
    """
    cfg = model.config
    if not Path(path).is_file():  # before load_audio, whose fallback decoders are slow to fail
        raise FileNotFoundError(f"{path}: no such audio file")
    audio, sr = load_audio(path, sample_rate=None, mono=False)
    channels = cfg.seanet.audio_channels
    if audio.shape[1] != channels:
        if channels == 1:
            print(f"note: {path} has {audio.shape[1]} channels; mixing them down to mono for "
                  "this 1-channel codec")
            audio = audio.mean(axis=1, keepdims=True)
        elif audio.shape[1] == 1:
            print(f"note: {path} is mono; duplicating it to the codec's {channels} channels")
            audio = np.repeat(audio, channels, axis=1)
        else:
            raise CodecCliError(f"{path} has {audio.shape[1]} channels and the codec "
                                f"{channels}; only mono <-> {channels} channels is converted")
    if sr != cfg.sample_rate:
        print(f"note: {path} is at {sr} Hz; resampling it to the codec's {cfg.sample_rate} Hz")
        audio = resample(audio, sr, cfg.sample_rate)
    return np.ascontiguousarray(audio, np.float32)


# ----------------------------------------------------------------------------- encode / decode


def resolve_bandwidth(model: Codec, bandwidth: float | None) -> tuple[float, int]:
    """(bandwidth kbps, number of codebooks); None means the largest target bandwidth.

    Raises:
      ValueError: listing the supported bandwidths.
    """
    cfg = model.config
    if bandwidth is None:
        bandwidth = max(cfg.target_bandwidths)
    return float(bandwidth), cfg.num_quantizers_for(bandwidth)


def _stream_setup(model: Codec, what: str) -> None:
    from audiolm_jax.models.codec.streaming import check_streamable

    check_streamable(model.config)
    if model.config.chunk_length_s is not None:
        raise CodecCliError(
            f"--stream: this codec {what}s in windows of chunk_length_s="
            f"{model.config.chunk_length_s} s with overlap-add; streaming treats the whole "
            "signal as one window, which is not what the codec was built for. Leave out "
            "--stream")


def chunk_samples(model: Codec, chunk_ms: float) -> int:
    return max(1, round(chunk_ms * model.config.sample_rate / 1000))


def chunk_frames(model: Codec, chunk_ms: float) -> int:
    return max(1, round(chunk_ms * model.config.frame_rate / 1000))


def encode(model: Codec, variables: Any, audio: np.ndarray, bandwidth: float | None,
           stream: bool = False, chunk_ms: float = 40.0) -> EncodedAudio:
    """[samples, channels] audio -> EncodedAudio (batch 1)."""
    bandwidth, n_q = resolve_bandwidth(model, bandwidth)
    if not stream:
        return encode_audio(model, variables, audio[None], bandwidth)
    from audiolm_jax.models.codec.streaming import stream_encode_codes

    _stream_setup(model, "encode")
    codes = stream_encode_codes(model, variables, audio[None], chunk_samples(model, chunk_ms),
                                num_quantizers=n_q)
    return EncodedAudio(codes=codes[:, None], scales=None, num_samples=int(audio.shape[0]),
                        window_frames=(int(codes.shape[1]),))


def decode(model: Codec, variables: Any, encoded: EncodedAudio, stream: bool = False,
           chunk_ms: float = 40.0) -> np.ndarray:
    """EncodedAudio (batch 1) -> [num_samples, channels] float32 audio."""
    if not stream:
        return np.asarray(decode_audio(model, variables, encoded))[0]
    from audiolm_jax.models.codec.streaming import stream_decode_codes

    _stream_setup(model, "decode")
    if encoded.codes.shape[1] != 1:
        raise CodecCliError(f"--stream decodes single-window codes; these have "
                            f"{encoded.codes.shape[1]} windows")
    frames = encoded.window_frames[0]
    audio = stream_decode_codes(model, variables, encoded.codes[:, 0, :frames],
                                chunk_frames(model, chunk_ms))
    return audio[0, :encoded.num_samples]


# ----------------------------------------------------------------------------- .npz


def save_codes(path: str | os.PathLike, encoded: EncodedAudio, model: Codec,
               bandwidth: float) -> None:
    """Writes an EncodedAudio of batch 1 (see the module docstring for the fields)."""
    cfg = model.config
    fields = dict(codes=np.asarray(encoded.codes[0], np.int32),
                  num_samples=np.int64(encoded.num_samples),
                  window_frames=np.asarray(encoded.window_frames, np.int64),
                  sample_rate=np.int64(cfg.sample_rate), bandwidth=np.float64(bandwidth),
                  config=np.asarray(json.dumps(cfg.to_dict(), sort_keys=True)),
                  format_version=np.int64(NPZ_FORMAT_VERSION))
    if encoded.scales is not None:
        fields["scales"] = np.asarray(encoded.scales[0], np.float32)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:  # a file object: np.savez would append ".npz" to other names
        np.savez_compressed(f, **fields)


def config_differences(ours: Mapping[str, Any], theirs: Mapping[str, Any],
                       prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted field, ours, theirs) for each field that differs, training-only fields aside."""
    out = []
    for key in sorted(set(ours) | set(theirs)):
        if not prefix and key in TRAINING_ONLY_FIELDS:
            continue
        a, b = ours.get(key, "<missing>"), theirs.get(key, "<missing>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += config_differences(a, b, f"{prefix}{key}.")
        elif _normalized(a) != _normalized(b):
            out.append((prefix + key, a, b))
    return out


def _normalized(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_normalized(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value)
    return value


def load_codes(path: str | os.PathLike, model: Codec) -> tuple[EncodedAudio, float]:
    """Reads an .npz written by `save_codes` and checks it against `model`.

    Returns:
      (EncodedAudio of batch 1, bandwidth kbps).

    Raises:
      CodecCliError: a missing field, codes from another codec (naming the
        differing config fields), a code outside the codebooks (naming it).
    """
    cfg = model.config
    try:
        with np.load(path, allow_pickle=False) as data:
            fields = {key: data[key] for key in data.files}
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001 - zip/pickle/format errors all mean "not our npz"
        raise CodecCliError(f"{path}: cannot read codes ({e})") from e
    missing = [key for key in NPZ_KEYS if key not in fields]
    if missing:
        raise CodecCliError(f"{path} is not a codes file written by `infer/codec.py encode`: "
                            f"it lacks {missing}")
    if int(fields["format_version"]) > NPZ_FORMAT_VERSION:
        raise CodecCliError(f"{path} has format_version {int(fields['format_version'])}; this "
                            f"tool reads up to {NPZ_FORMAT_VERSION}")
    try:
        file_config = json.loads(str(fields["config"]))
    except json.JSONDecodeError as e:
        raise CodecCliError(f"{path}: its `config` is not valid JSON ({e})") from e
    diffs = config_differences(file_config, cfg.to_dict())
    if diffs:
        listed = "; ".join(f"{name}: {a!r} in the file, {b!r} in the checkpoint"
                           for name, a, b in diffs)
        raise CodecCliError(f"{path} was encoded by a different codec than the checkpoint "
                            f"({len(diffs)} config field(s) differ: {listed})")
    if int(fields["sample_rate"]) != cfg.sample_rate:
        raise CodecCliError(f"{path} has sample_rate {int(fields['sample_rate'])}, the codec "
                            f"{cfg.sample_rate}")
    codes = fields["codes"]
    if codes.ndim != 3:
        raise CodecCliError(f"{path}: codes must be [windows, frames, n_q], got shape "
                            f"{codes.shape}")
    if not 1 <= codes.shape[-1] <= cfg.num_quantizers:
        raise CodecCliError(f"{path}: codes have {codes.shape[-1]} codebooks; this codec has "
                            f"{cfg.num_quantizers}")
    try:
        check_codes(codes, cfg.codebook_size, codebook_axis=-1)
    except ValueError as e:
        raise CodecCliError(f"{path}: {e}") from e
    window_frames = tuple(int(f) for f in np.atleast_1d(fields["window_frames"]))
    if len(window_frames) != codes.shape[0] or max(window_frames) > codes.shape[1]:
        raise CodecCliError(f"{path}: window_frames {window_frames} do not fit codes of shape "
                            f"{codes.shape}")
    scales = fields.get("scales")
    if cfg.normalize and scales is None:
        raise CodecCliError(f"{path} has no `scales`, which this normalizing codec needs")
    encoded = EncodedAudio(codes=codes.astype(np.int32)[None],
                           scales=None if scales is None else np.asarray(scales, np.float32)[None],
                           num_samples=int(fields["num_samples"]), window_frames=window_frames)
    return encoded, float(fields["bandwidth"])


# ----------------------------------------------------------------------------- summaries


def _describe_codes(encoded: EncodedAudio, model: Codec) -> str:
    cfg = model.config
    windows, frames, n_q = encoded.codes.shape[1:]
    kbps = num_quantizers_to_bandwidth(n_q, cfg.frame_rate, cfg.codebook_size)
    return (f"codes [{windows} window{'s' * (windows != 1)}, {frames} frames, {n_q} codebooks] "
            f"at {kbps:g} kbps ({n_q} x {cfg.bits_per_code} bits x {cfg.frame_rate} frames/s)")


def _timed(fn: Any, warmup: bool) -> tuple[Any, float]:
    """(fn(), seconds it took); with warmup, fn runs once untimed first (XLA compiles)."""
    if warmup:
        fn()
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def _timing(seconds: float, duration: float, warmup: bool) -> str:
    rtf = seconds / duration if duration > 0 else math.inf
    note = "after a warm-up run" if warmup else "XLA compilation included; see --warmup"
    return f"{seconds:.2f} s, real-time factor {rtf:.3f} ({note})"


def _describe_audio(audio: np.ndarray, sample_rate: int) -> str:
    return f"{audio.shape[0] / sample_rate:.2f} s, {sample_rate} Hz, {audio.shape[1]} ch"


def _mode(args: argparse.Namespace) -> str:
    return f"streamed in {args.chunk_ms:g} ms chunks" if args.stream else "offline"


# ----------------------------------------------------------------------------- commands


def _load_model(args: argparse.Namespace) -> tuple[Codec, Any]:
    from audiolm_jax.convert.encodec import load_codec

    return load_codec(args.checkpoint)


def cmd_encode(args: argparse.Namespace) -> None:
    model, variables = _load_model(args)
    bandwidth, _ = resolve_bandwidth(model, args.bandwidth)
    audio = load_input(args.input, model)
    encoded, seconds = _timed(lambda: encode(model, variables, audio, bandwidth, args.stream,
                                             args.chunk_ms), args.warmup)
    save_codes(args.output, encoded, model, bandwidth)
    sr = model.config.sample_rate
    print(f"encoded {args.input} ({_describe_audio(audio, sr)}) -> {args.output}: "
          f"{_describe_codes(encoded, model)}; {_mode(args)}, "
          f"{_timing(seconds, audio.shape[0] / sr, args.warmup)}")


def cmd_decode(args: argparse.Namespace) -> None:
    model, variables = _load_model(args)
    encoded, _ = load_codes(args.input, model)
    audio, seconds = _timed(lambda: decode(model, variables, encoded, args.stream,
                                           args.chunk_ms), args.warmup)
    sr = model.config.sample_rate
    save_audio(args.output, audio, sr)
    print(f"decoded {args.input} ({_describe_codes(encoded, model)}) -> {args.output} "
          f"({_describe_audio(audio, sr)}); {_mode(args)}, "
          f"{_timing(seconds, audio.shape[0] / sr, args.warmup)}")


def cmd_roundtrip(args: argparse.Namespace) -> None:
    from audiolm_jax.eval.audio_metrics import mel_distance, si_snr, spectrogram_panels

    model, variables = _load_model(args)
    bandwidth, _ = resolve_bandwidth(model, args.bandwidth)
    audio = load_input(args.input, model)
    sr = model.config.sample_rate
    def both():
        encoded = encode(model, variables, audio, bandwidth, args.stream, args.chunk_ms)
        return encoded, decode(model, variables, encoded, args.stream, args.chunk_ms)

    (encoded, decoded), seconds = _timed(both, args.warmup)
    save_audio(args.output, decoded, sr)
    snr = float(si_snr(decoded[None], audio[None])[0])
    mel = float(mel_distance(decoded[None], audio[None], sr)[0])
    print(f"round trip {args.input} ({_describe_audio(audio, sr)}) -> {args.output}: "
          f"{_describe_codes(encoded, model)}; {_mode(args)}, "
          f"{_timing(seconds, audio.shape[0] / sr, args.warmup)}")
    print(f"SI-SNR {snr:.2f} dB, mel distance {mel:.3f}")
    if args.plot:
        from audiolm_jax.eval.plots import plot_spectrograms

        plot_spectrograms(spectrogram_panels(audio, decoded, sr), args.plot,
                          title=f"{Path(args.input).name} at {bandwidth:g} kbps: SI-SNR "
                                f"{snr:.2f} dB, mel distance {mel:.3f}",
                          frames_per_second=sr / 256)
        print(f"spectrograms: {args.plot}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="infer/codec.py", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, bandwidth: bool) -> None:
        p.add_argument("--checkpoint", required=True,
                       help="exported codec directory (model.json + variables/), a training "
                            "workdir with export/, or a Hugging Face EnCodec directory")
        if bandwidth:
            p.add_argument("--bandwidth", type=float, default=None,
                           help="kbit/s, one of the model's target bandwidths "
                                "(default: the largest)")
        p.add_argument("--stream", action="store_true",
                       help="run chunk by chunk, as a live link would (causal codecs only)")
        p.add_argument("--chunk-ms", type=float, default=40.0,
                       help="with --stream: milliseconds of audio (or code frames) per chunk")
        p.add_argument("--warmup", action="store_true",
                       help="run once untimed first, so that the real-time factor leaves "
                            "out XLA compilation")

    p = sub.add_parser("encode", help="audio file -> codes .npz")
    p.add_argument("input", help="audio file (wav, flac, ogg, mp3, ...)")
    p.add_argument("output", help=".npz of codes")
    common(p, bandwidth=True)
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("decode", help="codes .npz -> wav")
    p.add_argument("input", help=".npz written by encode")
    p.add_argument("output", help="audio file to write (16-bit PCM)")
    common(p, bandwidth=False)
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("roundtrip", help="audio file -> codes -> audio file, with metrics")
    p.add_argument("input", help="audio file")
    p.add_argument("output", help="audio file to write (16-bit PCM)")
    common(p, bandwidth=True)
    p.add_argument("--plot", default=None, help="write a spectrogram comparison PNG here")
    p.set_defaults(func=cmd_roundtrip)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line `argv` (without the program name); returns 0.

    Raises:
      SystemExit: with `error: <message>` (exit status 1) for bad input: an
        unreadable file, an unsupported bandwidth, codes from another codec or
        out of range, a codec that cannot stream; status 2 for bad arguments.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.chunk_ms <= 0:
        parser.error(f"--chunk-ms must be positive, got {args.chunk_ms:g}")
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as e:  # BadAudioError, checkpoint mismatches too
        raise SystemExit(f"error: {e}") from e
    return 0


if __name__ == "__main__":
    sys.exit(main())
