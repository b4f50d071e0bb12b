r"""How well the CTC forced aligner places phone boundaries, and where its score
threshold belongs.

    python benchmarks/aligner_boundaries.py --recognizer EXPORT [--max-clips 120] \
        [--out runs/aligner/boundaries.md]

On the built-in corpus's held-out speakers (the 6 no speech model trains on),
each utterance is aligned to its own corpus phones, and every phone start is
compared with espeak's exact timing: mean, median and 90th-percentile error in
ms, and the share within 20 / 50 ms. Then the same audio is aligned to
*another* utterance's phones: the mean log-posterior per frame of matching and
of mismatched transcripts gives `models.ctc.align.DEFAULT_MIN_SCORE` (the
threshold with the fewest errors over both sets, reported with its error rates).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def best_threshold(matching: np.ndarray, mismatched: np.ndarray) -> tuple[float, float, float]:
    """(threshold, share of matching refused, share of mismatched accepted) at the
    threshold with the fewest errors over both sets (midway between neighbours)."""
    candidates = np.sort(np.concatenate([matching, mismatched]))
    middles = np.concatenate([[candidates[0] - 1], (candidates[1:] + candidates[:-1]) / 2,
                              [candidates[-1] + 1]])
    errors = [(np.mean(matching < t) + np.mean(mismatched >= t), t) for t in middles]
    _, threshold = min(errors)
    return float(threshold), float(np.mean(matching < threshold)), \
        float(np.mean(mismatched >= threshold))


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recognizer", type=Path, required=True)
    parser.add_argument("--max-clips", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    from tqdm.auto import tqdm

    from audiolm_jax.audio.io import load_audio
    from audiolm_jax.eval.tts_harness import builtin_records
    from audiolm_jax.files import write_text_atomic
    from audiolm_jax.models.ctc import PhonemeRecognizer
    from audiolm_jax.models.ctc.align import align, boundary_errors

    recognizer = PhonemeRecognizer.load(args.recognizer)
    records = builtin_records(held_out=True)
    rng = np.random.default_rng(args.seed)
    records = [records[i] for i in sorted(rng.permutation(len(records))[: args.max_clips])]
    errors, matching, mismatched = [], [], []
    for i, record in enumerate(tqdm(records, desc="aligning")):
        audio, rate = load_audio(record["path"], recognizer.sample_rate)
        audio = audio.mean(axis=1)
        found = align(recognizer, audio, rate, phonemes=record["phonemes"], min_score=None)
        errors.append(boundary_errors(found.starts, record["phoneme_starts"]))
        matching.append(found.score)
        other = records[(i + 1 + rng.integers(len(records) - 1)) % len(records)]
        try:
            mismatched.append(align(recognizer, audio, rate, phonemes=other["phonemes"],
                                    min_score=None).score)
        except ValueError:   # more phones than frames: refused before any score
            pass
    ms = np.concatenate(errors) * 1000
    matching, mismatched = np.asarray(matching), np.asarray(mismatched)
    threshold, refused, accepted = best_threshold(matching, mismatched)
    pct = lambda x, q: float(np.percentile(x, q))  # noqa: E731
    lines = [
        f"Recognizer {args.recognizer}; {len(records)} utterances of the 6 held-out speakers, "
        f"{len(ms)} phone starts.",
        "",
        "| phone-start error | mean | median | 90th pct | within 20 ms | within 50 ms |",
        "|---|---|---|---|---|---|",
        f"| forced aligner vs. espeak's timing | {ms.mean():.1f} ms | {np.median(ms):.1f} ms | "
        f"{pct(ms, 90):.1f} ms | {np.mean(ms <= 20):.1%} | {np.mean(ms <= 50):.1%} |",
        "",
        "| alignment score (mean log-posterior / frame) | n | 5th pct | median | 95th pct |",
        "|---|---|---|---|---|",
        f"| own transcript | {len(matching)} | {pct(matching, 5):.2f} | "
        f"{np.median(matching):.2f} | {pct(matching, 95):.2f} |",
        f"| another utterance's transcript | {len(mismatched)} | {pct(mismatched, 5):.2f} | "
        f"{np.median(mismatched):.2f} | {pct(mismatched, 95):.2f} |",
        "",
        f"Fewest errors at min_score = {threshold:.2f}: {refused:.1%} of matching transcripts "
        f"refused, {accepted:.1%} of mismatched accepted.",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out is not None:
        write_text_atomic(args.out, report)
    return report


if __name__ == "__main__":
    main()
