"""Judges of synthesized speech that nobody here trained, and the metrics they give.

Every speech generator of the project (and any outside system, as a folder of
wavs) is scored by the same judges, loaded once per run (`Judges.load`):

| metric | judge | what it measures | range |
|---|---|---|---|
| WER, CER | pocketsphinx en-us (acoustic model, LM and dictionary ship in its wheel) | words / characters the recognizer gets wrong against the text the system was asked to say | 0 (perfect) upwards; can exceed 1 |
| WER (closed vocabulary) | pocketsphinx with a unigram LM over the evaluated sentences' words | the same, with the search limited to the words of the evaluation sentences | idem |
| PER | a project phoneme recognizer export (`models.ctc`) | phones wrong against espeak's phones of the text (stress removed) | idem |
| speaker similarity | Resemblyzer's pretrained d-vector encoder (in its wheel) | cosine between the output and a *different* utterance of the same speaker | -1..1; same speaker ~0.75-0.95 |
| DNSMOS SIG / BAK / OVRL, P.808 | Microsoft's DNSMOS networks (onnx, in `speechmos`'s wheel) | predicted listener opinion of the signal, the background and overall; P.808 MOS | 1 (bad) .. 5 (excellent) |
| real-time factor | the clock | generation seconds / seconds of audio made (load and compilation apart) | below 1 is faster than real time |

Error rates are corpus-level (total edits / total reference units), so an
utterance weighs by its length. Reference and hypothesis texts go through one
normalization (`normalize_text`). Every judge hears 16 kHz mono; other rates are
resampled (said once per rate).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import tempfile
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from audiolm_jax.audio.io import resample
from audiolm_jax.eval.sequence import edit_distance

JUDGE_RATE = 16_000   # every judge here listens at 16 kHz


# ----------------------------------------------------------------------------- text


def normalize_text(text: str) -> str:
    """The one normalization of references and hypotheses before WER / CER.

    Lower case, accents folded, curly apostrophes straightened, hyphens and
    dashes split words, every other character but letters, digits and
    word-internal apostrophes dropped, whitespace collapsed:
    "Well—it's the Smiths' car, isn't it?" -> "well it's the smiths car isn't it".
    """
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    text = text.replace("\u2019", "'").replace("\u2018", "'")
    text = re.sub(r"[-\u2010-\u2015_/]", " ", text)
    text = re.sub(r"[^a-z0-9' ]", " ", text)
    words = [w.strip("'") for w in text.split()]
    return " ".join(w for w in words if w)


def _counts(reference: Sequence[Any], hypothesis: Sequence[Any]) -> tuple[int, int]:
    return edit_distance(reference, hypothesis), len(reference)


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(word edits, reference words) after `normalize_text`."""
    return _counts(normalize_text(reference).split(), normalize_text(hypothesis).split())


def char_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(character edits, reference characters) after `normalize_text`; spaces count."""
    return _counts(list(normalize_text(reference)), list(normalize_text(hypothesis)))


def error_rate(pairs: Iterable[tuple[int, int]]) -> float:
    """Corpus-level rate from (edits, reference length) pairs: total edits / total length."""
    pairs = list(pairs)
    total = sum(n for _, n in pairs)
    if total == 0:
        raise ValueError("the references are empty: no error rate")
    return sum(e for e, _ in pairs) / total


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus-level WER of hypotheses against references (same length lists)."""
    _check_lengths(references, hypotheses)
    return error_rate(word_errors(r, h) for r, h in zip(references, hypotheses))


def char_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus-level CER of hypotheses against references (same length lists)."""
    _check_lengths(references, hypotheses)
    return error_rate(char_errors(r, h) for r, h in zip(references, hypotheses))


def _check_lengths(references: Sequence[Any], hypotheses: Sequence[Any]) -> None:
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")


# ----------------------------------------------------------------------------- audio


class _Resampler:
    """Resamples to the judges' rate, logging each new source rate once."""

    def __init__(self):
        self._seen: set[int] = set()

    def __call__(self, audio: np.ndarray, rate: int) -> np.ndarray:
        audio = np.asarray(audio, np.float32)
        if audio.ndim == 2:
            audio = audio.mean(axis=1)
        if audio.ndim != 1:
            raise ValueError(f"expected mono audio [samples], got shape {audio.shape}")
        if rate == JUDGE_RATE:
            return audio
        if rate not in self._seen:
            self._seen.add(rate)
            logging.info("judges: resampling %d Hz audio to %d Hz", rate, JUDGE_RATE)
        return resample(audio[:, None], rate, JUDGE_RATE)[:, 0]


def _pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


# ----------------------------------------------------------------------------- judges


class PocketSphinx:
    """English ASR with pocketsphinx's bundled en-us models: `transcribe(audio16k) -> text`.

    Args:
      closed_vocabulary: None for the bundled open-vocabulary LM; otherwise texts
        whose words (after `normalize_text`) become the whole vocabulary, with a
        unigram LM of their frequencies (closed-vocabulary recognition). Words
        the bundled dictionary lacks are left out and listed in `missing_words`.
    """

    def __init__(self, closed_vocabulary: Sequence[str] | None = None):
        try:
            import pocketsphinx
        except ImportError as e:
            raise ImportError("WER needs pocketsphinx: pip install 'audiolm-jax[eval]'") from e
        self.missing_words: list[str] = []
        kwargs: dict[str, Any] = {"samprate": JUDGE_RATE, "loglevel": "FATAL"}
        self.name = "pocketsphinx en-us"
        if closed_vocabulary is not None:
            self._tmp = tempfile.TemporaryDirectory(prefix="pocketsphinx-")
            lm, dictionary, size = self._closed_vocabulary_files(
                closed_vocabulary, Path(pocketsphinx.get_model_path()) / "en-us" /
                "cmudict-en-us.dict", Path(self._tmp.name))
            kwargs.update(lm=str(lm), dict=str(dictionary))
            self.name = f"pocketsphinx en-us, closed vocabulary ({size} words)"
        self._decoder = pocketsphinx.Decoder(**kwargs)

    def _closed_vocabulary_files(self, texts: Sequence[str], cmudict: Path, out: Path
                                 ) -> tuple[Path, Path, int]:
        counts = Counter(w for t in texts for w in normalize_text(t).split())
        if not counts:
            raise ValueError("closed vocabulary: the texts hold no words")
        pronunciations: dict[str, list[str]] = {}
        for line in cmudict.read_text(encoding="utf-8").splitlines():
            word, _, phones = line.partition(" ")
            base = word.split("(")[0]
            if base in counts:
                pronunciations.setdefault(base, []).append(phones.strip())
        self.missing_words = sorted(set(counts) - set(pronunciations))
        if self.missing_words:
            logging.warning("closed vocabulary: %d words are not in pocketsphinx's dictionary "
                            "and cannot be recognized: %s", len(self.missing_words),
                            " ".join(self.missing_words))
        words = sorted(pronunciations)
        if not words:
            raise ValueError("closed vocabulary: none of the texts' words is in the dictionary")
        total = sum(counts[w] for w in words) + 2
        lines = ["\\data\\", f"ngram 1={len(words) + 2}", "", "\\1-grams:",
                 f"{np.log10(1 / total):.4f} <s>", f"{np.log10(1 / total):.4f} </s>"]
        lines += [f"{np.log10(counts[w] / total):.4f} {w}" for w in words]
        lines += ["", "\\end\\", ""]
        lm, dictionary = out / "closed.lm", out / "closed.dict"
        lm.write_text("\n".join(lines), encoding="utf-8")
        dictionary.write_text("".join(
            f"{w if i == 0 else f'{w}({i + 1})'} {p}\n"
            for w in words for i, p in enumerate(pronunciations[w])), encoding="utf-8")
        return lm, dictionary, len(words)

    def transcribe(self, audio: np.ndarray) -> str:
        """[samples] float32 at 16 kHz -> lower-case words ("" when nothing is heard).

        The feature state (cepstral mean) is reset first: pocketsphinx otherwise
        carries it over from the previous clip, and a transcript would depend on
        what was heard before it.
        """
        self._decoder.reinit_feat()
        self._decoder.start_utt()
        self._decoder.process_raw(_pcm16(audio), full_utt=True)
        self._decoder.end_utt()
        hypothesis = self._decoder.hyp()
        return hypothesis.hypstr if hypothesis is not None else ""


class SpeakerEncoder:
    """Resemblyzer's pretrained speaker encoder: `embed(audio16k) -> [256]` unit vector.

    Its own preprocessing (voice-activity trimming, volume normalization) runs
    first; a clip the trimming empties is embedded untrimmed.
    """

    def __init__(self):
        try:
            from resemblyzer import VoiceEncoder, preprocess_wav
        except ModuleNotFoundError as e:
            if e.name == "pkg_resources":   # webrtcvad 2.0.10 imports it; setuptools 81 removed it
                raise ImportError("Resemblyzer's webrtcvad needs pkg_resources: "
                                  "pip install 'setuptools<81'") from e
            raise ImportError("speaker similarity needs Resemblyzer: pip install "
                              "'audiolm-jax[eval]'") from e
        self._encoder = VoiceEncoder(device="cpu", verbose=False)
        self._preprocess = preprocess_wav

    def embed(self, audio: np.ndarray) -> np.ndarray:
        wav = self._preprocess(np.asarray(audio, np.float32), source_sr=JUDGE_RATE)
        if len(wav) < JUDGE_RATE // 10:
            wav = np.asarray(audio, np.float32)
        return np.asarray(self._encoder.embed_utterance(wav), np.float32)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors."""
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


class DNSMOS:
    """DNSMOS P.835 (SIG, BAK, OVRL) and P.808 MOS from the onnx networks in `speechmos`.

    `score(audio16k) -> {"dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "p808_mos"}`.
    The networks read 9.01 s windows: shorter clips are tiled to that length (as
    the reference implementation does), longer ones averaged over 1 s hops.
    """

    def __init__(self, threads: int = 1):
        try:
            import onnxruntime
            import speechmos.dnsmos as reference
        except ImportError as e:
            raise ImportError("DNSMOS needs speechmos and onnxruntime: pip install "
                              "'audiolm-jax[eval]'") from e
        models = Path(reference.__file__).parent / "dnsmos_models"
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = threads
        self._model = reference.DNSMOS.__new__(reference.DNSMOS)
        self._model.primary_model_path = str(models / "sig_bak_ovr.onnx")
        self._model.onnx_sess = onnxruntime.InferenceSession(str(models / "sig_bak_ovr.onnx"),
                                                             options)
        self._model.p808_onnx_sess = onnxruntime.InferenceSession(str(models / "model_v8.onnx"),
                                                                  options)

    def score(self, audio: np.ndarray) -> dict[str, float]:
        audio = np.clip(np.asarray(audio, np.float32), -1.0, 1.0)
        if len(audio) < JUDGE_RATE // 10:
            raise ValueError(f"DNSMOS needs at least 0.1 s of audio, got {len(audio)} samples")
        out = self._model(audio, JUDGE_RATE, False)
        return {"dnsmos_sig": float(out["sig_mos"]), "dnsmos_bak": float(out["bak_mos"]),
                "dnsmos_ovrl": float(out["ovrl_mos"]), "p808_mos": float(out["p808_mos"])}


class PhonemeJudge:
    """A project phoneme recognizer as a judge: PER against espeak's phones of the text.

    Args:
      recognizer: a `models.ctc.PhonemeRecognizer` (or its export directory).
      name: how tables name it (default: the export path).
      voice: the espeak voice that phonemizes reference texts.
    """

    def __init__(self, recognizer: Any, name: str | None = None, voice: str = "en-us"):
        from audiolm_jax.models.ctc import PhonemeRecognizer

        if isinstance(recognizer, (str, Path)):
            name = name or str(recognizer)
            recognizer = PhonemeRecognizer.load(recognizer)
        if recognizer.sample_rate != JUDGE_RATE:
            raise ValueError(f"the phoneme judge must hear {JUDGE_RATE} Hz, its recognizer takes "
                             f"{recognizer.sample_rate} Hz")
        self.recognizer, self.voice = recognizer, voice
        self.name = name or "phoneme recognizer"

    def reference(self, text: str) -> list[str]:
        """espeak's phones of `text` in the recognizer's label form (no stress, no word breaks)."""
        from audiolm_jax.models.ctc import normalize_phones
        from audiolm_jax.text.phonemizer import WORD_BOUNDARY, phonemize

        return normalize_phones([p for p in phonemize(text, voice=self.voice)
                                 if p != WORD_BOUNDARY])

    def transcribe(self, audio: np.ndarray) -> list[str]:
        return self.recognizer.recognize(audio, JUDGE_RATE)


# ----------------------------------------------------------------------------- all together


@dataclasses.dataclass
class Judges:
    """Every judge, loaded once; `score` gives one utterance's raw scores.

    Any judge may be None (its columns are left out). Build with `Judges.load`.
    """

    asr: PocketSphinx | None = None
    closed_asr: PocketSphinx | None = None
    phonemes: PhonemeJudge | None = None
    speaker: SpeakerEncoder | None = None
    dnsmos: DNSMOS | None = None
    _resample: _Resampler = dataclasses.field(default_factory=_Resampler, repr=False)
    _embeddings: dict = dataclasses.field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, *, recognizer: Any = None, recognizer_name: str | None = None,
             closed_vocabulary: Sequence[str] | None = None, asr: bool = True,
             speaker: bool = True, dnsmos: bool = True) -> Judges:
        """Loads the judges asked for.

        Args:
          recognizer: a phoneme recognizer or its export directory (PER); None: no PER.
          closed_vocabulary: texts for the closed-vocabulary ASR; None: none.
          asr, speaker, dnsmos: load pocketsphinx, Resemblyzer, DNSMOS.
        """
        return cls(asr=PocketSphinx() if asr else None,
                   closed_asr=PocketSphinx(closed_vocabulary) if asr and closed_vocabulary
                   else None,
                   phonemes=PhonemeJudge(recognizer, recognizer_name) if recognizer is not None
                   else None,
                   speaker=SpeakerEncoder() if speaker else None,
                   dnsmos=DNSMOS() if dnsmos else None)

    def at_judge_rate(self, audio: np.ndarray, rate: int) -> np.ndarray:
        """Mono float32 at 16 kHz."""
        return self._resample(audio, rate)

    def speaker_embedding(self, key: Any, load: Callable[[], tuple[np.ndarray, int]]
                          ) -> np.ndarray:
        """The speaker embedding of a reference clip, cached under `key` (e.g. its path);
        `load() -> (audio, rate)` runs on the first request only."""
        if key not in self._embeddings:
            self._embeddings[key] = self.speaker.embed(self.at_judge_rate(*load()))
        return self._embeddings[key]

    def score(self, audio: np.ndarray, rate: int, text: str | None, *,
              reference_phones: Sequence[str] | None = None,
              speaker_reference: np.ndarray | None = None) -> dict[str, Any]:
        """One utterance's scores.

        Args:
          audio: [samples] (or [samples, channels]) what the system made.
          rate: its sample rate.
          text: what it was asked to say (None: no error rates, e.g. for a
            recording of another sentence used only for similarity).
          reference_phones: the phones it should say (default: espeak's of `text`).
          speaker_reference: the embedding of a different utterance of the speaker.

        Returns:
          Edit counts (`word_errors`/`words`, `char_errors`/`chars`, the closed-
          vocabulary pair, `phone_errors`/`phones`), the transcripts, `similarity`,
          the DNSMOS scores and `seconds`, for the judges that are loaded.
        """
        heard = self.at_judge_rate(audio, rate)
        out: dict[str, Any] = {"seconds": len(heard) / JUDGE_RATE}
        if self.asr is not None and text is not None:
            hypothesis = self.asr.transcribe(heard)
            out["transcript"] = hypothesis
            out["word_errors"], out["words"] = word_errors(text, hypothesis)
            out["char_errors"], out["chars"] = char_errors(text, hypothesis)
        if self.closed_asr is not None and text is not None:
            hypothesis = self.closed_asr.transcribe(heard)
            out["transcript_closed"] = hypothesis
            out["closed_word_errors"], out["closed_words"] = word_errors(text, hypothesis)
        if self.phonemes is not None and text is not None:
            reference = (list(reference_phones) if reference_phones is not None
                         else self.phonemes.reference(text))
            hypothesis = self.phonemes.transcribe(heard)
            out["phone_transcript"] = " ".join(hypothesis)
            out["phone_errors"], out["phones"] = _counts(reference, hypothesis)
        if self.speaker is not None and speaker_reference is not None:
            out["similarity"] = cosine(self.speaker.embed(heard), speaker_reference)
        if self.dnsmos is not None:
            out.update(self.dnsmos.score(heard))
        return out


# Columns of a summary: (key, header, how to aggregate the per-utterance scores).
RATE_COLUMNS = (("wer", "WER", ("word_errors", "words")),
                ("wer_closed", "WER closed-vocab.", ("closed_word_errors", "closed_words")),
                ("cer", "CER", ("char_errors", "chars")),
                ("per", "PER", ("phone_errors", "phones")))
MEAN_COLUMNS = (("similarity", "speaker sim."), ("dnsmos_sig", "DNSMOS SIG"),
                ("dnsmos_bak", "DNSMOS BAK"), ("dnsmos_ovrl", "DNSMOS OVRL"),
                ("p808_mos", "P.808 MOS"))


def summarize(scores: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Corpus-level error rates and mean similarity / DNSMOS over utterances' `score`s;
    a metric none of them has is left out."""
    summary: dict[str, float] = {}
    for key, _, (errors, length) in RATE_COLUMNS:
        pairs = [(s[errors], s[length]) for s in scores if errors in s]
        if pairs and sum(n for _, n in pairs):
            summary[key] = error_rate(pairs)
    for key, _ in MEAN_COLUMNS:
        values = [s[key] for s in scores if s.get(key) is not None]
        if values:
            summary[key] = float(np.mean(values))
    return summary
