r"""Phoneme error rate of recognizers on speech they never trained on: the judge's table.

    python benchmarks/recognizer_per.py --recognizer before=runs/ctc/export \
        --recognizer after=ctc_tiny --vocoder runs/vocoder/export \
        --flite-set runs/flite_eval [--max-clips 173] [--out runs/recognizer_per.md]

Rows (columns: one per recognizer):
- held-out espeak: the built-in corpus's 6 held-out speakers (no speech model
  trains on them), references their corpus phones;
- Griffin-Lim / vocoder resynthesis: the same clips through their vocos log-mel
  and back (what a judged generator's output looks like);
- flite voices (`benchmarks/flite_speech.py`), references espeak's en-us phones
  of the text;
- chance: a unigram predictor (the training corpus's most frequent phone,
  repeated to the reference's length) on the held-out espeak references;
- ceiling: the references themselves (PER 0).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recognizer", action="append", required=True, metavar="NAME=DIR")
    parser.add_argument("--vocoder", type=Path, default=None)
    parser.add_argument("--flite-set", type=Path, default=None,
                        help="benchmarks/flite_speech.py's folder (<voice>/<nn>.wav + .txt)")
    parser.add_argument("--max-clips", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    from tqdm.auto import tqdm

    from audiolm_jax.audio.io import load_audio
    from audiolm_jax.eval.sequence import per
    from audiolm_jax.eval.tts import PhonemeJudge
    from audiolm_jax.eval.tts_harness import MelDecoder, builtin_records
    from audiolm_jax.files import write_text_atomic
    from audiolm_jax.models.ctc import PhonemeRecognizer, normalize_phones

    recognizers = {}
    for spec in args.recognizer:
        name, _, path = spec.partition("=")
        recognizers[name] = PhonemeRecognizer.load(path)

    records = builtin_records(held_out=True)[: args.max_clips]
    clips = [load_audio(r["path"])[0].mean(axis=1) for r in tqdm(records, desc="held-out")]
    references = [normalize_phones(r["phonemes"]) for r in records]
    conditions = {"held-out espeak (6 speakers)": (clips, 24_000, references)}
    decoders = {"Griffin-Lim resynthesis": MelDecoder()}
    if args.vocoder is not None:
        decoders["vocoder resynthesis"] = MelDecoder(args.vocoder)
    for label, decoder in decoders.items():
        resynthesized = [decoder.decode(decoder.mel(c))
                         for c in tqdm(clips, desc=label)]
        conditions[f"{label} of held-out espeak"] = (resynthesized, 24_000, references)
    if args.flite_set is not None:
        judge = PhonemeJudge(next(iter(recognizers.values())))
        for voice in sorted(p for p in args.flite_set.iterdir() if p.is_dir()):
            wavs = sorted(voice.glob("*.wav"))
            audio = [load_audio(w)[0].mean(axis=1) for w in wavs]
            refs = [judge.reference(w.with_suffix(".txt").read_text(encoding="utf-8"))
                    for w in wavs]
            conditions[f"flite `{voice.name}` ({len(wavs)} sentences)"] = (
                audio, load_audio(wavs[0])[1], refs)

    rows = {}
    for label, (audio, rate, refs) in conditions.items():
        rows[label] = {name: per(refs, [r.recognize(a, rate) for a in audio])
                       for name, r in recognizers.items()}
        print(label, {k: round(v, 3) for k, v in rows[label].items()}, flush=True)
    counts = Counter(p for r in builtin_records(held_out=False) for p in normalize_phones(r["phonemes"]))
    top = counts.most_common(1)[0][0]
    chance = per(references, [[top] * len(r) for r in references])

    names = list(recognizers)
    lines = ["| speech | " + " | ".join(f"PER, {n}" for n in names) + " |",
             "|---|" + "---|" * len(names)]
    for label, values in rows.items():
        lines.append(f"| {label} | " + " | ".join(f"{values[n]:.3f}" for n in names) + " |")
    lines.append(f"| chance: unigram predictor (`{top}` repeated), held-out espeak | "
                 + " | ".join(f"{chance:.3f}" for _ in names) + " |")
    lines.append("| ceiling: the references | " + " | ".join("0.000" for _ in names) + " |")
    report = (f"{len(records)} held-out espeak utterances; recognizers: "
              + ", ".join(f"{n} = {s.partition('=')[2]}" for n, s in zip(names, args.recognizer))
              + "\n\n" + "\n".join(lines) + "\n")
    print(report)
    if args.out is not None:
        write_text_atomic(args.out, report)
    return report


if __name__ == "__main__":
    main()
