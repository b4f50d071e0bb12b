"""The TTS evaluation harness: the cross-sentence protocol on an evaluation folder.

An evaluation set is a folder `DIR/<speaker>/<utterance>.wav` with a sidecar
transcript `<utterance>.txt`, and optionally `<utterance>.alignment.json`
(`{"phonemes": [...], "starts": [...], "ends": [...]}` in seconds: the phones
the speaker really said, which then serve as the PER reference and the
phone-lookup baseline's durations).

The protocol (VALL-E's and Voicebox's cross-sentence setting): for every target
utterance the system says the target's transcript, prompted by *another*
utterance of the same speaker (the next one in name order) with its
transcript. Every output thus has a ground-truth recording, and speaker
similarity compares the output with the prompt, a different utterance of the
same speaker.

Systems are `System` objects: the calibration rows defined here (ground truth,
Griffin-Lim and vocoder resyntheses of the ground-truth mel, the phone-mean
lookup, another speaker saying the same sentence, noise), a folder of wavs
named like the targets (`WavFolder`, any outside system), or a model
(`VoiceboxSystem`). `evaluate` scores each with `eval.tts.Judges`;
`markdown_table` and `results_json` report them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from audiolm_jax.audio.io import load_audio, save_audio
from audiolm_jax.eval import tts

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
ALIGNMENT_SUFFIX = ".alignment.json"


class EvalSetError(ValueError):
    """An evaluation folder that cannot be used (named in the message)."""


# ----------------------------------------------------------------------------- the set


@dataclasses.dataclass(frozen=True)
class Utterance:
    """One recording of the evaluation set."""

    speaker: str
    name: str
    path: Path
    text: str
    alignment: dict | None = None   # {"phonemes", "starts", "ends"} (seconds)

    @property
    def key(self) -> str:
        """`<speaker>/<name>`: how outputs and scores are named."""
        return f"{self.speaker}/{self.name}"

    def load(self, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
        """(mono [samples] float32, rate), resampled to `sample_rate` when given."""
        audio, rate = load_audio(self.path, sample_rate)
        return audio.mean(axis=1).astype(np.float32), rate


@dataclasses.dataclass(frozen=True)
class Case:
    """Say `target.text` in the voice of `prompt` (another utterance of the speaker)."""

    target: Utterance
    prompt: Utterance


@dataclasses.dataclass
class EvalSet:
    """The speakers of an evaluation folder and what was skipped while reading it."""

    root: Path
    speakers: dict[str, list[Utterance]]
    skipped: list[str]

    @classmethod
    def read(cls, root: str | Path) -> EvalSet:
        """Reads `root/<speaker>/<utterance>.{wav,flac,ogg,mp3}` with `.txt` transcripts.

        A file without a transcript and a speaker with a single utterance (no
        prompt for it) are skipped with a warning naming them.

        Raises:
          EvalSetError: the folder is missing, or no speaker has two usable utterances.
        """
        root = Path(root)
        if not root.is_dir():
            raise EvalSetError(f"evaluation folder {root} does not exist")
        speakers: dict[str, list[Utterance]] = {}
        skipped: list[str] = []
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            utterances = []
            for audio in sorted(p for p in folder.iterdir()
                                if p.suffix.lower() in AUDIO_SUFFIXES):
                transcript = audio.with_suffix(".txt")
                text = (transcript.read_text(encoding="utf-8", errors="replace").strip()
                        if transcript.is_file() else "")
                if not text:
                    skipped.append(f"{audio}: no transcript ({transcript.name} missing or empty)")
                    continue
                alignment_file = audio.with_name(audio.stem + ALIGNMENT_SUFFIX)
                alignment = (json.loads(alignment_file.read_text(encoding="utf-8"))
                             if alignment_file.is_file() else None)
                utterances.append(Utterance(folder.name, audio.stem, audio, text, alignment))
            if len(utterances) == 1:
                skipped.append(f"{folder}: one usable utterance; a speaker needs two (a target "
                               "and another as its prompt)")
            elif utterances:
                speakers[folder.name] = utterances
        for line in skipped:
            logging.warning("evaluation set: skipped %s", line)
        if not speakers:
            raise EvalSetError(f"{root} holds no <speaker>/<utterance>.wav folder with at least "
                               "two transcribed utterances" +
                               (f" ({len(skipped)} skipped)" if skipped else ""))
        return cls(root, speakers, skipped)

    def cases(self) -> list[Case]:
        """Every utterance once as the target, prompted by the speaker's next utterance."""
        return [Case(u, utts[(i + 1) % len(utts)]) for utts in self.speakers.values()
                for i, u in enumerate(utts)]

    def texts(self) -> list[str]:
        return [u.text for utts in self.speakers.values() for u in utts]

    def other_speaker_saying(self, target: Utterance) -> Utterance | None:
        """Another speaker's recording of the target's sentence (normalized text equal)."""
        wanted = tts.normalize_text(target.text)
        for speaker, utts in self.speakers.items():
            if speaker == target.speaker:
                continue
            for u in utts:
                if tts.normalize_text(u.text) == wanted:
                    return u
        return None


# ----------------------------------------------------------------------------- systems


class NotApplicable(Exception):
    """A system has nothing to say for this case (e.g. no other speaker read the sentence)."""


class System:
    """A row of the table. Subclasses set `name` / `note` and implement `synthesize`.

    `load()` runs once before the first case (timed as load); `timed` says
    whether the real-time factor means anything for the system.
    """

    name: str = "system"
    note: str = ""
    timed: bool = False

    def load(self) -> None:
        pass

    def synthesize(self, case: Case) -> tuple[np.ndarray, int]:
        """(audio [samples] float32, rate) for the case; raises NotApplicable to skip."""
        raise NotImplementedError

    def says_target_text(self, case: Case) -> bool:
        """False when the output says something else (then only similarity and DNSMOS
        are scored for it)."""
        return True


class GroundTruth(System):
    """The target recording itself: the ceiling of every column."""

    name, note = "ground truth", "ceiling"

    def synthesize(self, case):
        return case.target.load()


class OtherSpeaker(System):
    """Another speaker of the set: the similarity floor. It reads the target's sentence
    where one does; otherwise its utterance at the target's position is used for
    similarity and DNSMOS only (no error rates)."""

    name, note = "another speaker", "similarity floor"

    def __init__(self, eval_set: EvalSet):
        self.eval_set = eval_set

    def _other(self, case: Case) -> Utterance:
        same = self.eval_set.other_speaker_saying(case.target)
        if same is not None:
            return same
        speakers = list(self.eval_set.speakers)
        if len(speakers) < 2:
            raise NotApplicable("the set has a single speaker")
        other = self.eval_set.speakers[speakers[(speakers.index(case.target.speaker) + 1)
                                                % len(speakers)]]
        return other[self.eval_set.speakers[case.target.speaker].index(case.target) % len(other)]

    def synthesize(self, case):
        return self._other(case).load()

    def says_target_text(self, case):
        return self.eval_set.other_speaker_saying(case.target) is not None


class Noise(System):
    """White noise with the target's length and RMS level: the floor of every column."""

    name, note = "noise", "floor"

    def __init__(self, seed: int = 0):
        self.seed = seed

    def synthesize(self, case):
        audio, rate = case.target.load()
        rng = np.random.default_rng([self.seed, len(audio)])
        rms = float(np.sqrt(np.mean(np.square(audio)))) or 0.05
        return np.clip(rng.normal(0.0, rms, len(audio)), -1, 1).astype(np.float32), rate


class MelDecoder:
    """The vocoder's log-mel front end and a decoder back to audio (a trained Vocos,
    or Griffin-Lim on the magnitudes the mel implies when `vocoder` is None)."""

    def __init__(self, vocoder: str | Path | None = None):
        import jax

        from audiolm_jax.models import vocoder as vocoder_lib

        if vocoder is not None:
            self.config, variables = vocoder_lib.load(vocoder)
            model = vocoder_lib.Vocos(self.config)
            self._decode = jax.jit(lambda m: model.apply(variables, m))
        else:
            # The mel the project's generators make: vocos-mel-24khz, silence at 1e-5.
            self.config = vocoder_lib.VocosConfig(log_floor=1e-5)
            self._decode = jax.jit(
                lambda m: vocoder_lib.griffin_lim_from_features(m, self.config))
        if self.config.features != "mel":
            raise ValueError(f"{vocoder} is not a mel vocoder (it reads "
                             f"{self.config.features!r} features)")
        self._features = jax.jit(lambda a: vocoder_lib.mel_features(a, self.config))

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def frame_rate(self) -> float:
        return self.config.frame_rate

    def mel(self, audio: np.ndarray, exact: bool = True) -> np.ndarray:
        """[samples] at `sample_rate` -> [frames, n_mels] log-mel.

        `exact=False` pads to whole seconds first (one compile per second of
        length, for fitting over many clips): the last two frames then see the
        padding instead of the reflected signal."""
        audio = np.asarray(audio, np.float32)
        frames = self.config.num_frames(len(audio))
        if not exact:
            audio = np.pad(audio, (0, -len(audio) % self.sample_rate))
        return np.asarray(self._features(audio[None]))[0, :frames]

    def decode(self, mel: np.ndarray) -> np.ndarray:
        """[frames, n_mels] -> [samples] float32; padded to a 64-frame bucket (fewer
        compiles), cut back to the samples of `frames`."""
        frames = len(mel)
        padded = np.pad(mel, ((0, -frames % 64), (0, 0)), mode="edge")
        audio = np.asarray(self._decode(padded[None]))[0]
        return audio[: self.config.num_samples(frames)].astype(np.float32)


class Resynthesis(System):
    """The ground truth's mel decoded back to audio: the ceiling of a mel generator
    (with its vocoder) or the no-training baseline (Griffin-Lim)."""

    timed = True

    def __init__(self, decoder_factory: Callable[[], MelDecoder], name: str, note: str):
        self._factory, self.name, self.note = decoder_factory, name, note
        self.decoder: MelDecoder | None = None

    def load(self):
        self.decoder = self._factory()

    def synthesize(self, case):
        audio, _ = case.target.load(self.decoder.sample_rate)
        return self.decoder.decode(self.decoder.mel(audio)), self.decoder.sample_rate


# ----------------------------------------------------------------------------- lookup


@dataclasses.dataclass
class PhoneMeans:
    """Each phone's mean log-mel frame over training recordings (stress removed), the
    mean of the frames outside any phone (silence), and of all speech frames."""

    phones: list[str]
    means: np.ndarray          # [phones, n_mels]
    silence: np.ndarray        # [n_mels]
    speech: np.ndarray         # [n_mels]

    def frame(self, phone: str) -> np.ndarray:
        from audiolm_jax.eval.phonetic import strip_stress

        phone = strip_stress(phone)
        return self.means[self.phones.index(phone)] if phone in self.phones else self.speech

    def save(self, path: str | Path) -> None:
        np.savez(path, phones=np.asarray(self.phones), means=self.means, silence=self.silence,
                 speech=self.speech)

    @classmethod
    def load(cls, path: str | Path) -> PhoneMeans:
        with np.load(path, allow_pickle=False) as f:
            return cls([str(p) for p in f["phones"]], f["means"], f["silence"], f["speech"])


def fit_phone_means(records: Sequence[dict], decoder: MelDecoder, *, max_clips: int = 400,
                    progress: bool = True) -> PhoneMeans:
    """Per-phone mean log-mel over aligned records (`path`, `phonemes`,
    `phoneme_starts`, `phoneme_ends`; the built-in corpus's manifest rows)."""
    from tqdm.auto import tqdm

    from audiolm_jax.eval.phonetic import strip_stress

    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    silence, silence_count = 0.0, 0
    for record in tqdm(list(records)[:max_clips], desc="phone means", disable=not progress):
        audio, _ = load_audio(record["path"], decoder.sample_rate)
        mel = decoder.mel(audio.mean(axis=1), exact=False)
        frame_phone = np.full(len(mel), -1)
        phones = [strip_stress(p) for p in record["phonemes"]]
        for i, (start, end) in enumerate(zip(record["phoneme_starts"], record["phoneme_ends"])):
            frame_phone[int(round(start * decoder.frame_rate)):
                        int(round(end * decoder.frame_rate))] = i
        for i, phone in enumerate(phones):
            frames = mel[frame_phone == i]
            if len(frames):
                sums[phone] = sums.get(phone, 0.0) + frames.sum(axis=0)
                counts[phone] = counts.get(phone, 0) + len(frames)
        outside = mel[frame_phone < 0]
        silence, silence_count = silence + outside.sum(axis=0), silence_count + len(outside)
    if not counts:
        raise ValueError("fit_phone_means: no aligned frames in the records")
    phones = sorted(counts)
    means = np.stack([sums[p] / counts[p] for p in phones]).astype(np.float32)
    speech = (sum(sums.values()) / sum(counts.values())).astype(np.float32)
    silence = (silence / max(silence_count, 1)).astype(np.float32) if silence_count else speech
    return PhoneMeans(phones, means, silence, speech)


class PhoneLookup(System):
    """The trivial baseline: each phone's mean training spectrum laid out with the
    target's true phone durations (its alignment sidecar, or the aligner's), decoded
    by the same vocoder. What a model that learned only phone identities would say."""

    name, note, timed = "phone-mean lookup", "trivial baseline", True

    def __init__(self, means_factory: Callable[[], PhoneMeans],
                 decoder_factory: Callable[[], MelDecoder], aligner: Any = None):
        self._means_factory, self._decoder_factory = means_factory, decoder_factory
        self.aligner = aligner   # a PhonemeRecognizer, for targets without an alignment

    def load(self):
        self.means, self.decoder = self._means_factory(), self._decoder_factory()

    def _alignment(self, target: Utterance, audio: np.ndarray) -> dict:
        if target.alignment is not None:
            return target.alignment
        if self.aligner is None:
            raise NotApplicable("the target has no alignment and no aligner was given")
        from audiolm_jax.models.ctc.align import align

        found = align(self.aligner, audio, self.decoder.sample_rate, text=target.text,
                      min_score=None)
        return {"phonemes": found.phonemes, "starts": list(found.starts),
                "ends": list(found.ends)}

    def synthesize(self, case):
        audio, rate = case.target.load(self.decoder.sample_rate)
        alignment = self._alignment(case.target, audio)
        frames = self.decoder.config.num_frames(len(audio))
        mel = np.tile(self.means.silence, (frames, 1))
        fps = self.decoder.frame_rate
        for phone, start, end in zip(alignment["phonemes"], alignment["starts"],
                                     alignment["ends"]):
            mel[int(round(start * fps)): int(round(end * fps))] = self.means.frame(phone)
        return self.decoder.decode(mel), rate


# ----------------------------------------------------------------------------- outside systems


class WavFolder(System):
    """A folder of wavs named like the targets (`DIR/<speaker>/<utterance>.wav`): any
    outside system's outputs."""

    def __init__(self, name: str, root: str | Path, note: str = "wav folder"):
        self.name, self.root, self.note = name, Path(root), note
        if not self.root.is_dir():
            raise EvalSetError(f"--wavs {name}={root}: no such folder")

    def synthesize(self, case):
        for suffix in AUDIO_SUFFIXES:
            path = self.root / case.target.speaker / (case.target.name + suffix)
            if path.is_file():
                audio, rate = load_audio(path)
                return audio.mean(axis=1).astype(np.float32), rate
        raise FileNotFoundError(f"{self.root / case.target.key}.wav is missing")


class VoiceboxSystem(System):
    """A Voicebox bundle (`models.voicebox.inference.load`) at given sampling settings.

    `steps` are solver steps; the note reports network passes with guidance.
    `durations="truth"` says the target's own phones with their durations from its
    alignment sidecar (the duration model's row against ground-truth durations);
    `prompt_alignment="truth"` takes the prompt's phone times from its sidecar
    instead of the CTC aligner (what the aligner's boundaries cost);
    `duration_samples=k` averages k draws of the duration model.
    """

    timed = True

    def __init__(self, name: str, bundle: str | Path, steps: int = 8,
                 method: str = "midpoint", guidance: float = 0.7, seed: int = 0,
                 durations: str = "model", prompt_alignment: str = "aligner",
                 duration_samples: int = 1):
        from audiolm_jax.sampling.ode import num_function_evals

        for option, value, choices in (("durations", durations, ("model", "truth")),
                                       ("prompt_alignment", prompt_alignment,
                                        ("aligner", "truth"))):
            if value not in choices:
                raise ValueError(f"{option}={value!r}: expected one of {choices}")
        self.name, self.bundle = name, Path(bundle)
        self.durations, self.prompt_alignment = durations, prompt_alignment
        self.sampling = dict(num_steps=int(steps), method=method, guidance=float(guidance),
                             seed=int(seed))
        passes = num_function_evals(method, int(steps)) * (2 if guidance > 0 else 1)
        self.note = (f"voicebox {self.bundle.name}: {steps} {method} steps, guidance "
                     f"{guidance:g}, {passes} network pass{'es' if passes > 1 else ''}")
        self.duration_samples = int(duration_samples)
        if durations == "truth":
            self.note += "; ground-truth durations"
        elif self.duration_samples > 1:
            self.note += f"; durations averaged over {self.duration_samples} draws"
        if prompt_alignment == "truth":
            self.note += "; prompt aligned by its sidecar"

    def load(self):
        from audiolm_jax.models.voicebox.inference import load

        self.voice = load(self.bundle)

    def synthesize(self, case):
        prompt, rate = case.prompt.load()
        extra = {}
        for wanted, utterance, key in ((self.prompt_alignment, case.prompt, "prompt_alignment"),
                                       (self.durations, case.target, "target_timing")):
            if wanted == "truth":
                if utterance.alignment is None:
                    raise NotApplicable(f"{utterance.key} has no alignment sidecar")
                extra[key] = dict(utterance.alignment)
        if "target_timing" in extra:
            audio, target_rate = case.target.load()
            extra["target_timing"]["seconds"] = len(audio) / target_rate
        return self.voice.tts(case.target.text, prompt, rate, case.prompt.text, **extra,
                              duration_samples=self.duration_samples, **self.sampling)


SYSTEM_KINDS: dict[str, Callable[..., System]] = {"voicebox": VoiceboxSystem}
# Options of `--system` read as text; the others are numbers.
TEXT_OPTIONS = ("method", "durations", "prompt_alignment")


def parse_system(spec: str) -> System:
    """`NAME=KIND:DIR[:key=value,...]` -> a System, e.g.
    `vb-16=voicebox:weights/voicebox_tiny:steps=8,guidance=0.7`."""
    name, sep, rest = spec.partition("=")
    kind, _, rest = rest.partition(":")
    path, _, options = rest.partition(":")
    if not sep or not name or not kind or not path:
        raise ValueError(f"--system {spec!r}: expected NAME=KIND:DIR[:key=value,...]")
    if kind not in SYSTEM_KINDS:
        raise ValueError(f"--system {spec!r}: unknown kind {kind!r}; known: {sorted(SYSTEM_KINDS)}")
    kwargs: dict[str, Any] = {}
    for item in filter(None, options.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"--system {spec!r}: option {item!r} is not key=value")
        kwargs[key] = value if key in TEXT_OPTIONS else float(value)
    if "steps" in kwargs:
        kwargs["steps"] = int(kwargs["steps"])
    try:
        return SYSTEM_KINDS[kind](name, path, **kwargs)
    except TypeError as e:
        raise ValueError(f"--system {spec!r}: {e}") from e


# ----------------------------------------------------------------------------- running


@dataclasses.dataclass
class SystemResult:
    """One row: per-utterance scores, failures and timings of a system."""

    name: str
    note: str
    scores: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    failures: dict[str, str] = dataclasses.field(default_factory=dict)
    not_applicable: int = 0
    other_text: int = 0          # outputs of another sentence: no error rates for them
    load_seconds: float = 0.0
    first_call_seconds: float | None = None
    generation_seconds: float = 0.0
    audio_seconds: float = 0.0
    timed: bool = False
    load_error: str | None = None

    @property
    def real_time_factor(self) -> float | None:
        if not self.timed or self.audio_seconds <= 0:
            return None
        return self.generation_seconds / self.audio_seconds

    def summary(self) -> dict[str, float]:
        return tts.summarize(list(self.scores.values()))


def evaluate_system(system: System, cases: Sequence[Case], judges: tts.Judges, *,
                    wav_dir: str | Path | None = None, progress: bool = True) -> SystemResult:
    """Runs one system over every case and scores its outputs; a case that raises is
    counted and listed as a failure, a system that cannot load gives an empty row."""
    from tqdm.auto import tqdm

    from audiolm_jax.models.ctc import normalize_phones

    result = SystemResult(system.name, system.note, timed=system.timed)
    start = time.perf_counter()
    try:
        system.load()
    except Exception as e:   # noqa: BLE001 - reported in the table, the run goes on
        result.load_error = f"{type(e).__name__}: {e}"
        logging.error("%s cannot load: %s", system.name, result.load_error)
        return result
    result.load_seconds = time.perf_counter() - start
    first = True
    for case in tqdm(cases, desc=system.name, disable=not progress):
        key = case.target.key
        try:
            start = time.perf_counter()
            audio, rate = system.synthesize(case)
            seconds = time.perf_counter() - start
            if first and system.timed:   # the first call compiles: timed apart
                result.first_call_seconds, first = seconds, False
                start = time.perf_counter()
                audio, rate = system.synthesize(case)
                seconds = time.perf_counter() - start
            audio = np.asarray(audio, np.float32)
            if audio.ndim != 1 or len(audio) < rate // 10:
                raise ValueError(f"the output is not a mono clip of at least 0.1 s "
                                 f"(shape {audio.shape} at {rate} Hz)")
            result.generation_seconds += seconds
            result.audio_seconds += len(audio) / rate
            if wav_dir is not None:
                save_audio(Path(wav_dir) / f"{key}.wav", audio, rate)
            reference = (judges.speaker_embedding(case.prompt.path, case.prompt.load)
                         if judges.speaker is not None else None)
            text = case.target.text if system.says_target_text(case) else None
            result.other_text += text is None
            phones = (case.target.alignment["phonemes"] if case.target.alignment and text
                      else None)
            if phones is not None:
                phones = normalize_phones(phones)
            result.scores[key] = judges.score(audio, rate, text,
                                              reference_phones=phones,
                                              speaker_reference=reference)
        except NotApplicable:
            result.not_applicable += 1
        except Exception as e:   # noqa: BLE001 - counted and listed, the run goes on
            result.failures[key] = f"{type(e).__name__}: {e}"
            logging.warning("%s failed on %s: %s", system.name, key, result.failures[key])
    return result


def calibration_systems(eval_set: EvalSet, *, vocoder: str | Path | None,
                        phone_means: Callable[[], PhoneMeans] | None,
                        aligner: Any = None) -> list[System]:
    """The rows every table has: ground truth, Griffin-Lim and vocoder resynthesis, the
    phone-mean lookup, another speaker saying the sentence, noise. Without a vocoder
    the lookup goes through Griffin-Lim and the vocoder row is left out."""
    griffin_lim = Resynthesis(MelDecoder, "Griffin-Lim resynthesis",
                              "no-training decoder of the ground-truth mel")
    systems: list[System] = [GroundTruth(), griffin_lim]
    decoder_factory: Callable[[], MelDecoder] = MelDecoder
    if vocoder is not None:
        decoder_factory = lambda: MelDecoder(vocoder)   # noqa: E731
        systems.append(Resynthesis(decoder_factory, "vocoder resynthesis",
                                   f"ceiling of mel generators ({Path(vocoder).name})"))
    if phone_means is not None:
        lookup = PhoneLookup(phone_means, decoder_factory, aligner)
        lookup.note += " (vocoder)" if vocoder is not None else " (Griffin-Lim)"
        systems.append(lookup)
    systems += [OtherSpeaker(eval_set), Noise()]
    return systems


# ----------------------------------------------------------------------------- reports


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown_table(results: Sequence[SystemResult], judges: tts.Judges) -> str:
    """One row per system; columns for the judges that were loaded."""
    columns = [(key, header) for key, header, _ in tts.RATE_COLUMNS
               if {"wer": judges.asr, "cer": judges.asr, "wer_closed": judges.closed_asr,
                   "per": judges.phonemes}[key] is not None]
    columns += [(key, header) for key, header in tts.MEAN_COLUMNS
                if (judges.speaker if key == "similarity" else judges.dnsmos) is not None]
    header = ["system", "scored"] + [h for _, h in columns] + ["RTF", "notes"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        summary = r.summary()
        notes = [r.note] if r.note else []
        if r.load_error:
            notes.append(f"**cannot load**: {r.load_error}")
        if r.failures:
            notes.append(f"**{len(r.failures)} failed** (listed in the JSON)")
        if r.not_applicable:
            notes.append(f"{r.not_applicable} not applicable")
        if r.other_text:
            notes.append(f"{r.other_text} another sentence: no error rates for them")
        if r.first_call_seconds is not None:
            notes.append(f"load {r.load_seconds:.1f} s, first call {r.first_call_seconds:.1f} s")
        total = len(r.scores) + len(r.failures) + r.not_applicable
        cells = [r.name, f"{len(r.scores)}/{total}"]
        cells += [_fmt(summary.get(k)) for k, _ in columns]
        cells += [_fmt(r.real_time_factor, 2), "; ".join(notes)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def judges_description(judges: tts.Judges) -> str:
    parts = []
    if judges.asr is not None:
        parts.append(f"WER/CER: {judges.asr.name}")
    if judges.closed_asr is not None:
        parts.append(f"closed-vocabulary WER: {judges.closed_asr.name}")
    if judges.phonemes is not None:
        parts.append(f"PER: recognizer {judges.phonemes.name}")
    if judges.speaker is not None:
        parts.append("speaker similarity: Resemblyzer, output vs. the prompt")
    if judges.dnsmos is not None:
        parts.append("DNSMOS P.835 / P.808 (speechmos)")
    return "; ".join(parts)


def results_json(results: Sequence[SystemResult], eval_set: EvalSet,
                 judges: tts.Judges) -> dict[str, Any]:
    """Everything measured: per system its summary, timings, per-utterance scores and
    failures."""
    return {
        "eval_set": str(eval_set.root),
        "speakers": {s: [u.name for u in utts] for s, utts in eval_set.speakers.items()},
        "skipped": eval_set.skipped,
        "judges": judges_description(judges),
        "systems": [{
            "name": r.name, "note": r.note, "summary": r.summary(),
            "real_time_factor": r.real_time_factor, "load_seconds": r.load_seconds,
            "first_call_seconds": r.first_call_seconds, "load_error": r.load_error,
            "not_applicable": r.not_applicable, "other_text": r.other_text, "failures": r.failures,
            "utterances": r.scores} for r in results],
    }


# ----------------------------------------------------------------------------- built-in set


def write_builtin_eval_set(out_dir: str | Path, *, per_speaker: int = 8,
                           held_out_speakers: int = 4, seed: int = 0,
                           min_seconds: float = 2.0, max_seconds: float = 8.0,
                           corpus_size: str = "default") -> Path:
    """Writes the built-in speech corpus's held-out speakers as an evaluation folder.

    The speakers are those every speech model of the project holds out
    (`data.sources.split_held_out_speakers` with the same count and seed: the
    generators' and vocoder's 4, inside the recognizer's 6); of each,
    `per_speaker` utterances of `min_seconds`..`max_seconds`, with their
    corpus alignments as `.alignment.json` sidecars.
    """
    by_speaker: dict[Any, list[dict]] = {}
    for record in builtin_records(held_out=True, held_out_speakers=held_out_speakers,
                                  seed=seed, corpus_size=corpus_size):
        if min_seconds <= record["num_samples"] / record["sample_rate"] <= max_seconds:
            by_speaker.setdefault(record["speaker"], []).append(record)
    out = Path(out_dir)
    if out.is_dir():   # a set written before with other settings must not leak into this one
        import shutil

        for old in out.glob("speaker[0-9][0-9]"):
            shutil.rmtree(old)
    for speaker, records in sorted(by_speaker.items()):
        folder = out / f"speaker{int(speaker):02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for record in records[:per_speaker]:
            audio, rate = load_audio(record["path"])
            name = Path(record["path"]).stem
            save_audio(folder / f"{name}.wav", audio, rate)
            (folder / f"{name}.txt").write_text(record["text"] + "\n", encoding="utf-8")
            (folder / f"{name}{ALIGNMENT_SUFFIX}").write_text(json.dumps(
                {"phonemes": record["phonemes"], "starts": record["phoneme_starts"],
                 "ends": record["phoneme_ends"]}), encoding="utf-8")
    return out


def builtin_records(held_out: bool, held_out_speakers: int = 6, seed: int = 0,
                    corpus_size: str = "default") -> list[dict]:
    """The built-in speech corpus's manifest rows of the speakers every speech model
    holds out (`held_out=True`: the recognizer's 6, which include the generators'
    4), or of all the others (what the phone-mean lookup is fitted on)."""
    from audiolm_jax.data.corpora import build_corpus
    from audiolm_jax.data.sources import ManifestSource, split_held_out_speakers

    source = ManifestSource(build_corpus("speech", size=corpus_size, progress=False))
    train, held = split_held_out_speakers(source, held_out_speakers, seed=seed)
    chosen = held if held_out else train
    return [dict(chosen[i]) for i in range(len(chosen))]
