r"""An aligned manifest from a folder of transcribed audio and its forced alignments.

    python -m audiolm_jax.data.align_manifest WAV_DIR OUT_DIR --textgrids TG_DIR
    python -m audiolm_jax.data.align_manifest WAV_DIR OUT_DIR --recognizer ctc_tiny

Input: audio files under WAV_DIR (`.wav`, `.flac`, ...), each with its
transcript beside it (same stem, `.txt` or MFA's `.lab`), and, for TextGrids,
`TG_DIR/<same relative path>.TextGrid` as the Montreal Forced Aligner writes
them (the flat `TG_DIR/<stem>.TextGrid` is tried too). MFA's speaker layout
`WAV_DIR/<speaker>/<utt>.wav` gives each row its `speaker` (the first folder
under WAV_DIR); files directly in WAV_DIR have none.

Output: `OUT_DIR/manifest.jsonl` in the layout `sources.ManifestSource` reads
(one row per usable utterance: `id`, `audio` — relative to OUT_DIR when the file
is inside it, else absolute —, `sample_rate`, `num_samples`, `text`,
`speaker`, and the aligned fields `phonemes`, `phoneme_starts`,
`phoneme_ends`, `words`, `word_starts`, `word_ends`), and
`OUT_DIR/skipped.tsv` naming every skipped file and why. Read it with
`sources.ManifestSource(OUT_DIR)`; `aligned.make_aligned_pipeline` makes
Voicebox's batches of it.

Phones (`--phones`): `espeak` (default) stores espeak-ng's phones of the
transcript timed by the TextGrid (`textgrid.to_espeak_record_fields`): the
phones Voicebox will be given at inference. `mapped` stores the TextGrid's own
phones through the mapping (`textgrid.to_record_fields`); the summary then
lists the phones espeak gives the transcripts that the manifest never has
(Voicebox refuses text with them). `--recognizer` aligns espeak's phones with
the CTC aligner (`models.ctc.align`) instead of reading TextGrids.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import soundfile as sf

from audiolm_jax.audio.io import AUDIO_EXTENSIONS, load_audio
from audiolm_jax.data import textgrid as tg
from audiolm_jax.data.sources import read_text_sidecar
from audiolm_jax.files import write_text_atomic

TRANSCRIPT_SUFFIXES = (".txt", ".lab")   # ours and MFA's
TEXTGRID_SUFFIXES = (".TextGrid", ".textgrid")
PHONE_MODES = ("espeak", "mapped")


@dataclasses.dataclass
class BuildReport:
    """What `build_aligned_manifest` wrote and skipped.

    Attributes:
      manifest: the manifest written.
      rows: utterances in it.
      seconds: their total audio length.
      speakers: distinct speakers (0 when rows have no `speaker`).
      skipped: [(path, kind, message)] every skipped file, `kind` a short category.
      missing_phones: {phone: count} phones espeak gives the transcripts that no row
        has (only with phones="mapped"; Voicebox refuses text with them).
    """

    manifest: Path
    rows: int = 0
    seconds: float = 0.0
    speakers: int = 0
    skipped: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)
    missing_phones: dict[str, int] = dataclasses.field(default_factory=dict)

    def summary(self, examples: int = 3) -> str:
        """Lines for a person: what was written, then the skips by kind with a few
        messages each, then the missing phones."""
        total = self.rows + len(self.skipped)
        length = (f"{self.seconds / 3600:.2f} h" if self.seconds >= 360 else
                  f"{self.seconds:.1f} s")
        lines = [f"wrote {self.manifest}: {self.rows} of {total} utterances, {length}, "
                 f"{self.speakers} speakers"]
        if self.rows and not self.speakers:
            lines.append("  no speaker folders: rows have no 'speaker' (Voicebox's held-out "
                         "speaker split needs WAV_DIR/<speaker>/<utt>.wav)")
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} (every one in "
                         f"{self.manifest.parent / 'skipped.tsv'}):")
            kinds = Counter(kind for _, kind, _ in self.skipped)
            for kind, count in kinds.most_common():
                lines.append(f"  {count} {kind}")
                shown = [m for _, k, m in self.skipped if k == kind][:examples]
                lines += [f"    {m}" for m in shown]
        if self.missing_phones:
            named = ", ".join(f"{p} ({n})" for p, n in
                              sorted(self.missing_phones.items(), key=lambda x: -x[1]))
            lines.append(f"espeak gives these transcripts phones no row has: {named}. "
                         "Voicebox refuses text with them; --phones espeak avoids this")
        return "\n".join(lines)


def find_audio(wav_dir: Path, extensions: Sequence[str] = AUDIO_EXTENSIONS) -> list[Path]:
    """Audio files under `wav_dir`, recursively, sorted."""
    exts = {e.lower() for e in extensions}
    return sorted(p for p in wav_dir.rglob("*") if p.suffix.lower() in exts and p.is_file())


def read_transcript(audio: Path) -> str | None:
    """The transcript beside `audio` (same stem, `.txt` or `.lab`), stripped; None
    when there is none."""
    for suffix in TRANSCRIPT_SUFFIXES:
        path = audio.with_suffix(suffix)
        if path.is_file():
            return read_text_sidecar(path)
    return None


def find_textgrid(relative: Path, textgrid_dir: Path) -> Path | None:
    """The TextGrid of the audio at `relative` (to WAV_DIR): the same relative path
    under `textgrid_dir` (MFA's layout), else `textgrid_dir/<stem>.TextGrid`."""
    for base in (textgrid_dir / relative.parent, textgrid_dir):
        for suffix in TEXTGRID_SUFFIXES:
            path = base / (relative.stem + suffix)
            if path.is_file():
                return path
    return None


def speaker_of(relative: Path) -> str | None:
    """The first folder of the audio's path under WAV_DIR (MFA's speaker folder)."""
    return relative.parts[0] if len(relative.parts) > 1 else None


def textgrid_fields(textgrid_path: Path, text: str, audio_seconds: float, *,
                    phones: str = "espeak",
                    mapping: Mapping[str, str] | str | os.PathLike | None = tg.ARPABET_TO_IPA,
                    voice: str = "en-us", phone_tier: str = "phones",
                    word_tier: str = "words",
                    tolerance: float = tg.DURATION_TOLERANCE) -> dict:
    """The aligned fields of one utterance from its TextGrid, checked against its
    transcript and audio length (seconds).

    Raises:
      TextGridError: naming the file and what is wrong.
    """
    alignment = tg.read_textgrid(textgrid_path, phone_tier=phone_tier, word_tier=word_tier)
    tg.check_transcript(alignment, text)
    tg.check_duration(alignment, audio_seconds, tolerance)
    if phones == "espeak":
        return tg.to_espeak_record_fields(alignment, text, mapping=mapping, voice=voice)
    return tg.to_record_fields(alignment, mapping)


class _CtcAligner:
    """The CTC aligner over one recording (loaded once; imported lazily: it needs JAX)."""

    def __init__(self, recognizer: str, voice: str):
        from audiolm_jax.files import resolve_weights
        from audiolm_jax.models.ctc.model import PhonemeRecognizer

        self.recognizer = PhonemeRecognizer.load(resolve_weights(recognizer))
        self.voice = voice

    def __call__(self, audio_path: Path, text: str) -> dict:
        from audiolm_jax.audio.io import load_audio
        from audiolm_jax.models.ctc.align import AlignmentError, align

        audio, sample_rate = load_audio(audio_path)
        try:
            found = align(self.recognizer, audio[:, 0], sample_rate, text=text, voice=self.voice)
        except AlignmentError as e:
            raise tg.TextGridError(f"{audio_path}: {e}", kind="CTC alignment failed") from e
        fields = found.as_record_fields()
        for key in ("phoneme_starts", "phoneme_ends"):
            fields[key] = [round(t, 5) for t in fields[key]]
        return fields


def _audio_entry(audio: Path, out_dir: Path) -> str:
    """The row's `audio`: relative to `out_dir` when inside it, else absolute."""
    audio, out_dir = audio.resolve(), out_dir.resolve()
    return audio.relative_to(out_dir).as_posix() if audio.is_relative_to(out_dir) else str(audio)


def build_aligned_manifest(wav_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                           textgrid_dir: str | os.PathLike | None = None,
                           phones: str = "espeak",
                           mapping: Mapping[str, str] | str | os.PathLike | None
                           = tg.ARPABET_TO_IPA,
                           voice: str = "en-us", phone_tier: str = "phones",
                           word_tier: str = "words",
                           tolerance: float = tg.DURATION_TOLERANCE,
                           recognizer: str | None = None,
                           extensions: Sequence[str] = AUDIO_EXTENSIONS,
                           progress: bool = True) -> BuildReport:
    """Writes `out_dir/manifest.jsonl` (and `skipped.tsv`) for the audio under `wav_dir`.

    Args:
      wav_dir: audio files with their transcripts beside them.
      out_dir: where the manifest goes (created).
      textgrid_dir: MFA's output folder (default: `wav_dir`).
      phones: "espeak" or "mapped" (see the module docstring).
      mapping: the TextGrid phones' mapping (`textgrid.to_record_fields`).
      voice: espeak voice (the one Voicebox will phonemize with).
      phone_tier, word_tier: tier names.
      tolerance: seconds a TextGrid may run past its audio.
      recognizer: a CTC recognizer export (e.g. "ctc_tiny") to align with instead
        of TextGrids.
      progress: show a progress bar.

    Returns:
      The `BuildReport`.

    Raises:
      FileNotFoundError: `wav_dir` (or `textgrid_dir`) is not a folder.
      ValueError: no audio, a bad `phones`, or not one usable utterance (the
        message is the summary of what was skipped).
    """
    from tqdm.auto import tqdm

    if phones not in PHONE_MODES:
        raise ValueError(f"phones={phones!r}; expected one of {PHONE_MODES}")
    wav_dir, out_dir = Path(wav_dir), Path(out_dir)
    textgrid_dir = Path(textgrid_dir) if textgrid_dir is not None else wav_dir
    for folder, what in ((wav_dir, "audio folder"), (textgrid_dir, "TextGrid folder")):
        if not folder.is_dir():
            raise FileNotFoundError(f"{what} {folder} does not exist")
    audio_files = find_audio(wav_dir, extensions)
    if not audio_files:
        raise ValueError(f"{wav_dir} has no audio files ({', '.join(extensions)})")
    mapping = tg.resolve_mapping(mapping)   # a bad mapping file fails once, here
    ctc = _CtcAligner(recognizer, voice) if recognizer else None
    report = BuildReport(manifest=out_dir / "manifest.jsonl")
    rows = []
    for audio in tqdm(audio_files, desc="aligned manifest", disable=not progress):
        relative = audio.relative_to(wav_dir)
        try:
            rows.append(_row(audio, relative, out_dir, textgrid_dir, ctc, phones=phones,
                             mapping=mapping, voice=voice, phone_tier=phone_tier,
                             word_tier=word_tier, tolerance=tolerance))
        except tg.TextGridError as e:
            report.skipped.append((str(audio), e.kind, str(e)))
    report.rows = len(rows)
    report.seconds = sum(r["num_samples"] / r["sample_rate"] for r in rows)
    report.speakers = len({r["speaker"] for r in rows if "speaker" in r})
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "skipped.tsv", "path\tkind\treason\n" + "".join(
        f"{p}\t{k}\t{' '.join(m.split())}\n" for p, k, m in report.skipped))
    if not rows:
        raise ValueError(f"no usable utterance under {wav_dir}; no manifest written\n"
                         + report.summary())
    if phones == "mapped" and ctc is None:
        report.missing_phones = missing_espeak_phones(rows, voice)
    write_text_atomic(report.manifest, "".join(json.dumps(r, ensure_ascii=False) + "\n"
                                               for r in rows))
    return report


def _audio_length(audio: Path) -> tuple[int, int]:
    """(samples, sample rate) from the header, or by decoding formats soundfile cannot
    read (mp3, opus: `audio.io.load_audio` goes through librosa, as the pipeline does)."""
    try:
        info = sf.info(audio)
        return int(info.frames), int(info.samplerate)
    except Exception:  # noqa: BLE001 - soundfile raises several kinds; decode instead
        pass
    try:
        samples, sample_rate = load_audio(audio)
    except Exception as e:  # noqa: BLE001 - any decoder failure skips the file
        raise tg.TextGridError(f"{audio}: unreadable audio ({e})", kind="unreadable audio") from e
    return len(samples), int(sample_rate)


def _row(audio: Path, relative: Path, out_dir: Path, textgrid_dir: Path,
         ctc: _CtcAligner | None, **options: Any) -> dict:
    """One manifest row; `TextGridError` (with a kind) for anything that skips it."""
    text = read_transcript(audio)
    if not text:
        raise tg.TextGridError(f"{audio}: no transcript (.txt or .lab beside it, not empty)",
                               kind="no transcript")
    num_samples, sample_rate = _audio_length(audio)
    if num_samples <= 0:
        raise tg.TextGridError(f"{audio}: no samples", kind="unreadable audio")
    if ctc is not None:
        fields = ctc(audio, text)
    else:
        grid = find_textgrid(relative, textgrid_dir)
        if grid is None:
            raise tg.TextGridError(f"{audio}: no TextGrid {relative.with_suffix('.TextGrid')} "
                                   f"under {textgrid_dir}", kind="no TextGrid")
        fields = textgrid_fields(grid, text, num_samples / sample_rate, **options)
    row = {"id": relative.with_suffix("").as_posix(), "audio": _audio_entry(audio, out_dir),
           "sample_rate": sample_rate, "num_samples": num_samples, "text": text}
    speaker = speaker_of(relative)
    if speaker is not None:
        row["speaker"] = speaker
    return {**row, **fields}


def missing_espeak_phones(rows: Sequence[dict], voice: str = "en-us") -> dict[str, int]:
    """{phone: count} of the phones espeak gives the rows' transcripts that no row's
    `phonemes` has: what Voicebox trained on these rows would refuse at inference."""
    from audiolm_jax.text.phonemizer import WORD_BOUNDARY, phonemize

    have = {p for r in rows for p in r["phonemes"]}
    counts: Counter = Counter()
    for r in rows:
        counts.update(p for p in phonemize(r["text"], voice=voice)
                      if p != WORD_BOUNDARY and p not in have)
    return dict(counts)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m audiolm_jax.data.align_manifest",
        description="Write OUT_DIR/manifest.jsonl (phone-aligned utterances for Voicebox) from "
                    "audio files with transcripts (.txt/.lab) and Montreal Forced Aligner "
                    "TextGrids, or the CTC aligner.")
    parser.add_argument("wav_dir", metavar="WAV_DIR",
                        help="audio files, WAV_DIR/<speaker>/<utt>.wav, transcripts beside them")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="where manifest.jsonl goes")
    parser.add_argument("--textgrids", metavar="TG_DIR",
                        help="MFA's output folder (default: WAV_DIR)")
    parser.add_argument("--phones", choices=PHONE_MODES, default="espeak",
                        help="espeak: espeak-ng's phones of the transcript, timed by the "
                             "TextGrid (what Voicebox is given at inference; default); mapped: "
                             "the TextGrid's phones through --mapping")
    parser.add_argument("--mapping", default="arpabet", metavar="arpabet|ipa|FILE",
                        help="the TextGrid phones: arpabet (MFA english_us_arpa; default), ipa "
                             "(kept as they are), or a JSON/TSV file phone -> IPA")
    parser.add_argument("--voice", default="en-us", help="espeak voice (default: en-us)")
    parser.add_argument("--phone-tier", default="phones")
    parser.add_argument("--word-tier", default="words")
    parser.add_argument("--tolerance", type=float, default=tg.DURATION_TOLERANCE,
                        help="seconds a TextGrid may run past its audio (default: %(default)s)")
    parser.add_argument("--recognizer", metavar="EXPORT",
                        help="align with this CTC recognizer (e.g. ctc_tiny) instead of TextGrids")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status (errors print one message)."""
    args = build_parser().parse_args(argv)
    if args.recognizer:
        # The CTC aligner times espeak's phones itself: the TextGrid options mean nothing.
        given = [flag for flag, used in (("--textgrids", args.textgrids),
                                         ("--phones mapped", args.phones != "espeak"),
                                         ("--mapping", args.mapping != "arpabet"))
                 if used]
        if given:
            print(f"error: --recognizer aligns without TextGrids; drop {', '.join(given)}",
                  file=sys.stderr)
            return 2
    mapping = {"arpabet": tg.ARPABET_TO_IPA, "ipa": None}.get(args.mapping, args.mapping)
    try:
        report = build_aligned_manifest(
            args.wav_dir, args.out_dir, textgrid_dir=args.textgrids, phones=args.phones,
            mapping=mapping, voice=args.voice, phone_tier=args.phone_tier,
            word_tier=args.word_tier, tolerance=args.tolerance, recognizer=args.recognizer,
            progress=not args.no_progress)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
