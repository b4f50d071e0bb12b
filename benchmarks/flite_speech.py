r"""Speech from flite's voices (a synthesizer the built-in corpus does not use).

    apt-get install flite       # once; CI, the tests and the demo do not need it
    # the TTS evaluation set: every voice reads the hand-written everyday sentences
    python benchmarks/flite_speech.py runs/flite_eval [--voices awb,rms] \
        [--sentences benchmarks/data/tts_sentences.txt]
    # the recognizer's extra training speech: rms reads 400 sentences of the built-in
    # corpus's training speakers (none of the evaluation sentences)
    python benchmarks/flite_speech.py runs/flite_rms --voices rms --corpus-sentences 400

Layout `OUT/<voice>/<nn>.wav` + `<nn>.txt` (16 kHz, flite's rate): what
`benchmarks/tts_eval.py --eval-set OUT` and the recognizer's
`data.extra_folders` read. With the evaluation sentences every voice reads
every sentence, so the "another speaker, same sentence" row exists for every
target.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audiolm_jax.audio.io import load_audio, save_audio  # noqa: E402

SENTENCES = Path(__file__).resolve().parent / "data" / "tts_sentences.txt"


def read_sentences(path: Path) -> list[str]:
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    sentences = [line for line in lines if line and not line.startswith("#")]
    if not sentences:
        raise SystemExit(f"{path} holds no sentences")
    return sentences


def corpus_sentences(count: int) -> list[str]:
    """`count` distinct texts of the built-in corpus's training speakers (the speakers
    no speech model holds out)."""
    from audiolm_jax.eval.tts_harness import builtin_records

    texts = list(dict.fromkeys(r["text"] for r in builtin_records(held_out=False)))
    if len(texts) < count:
        raise SystemExit(f"the corpus's training speakers have {len(texts)} distinct sentences, "
                         f"fewer than {count}")
    return texts[:count]


def render(voice: str, text: str, out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "flite.wav"
        subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(raw)], check=True,
                       capture_output=True)
        audio, rate = load_audio(raw)
        save_audio(out, audio, rate)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--voices", default="awb,rms")
    parser.add_argument("--sentences", type=Path, default=SENTENCES)
    parser.add_argument("--corpus-sentences", type=int, default=0,
                        help="read this many sentences of the built-in corpus's training "
                             "speakers instead (distinct texts, corpus order)")
    args = parser.parse_args(argv)
    if shutil.which("flite") is None:
        raise SystemExit("flite is not installed: apt-get install flite")
    listed = subprocess.run(["flite", "-lv"], capture_output=True, text=True).stdout.split()
    voices = args.voices.split(",")
    missing = [v for v in voices if v not in listed]
    if missing:
        raise SystemExit(f"flite has no voice(s) {missing}; it has {listed[2:]}")
    sentences = (corpus_sentences(args.corpus_sentences) if args.corpus_sentences
                 else read_sentences(args.sentences))
    for voice in voices:
        for i, text in enumerate(sentences):
            render(voice, text, args.out / voice / f"{i:03d}.wav")
            (args.out / voice / f"{i:03d}.txt").write_text(text + "\n", encoding="utf-8")
    print(f"{len(voices)} voices x {len(sentences)} sentences -> {args.out}")


if __name__ == "__main__":
    main()
