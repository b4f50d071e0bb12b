"""CTC phoneme recognizer: the semantic encoder plus a linear CTC head.

It is the project's intelligibility judge (the text-to-speech models report the
phoneme error rate of their output), so its API is two calls:

    recognizer = PhonemeRecognizer.load("runs/phonemes_tiny/export")
    phones = recognizer.recognize(audio, sample_rate=16_000)   # ["h", "ə", "l", "oʊ"]
    per(references, hypotheses)                                # phoneme error rate

Model: `W2vBert` -> hidden state `layer` -> Dense(1 + num_phones); id 0 is the
CTC blank, id i is `phones[i - 1]`. Decoding is greedy (best path: argmax per
frame, repeats merged, blanks dropped).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from audiolm_jax.audio.fbank import stacked_features
from audiolm_jax.audio.io import is_silent, mono_at, resample
from audiolm_jax.eval.phonetic import strip_stress
from audiolm_jax.layers.linear import logical_dense
from audiolm_jax.models.w2v_bert.model import W2vBert, W2vBertConfig
from audiolm_jax.training.export import load_exported, save_exported

MODEL_NAME = "ctc"
BLANK = 0
_RESAMPLED_RATES: set[int] = set()   # rates already said to be resampled


class CTCRecognizer(nn.Module):
    """Encoder + linear CTC head.

    Attributes:
      encoder_config: the encoder's architecture.
      num_phones: phone classes (the head has num_phones + 1 outputs, blank first).
      layer: hidden-state index that feeds the head (-1: the last layer).
    """

    encoder_config: W2vBertConfig
    num_phones: int
    layer: int = -1

    @nn.compact
    def __call__(self, features: jax.Array, valid: jax.Array) -> jax.Array:
        """[B, F, D] features, [B, F] valid -> [B, F, 1 + num_phones] float32 logits."""
        out = W2vBert(self.encoder_config, name="encoder")(features, valid)
        hidden = out["hidden_states"][self.layer]
        return logical_dense(self.num_phones + 1, ("embed", "vocab"), "ctc_head")(hidden).astype(
            jnp.float32)


def ctc_loss(logits: jax.Array, valid: jax.Array, labels: jax.Array,
             label_valid: jax.Array) -> jax.Array:
    """Mean over the batch of CTC loss per label (optax.ctc_loss / label count).

    Args:
      logits: [B, F, 1 + P]; valid: [B, F] bool.
      labels: [B, N] int phone ids (1..P); label_valid: [B, N] bool.
    """
    per_sequence = optax.ctc_loss(logits, 1.0 - valid.astype(jnp.float32), labels,
                                  1.0 - label_valid.astype(jnp.float32), blank_id=BLANK)
    counts = jnp.maximum(label_valid.sum(axis=1), 1)
    return jnp.mean(per_sequence / counts)


def greedy_decode(logits: np.ndarray, num_frames: int | None = None) -> list[int]:
    """Best path: [F, 1 + P] logits -> phone ids (repeats merged, blanks dropped)."""
    best = np.asarray(logits)[:num_frames].argmax(axis=-1)
    keep = np.concatenate([[True], best[1:] != best[:-1]]) & (best != BLANK)
    return [int(i) for i in best[keep]]


def normalize_phones(phones: Sequence[str]) -> list[str]:
    """The label form: stress marks removed (what the recognizer predicts)."""
    return [strip_stress(p) for p in phones]


@dataclasses.dataclass
class PhonemeRecognizer:
    """A trained recognizer: `recognize(audio, sample_rate) -> phonemes`."""

    model: CTCRecognizer
    variables: Any
    phones: list[str]
    _forward: Any = dataclasses.field(default=None, repr=False)

    @property
    def sample_rate(self) -> int:
        return self.model.encoder_config.sample_rate

    def logits(self, audio: np.ndarray) -> np.ndarray:
        """[samples] mono audio at `sample_rate` -> [frames, 1 + num_phones] logits."""
        fbank = self.model.encoder_config.fbank
        audio = np.asarray(audio, np.float32)
        if audio.ndim != 1:
            raise ValueError(f"expected a mono waveform [samples], got shape {audio.shape}")
        if len(audio) < fbank.min_samples():
            raise ValueError(f"audio of {len(audio)} samples is shorter than one encoder frame "
                             f"({fbank.min_samples()} samples at {self.sample_rate} Hz)")
        if self._forward is None:
            def forward(variables, padded, length):
                features, valid = stacked_features(padded, length, fbank)
                return self.model.apply(variables, features, valid)
            self._forward = jax.jit(forward)
        # Whole-second buckets: one compile per bucket; padding is masked, frames exact.
        padded = np.pad(audio, (0, -len(audio) % self.sample_rate))
        out = self._forward(self.variables, padded[None], jnp.asarray([len(audio)]))
        return np.asarray(out[0, : fbank.num_frames(len(audio))])

    def at_rate(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """Mono float32 at the encoder's rate; other rates are resampled (logged once
        per rate)."""
        audio = np.asarray(audio, np.float32)
        if sample_rate != self.sample_rate:
            if sample_rate not in _RESAMPLED_RATES:
                _RESAMPLED_RATES.add(sample_rate)
                logging.info("phoneme recognizer: resampling %d Hz audio to %d Hz",
                             sample_rate, self.sample_rate)
            audio = audio[:, None] if audio.ndim == 1 else audio
            audio = resample(audio, sample_rate, self.sample_rate)
        return mono_at(audio, self.sample_rate, self.sample_rate, "the recognizer")

    def recognize(self, audio: np.ndarray, sample_rate: int) -> list[str]:
        """Phonemes (stress-free IPA, espeak's inventory) of one clip.

        Args:
          audio: [samples] or [samples, channels] (averaged), at any rate (resampled
            to the encoder's 16 kHz). Silence is recognized as no phones, with a
            warning.
        """
        audio = self.at_rate(audio, sample_rate)
        if is_silent(audio):
            logging.warning("phoneme recognizer: the clip is silent (below -60 dBFS); "
                            "no phones recognized")
            return []
        return [self.phones[i - 1] for i in greedy_decode(self.logits(audio))]

    def save(self, out_dir: str | Path, source: str = "") -> Path:
        config = {"encoder": dataclasses.asdict(self.model.encoder_config),
                  "phones": list(self.phones), "layer": self.model.layer}
        return save_exported(out_dir, MODEL_NAME, config, nn.meta.unbox(self.variables),
                             source=source)

    @classmethod
    def load(cls, path: str | Path) -> PhonemeRecognizer:
        config, variables = load_exported(path, expected_model=MODEL_NAME)
        phones = list(config["phones"])
        model = CTCRecognizer(W2vBertConfig(**config["encoder"]), len(phones),
                              int(config["layer"]))
        return cls(model, variables, phones)
