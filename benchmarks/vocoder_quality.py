r"""A vocoder's resynthesis quality on held-out speakers: spectral distances, PESQ, STOI,
intelligibility and DNSMOS, against ground truth and Griffin-Lim.

    python benchmarks/vocoder_quality.py --vocoder NAME=PATH [--vocoder NAME=PATH ...] \
        [--clips 24] [--griffin-lim-iters 32] [--recognizer ctc_tiny] [--out FILE]

Clips: whole utterances of the built-in speech corpus's 4 held-out speakers
(`data.sources.split_held_out_speakers`, the speakers the tiny vocoder and
Voicebox never train on), the first `--clips` of them. Each system decodes the
log-mel of the clip itself (resynthesis), with the settings of the vocoder it
is (Griffin-Lim: the first vocoder's settings).

Columns, per clip then averaged:

* log-mel L1: `|logmel(decoded) - logmel(reference)|` in vocos's log-mel with a
  1e-5 floor (the same for every row, whatever floor a vocoder reads).
* mel distance: the project's multi-resolution mel distance
  (`eval.audio_metrics.mel_distance`).
* PESQ (wide band) and STOI, both at 16 kHz (`pesq`, `pystoi`).
* PER: the phoneme error rate of `--recognizer` (the project's judge) against
  espeak's phones of the transcript (`eval.tts.PhonemeJudge`).
* DNSMOS OVRL (`speechmos`).

Rows: ground truth (its own scores: PESQ 4.64 and STOI 1 are the ceiling),
white noise at the clip's level (the floor of every column), the mel's
magnitudes with zero phase (Griffin-Lim stopped before its first iteration: the
trivial decoder), Griffin-Lim from the same features, then each `--vocoder`
(an export, a training workdir, or a committed name under `weights/`).
`--rows` keeps only the named rows (comma-separated, prefixes of their names).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from audiolm_jax.audio.io import load_audio, resample  # noqa: E402
from audiolm_jax.audio.spectral import vocos_log_mel  # noqa: E402
from audiolm_jax.eval import audio_metrics, tts  # noqa: E402
from audiolm_jax.eval.tts_harness import builtin_records  # noqa: E402
from audiolm_jax.files import resolve_weights, write_json_atomic, write_text_atomic  # noqa: E402
from audiolm_jax.models import vocoder as vocoder_lib  # noqa: E402
from audiolm_jax.models.ctc import DEFAULT_RECOGNIZER  # noqa: E402

RATE = 24_000
METRIC_RATE = 16_000
BUCKET = RATE // 2          # clips padded to whole half seconds: one compile per length


def decoder(config: vocoder_lib.VocosConfig, variables, griffin_lim_iters: int):
    """Jitted `audio [samples] -> resynthesis [samples]` (a vocoder, or Griffin-Lim when
    `variables` is None), padded to a bucket so clips share compiles."""
    model = vocoder_lib.Vocos(config)

    @jax.jit
    def run(audio):
        features = vocoder_lib.mel_features(audio[None], config)
        if variables is None:
            return vocoder_lib.griffin_lim_from_features(features, config, griffin_lim_iters)[0]
        return model.apply(variables, features)[0]

    def decode(audio: np.ndarray) -> np.ndarray:
        padded = np.pad(audio, (0, -len(audio) % BUCKET))
        return np.asarray(run(jnp.asarray(padded)))[:len(audio)]

    return decode


def white_noise(audio: np.ndarray) -> np.ndarray:
    """Gaussian noise with the clip's RMS, seeded by its length (the same every run)."""
    rms = float(np.sqrt(np.mean(np.square(audio)))) or 0.05
    noise = np.random.default_rng(len(audio)).normal(0.0, rms, len(audio))
    return np.clip(noise, -1, 1).astype(np.float32)


def clip_scores(decoded: np.ndarray, reference: np.ndarray, text: str, judges: tts.Judges,
                mel) -> dict[str, float]:
    from pesq import pesq
    from pystoi import stoi

    n = min(len(decoded), len(reference))
    decoded, reference = decoded[:n], reference[:n]
    ref16 = resample(reference[:, None], RATE, METRIC_RATE)[:, 0]
    dec16 = resample(decoded[:, None], RATE, METRIC_RATE)[:, 0]
    out = {"mel_l1": float(jnp.mean(jnp.abs(mel(decoded) - mel(reference)))),
           "mel_distance": float(audio_metrics.mel_distance(
               jnp.asarray(decoded)[None, :, None], jnp.asarray(reference)[None, :, None],
               RATE)[0]),
           "pesq": float(pesq(METRIC_RATE, ref16, dec16, "wb")),
           "stoi": float(stoi(ref16, dec16, METRIC_RATE, extended=False))}
    scores = judges.score(decoded, RATE, text)
    out["phone_errors"], out["phones"] = scores.get("phone_errors"), scores.get("phones")
    out["dnsmos_ovrl"] = scores.get("dnsmos_ovrl")
    return out


def summarize(rows: list[dict]) -> dict[str, float]:
    out = {key: float(np.mean([r[key] for r in rows]))
           for key in ("mel_l1", "mel_distance", "pesq", "stoi")}
    if rows and rows[0]["phones"] is not None:
        out["per"] = sum(r["phone_errors"] for r in rows) / max(sum(r["phones"] for r in rows), 1)
    if rows and rows[0]["dnsmos_ovrl"] is not None:
        out["dnsmos_ovrl"] = float(np.mean([r["dnsmos_ovrl"] for r in rows]))
    return out


def table(results: dict[str, dict[str, float]], clips: int) -> str:
    lines = [f"| system ({clips} held-out clips) | log-mel L1 | mel distance | PESQ | STOI | PER "
             "| DNSMOS OVRL |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, s in results.items():
        lines.append(f"| {name} | {s['mel_l1']:.3f} | {s['mel_distance']:.3f} | {s['pesq']:.2f} "
                     f"| {s['stoi']:.3f} | {s.get('per', float('nan')):.3f} "
                     f"| {s.get('dnsmos_ovrl', float('nan')):.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocoder", action="append", default=[], metavar="NAME=PATH",
                        help="a vocoder export, workdir or committed name (repeatable)")
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--griffin-lim-iters", type=int, default=32)
    parser.add_argument("--recognizer", default=DEFAULT_RECOGNIZER,
                        help="'none' leaves out the PER column")
    parser.add_argument("--no-dnsmos", action="store_true")
    parser.add_argument("--rows", default="", help="only these rows (name prefixes, comma-"
                                                    "separated)")
    parser.add_argument("--out", type=Path, default=None,
                        help="write the table here and per-clip scores to .json beside it")
    args = parser.parse_args(argv)

    vocoders, first_config = {}, None
    for spec in args.vocoder:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            parser.error(f"--vocoder takes NAME=PATH, got {spec!r}")
        config, variables = vocoder_lib.load(resolve_weights(path))
        if config.features != "mel" or config.sample_rate != RATE:
            parser.error(f"{path}: a {config.sample_rate} Hz {config.features!r} vocoder; this "
                         f"benchmark resynthesizes {RATE} Hz log-mels")
        vocoders[name] = decoder(config, variables, args.griffin_lim_iters)
        first_config = first_config or config
    front_end = first_config or vocoder_lib.VocosConfig(log_floor=1e-5)
    systems = {"ground truth": lambda audio: audio,
               "noise at the clip's level": white_noise,
               "zero phase (Griffin-Lim, 0 iterations)": decoder(front_end, None, 0),
               f"Griffin-Lim ({args.griffin_lim_iters} iterations)": decoder(
                   front_end, None, args.griffin_lim_iters)}
    systems.update(vocoders)
    if args.rows:
        wanted = [w.strip() for w in args.rows.split(",") if w.strip()]
        systems = {k: v for k, v in systems.items() if any(k.startswith(w) for w in wanted)}

    records = builtin_records(held_out=True, held_out_speakers=4)[:args.clips]
    judges = tts.Judges.load(
        recognizer=None if args.recognizer == "none" else resolve_weights(args.recognizer),
        recognizer_name=args.recognizer, asr=False, speaker=False, dnsmos=not args.no_dnsmos)
    mel = jax.jit(lambda a: vocos_log_mel(a, RATE, floor=1e-5))
    results, per_clip = {}, {}
    for name, decode in systems.items():
        start = time.perf_counter()
        rows = []
        for record in records:
            audio = load_audio(record["path"], RATE)[0][:, 0]
            rows.append({"id": record["id"],
                         **clip_scores(decode(audio), audio, record["text"], judges, mel)})
        results[name], per_clip[name] = summarize(rows), rows
        print(f"{name}: {results[name]} ({time.perf_counter() - start:.0f} s)", flush=True)
    text = table(results, len(records))
    print("\n" + text)
    if args.out:
        write_text_atomic(args.out, text + "\n")
        write_json_atomic(args.out.with_suffix(".json"), {"summary": results, "clips": per_clip})


if __name__ == "__main__":
    main()
