r"""Codec round trip: audio -> codes (.npz) -> audio, offline or streamed.

    python infer/codec.py encode IN.wav OUT.npz --checkpoint DIR [--bandwidth 6]
    python infer/codec.py decode IN.npz OUT.wav --checkpoint DIR [--force]
    python infer/codec.py roundtrip IN.wav OUT.wav --checkpoint DIR [--bandwidth 6] \
        [--plot spectrograms.png]
    python infer/codec.py encode IN_FOLDER/ OUT_FOLDER/ --checkpoint DIR   # any subcommand

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

The .npz also records `fingerprint`, the codec's weights fingerprint (the
export's recorded one, else computed from the variables: a Hugging Face
directory, an export older than fingerprints). `decode` refuses codes whose
fingerprint differs from the loaded codec's (codes of another training run of
the same architecture), naming both; `--force` decodes them anyway. Codes
files without a fingerprint are accepted. Every output is written atomically
(a temporary file renamed onto the target).

Each command prints a summary: duration, bitrate, codes shape and the
real-time factor (processing time / audio duration, below 1 is faster than
real time; it includes XLA compilation unless `--warmup` runs everything once
first); `roundtrip` adds SI-SNR and mel distance.

**Folders.** Given a folder as input (searched recursively: audio files for
`encode` and `roundtrip`, `.npz` for `decode`), every subcommand writes into an
output folder, mirroring the input's layout: `encode` writes `<name>.npz` with
the audio extension kept (`a.wav` -> `a.wav.npz`, `a.flac` -> `a.flac.npz`);
`decode` writes the name without `.npz`, as a wav (`a.wav.npz` -> `a.wav`,
`a.flac.npz` -> `a.flac.wav`, `x.npz` -> `x.wav`); `roundtrip` writes
`<name>` as a wav (`a.wav` -> `a.wav`, `a.flac` -> `a.flac.wav`) and
`metrics.jsonl` (SI-SNR per file; no mel distance, which would compile per
length). The codec is loaded once and the files go one at a time, with a
progress bar; files that cannot be used are listed with the reason in
`OUTPUT/skipped.txt`, and a summary line gives the files, the audio, the time,
the length buckets and how often the encoder and decoder were compiled.

**Length buckets** (folders only). Each clip is zero-padded to a bucket of
`--bucket-seconds` (rounded up to a multiple of the hop) times 1, 2, 3, 4, 6,
8, 12, 16, ..., encoded, and its codes trimmed to `ceil(samples / hop)`
frames; decoding pads the codes to the bucket's frames and trims the audio to
`num_samples`. The SEANet halves then compile once per bucket, not once per
file. This is done only for codecs for which padding at the end cannot change
what comes before (causal, no time group norm, no RMS normalization, no
windows: the codecs that can stream); others run each file at its exact
length (one compile per distinct length), as does `--exact-lengths`. Measured
on the tiny causal test codec: a clip whose length is a multiple of the hop
gives the same codes and audio as the single-file command (max abs difference
0.0); otherwise only the final, partial code frame can differ (the
single-file command's convolutions reflect-pad that frame, the bucketed one
sees zeros), so only the last `samples mod hop` decoded samples differ (max
abs difference there: 0.037 on the test codec, 0.105 on the shape of
configs/codec/tiny.py with random weights; `--exact-lengths` is bit-identical
to the single-file command). Decoding in buckets is exact (0.0): the decoder
is causal. On a CPU compiling dominates: a larger `--bucket-seconds` means
fewer buckets, hence fewer compiles, for more padded compute.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python infer/codec.py`: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from audiolm_jax.audio.io import AUDIO_EXTENSIONS, load_audio, resample, save_audio
from audiolm_jax.files import (
    check_fingerprint,
    fingerprint,
    save_npz_atomic,
    write_text_atomic,
)
from audiolm_jax.models.codec.inference import EncodedAudio, decode_audio, encode_audio
from audiolm_jax.models.codec.model import Codec
from audiolm_jax.quantization.vq import check_codes, num_quantizers_to_bandwidth

NPZ_FORMAT_VERSION = 1
NPZ_KEYS = ("codes", "num_samples", "window_frames", "sample_rate", "bandwidth", "config",
            "format_version")   # and, optionally, "scales" and "fingerprint"

# Fields of CodecConfig that only matter for training: codes stay valid across them.
TRAINING_ONLY_FIELDS = frozenset({"quantizer_dropout", "commitment_weight", "ema_decay",
                                  "kmeans_init", "kmeans_iters", "threshold_ema_dead_code"})


class CodecCliError(ValueError):
    """A problem with the user's input; main prints it as `error: ...` and exits 1."""


# ----------------------------------------------------------------------------- input audio


def load_input(path: str | os.PathLike, model: Codec,
               notice: Callable[[str], Any] = print) -> np.ndarray:
    """Reads audio for `model`: [samples, audio_channels] float32 at its sample rate.

    Mixes down or duplicates channels and resamples, passing a notice for each
    to `notice` (printed by default).
    """
    cfg = model.config
    if not Path(path).is_file():  # before load_audio, whose fallback decoders are slow to fail
        raise FileNotFoundError(f"{path}: no such audio file")
    audio, sr = load_audio(path, sample_rate=None, mono=False)
    channels = cfg.seanet.audio_channels
    if audio.shape[1] != channels:
        if channels == 1:
            notice(f"note: {path} has {audio.shape[1]} channels; mixing them down to mono for "
                   "this 1-channel codec")
            audio = audio.mean(axis=1, keepdims=True)
        elif audio.shape[1] == 1:
            notice(f"note: {path} is mono; duplicating it to the codec's {channels} channels")
            audio = np.repeat(audio, channels, axis=1)
        else:
            raise CodecCliError(f"{path} has {audio.shape[1]} channels and the codec "
                                f"{channels}; only mono <-> {channels} channels is converted")
    if sr != cfg.sample_rate:
        notice(f"note: {path} is at {sr} Hz; resampling it to the codec's {cfg.sample_rate} Hz")
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
               bandwidth: float, weights_fingerprint: str | None = None) -> None:
    """Writes an EncodedAudio of batch 1 atomically (see the module docstring for the fields).

    Args:
      weights_fingerprint: the codec's weights fingerprint, recorded as `fingerprint`.
    """
    cfg = model.config
    fields = dict(codes=np.asarray(encoded.codes[0], np.int32),
                  num_samples=np.int64(encoded.num_samples),
                  window_frames=np.asarray(encoded.window_frames, np.int64),
                  sample_rate=np.int64(cfg.sample_rate), bandwidth=np.float64(bandwidth),
                  config=np.asarray(json.dumps(cfg.to_dict(), sort_keys=True)),
                  format_version=np.int64(NPZ_FORMAT_VERSION))
    if encoded.scales is not None:
        fields["scales"] = np.asarray(encoded.scales[0], np.float32)
    if weights_fingerprint is not None:
        fields["fingerprint"] = np.asarray(weights_fingerprint)
    save_npz_atomic(path, compress=True, **fields)


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


def load_codes(path: str | os.PathLike, model: Codec, weights_fingerprint: str | None = None,
               force: bool = False) -> tuple[EncodedAudio, float]:
    """Reads an .npz written by `save_codes` and checks it against `model`.

    Args:
      weights_fingerprint: the loaded codec's weights fingerprint; codes that
        record another one are refused.
      force: accept codes whose fingerprint differs.

    Returns:
      (EncodedAudio of batch 1, bandwidth kbps).

    Raises:
      CodecCliError: a missing field, codes from another codec (naming the
        differing config fields), a code outside the codebooks (naming it).
      FingerprintMismatchError: codes made with other weights of the same
        codec (naming both fingerprints), unless `force`.
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
    recorded = str(fields["fingerprint"]) if "fingerprint" in fields else None
    check_fingerprint(weights_fingerprint, recorded, f"codes file {path}", force=force)
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


# ----------------------------------------------------------------------------- length buckets


def bucket_length(num_samples: int, base: int) -> int:
    """`base` times the first of 1, 2, 3, 4, 6, 8, 12, 16, ... (powers of two and 1.5 x
    powers of two) that holds `num_samples`: at most 50 % padding, about two buckets per
    doubling (the schedule of `audiolm_jax.tokenizers.semantic.bucket_length`)."""
    units = -(-max(1, num_samples) // base)
    power = 1 << max(0, (units - 1).bit_length() - 1)
    return next(m for m in (power, 3 * power // 2, 2 * power) if m >= units) * base


def bucket_base(model: Codec, bucket_seconds: float) -> int:
    """`bucket_seconds` in samples, rounded up to a whole number of hops (at least one)."""
    hop = model.config.hop_length
    return max(1, math.ceil(bucket_seconds * model.config.sample_rate / hop)) * hop


def padding_is_safe(model: Codec) -> str | None:
    """None when zero-padding a clip's end leaves everything before it unchanged, else why not.

    That holds for the codecs that can stream: causal convolutions and LSTMs, no
    time group norm, no RMS normalization, and one window for the whole signal.
    """
    from audiolm_jax.models.codec.streaming import check_streamable

    if model.config.chunk_length_s is not None:
        return (f"it encodes in windows of chunk_length_s={model.config.chunk_length_s} s, "
                "which padding would shift")
    try:
        check_streamable(model.config)
    except ValueError as e:
        return str(e).replace("this codec cannot stream: ", "")
    return None


def encode_bucketed(model: Codec, variables: Any, audio: np.ndarray, bandwidth: float,
                    base: int) -> EncodedAudio:
    """`encode` of [samples, channels] audio zero-padded to its length bucket, codes trimmed."""
    num_samples = audio.shape[0]
    padded = np.pad(audio, ((0, bucket_length(num_samples, base) - num_samples), (0, 0)))
    encoded = encode_audio(model, variables, padded[None], bandwidth)
    frames = -(-num_samples // model.config.hop_length)
    return EncodedAudio(codes=np.asarray(encoded.codes)[:, :, :frames], scales=None,
                        num_samples=num_samples, window_frames=(frames,))


def decode_bucketed(model: Codec, variables: Any, encoded: EncodedAudio,
                    base: int) -> np.ndarray:
    """`decode` of single-window codes zero-padded to their length bucket, audio trimmed."""
    if encoded.codes.shape[1] != 1:
        raise CodecCliError(f"bucketed decoding takes single-window codes; these have "
                            f"{encoded.codes.shape[1]} windows")
    hop = model.config.hop_length
    frames = encoded.window_frames[0]
    bucket_frames = bucket_length(frames * hop, base) // hop
    codes = np.asarray(encoded.codes)[:, :, :frames]
    codes = np.pad(codes, ((0, 0), (0, 0), (0, bucket_frames - frames), (0, 0)))
    audio = decode_audio(model, variables, EncodedAudio(
        codes=codes, scales=None, num_samples=bucket_frames * hop,
        window_frames=(bucket_frames,)))
    return np.asarray(audio)[0, :encoded.num_samples]


class CompileCounter:
    """Counts XLA lowerings of the codec's jitted encoder and decoder (one per compile).

    Listens to `jax.monitoring`'s lowering events, which fire once per new
    program whether or not XLA's persistent cache then has the binary.
    """

    _counts: collections.Counter = collections.Counter()
    _registered = False

    PROGRAMS = {"encoder": "jit(jit_encode_latents)", "decoder": "jit(jit_decode_latents)"}

    def __init__(self):
        if not CompileCounter._registered:
            from jax import monitoring

            monitoring.register_event_duration_secs_listener(CompileCounter._listen)
            CompileCounter._registered = True
        self.start = dict(CompileCounter._counts)

    @staticmethod
    def _listen(event: str, duration: float, **kwargs: Any) -> None:
        if event == "/jax/core/compile/jaxpr_to_mlir_module_duration":
            CompileCounter._counts[kwargs.get("fun_name")] += 1

    def count(self, part: str) -> int:
        name = self.PROGRAMS[part]
        return CompileCounter._counts[name] - self.start.get(name, 0)


def si_snr_db(estimate: np.ndarray, reference: np.ndarray, eps: float = 1e-8) -> float:
    """`eval.audio_metrics.si_snr` of one [samples, channels] pair, in numpy (no compile
    per length)."""
    e = estimate.astype(np.float64) - estimate.mean(axis=0, dtype=np.float64)
    r = reference.astype(np.float64) - reference.mean(axis=0, dtype=np.float64)
    target = np.sum(e * r) / (np.sum(r * r) + eps) * r
    noise = e - target
    return float(10 * np.log10((np.sum(target ** 2) + eps) / (np.sum(noise ** 2) + eps)))


# ----------------------------------------------------------------------------- commands


def _load_model(args: argparse.Namespace) -> tuple[Codec, Any]:
    from audiolm_jax.convert.encodec import load_codec

    return load_codec(args.checkpoint)


def codec_fingerprint(checkpoint: str | os.PathLike, variables: Any) -> str:
    """The codec's weights fingerprint: the export's recorded one (the checkpoint itself or
    a workdir's `export/`), else computed from `variables` (HF directory, older export)."""
    from audiolm_jax.training.export import MODEL_FILE, exported_fingerprint

    path = Path(checkpoint)
    for directory in (path, path / "export"):
        if (directory / MODEL_FILE).is_file():
            recorded = exported_fingerprint(directory)
            if recorded:
                return recorded
            break
    return fingerprint(variables)


def cmd_encode(args: argparse.Namespace) -> None:
    model, variables = _load_model(args)
    bandwidth, _ = resolve_bandwidth(model, args.bandwidth)
    weights = codec_fingerprint(args.checkpoint, variables)
    if Path(args.input).is_dir():
        return run_folder(args, model, variables, bandwidth, weights)
    audio = load_input(args.input, model)
    encoded, seconds = _timed(lambda: encode(model, variables, audio, bandwidth, args.stream,
                                             args.chunk_ms), args.warmup)
    save_codes(args.output, encoded, model, bandwidth, weights)
    sr = model.config.sample_rate
    print(f"encoded {args.input} ({_describe_audio(audio, sr)}) -> {args.output}: "
          f"{_describe_codes(encoded, model)}; {_mode(args)}, "
          f"{_timing(seconds, audio.shape[0] / sr, args.warmup)}")


def cmd_decode(args: argparse.Namespace) -> None:
    model, variables = _load_model(args)
    weights = codec_fingerprint(args.checkpoint, variables)
    if Path(args.input).is_dir():
        return run_folder(args, model, variables, None, weights)
    encoded, _ = load_codes(args.input, model, weights, force=args.force)
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
    if Path(args.input).is_dir():
        return run_folder(args, model, variables, bandwidth, None)
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


# ----------------------------------------------------------------------------- folders


def output_name(command: str, relative: Path) -> Path:
    """Where a folder run writes the output of input `relative` (module docstring)."""
    name = relative.name
    if command == "encode":
        return relative.parent / f"{name}.npz"
    if command == "decode" and name.lower().endswith(".npz"):
        name = name[:-len(".npz")]
    if not name.lower().endswith(".wav"):
        name += ".wav"
    return relative.parent / name


def list_inputs(command: str, folder: Path) -> list[Path]:
    suffixes = (".npz",) if command == "decode" else AUDIO_EXTENSIONS
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
    if not files:
        raise FileNotFoundError(f"no {'codes files (.npz)' if command == 'decode' else 'audio files'}"
                                f" ({', '.join(suffixes)}) under {folder}")
    return files


def run_folder(args: argparse.Namespace, model: Codec, variables: Any,
               bandwidth: float | None, weights: str | None) -> None:
    """One command over every file of the input folder (module docstring: "Folders")."""
    from tqdm.auto import tqdm

    command, root, out = args.command, Path(args.input), Path(args.output)
    if out.exists() and not out.is_dir():
        raise CodecCliError(f"{out} is a file; with a folder as input, the output must be a "
                            "folder")
    if command == "roundtrip" and out.resolve() == root.resolve():
        raise CodecCliError(f"roundtrip would overwrite the input files in {root}: give "
                            "another output folder")
    if args.warmup:
        raise CodecCliError("--warmup times a single file; a folder run reports its total "
                            "time and how often it compiled")
    if getattr(args, "plot", None):
        raise CodecCliError("--plot draws a single file's spectrograms; leave it out for a "
                            "folder")
    if args.stream:
        _stream_setup(model, "decode" if command == "decode" else "encode")
    files = list_inputs(command, root)
    out.mkdir(parents=True, exist_ok=True)
    why_exact = padding_is_safe(model)
    bucketed = not (args.stream or args.exact_lengths or why_exact)
    if why_exact and not (args.stream or args.exact_lengths):
        print(f"note: every file runs at its exact length (one compile per distinct length): "
              f"padding would change this codec's output: {why_exact}")
    base = bucket_base(model, args.bucket_seconds)
    sr, hop = model.config.sample_rate, model.config.hop_length
    compiles = CompileCounter()
    skipped: dict[str, str] = {}
    notes: list[str] = []
    shapes: set[int] = set()
    metrics: list[dict[str, Any]] = []
    total_samples, written = 0, 0
    start = time.perf_counter()
    for path in tqdm(files, desc=command, dynamic_ncols=True):
        relative = path.relative_to(root)
        target = out / output_name(command, relative)
        try:
            if command == "decode":
                encoded, _ = load_codes(path, model, weights, force=args.force)
                audio = (decode_bucketed(model, variables, encoded, base) if bucketed
                         else decode(model, variables, encoded, args.stream, args.chunk_ms))
                save_audio(target, audio, sr)
                length = encoded.window_frames[0] * hop if bucketed else encoded.num_samples
                total_samples += encoded.num_samples
            else:
                audio = load_input(path, model, notice=notes.append)
                encoded = (encode_bucketed(model, variables, audio, bandwidth, base) if bucketed
                           else encode(model, variables, audio, bandwidth, args.stream,
                                       args.chunk_ms))
                length = audio.shape[0]
                total_samples += audio.shape[0]
                if command == "encode":
                    save_codes(target, encoded, model, bandwidth, weights)
                else:
                    decoded = (decode_bucketed(model, variables, encoded, base) if bucketed
                               else decode(model, variables, encoded, args.stream,
                                           args.chunk_ms))
                    save_audio(target, decoded, sr)
                    metrics.append({"file": str(relative), "output": str(target.relative_to(out)),
                                    "seconds": audio.shape[0] / sr,
                                    "si_snr_db": round(si_snr_db(decoded, audio), 3)})
            shapes.add(bucket_length(length, base) if bucketed else length)
            written += 1
        except Exception as e:  # noqa: BLE001 - any problem with one file is listed, not fatal
            skipped[str(relative)] = str(e) or type(e).__name__
    seconds = time.perf_counter() - start
    write_text_atomic(out / "skipped.txt",
                      "".join(f"{name}: {reason}\n" for name, reason in skipped.items()))
    if metrics:
        write_text_atomic(out / "metrics.jsonl",
                          "".join(json.dumps(m) + "\n" for m in metrics))
    if notes:
        print(f"note: {len(notes)} conversion(s) on load, e.g. {notes[0].removeprefix('note: ')}")
    if not written:
        first = "; ".join(f"{name}: {reason}" for name, reason in list(skipped.items())[:3])
        raise CodecCliError(f"none of the {len(files)} files under {root} could be used "
                            f"({command}); {first}")
    duration = total_samples / sr
    rtf = seconds / duration if duration > 0 else math.inf
    kind = ("length bucket" if bucketed else "distinct length") + "s" * (len(shapes) != 1)
    compiled = ("" if args.stream else f", encoder compiled {compiles.count('encoder')}x, "
                f"decoder {compiles.count('decoder')}x")
    summary = (f"{command}: {written} of {len(files)} files -> {out} ({duration:.2f} s of audio) "
               f"in {seconds:.2f} s, real-time factor {rtf:.3f} (compilation included); "
               f"{_mode(args)}, {len(shapes)} {kind}{compiled}; {len(skipped)} skipped")
    if skipped:
        summary += f" (listed in {out / 'skipped.txt'})"
    print(summary)
    if metrics:
        mean = sum(m["si_snr_db"] for m in metrics) / len(metrics)
        print(f"mean SI-SNR {mean:.2f} dB over {len(metrics)} files "
              f"(per file: {out / 'metrics.jsonl'})")


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
                            "out XLA compilation (single files)")
        p.add_argument("--bucket-seconds", type=float, default=1.0,
                       help="folders: pad clips to this many seconds times 1, 2, 3, 4, 6, 8, "
                            "... (one compile per bucket)")
        p.add_argument("--exact-lengths", action="store_true",
                       help="folders: run every file at its exact length (no padding; one "
                            "compile per distinct length)")

    p = sub.add_parser("encode", help="audio file (or folder) -> codes .npz (or folder)")
    p.add_argument("input", help="audio file (wav, flac, ogg, mp3, ...) or a folder of them")
    p.add_argument("output", help=".npz of codes, or a folder for a folder")
    common(p, bandwidth=True)
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("decode", help="codes .npz (or folder) -> wav (or folder)")
    p.add_argument("input", help=".npz written by encode, or a folder of them")
    p.add_argument("output", help="audio file to write (16-bit PCM), or a folder")
    common(p, bandwidth=False)
    p.add_argument("--force", action="store_true",
                   help="decode codes recorded with another codec's weights fingerprint")
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("roundtrip", help="audio file (or folder) -> codes -> audio, with metrics")
    p.add_argument("input", help="audio file, or a folder of them")
    p.add_argument("output", help="audio file to write (16-bit PCM), or a folder")
    common(p, bandwidth=True)
    p.add_argument("--plot", default=None, help="write a spectrogram comparison PNG here")
    p.set_defaults(func=cmd_roundtrip)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line `argv` (without the program name); returns 0.

    Raises:
      SystemExit: with `error: <message>` (exit status 1) for bad input: an
        unreadable file, an unsupported bandwidth, codes from another codec or
        out of range or made with other weights, a codec that cannot stream, a
        folder in which no file could be used; status 2 for bad arguments.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.chunk_ms <= 0:
        parser.error(f"--chunk-ms must be positive, got {args.chunk_ms:g}")
    if args.bucket_seconds <= 0:
        parser.error(f"--bucket-seconds must be positive, got {args.bucket_seconds:g}")
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as e:  # BadAudioError, checkpoint mismatches too
        raise SystemExit(f"error: {e}") from e
    return 0


if __name__ == "__main__":
    sys.exit(main())
