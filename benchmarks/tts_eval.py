r"""The TTS evaluation table: every system on an evaluation folder, cross-sentence.

    python benchmarks/tts_eval.py --eval-set DIR [--system NAME=KIND:DIR[:k=v,...]] \
        [--wavs NAME=DIR] [--recognizer DIR] [--vocoder DIR] [--out FILE] [--wav-dir DIR]
    python benchmarks/tts_eval.py --eval-set builtin --recognizer R --vocoder V --out T.md

`--eval-set` is `DIR/<speaker>/<utterance>.wav` with `<utterance>.txt` (and
optionally `<utterance>.alignment.json`), or `builtin`: the built-in speech
corpus's held-out speakers, written to OUT's folder first
(`tts_harness.write_builtin_eval_set`). For each target utterance a system says
its transcript, prompted by another utterance of the same speaker; the target is
the ground truth. See `audiolm_jax/eval/tts_harness.py` and `eval/tts.py` for
the protocol, the judges and what each column measures.

Rows: the calibration rows first (ground truth; Griffin-Lim and, with
`--vocoder`, vocoder resynthesis of the ground-truth mel; the phone-mean lookup
through the same decoder; another speaker reading the same sentence where one
does; noise), then each `--system` (a model: `vb=voicebox:weights/vb:steps=8,
guidance=0.7`) and each `--wavs NAME=DIR` (a folder of wavs named like the
targets, `DIR/<speaker>/<utterance>.wav`: any outside system).

Writes the Markdown table to `--out` (and prints it) and every per-utterance
score, transcript and failure to the same path with `.json`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audiolm_jax.eval import tts, tts_harness  # noqa: E402
from audiolm_jax.files import write_json_atomic, write_text_atomic  # noqa: E402
from audiolm_jax.models.ctc import DEFAULT_RECOGNIZER  # noqa: E402
from audiolm_jax.models.vocoder import DEFAULT_VOCODER  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--eval-set", required=True,
                        help="DIR/<speaker>/<utterance>.wav + .txt, or 'builtin'")
    parser.add_argument("--system", action="append", default=[],
                        metavar="NAME=KIND:DIR[:k=v,...]", help="a model to run (repeatable)")
    parser.add_argument("--wavs", action="append", default=[], metavar="NAME=DIR",
                        help="a folder of outputs named like the targets (repeatable)")
    parser.add_argument("--recognizer", default=DEFAULT_RECOGNIZER,
                        help="phoneme recognizer export or committed name for PER (default: "
                             f"{DEFAULT_RECOGNIZER}; 'none': no PER column)")
    parser.add_argument("--vocoder", default=DEFAULT_VOCODER,
                        help="vocoder export or committed name for the resynthesis and lookup "
                             f"rows (default: {DEFAULT_VOCODER}; 'none': Griffin-Lim only)")
    parser.add_argument("--phone-means", type=Path, default=None,
                        help="phone means .npz (default: fitted on the built-in corpus's "
                             "training speakers and cached beside --out)")
    parser.add_argument("--no-calibration", action="store_true",
                        help="only the systems (the calibration rows are for the record)")
    parser.add_argument("--no-closed-vocabulary", action="store_true")
    parser.add_argument("--no-dnsmos", action="store_true")
    parser.add_argument("--max-seconds", type=float, default=8.0,
                        help="builtin: the longest utterance kept (a model's context bounds "
                             "prompt + target: the tiny Voicebox's is 5.5 s, so 4.5)")
    parser.add_argument("--per-speaker", type=int, default=8,
                        help="builtin: utterances per held-out speaker")
    parser.add_argument("--out", type=Path, default=Path("runs/tts_eval/table.md"))
    parser.add_argument("--wav-dir", type=Path, default=None,
                        help="also write every system's outputs here, one folder a row")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[tts_harness.SystemResult]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    for name in ("absl", "jax", "orbax"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        systems = [tts_harness.parse_system(spec) for spec in args.system]
        for spec in args.wavs:
            name, sep, path = spec.partition("=")
            if not sep or not name or not path:
                raise ValueError(f"--wavs {spec!r}: expected NAME=DIR")
            systems.append(tts_harness.WavFolder(name, path))
        root = args.eval_set
        if root == "builtin":
            root = tts_harness.write_builtin_eval_set(args.out.parent / "eval_set",
                                                      per_speaker=args.per_speaker,
                                                      max_seconds=args.max_seconds)
        eval_set = tts_harness.EvalSet.read(root)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"tts_eval: {e}") from None
    cases = eval_set.cases()
    print(f"{len(eval_set.speakers)} speakers, {len(cases)} cases from {eval_set.root}"
          + (f" ({len(eval_set.skipped)} skipped)" if eval_set.skipped else ""), flush=True)

    start = time.perf_counter()
    judges = tts.Judges.load(
        recognizer=None if args.recognizer == "none" else args.recognizer,
        closed_vocabulary=None if args.no_closed_vocabulary else eval_set.texts(),
        dnsmos=not args.no_dnsmos)
    print(f"judges loaded in {time.perf_counter() - start:.1f} s: "
          f"{tts_harness.judges_description(judges)}", flush=True)

    if not args.no_calibration:
        systems = tts_harness.calibration_systems(
            eval_set, vocoder=None if args.vocoder == "none" else args.vocoder, phone_means=lambda: phone_means(args),
            aligner=judges.phonemes.recognizer if judges.phonemes else None) + systems

    results = []
    for system in systems:
        wav_dir = args.wav_dir / slug(system.name) if args.wav_dir else None
        results.append(tts_harness.evaluate_system(system, cases, judges, wav_dir=wav_dir,
                                                   progress=not args.no_progress))
        print(tts_harness.markdown_table(results[-1:], judges).splitlines()[-1], flush=True)

    header = (f"Evaluation set {eval_set.root}: {len(eval_set.speakers)} speakers, "
              f"{len(cases)} cross-sentence cases; judges: "
              f"{tts_harness.judges_description(judges)}; {time.strftime('%Y-%m-%d')}.\n\n")
    table = tts_harness.markdown_table(results, judges)
    write_text_atomic(args.out, header + table)
    write_json_atomic(args.out.with_suffix(".json"),
                      tts_harness.results_json(results, eval_set, judges))
    print("\n" + header + table + f"\n-> {args.out} and {args.out.with_suffix('.json')}")
    return results


def phone_means(args: argparse.Namespace) -> tts_harness.PhoneMeans:
    """The lookup's per-phone means: `--phone-means`, or fitted once and cached."""
    path = args.phone_means or args.out.parent / "phone_means.npz"
    if path.is_file():
        return tts_harness.PhoneMeans.load(path)
    decoder = tts_harness.MelDecoder()   # the front end only: identical for every vocos mel
    means = tts_harness.fit_phone_means(tts_harness.builtin_records(held_out=False), decoder,
                                        progress=not args.no_progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    means.save(path)
    return means


def slug(name: str) -> str:
    """A folder name for a row: 'vocoder resynthesis' -> 'vocoder_resynthesis'."""
    out = "".join(c if c.isalnum() or c in "._-" else "_" for c in name.lower())
    return "_".join(filter(None, out.split("_")))


if __name__ == "__main__":
    main()
