"""The README demo's text to speech: unseen sentences in held-out voices, with pictures.

`speak_sentences` says each sentence in each prompt's voice through a Voicebox
bundle and writes, per sentence, one wav per voice and one PNG stacking the
spectrograms of the outputs under the prompt's. `read_sentences` reads the
hand-written test sentences (`benchmarks/data/tts_sentences.txt`), which the
built-in corpus's sentence generator never produces.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from audiolm_jax.audio.io import save_audio
from audiolm_jax.eval.plots import plot_spectrograms
from audiolm_jax.eval.tts_harness import Utterance

SENTENCES = Path(__file__).resolve().parents[2] / "benchmarks" / "data" / "tts_sentences.txt"


def read_sentences(path: str | Path = SENTENCES) -> list[str]:
    """Non-empty lines that are not `#` comments."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


@dataclasses.dataclass
class SpokenSentence:
    """One sentence said in every voice: its wavs, its picture and how long it took."""

    text: str
    wavs: dict[str, Path]
    picture: Path
    audio_seconds: float
    generation_seconds: float


def speak_sentences(voice: Any, prompts: Sequence[Utterance], sentences: Sequence[str],
                    out_dir: str | Path, **sampling: Any) -> list[SpokenSentence]:
    """Says every sentence in the voice of every prompt.

    Args:
      voice: a `models.voicebox.inference.Voicebox`.
      prompts: one utterance per voice (audio and its transcript).
      sentences: what to say.
      out_dir: gets `sentence<n>_<speaker>.wav` and `sentence<n>.png`.
      **sampling: `num_steps`, `method`, `guidance`, `seed` of `Voicebox.tts`.

    Returns:
      one `SpokenSentence` per sentence, in order.
    """
    out_dir = Path(out_dir)
    spoken = []
    for n, text in enumerate(sentences):
        wavs, panels, audio_seconds, generation_seconds = {}, [], 0.0, 0.0
        for prompt in prompts:
            audio, rate = prompt.load()
            start = time.perf_counter()
            out, out_rate = voice.tts(text, audio, rate, prompt.text, **sampling)
            generation_seconds += time.perf_counter() - start
            audio_seconds += len(out) / out_rate
            wavs[prompt.speaker] = out_dir / f"sentence{n}_{prompt.speaker}.wav"
            save_audio(wavs[prompt.speaker], out, out_rate)
            prompt_mel = voice.log_mel(voice.prepare_audio(audio, rate, "the prompt"))
            panels.append((f"prompt, {prompt.speaker}: {prompt.text!r}", prompt_mel))
            panels.append((f"generated in {prompt.speaker}'s voice", voice.log_mel(out)))
        picture = out_dir / f"sentence{n}.png"
        plot_spectrograms(panels, picture, title=repr(text),
                          frames_per_second=voice.sample_rate / voice.hop)
        spoken.append(SpokenSentence(text, wavs, picture, audio_seconds, generation_seconds))
    return spoken


def summary_line(spoken: Sequence[SpokenSentence]) -> str:
    audio = sum(s.audio_seconds for s in spoken)
    generation = sum(s.generation_seconds for s in spoken)
    voices = len(spoken[0].wavs) if spoken else 0
    return (f"{len(spoken)} sentences x {voices} voices: {audio:.1f} s of speech in "
            f"{generation:.1f} s (real-time factor {generation / max(audio, 1e-9):.2f}, "
            f"compilation included)")
