"""Voicebox's tasks on real audio: text-to-speech in a prompt's voice, editing, denoising,
continuation. The Python API behind `infer/tts.py` and `infer/voicebox.py`.

    voice = load("runs/voicebox_bundle")          # a bundle directory, see `Bundle`
    audio, rate = voice.tts("The text to say.", prompt, prompt_rate, "The prompt's words.")

Every task is one recipe:

1. The prompt (or the audio being edited) is converted to 24 kHz mono and
   aligned to its transcript with the CTC forced aligner
   (`models.ctc.align`): every phone gets its frames.
2. The phones to generate get durations from the duration model, conditioned
   on the known phones' durations (masked flow matching over log-durations).
3. The audio model generates the masked mel frames from the known frames and
   the frame-aligned phones (guided ODE, `flow.sample`).
4. The vocoder turns the mel into a waveform.

The audio prompt is never dropped: it is the context of step 3 wherever it is
not masked (the complaint about implementations that zero it unless the caller
passes a mask does not apply: the mask is built here from the task).

Bad input gets a `VoiceboxInputError` naming it: text espeak cannot phonemize,
phones the model never saw, a prompt shorter than `MIN_PROMPT_SECONDS` or
longer than the model's context, an edit span outside the audio, a transcript
the aligner cannot match. Audio at another sample rate is resampled, with a
notice through `logging`.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from audiolm_jax.audio.io import resample
from audiolm_jax.data.aligned import (
    PAUSE,
    PAUSE_SECONDS,
    SILENCE,
    frame_phones,
    insert_pauses,
    num_frames,
    phone_durations,
)
from audiolm_jax.files import resolve_weights
from audiolm_jax.models.ctc import DEFAULT_RECOGNIZER
from audiolm_jax.models.vocoder import DEFAULT_VOCODER
from audiolm_jax.models.voicebox import flow
from audiolm_jax.models.voicebox.model import VoiceboxConfig, VoiceboxTransformer
from audiolm_jax.models.voicebox.train import mel_of
from audiolm_jax.text.vocab import PhonemeVocab
from audiolm_jax.training.export import load_exported

MIN_PROMPT_SECONDS = 1.0
DEFAULT_MAX_FRAMES = 1024
BUNDLE_FILE = "bundle.json"
# Shapes are padded up to multiples of these, so one jitted program serves many lengths.
FRAME_BUCKET, PHONE_BUCKET = 64, 16


class VoiceboxInputError(ValueError):
    """Input a Voicebox task cannot use, named in the message."""


@dataclasses.dataclass
class Network:
    """One exported Voicebox network: the module, its params and what it reads.

    `max_frames` is the longest example it trained on (None when the export does
    not say); `pause_seconds` the shortest alignment gap it learned as `<pause>`.
    """

    model: VoiceboxTransformer
    params: Any
    mel: dict
    vocab: PhonemeVocab
    kind: str
    max_frames: int | None = None
    pause_seconds: float = PAUSE_SECONDS

    @classmethod
    def load(cls, path: str | Path, kind: str) -> Network:
        path = Path(path)
        if not (path / "model.json").is_file() and (path / "export" / "model.json").is_file():
            path = path / "export"
        config, variables = load_exported(path, expected_model="voicebox")
        if config.get("kind") != kind:
            raise VoiceboxInputError(f"{path} holds a Voicebox {config.get('kind')!r} model, "
                                     f"not the {kind!r} model")
        model = VoiceboxTransformer(VoiceboxConfig.from_dict(config["model"]))
        vocab = PhonemeVocab(t for t in config["phones"][4:])   # after the 4 specials
        if PAUSE not in vocab:
            raise VoiceboxInputError(f"{path} was trained without {PAUSE} phones; retrain it "
                                     "with this version's data pipeline")
        return cls(model, variables["params"], dict(config["mel"]), vocab, kind,
                   config.get("max_frames"), float(config.get("pause_seconds", PAUSE_SECONDS)))


def _bucket(n: int, size: int) -> int:
    return max(size, -(-n // size) * size)


def _pad(array: np.ndarray, length: int) -> np.ndarray:
    pad = [(0, length - array.shape[0])] + [(0, 0)] * (array.ndim - 1)
    return np.pad(array, pad)


@dataclasses.dataclass(frozen=True)
class Utterance:
    """Audio aligned to its phones: what every task starts from.

    Attributes:
      audio: [samples] float32 at the model's rate.
      mel: [frames, n_mels] its log-mel.
      phonemes: [P] the transcript's phones (stress kept), without silences.
      durations: [P + 2] frames of `[<sil>] + phonemes + [<sil>]`.
    """

    audio: np.ndarray
    mel: np.ndarray
    phonemes: list[str]
    durations: np.ndarray


class Voicebox:
    """The tasks over an audio model, a duration model, a vocoder and an aligner.

    Attributes:
      audio_model, duration_model: `Network`s (same phone vocabulary).
      vocoder: `(VocosConfig, variables)`, or None for Griffin-Lim.
      recognizer: the `PhonemeRecognizer` the aligner uses.
      voice: espeak voice used to phonemize text.
      max_frames: the longest mel the audio model may be asked to produce (prompt
        included); default the audio model's training length (`DEFAULT_MAX_FRAMES`
        when its export does not say).
    """

    def __init__(self, audio_model: Network, duration_model: Network, vocoder: Any,
                 recognizer: Any, voice: str = "en-us", max_frames: int | None = None,
                 min_align_score: float | None = None):
        if audio_model.vocab != duration_model.vocab:
            raise VoiceboxInputError("the audio and duration models were trained on different "
                                     "phone vocabularies")
        self.audio_model, self.duration_model = audio_model, duration_model
        self.vocoder, self.recognizer, self.voice = vocoder, recognizer, voice
        self.max_frames = max_frames or audio_model.max_frames or DEFAULT_MAX_FRAMES
        self.min_align_score = min_align_score
        self.mel_config = audio_model.mel
        if vocoder is not None:
            from audiolm_jax.models.vocoder import check_mel_settings
            try:
                check_mel_settings(vocoder[0], self.mel_config, "the audio model's mel")
            except ValueError as e:
                raise VoiceboxInputError(str(e)) from None
        self.sample_rate = int(self.mel_config["sample_rate"])
        self.hop = int(self.mel_config["hop_length"])
        self._mel = jax.jit(lambda a: mel_of(a, self.mel_config))
        self._sample = jax.jit(self._sample_impl, static_argnames=("network", "num_steps",
                                                                    "method", "guidance"))
        self._decode = None

    @property
    def vocab(self) -> PhonemeVocab:
        return self.audio_model.vocab

    # ---------------------------------------------------------------- building blocks

    def phonemize(self, text: str, pauses: bool = True) -> list[str]:
        """Text -> the model's phones (stress kept, no word boundaries), with a `<pause>`
        between clauses (espeak splits them at , ; : . ! ?) unless `pauses` is False.

        Raises:
          VoiceboxInputError: text espeak gives no phones for, or phones the model
            never saw (named).
        """
        from audiolm_jax.text.phonemizer import phonemize_clauses

        if not text or not text.strip():
            raise VoiceboxInputError("the text is empty")
        phones: list[str] = []
        for clause in phonemize_clauses(text, voice=self.voice):
            if phones and pauses:
                phones.append(PAUSE)
            phones.extend(clause)
        if not phones:
            raise VoiceboxInputError(f"espeak-ng ({self.voice}) cannot phonemize {text!r}: "
                                     "it gives no phones")
        unknown = sorted({p for p in phones if p not in self.vocab})
        if unknown:
            raise VoiceboxInputError(f"{text!r} phonemizes to {unknown}, which this model never "
                                     f"saw (its {len(self.vocab.phonemes)} phones come from "
                                     "its training data)")
        return phones

    def prepare_audio(self, audio: np.ndarray, sample_rate: int, what: str) -> np.ndarray:
        """[samples] or [samples, channels] at any rate -> [samples] float32 at the model's."""
        audio = np.asarray(audio, np.float32)
        if audio.ndim == 2:
            audio = audio.mean(axis=1)
        if audio.ndim != 1 or len(audio) == 0:
            raise VoiceboxInputError(f"{what}: expected a waveform [samples], got shape "
                                     f"{np.shape(audio)}")
        if not np.all(np.isfinite(audio)):
            raise VoiceboxInputError(f"{what} holds NaN or inf")
        if sample_rate != self.sample_rate:
            logging.info("%s is %d Hz; resampled to the model's %d Hz", what, sample_rate,
                         self.sample_rate)
            audio = resample(audio[:, None], sample_rate, self.sample_rate)[:, 0]
        return audio

    def log_mel(self, audio: np.ndarray) -> np.ndarray:
        """[samples] at the model's rate -> [frames, n_mels]: the features it generates."""
        return np.asarray(self._mel(jnp.asarray(audio, jnp.float32)[None]))[0]

    def analyse(self, audio: np.ndarray, sample_rate: int, transcript: str,
                what: str = "the prompt", alignment: dict | None = None) -> Utterance:
        """Aligns audio to its transcript: log-mel, phones and per-phone frames. The
        aligner places the transcript's phones (or `alignment` gives them: `phonemes`,
        `starts`, `ends` in seconds, e.g. a corpus's exact timings); gaps between them
        of at least the model's `pause_seconds` become `<pause>` phones, as in training."""
        from audiolm_jax.models.ctc.align import DEFAULT_MIN_SCORE, AlignmentError, align

        audio = self.prepare_audio(audio, sample_rate, what)
        seconds = len(audio) / self.sample_rate
        if seconds < MIN_PROMPT_SECONDS:
            raise VoiceboxInputError(f"{what} is {seconds:.2f} s long; at least "
                                     f"{MIN_PROMPT_SECONDS:g} s is needed")
        frames = num_frames(len(audio), self.hop)
        if frames > self.max_frames:
            raise VoiceboxInputError(f"{what} is {seconds:.1f} s ({frames} frames), past the "
                                     f"model's context of {self.max_frames} frames "
                                     f"({self.max_frames * self.hop / self.sample_rate:.1f} s)")
        if alignment is None:
            phonemes = self.phonemize(transcript, pauses=False)
            score = (self.min_align_score if self.min_align_score is not None
                     else DEFAULT_MIN_SCORE)
            try:
                found = align(self.recognizer, audio, self.sample_rate, phonemes=phonemes,
                              min_score=score)
            except AlignmentError as e:
                raise VoiceboxInputError(f"{what}: {e}") from e
            alignment = {"phonemes": phonemes, "starts": found.starts, "ends": found.ends}
        phonemes, durations = self._frames_per_phone(alignment, frames, what)
        return Utterance(audio, self.log_mel(audio), phonemes, durations)

    def _frames_per_phone(self, alignment: dict, frames: int, what: str
                          ) -> tuple[list[str], np.ndarray]:
        """(phones with pauses, [P + 2] frames of `[<sil>] + phones + [<sil>]`)."""
        phonemes, starts, ends = insert_pauses(alignment["phonemes"], alignment["starts"],
                                               alignment["ends"], self.audio_model.pause_seconds)
        unknown = sorted({p for p in phonemes if p not in self.vocab})
        if unknown:
            raise VoiceboxInputError(f"{what}'s alignment has phones {unknown} this model "
                                     "never saw")
        return phonemes, phone_durations(starts, ends, frames, self.sample_rate / self.hop)

    def _sample_impl(self, params, context, mask, cond, valid, rng, *, network: str,
                     num_steps: int, method: str, guidance):
        model = self.audio_model.model if network == "audio" else self.duration_model.model
        x = flow.normalize(context, model.config)
        out = flow.sample(model, params, x, mask, cond, valid, rng, num_steps=num_steps,
                          method=method, guidance=guidance)
        return flow.denormalize(out, model.config)

    def predict_durations(self, phone_ids: np.ndarray, known: np.ndarray, durations: np.ndarray,
                          *, num_steps: int = 8, method: str = "midpoint",
                          guidance: float = 0.7, seed: int = 0,
                          num_samples: int = 1) -> np.ndarray:
        """Frames for every phone where `known` is False, from the known ones' durations.

        Args:
          phone_ids: [P] ids; known: [P] bool; durations: [P] (read where known).
          num_samples: draws of the duration model (one batch) whose log-durations are
            averaged: 1 is the paper's single sample; more trade the durations'
            variety for their typical value.

        Returns:
          [P] int >= 1: the known durations kept, the others generated.
        """
        if num_samples < 1:
            raise ValueError(f"num_samples={num_samples}: expected at least 1")
        count = len(phone_ids)
        length = _bucket(count, PHONE_BUCKET)
        context = _pad(np.log1p(np.maximum(durations, 0)).astype(np.float32)[:, None], length)
        valid = np.arange(length) < count
        mask = _pad(~np.asarray(known, bool), length)
        ids = _pad(np.asarray(phone_ids, np.int32), length)
        copies = [np.repeat(a[None], num_samples, axis=0) for a in (context, mask, ids, valid)]
        out = self._sample(self.duration_model.params, *copies, jax.random.key(seed),
                           network="duration", num_steps=num_steps, method=method,
                           guidance=float(guidance))
        log_durations = np.asarray(out)[:, :count, 0].mean(axis=0)
        generated = np.maximum(np.round(np.expm1(log_durations)), 1).astype(np.int32)
        return np.where(known, durations, generated).astype(np.int32)

    def generate_mel(self, context: np.ndarray, mask: np.ndarray, frame_ids: np.ndarray, *,
                     num_steps: int = 8, method: str = "midpoint", guidance: float = 0.7,
                     seed: int = 0) -> np.ndarray:
        """The audio model over one utterance: [T, n_mels] context, [T] mask and phone ids ->
        [T, n_mels] log-mel (context kept where `mask` is False)."""
        count = len(frame_ids)
        if count > self.max_frames:
            raise VoiceboxInputError(f"the result would be {count} frames "
                                     f"({count * self.hop / self.sample_rate:.1f} s), past the "
                                     f"model's context of {self.max_frames} frames; use a "
                                     "shorter prompt or text")
        length = _bucket(count, FRAME_BUCKET)
        valid = np.arange(length) < count
        out = self._sample(self.audio_model.params, _pad(context, length)[None],
                           _pad(mask, length)[None], _pad(frame_ids, length)[None], valid[None],
                           jax.random.key(seed), network="audio", num_steps=num_steps,
                           method=method, guidance=float(guidance))
        return np.asarray(out)[0, :count]

    def vocode(self, mel: np.ndarray) -> np.ndarray:
        """[frames, n_mels] log-mel -> [samples] float32 through the vocoder (Griffin-Lim
        when the bundle has none)."""
        from audiolm_jax.models import vocoder as vocoder_lib

        if self._decode is None:
            if self.vocoder is None:
                config = vocoder_lib.VocosConfig(
                    sample_rate=self.sample_rate, n_fft=self.mel_config["n_fft"],
                    hop_length=self.hop, n_mels=self.mel_config["n_mels"],
                    log_floor=self.mel_config.get("log_floor", vocoder_lib.LOG_FLOOR))
                self._decode = jax.jit(lambda m: vocoder_lib.griffin_lim_from_features(m, config))
            else:
                config, variables = self.vocoder
                model = vocoder_lib.Vocos(config)
                self._decode = jax.jit(lambda m: model.apply(variables, m))
        length = _bucket(len(mel), FRAME_BUCKET)
        padded = np.pad(mel, ((0, length - len(mel)), (0, 0)), constant_values=mel.min())
        audio = np.asarray(self._decode(jnp.asarray(padded[None])))[0]
        return audio[:(len(mel) - 1) * self.hop]

    # ------------------------------------------------------------------------- tasks

    def _ids(self, phonemes: Sequence[str]) -> np.ndarray:
        return np.asarray(self.vocab.encode([SILENCE, *phonemes, SILENCE]), np.int32)

    def tts(self, text: str, prompt: np.ndarray, prompt_rate: int, prompt_text: str, *,
            keep_prompt: bool = False, prompt_alignment: dict | None = None,
            target_timing: dict | None = None, duration_samples: int = 1,
            **sampling: Any) -> tuple[np.ndarray, int]:
        """Speech of `text` in the voice of `prompt` (whose words are `prompt_text`).

        Args:
          keep_prompt: return the prompt followed by the new speech (the `continue`
            task) instead of the new speech alone.
          prompt_alignment: the prompt's phones and times (`phonemes`, `starts`,
            `ends`) instead of the aligner's, e.g. a corpus's exact timings.
          target_timing: say the phones of a reference recording of `text` with its
            durations (`phonemes`, `starts`, `ends`, `seconds`) instead of the
            duration model's: the evaluation's ground-truth-duration row. Only the
            pause after the prompt is still predicted.
          duration_samples: `predict_durations`' `num_samples`.
          **sampling: `num_steps`, `method`, `guidance`, `seed`.

        Returns:
          (audio [samples] float32, sample rate).
        """
        utt = self.analyse(prompt, prompt_rate, prompt_text, alignment=prompt_alignment)
        if target_timing is None:
            target = self.phonemize(text)
            target_durations = np.zeros(len(target) + 2, np.int32)
        else:
            frames = num_frames(round(target_timing["seconds"] * self.sample_rate), self.hop)
            target, target_durations = self._frames_per_phone(target_timing, frames,
                                                              "the target")
        # The shape the model trained on (two utterances joined): the prompt's phones, a
        # <pause> that starts with the prompt's own trailing silence, the new phones and
        # a final silence. The prompt's phones have known durations (and, with
        # `target_timing`, the new ones).
        prompt_ids = self._ids(utt.phonemes)[:-1]
        ids = np.concatenate([prompt_ids, self.vocab.encode([PAUSE]), self._ids(target)[1:]])
        pause = len(prompt_ids)
        known = np.arange(len(ids)) < pause
        if target_timing is not None:
            known[pause + 1:] = True
        durations = np.concatenate([utt.durations[:-1], [0], target_durations[1:]])
        durations = self.predict_durations(ids, known, durations.astype(np.int32),
                                           num_samples=duration_samples, **sampling)
        durations[pause] = max(durations[pause], int(utt.durations[-1]))
        cut = self._prompt_phones_to_drop(durations, pause)
        if cut:   # the leading silence keeps its id with no frames; phones 1..cut-1 go
            prompt_mel = utt.mel[int(durations[:cut].sum()):]
            ids, durations = np.delete(ids, range(1, cut)), np.delete(durations, range(1, cut))
            durations[0] = 0
        else:
            prompt_mel = utt.mel
        frame_ids = frame_phones(ids, durations)
        prompt_frames = len(prompt_mel)
        mel_context = np.zeros((len(frame_ids), utt.mel.shape[1]), np.float32)
        mel_context[:prompt_frames] = prompt_mel
        mask = np.arange(len(frame_ids)) >= prompt_frames
        mel = self.generate_mel(mel_context, mask, frame_ids, **sampling)
        audio = self.vocode(mel)
        if not keep_prompt:
            audio = audio[prompt_frames * self.hop:]
        return audio, self.sample_rate

    def _prompt_phones_to_drop(self, durations: np.ndarray, pause: int) -> int:
        """How many leading entries of the prompt (its silence, then its phones) to drop
        so that prompt and new speech fit `max_frames`: 0 when everything fits.

        Raises:
          VoiceboxInputError: the new speech leaves less than `MIN_PROMPT_SECONDS`
            of prompt.
        """
        excess = int(durations.sum()) - self.max_frames
        if excess <= 0:
            return 0
        dropped = np.cumsum(durations[:pause])
        cut = int(np.searchsorted(dropped, excess)) + 1
        kept_seconds = (int(dropped[-1]) - int(dropped[min(cut, pause) - 1])) * self.hop / (
            self.sample_rate)
        if cut >= pause or kept_seconds < MIN_PROMPT_SECONDS:
            new_frames = int(durations[pause:].sum())
            raise VoiceboxInputError(
                f"the new speech would be {new_frames} frames "
                f"({new_frames * self.hop / self.sample_rate:.1f} s): with at least "
                f"{MIN_PROMPT_SECONDS:g} s of prompt that is past the model's context of "
                f"{self.max_frames} frames; use a shorter text")
        logging.info("the prompt was cut to its last %.1f s to leave room for the new speech "
                     "in the model's context of %d frames", kept_seconds, self.max_frames)
        return cut

    def continue_speech(self, prompt: np.ndarray, prompt_rate: int, prompt_text: str,
                        text: str, **sampling: Any) -> tuple[np.ndarray, int]:
        """The prompt and then `text`, spoken on in the same voice (one waveform)."""
        return self.tts(text, prompt, prompt_rate, prompt_text, keep_prompt=True, **sampling)

    def edit(self, audio: np.ndarray, sample_rate: int, transcript: str, new_transcript: str,
             **sampling: Any) -> tuple[np.ndarray, int]:
        """Regenerates the words that differ between `transcript` and `new_transcript`;
        the rest of the audio keeps its frames (and the vocoder re-synthesizes them)."""
        utt = self.analyse(audio, sample_rate, transcript, what="the audio to edit")
        new = _carry_pauses(utt.phonemes, self.phonemize(new_transcript, pauses=False))
        matcher = difflib.SequenceMatcher(a=utt.phonemes, b=new, autojunk=False)
        changes = [op for op in matcher.get_opcodes() if op[0] != "equal"]
        if not changes:
            raise VoiceboxInputError("the new transcript has the same phones as the old one")
        # One edited region from the first change to the last (phone indices, silences
        # excluded); +1 moves them past the leading silence in the id sequence.
        a0, a1 = changes[0][1] + 1, changes[-1][2] + 1
        b0, b1 = changes[0][3] + 1, changes[-1][4] + 1
        if b0 == b1:
            # A pure deletion would regenerate nothing and leave a hard cut: the phones on
            # either side of it are regenerated too, so the join is spoken.
            a0, b0 = max(a0 - 1, 1), max(b0 - 1, 1)
            a1, b1 = min(a1 + 1, len(utt.phonemes) + 1), min(b1 + 1, len(new) + 1)
        old_ids, new_ids = self._ids(utt.phonemes), self._ids(new)
        ids = np.concatenate([old_ids[:a0], new_ids[b0:b1], old_ids[a1:]])
        durations = np.concatenate([utt.durations[:a0], np.zeros(b1 - b0, np.int32),
                                    utt.durations[a1:]])
        known = np.ones(len(ids), bool)
        known[a0:a0 + (b1 - b0)] = False
        durations = self.predict_durations(ids, known, durations, **sampling)
        frame_ids = frame_phones(ids, durations)
        start = int(utt.durations[:a0].sum())
        new_frames = int(durations[a0:a0 + (b1 - b0)].sum())
        old_end = int(utt.durations[:a1].sum())
        context = np.concatenate([utt.mel[:start],
                                  np.zeros((new_frames, utt.mel.shape[1]), np.float32),
                                  utt.mel[old_end:]])
        mask = np.zeros(len(frame_ids), bool)
        mask[start:start + new_frames] = True
        mel = self.generate_mel(context[:len(frame_ids)], mask, frame_ids, **sampling)
        return self.vocode(mel), self.sample_rate

    def denoise(self, audio: np.ndarray, sample_rate: int, transcript: str, start: float,
                end: float, **sampling: Any) -> tuple[np.ndarray, int]:
        """Regenerates the span [start, end) seconds from the audio around it and the
        transcript's phones there; the result has the input's length."""
        audio = self.prepare_audio(audio, sample_rate, "the audio to denoise")
        seconds = len(audio) / self.sample_rate
        if not 0 <= start < end <= seconds + 1e-6:
            raise VoiceboxInputError(f"span [{start:g}, {end:g}) s is not inside the audio "
                                     f"(0 to {seconds:.2f} s)")
        utt = self.analyse(audio, self.sample_rate, transcript, what="the audio to denoise")
        frame_ids = frame_phones(self._ids(utt.phonemes), utt.durations)
        frames = np.arange(len(frame_ids))
        mask = (frames >= int(start * self.sample_rate / self.hop)) & (
            frames < int(np.ceil(end * self.sample_rate / self.hop)))
        mel = self.generate_mel(utt.mel, mask, frame_ids, **sampling)
        out = self.vocode(mel)
        return _pad(out, len(audio))[:len(audio)], self.sample_rate


def _carry_pauses(old: Sequence[str], new: Sequence[str]) -> list[str]:
    """`new` (phones without pauses) with the `<pause>`s of `old` kept inside the runs of
    phones the two share, so an edit does not count the speaker's own pauses as
    changes."""
    kept = [i for i, p in enumerate(old) if p != PAUSE]
    matcher = difflib.SequenceMatcher(a=[old[i] for i in kept], b=list(new), autojunk=False)
    out: list[str] = []
    for tag, a0, a1, b0, b1 in matcher.get_opcodes():
        if tag == "equal":
            out.extend(old[kept[a0]:kept[a1 - 1] + 1])
        else:
            out.extend(new[b0:b1])
    return out


@dataclasses.dataclass(frozen=True)
class Bundle:
    """What `load` reads: a directory with one export per part.

        DIR/bundle.json   {"audio_model": "audio", "duration_model": "duration",
                           "vocoder": "vocoder", "recognizer": "recognizer",
                           "voice": "en-us", "max_frames": 1024}
        DIR/audio/, DIR/duration/, DIR/vocoder/, DIR/recognizer/   exports (or workdirs)

    Paths in bundle.json are relative to DIR (or absolute, or the name of an export
    committed under `weights/`); `vocoder` may be null (Griffin-Lim). The vocoder
    and the recognizer that aligns prompts default to the committed ones
    (`models.vocoder.DEFAULT_VOCODER`, `models.ctc.DEFAULT_RECOGNIZER`).
    `max_frames` (prompt and new speech together) defaults to the audio model's
    training length: past it the model was never trained.
    """

    audio_model: str = "audio"
    duration_model: str = "duration"
    vocoder: str | None = DEFAULT_VOCODER
    recognizer: str = DEFAULT_RECOGNIZER
    voice: str = "en-us"
    max_frames: int | None = None
    min_align_score: float | None = None

    def write(self, directory: str | Path) -> Path:
        from audiolm_jax.files import write_json_atomic

        path = Path(directory) / BUNDLE_FILE
        write_json_atomic(path, dataclasses.asdict(self))
        return path


def load(path: str | Path) -> Voicebox:
    """The Voicebox tasks from a bundle directory (see `Bundle`).

    Raises:
      FileNotFoundError: naming the bundle file or the part that is missing.
    """
    from audiolm_jax.models import vocoder as vocoder_lib
    from audiolm_jax.models.ctc import PhonemeRecognizer

    root = Path(path)
    file = root / BUNDLE_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{root} is not a Voicebox bundle: it has no {BUNDLE_FILE} "
                                "(see audiolm_jax.models.voicebox.inference.Bundle)")
    try:
        bundle = Bundle(**json.loads(file.read_text()))
    except (json.JSONDecodeError, TypeError) as e:
        raise ValueError(f"{file} is not a Voicebox bundle description: {e}") from e
    def part(p: str) -> Path:
        if Path(p).is_absolute() or (root / p).exists():
            return root / p
        return resolve_weights(p)

    recognizer_path = part(bundle.recognizer)
    if not (recognizer_path / "model.json").is_file() and (recognizer_path / "export").is_dir():
        recognizer_path = recognizer_path / "export"
    vocoder = vocoder_lib.load(part(bundle.vocoder)) if bundle.vocoder else None
    return Voicebox(Network.load(part(bundle.audio_model), "audio"),
                    Network.load(part(bundle.duration_model), "duration"), vocoder,
                    PhonemeRecognizer.load(recognizer_path), bundle.voice, bundle.max_frames,
                    bundle.min_align_score)
