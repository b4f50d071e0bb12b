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
"""

from __future__ import annotations

import dataclasses
import os
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
class F5TTS:
    """A loaded F5-TTS: config, params and vocabulary.

    `synthesize` returns log-mel frames in the config's vocos mel (floor 1e-5);
    decode them with a vocos-mel-24khz vocoder (`convert vocoder` then
    `models.vocoder`).
    """

    config: F5Config
    params: Any
    vocab: list[str]
    dtype: Any = jnp.float32

    def __post_init__(self):
        if len(self.vocab) != self.config.text_num_embeds:
            raise ValueError(f"the vocabulary has {len(self.vocab)} entries, the model's text "
                             f"table {self.config.text_num_embeds} (+1 filler)")
        self._ids = {c: i for i, c in enumerate(self.vocab)}
        self.model = DiT(self.config, self.dtype)

    def tokenize(self, text: str | Sequence[str]) -> list[int]:
        return tokenize(text, self._ids)

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
                   use_epss: bool = True, noise: np.ndarray | None = None) -> Generation:
        """Speaks `gen_text` in the voice of `ref_audio` (whose transcript is `ref_text`).

        Args:
          ref_audio: [samples] mono at `config.sample_rate` (resample first:
            `audio.io.resample`).
          ref_text: what the reference says.
          gen_text: the text to speak (or a list of vocabulary entries).
          key: draws the starting noise.
          noise: [total_frames, mel_dim] the starting noise instead (reproducing a run).
          steps, cfg_strength, sway_coef, method, use_epss: see `sampling.sample`
            (the package's defaults: 32 Euler steps, guidance 2, sway -1).
          speed: for the estimated duration.
          duration: total frames (reference + new) instead of the estimate.
        """
        mel, gain = self.reference_mel(ref_audio)
        ref_frames = len(ref_audio) // self.config.hop_length
        ref_text = reference_text(ref_text)
        if duration is None:
            gen_str = gen_text if isinstance(gen_text, str) else "".join(gen_text)
            duration = estimate_duration(ref_frames, ref_text, gen_str, speed)
        ids = self.tokenize(ref_text) + self.tokenize(gen_text)
        out, info = sample(self.model, self.params, mel[None], pad_ids([ids]), duration,
                           steps=steps, cfg_strength=cfg_strength, sway_coef=sway_coef,
                           use_epss=use_epss, method=method, key=key,
                           noise=None if noise is None else np.asarray(noise)[None])
        out = np.asarray(out[0])
        return Generation(out[ref_frames:], info, int(out.shape[0]), gain)


def load(path: str | os.PathLike, dtype: Any = jnp.float32) -> F5TTS:
    """An `F5TTS` from a `python -m audiolm_jax.convert f5tts` export."""
    from audiolm_jax.models.f5tts import MODEL_NAME
    from audiolm_jax.training.export import load_exported

    config, variables = load_exported(path, expected_model=MODEL_NAME)
    return F5TTS(F5Config.from_dict(config["model"]), variables["params"], list(config["vocab"]),
                 dtype)
