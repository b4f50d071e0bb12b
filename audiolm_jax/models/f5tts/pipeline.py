"""F5-TTS text to mel: the vocabulary, the duration rule, and `F5TTS` (prompt -> mel).

The text is characters: each character of `ref_text + gen_text` is looked up in
the checkpoint's `vocab.txt` (one entry a line, line i is id i; unknown
characters become id 0, which the package's vocab.txt holds as the space).
Chinese text is spoken through pinyin in the package (`convert_char_to_pinyin`:
rjieba word segmentation + pypinyin); that conversion is not reproduced here, so
pass such text as a list of vocabulary entries (e.g. `["ni3", "hao3"]`) instead.

The duration rule is the package's `infer_batch_process`: the reference's speech
rate in frames per UTF-8 byte of its text, applied to the new text's bytes and
divided by `speed` (0.3 for texts under 10 bytes), plus the reference's frames.

Long text (the package's `infer_process`): each generation is the reference plus
new speech within `CHUNK_SECONDS` (22 s; the released models trained on
utterances up to 30 s), so the text is split at punctuation into chunks of at
most `ref_bytes / ref_seconds * (22 - ref_seconds) * speed` bytes
(`chunk_text`), each chunk is generated and vocoded, and the pieces are joined
with a `CROSS_FADE_SECONDS` (0.15 s) linear cross-fade (`cross_fade`).

Bad input is refused with a message naming it: characters the vocabulary lacks
(`unknown="drop"` leaves them out; `"space"` is the package's silent mapping to
id 0), a reference under `MIN_PROMPT_SECONDS` or over `MAX_PROMPT_SECONDS`, a
duration past the context, a vocabulary whose size is not the text table's.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from audiolm_jax.audio.spectral import vocos_log_mel
from audiolm_jax.models.f5tts.model import DiT, F5Config
from audiolm_jax.models.f5tts.sampling import SampleInfo, sample

VOCAB_FILE = "vocab.txt"
TARGET_RMS = 0.1    # the package raises quieter references to this RMS (and the output back)
CHUNK_SECONDS = 22.0        # reference + new speech per generation (the package's plan)
CONTEXT_SECONDS = 30.0      # the longest utterance the released models trained on
MIN_PROMPT_SECONDS = 1.0
# A reference must leave a chunk room for new speech: 3-10 s is best (the package
# clips references to 12 s); past this it is refused rather than clipped silently.
MAX_PROMPT_SECONDS = 20.0
CROSS_FADE_SECONDS = 0.15
UNKNOWN = ("error", "drop", "space")
# Sentence ends and clause breaks the package splits at (followed by whitespace for
# the Latin ones; the CJK ones split directly).
_SENTENCE_SPLIT = re.compile(r"(?<=[;:,.!?])\s+|(?<=[；：，。！？])")


def read_vocab(path: str | os.PathLike) -> list[str]:
    """The entries of a vocab.txt, in id order (a line's trailing newline removed).

    Raises:
      FileNotFoundError: no such file.
      ValueError: an empty file or repeated entries (named).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"F5-TTS vocabulary {path} does not exist")
    # Split on "\n" only: an entry may itself be another whitespace character.
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines = lines[:-1]
    if not lines:
        raise ValueError(f"{path} is empty: expected one vocabulary entry a line")
    seen: dict[str, int] = {}
    for i, entry in enumerate(lines):
        if entry in seen:
            raise ValueError(f"{path}: line {i + 1} repeats entry {entry!r} of line "
                             f"{seen[entry] + 1}")
        seen[entry] = i
    return lines


def tokenize(text: str | Sequence[str], vocab: Mapping[str, int]) -> list[int]:
    """Ids of a text's characters (or of a list of entries); unknown ones -> 0."""
    return [vocab.get(c, 0) for c in (list(text) if isinstance(text, str) else text)]


def unknown_characters(text: str | Sequence[str], vocab: Mapping[str, int]) -> list[str]:
    """The distinct characters (or entries) of `text` the vocabulary lacks, in order."""
    seen: dict[str, None] = {}
    for c in (list(text) if isinstance(text, str) else text):
        if c not in vocab:
            seen.setdefault(c, None)
    return list(seen)


def check_text(text: str | Sequence[str], vocab: Mapping[str, int], unknown: str = "error",
               what: str = "the text") -> str | list[str]:
    """`text` with characters outside the vocabulary handled as `unknown` says.

    Args:
      unknown: "error" (raise, naming them), "drop" (leave them out) or "space"
        (keep them: `tokenize` maps them to id 0, the package's silent behaviour).

    Raises:
      ValueError: naming each unknown character and its code point.
    """
    if unknown not in UNKNOWN:
        raise ValueError(f"unknown={unknown!r}: expected one of {UNKNOWN}")
    missing = unknown_characters(text, vocab)
    if not missing or unknown == "space":
        return text
    if unknown == "error":
        names = ", ".join(f"{c!r} (U+{ord(c):04X})" if len(c) == 1 else repr(c)
                          for c in missing)
        raise ValueError(f"{what} has characters outside the model's vocabulary: {names}; "
                         "drop them (unknown='drop', infer/tts.py --drop-unknown) or "
                         "rewrite them")
    kept = [c for c in (list(text) if isinstance(text, str) else text) if c in vocab]
    return "".join(kept) if isinstance(text, str) else kept


def chunk_text(text: str, max_bytes: int) -> list[str]:
    """The package's `chunk_text`: sentences (split after `;:,.!?` + space, or after
    CJK punctuation) gathered into chunks of at most `max_bytes` UTF-8 bytes.

    One difference: a single sentence longer than `max_bytes` is split further at
    spaces (and, with none, anywhere), where the package would keep it whole and
    run past the context.
    """
    max_bytes = max(int(max_bytes), 1)
    pieces: list[str] = []
    for sentence in _SENTENCE_SPLIT.split(text):
        if not sentence:
            continue
        while len(sentence.encode("utf-8")) > max_bytes:
            head = sentence.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore")
            cut = head.rfind(" ")
            cut = cut if cut > 0 else max(len(head), 1)
            pieces.append(sentence[:cut])
            sentence = sentence[cut:].lstrip()
        if sentence:
            pieces.append(sentence)
    chunks: list[str] = []
    current = ""
    for piece in pieces:
        joined = piece + " " if len(piece[-1].encode("utf-8")) == 1 else piece
        if len(current.encode("utf-8")) + len(piece.encode("utf-8")) <= max_bytes:
            current += joined
        else:
            if current:
                chunks.append(current.strip())
            current = joined
    if current.strip():
        chunks.append(current.strip())
    return chunks


def cross_fade(waves: Sequence[np.ndarray], samples: int) -> np.ndarray:
    """Joins [samples] pieces, each overlapping the next by a linear cross-fade of
    `samples` (fewer where a piece is shorter), as the package's `infer_batch_process`."""
    out = np.asarray(waves[0], np.float32)
    for wave in waves[1:]:
        wave = np.asarray(wave, np.float32)
        n = min(samples, len(out), len(wave))
        if n <= 0:
            out = np.concatenate([out, wave])
            continue
        fade = np.linspace(0, 1, n, dtype=np.float32)
        overlap = out[-n:] * (1 - fade) + wave[:n] * fade
        out = np.concatenate([out[:-n], overlap, wave[n:]])
    return out


def pad_ids(rows: Sequence[Sequence[int]]) -> np.ndarray:
    """[batch, longest] int32, -1 padded (the package's `list_str_to_idx`)."""
    out = np.full((len(rows), max(len(r) for r in rows)), -1, np.int32)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


def reference_text(ref_text: str) -> str:
    """The package ends a reference text whose last character is one UTF-8 byte with a
    space, so the new text starts a new word."""
    return ref_text + " " if ref_text and len(ref_text[-1].encode("utf-8")) == 1 else ref_text


def estimate_duration(ref_frames: int, ref_text: str, gen_text: str, speed: float = 1.0) -> int:
    """Total frames (reference + new) from the reference's speech rate.

    Args:
      ref_frames: the reference's length in hops (`samples // hop_length`).
      ref_text: the reference transcript, after `reference_text`.
      gen_text: the text to speak.
      speed: > 1 speaks faster; texts under 10 bytes use 0.3, as the package does.
    """
    ref_len = len(ref_text.encode("utf-8"))
    gen_len = len(gen_text.encode("utf-8"))
    if ref_len == 0:
        raise ValueError("the reference text is empty: its speech rate sets the duration; "
                         "give `duration` explicitly instead")
    if gen_len < 10:
        speed = 0.3
    return ref_frames + int(ref_frames / ref_len * gen_len / speed)


@dataclasses.dataclass
class Generation:
    """One synthesis: the new speech's mel and what it cost."""

    mel: np.ndarray         # [frames, mel_dim] the generated frames (reference cut off)
    info: SampleInfo        # steps, velocity evaluations, network passes
    total_frames: int       # reference + generated frames the sampler ran over
    output_gain: float      # multiply the vocoded audio by this (undoes the RMS raise)


@dataclasses.dataclass
class Speech:
    """What `F5TTS.tts` made: the audio and what it cost."""

    audio: np.ndarray       # [samples] float32 at `sample_rate`
    sample_rate: int
    chunks: list[str]       # the text of each generation
    passes: int             # network passes, all chunks together
    info: SampleInfo        # one chunk's sampling cost (steps, evaluations, passes)
    seconds: float          # wall time of generation and vocoding (loading excluded)


@dataclasses.dataclass
class F5TTS:
    """A loaded F5-TTS: config, params and vocabulary.

    `synthesize` returns log-mel frames in the config's vocos mel (floor 1e-5);
    `tts` goes from text to audio through a vocos-mel-24khz vocoder (an export of
    `python -m audiolm_jax.convert vocos`), splitting long text into chunks.
    `vocoder` is the one the export names (None: pass one to `tts`).
    """

    config: F5Config
    params: Any
    vocab: list[str]
    dtype: Any = jnp.float32
    vocoder: str | None = None

    def __post_init__(self):
        if len(self.vocab) != self.config.text_num_embeds:
            raise ValueError(f"the vocabulary has {len(self.vocab)} entries but the weights' "
                             f"text table has {self.config.text_num_embeds} (+1 filler row): "
                             "not this model's vocab.txt")
        self._ids = {c: i for i, c in enumerate(self.vocab)}
        self.model = DiT(self.config, self.dtype)
        self._vocoders: dict[str, Any] = {}

    @property
    def frame_rate(self) -> float:
        return self.config.sample_rate / self.config.hop_length

    def tokenize(self, text: str | Sequence[str]) -> list[int]:
        return tokenize(text, self._ids)

    def check_text(self, text: str | Sequence[str], unknown: str = "error",
                   what: str = "the text") -> str | list[str]:
        """See the module-level `check_text`."""
        return check_text(text, self._ids, unknown, what)

    def check_reference(self, audio: np.ndarray) -> None:
        """Raises ValueError when the reference is not mono, or is shorter than
        `MIN_PROMPT_SECONDS` or longer than `MAX_PROMPT_SECONDS`."""
        audio = np.asarray(audio)
        if audio.ndim != 1:
            raise ValueError(f"the reference must be mono [samples], got shape {audio.shape}")
        seconds = len(audio) / self.config.sample_rate
        if seconds < MIN_PROMPT_SECONDS:
            raise ValueError(f"the reference is {seconds:.2f} s; F5-TTS needs at least "
                             f"{MIN_PROMPT_SECONDS:g} s of the voice (3-10 s is best)")
        if seconds > MAX_PROMPT_SECONDS:
            raise ValueError(f"the reference is {seconds:.1f} s; the model's context is "
                             f"{CONTEXT_SECONDS:g} s and each generation is the reference plus "
                             f"new speech within {CHUNK_SECONDS:g} s: trim it to at most "
                             f"{MAX_PROMPT_SECONDS:g} s (3-10 s is best)")

    def reference_mel(self, audio: np.ndarray) -> tuple[jax.Array, float]:
        """A mono reference at the config's sample rate -> ([frames, mel_dim], output gain).

        Quiet references (RMS < 0.1) are raised to 0.1 first, as the package does; the
        gain (<= 1) brings the generated audio back to the reference's level."""
        audio = np.asarray(audio, np.float32)
        if audio.ndim != 1:
            raise ValueError(f"the reference must be mono [samples], got shape {audio.shape}")
        rms = float(np.sqrt(np.mean(np.square(audio)))) if audio.size else 0.0
        gain = 1.0
        if 0 < rms < TARGET_RMS:
            audio, gain = audio * (TARGET_RMS / rms), rms / TARGET_RMS
        cfg = self.config
        mel = vocos_log_mel(jnp.asarray(audio), cfg.sample_rate, n_fft=cfg.n_fft,
                            hop_length=cfg.hop_length, n_mels=cfg.mel_dim, floor=cfg.mel_floor)
        return mel, gain

    def synthesize(self, ref_audio: np.ndarray, ref_text: str, gen_text: str | Sequence[str],
                   *, key: jax.Array | None, steps: int = 32, cfg_strength: float = 2.0,
                   sway_coef: float | None = -1.0, speed: float = 1.0,
                   duration: int | None = None, method: str = "euler",
                   use_epss: bool = True, noise: np.ndarray | None = None,
                   unknown: str = "error", bucket: int | None = 64) -> Generation:
        """Speaks `gen_text` in the voice of `ref_audio` (whose transcript is `ref_text`).

        One generation: the text must fit the context (`tts` splits long text).

        Args:
          ref_audio: [samples] mono at `config.sample_rate` (resample first:
            `audio.io.resample`), 1 to 20 s.
          ref_text: what the reference says.
          gen_text: the text to speak (or a list of vocabulary entries).
          key: draws the starting noise.
          noise: [total_frames, mel_dim] the starting noise instead (reproducing a run).
          steps, cfg_strength, sway_coef, method, use_epss: see `sampling.sample`
            (the package's defaults: 32 Euler steps, guidance 2, sway -1).
          speed: for the estimated duration.
          duration: total frames (reference + new) instead of the estimate.
          unknown: characters outside the vocabulary: "error", "drop" or "space".
          bucket: pad the frames to a multiple of this so durations in a bucket share
            one compiled sampler (`sampling.sample`); None: exact shapes.

        Raises:
          ValueError: unknown characters, a reference too short or too long, a
            duration past the context (each named).
        """
        self.check_reference(ref_audio)
        ref_text = self.check_text(ref_text, unknown, "the reference text")
        gen_text = self.check_text(gen_text, unknown, "the text to speak")
        mel, gain = self.reference_mel(ref_audio)
        ref_frames = len(ref_audio) // self.config.hop_length
        ref_text = reference_text(ref_text)
        if duration is None:
            gen_str = gen_text if isinstance(gen_text, str) else "".join(gen_text)
            duration = estimate_duration(ref_frames, ref_text, gen_str, speed)
        context = int(CONTEXT_SECONDS * self.frame_rate)
        if duration > context:
            raise ValueError(f"duration {duration} frames ({duration / self.frame_rate:.1f} s "
                             f"with the reference) is past the model's context of "
                             f"{CONTEXT_SECONDS:g} s ({context} frames): split the text "
                             "(`tts` does) or give a shorter duration")
        ids = self.tokenize(ref_text) + self.tokenize(gen_text)
        out, info = sample(self.model, self.params, mel[None], pad_ids([ids]), duration,
                           steps=steps, cfg_strength=cfg_strength, sway_coef=sway_coef,
                           use_epss=use_epss, method=method, key=key,
                           noise=None if noise is None else np.asarray(noise)[None],
                           bucket=bucket)
        out = np.asarray(out[0])
        return Generation(out[ref_frames:], info, int(out.shape[0]), gain)

    def load_vocoder(self, vocoder: str | os.PathLike | None = None) -> tuple[Any, Any]:
        """`(VocosConfig, variables)` of `vocoder` (else the export's), checked to read
        this model's mel: sample rate, STFT and bands must be the same; its log floor
        at most the model's 1e-5 (vocos-mel-24khz floors at 1e-7: F5-TTS's frames,
        never below log 1e-5, are inside what it was trained on)."""
        from audiolm_jax.models import vocoder as vocoder_lib

        name = vocoder or self.vocoder
        if not name:
            raise ValueError("no vocoder: the export names none; pass one (infer/tts.py "
                             "--vocoder DIR), an export of `python -m audiolm_jax.convert "
                             "vocos` of charactr/vocos-mel-24khz")
        name = str(name)
        if name not in self._vocoders:
            vocos_config, variables = vocoder_lib.load(name)
            cfg = self.config
            if vocos_config.features != "mel":
                raise ValueError(f"vocoder {name} decodes {vocos_config.features} features, "
                                 "not log-mel: F5-TTS needs a mel Vocos (vocos-mel-24khz)")
            if vocos_config.log_floor > cfg.mel_floor:
                raise ValueError(f"vocoder {name} floors its mel at {vocos_config.log_floor:g}, "
                                 f"above the model's {cfg.mel_floor:g}: it never saw the "
                                 "quietest frames the model writes")
            vocoder_lib.check_mel_settings(
                vocos_config, dict(sample_rate=cfg.sample_rate, n_fft=cfg.n_fft,
                                   hop_length=cfg.hop_length, n_mels=cfg.mel_dim,
                                   f_min=0.0, f_max=None, log_floor=vocos_config.log_floor),
                what=f"F5-TTS (vocoder {name})")
            model = vocoder_lib.Vocos(vocos_config)
            decode = jax.jit(lambda variables, mel: model.apply(variables, mel))
            self._vocoders[name] = (vocos_config, lambda mel: decode(variables, mel))
        return self._vocoders[name]

    def tts(self, text: str, ref_audio: np.ndarray, ref_rate: int, ref_text: str, *,
            vocoder: str | os.PathLike | None = None, key: jax.Array | None = None,
            seed: int = 0, steps: int = 32, cfg_strength: float = 2.0,
            sway_coef: float | None = -1.0, method: str = "euler", speed: float = 1.0,
            duration_seconds: float | None = None, unknown: str = "error",
            cross_fade_seconds: float = CROSS_FADE_SECONDS,
            chunk_seconds: float = CHUNK_SECONDS) -> Speech:
        """Text to audio in the reference's voice, long text in chunks (module doc).

        Args:
          text: what to say.
          ref_audio: [samples] or [samples, channels] at `ref_rate` (mixed down and
            resampled to the model's rate).
          ref_text: the reference's transcript.
          vocoder: a vocos-mel-24khz export (default: the one the export names).
          key / seed: the starting noise (chunk i uses `fold_in(key, i)`).
          duration_seconds: the new speech's length (one chunk only; None: estimated).
          cross_fade_seconds: overlap of consecutive chunks.
          Others: see `synthesize`.
        """
        from audiolm_jax.audio.io import resample

        _, decode = self.load_vocoder(vocoder)
        start = time.perf_counter()
        audio = np.asarray(ref_audio, np.float32)
        if audio.ndim == 2:
            audio = audio.mean(axis=1)
        audio = resample(audio[:, None], int(ref_rate), self.config.sample_rate)[:, 0]
        self.check_reference(audio)
        # Checked whole (an error names every unknown character once); dropped per chunk,
        # after the split, so that punctuation the vocabulary lacks still splits.
        if unknown == "error":
            self.check_text(text, unknown, "the text to speak")
        ref_text = self.check_text(ref_text, unknown, "the reference text")
        if not self.check_text(text, unknown if unknown != "error" else "space").strip():
            raise ValueError("the text to speak is empty")
        ref_seconds = len(audio) / self.config.sample_rate
        ref_bytes = len(reference_text(ref_text).encode("utf-8"))
        max_bytes = int(ref_bytes / ref_seconds * (chunk_seconds - ref_seconds) * speed)
        chunks = [text] if duration_seconds is not None else chunk_text(text, max_bytes)
        key = jax.random.key(seed) if key is None else key
        ref_frames = len(audio) // self.config.hop_length
        waves, passes, info = [], 0, None
        for i, chunk in enumerate(chunks):
            if not self.check_text(chunk, "space" if unknown == "error" else unknown).strip():
                continue        # nothing the vocabulary has (e.g. a lone emoji)
            duration = (None if duration_seconds is None
                        else ref_frames + round(duration_seconds * self.frame_rate))
            out = self.synthesize(audio, ref_text, chunk, key=jax.random.fold_in(key, i),
                                  steps=steps, cfg_strength=cfg_strength, sway_coef=sway_coef,
                                  speed=speed, duration=duration, method=method,
                                  unknown=unknown)
            wave = np.asarray(decode(jnp.asarray(out.mel)[None]))[0] * out.output_gain
            waves.append(wave)
            passes += out.info.passes
            info = out.info
        joined = cross_fade(waves, int(cross_fade_seconds * self.config.sample_rate))
        return Speech(joined, self.config.sample_rate, chunks, passes, info,
                      time.perf_counter() - start)


def load(path: str | os.PathLike, dtype: Any = jnp.float32) -> F5TTS:
    """An `F5TTS` from a `python -m audiolm_jax.convert f5tts` export (or a
    `train/f5tts.py` work directory's `export/`).

    Raises:
      CheckpointMismatchError: the export is another family's (named).
      ValueError: its vocabulary does not fit its weights (named).
    """
    from audiolm_jax.models.f5tts import MODEL_NAME
    from audiolm_jax.training.export import MODEL_FILE, load_exported

    path = Path(path)
    if not (path / MODEL_FILE).is_file() and (path / "export" / MODEL_FILE).is_file():
        path = path / "export"
    config, variables = load_exported(path, expected_model=MODEL_NAME)
    try:
        return F5TTS(F5Config.from_dict(config["model"]), variables["params"],
                     list(config["vocab"]), dtype, config.get("vocoder") or None)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e
