"""Bark end to end: text ids -> semantic -> coarse -> fine -> EnCodec audio.

    bark = BarkPipeline(stages, params, codec_config, codec_variables)
    audio, lengths = bark.generate(text_ids, text_lengths, key=jax.random.key(0))

Each stage runs under `jit` (`models.bark.generation`); between stages the ids
come back to the host, as in Hugging Face's `BarkModel.generate`, whose greedy
output this reproduces (`tests/test_bark.py`).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from audiolm_jax.models.bark import generation as gen
from audiolm_jax.models.bark.model import BarkFine, BarkStageConfig, causal_decoder
from audiolm_jax.models.codec.model import Codec, CodecConfig

STAGES = ("semantic", "coarse", "fine")


@dataclasses.dataclass(frozen=True)
class Voice:
    """A voice prompt (Bark's history prompt `.npz`): semantic tokens [s], coarse codes
    [2, frames] and fine codes [8, frames] of a reference utterance."""

    semantic_prompt: np.ndarray
    coarse_prompt: np.ndarray
    fine_prompt: np.ndarray

    @classmethod
    def load(cls, path: str) -> Voice:
        """From a `.npz` with `semantic_prompt`, `coarse_prompt`, `fine_prompt`.

        Raises:
          ValueError: a missing array or one of the wrong rank (named).
        """
        with np.load(path) as data:
            missing = [k for k in ("semantic_prompt", "coarse_prompt", "fine_prompt")
                       if k not in data]
            if missing:
                raise ValueError(f"{path} is not a Bark voice prompt: it lacks {missing}")
            voice = cls(*(np.asarray(data[k]).astype(np.int64)
                          for k in ("semantic_prompt", "coarse_prompt", "fine_prompt")))
        for name, rank in (("semantic_prompt", 1), ("coarse_prompt", 2), ("fine_prompt", 2)):
            if getattr(voice, name).ndim != rank:
                raise ValueError(f"{path}: {name} must have {rank} dimension(s), got shape "
                                 f"{getattr(voice, name).shape}")
        return voice


@dataclasses.dataclass
class BarkPipeline:
    """Bark's three GPT stages and its EnCodec decoder.

    Attributes:
      stages: `{"semantic", "coarse", "fine"}` -> `BarkStageConfig`.
      params: the same keys -> each stage's params.
      codec_config, codec_variables: the EnCodec 24 kHz codec (`models.codec`).
      semantic, coarse, fine: the generation settings (Bark's by default).
    """

    stages: dict[str, BarkStageConfig]
    params: dict[str, Any]
    codec_config: CodecConfig
    codec_variables: Any
    semantic: gen.SemanticSettings = gen.SemanticSettings()
    coarse: gen.CoarseSettings = gen.CoarseSettings()
    fine: gen.FineSettings = gen.FineSettings()
    tokenizer: Any = None

    def __post_init__(self):
        missing = [s for s in STAGES if s not in self.stages or s not in self.params]
        if missing:
            raise ValueError(f"Bark needs the stages {list(STAGES)}; missing {missing}")
        self._semantic = causal_decoder(self.stages["semantic"])
        self._coarse = causal_decoder(self.stages["coarse"])
        self._fine = BarkFine(self.stages["fine"])
        self._generate_semantic = jax.jit(gen.generate_semantic, static_argnums=(0, 5),
                                          static_argnames=("top_k",))
        codec = Codec(self.codec_config)
        self._decode = jax.jit(lambda v, codes: codec.apply(v, codes, method=Codec.decode))

    @property
    def sample_rate(self) -> int:
        return self.codec_config.sample_rate

    def semantic_tokens(self, text_ids: np.ndarray, text_lengths: np.ndarray | None,
                        voice: Voice | None, key: jax.Array, temperature: float = 0.0,
                        top_k: int = 0, top_p: float = 1.0) -> np.ndarray:
        """[batch, n] tokenizer ids -> [batch, max_new_tokens] semantic ids (EOS-padded)."""
        text, history = gen.semantic_context(text_ids, text_lengths,
                                             None if voice is None else voice.semantic_prompt,
                                             self.semantic)
        out = self._generate_semantic(self._semantic, self.params["semantic"],
                                      jnp.asarray(text), jnp.asarray(history), key,
                                      self.semantic, temperature=temperature, top_k=top_k,
                                      top_p=top_p)
        return np.asarray(out.tokens)

    def generate(self, text_ids: np.ndarray, text_lengths: np.ndarray | None = None, *,
                 voice: Voice | None = None, key: jax.Array | None = None,
                 temperatures: tuple[float, float, float] = (0.0, 0.0, 0.0),
                 top_k: int = 0, top_p: float = 1.0
                 ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Speech for each row of tokenizer ids.

        Args:
          text_ids: [batch, n] ids of the text tokenizer (no offset), right-padded.
          text_lengths: [batch] valid ids per row (None: all).
          voice: a voice prompt, shared by the batch.
          key: PRNG key (default key 0); unused when every temperature is 0.
          temperatures: semantic, coarse and fine; 0 is greedy.
          top_k, top_p: for the semantic and coarse stages.

        Returns:
          (audio [batch, samples] float32 zero-padded, lengths [batch] samples per
          row, tokens {"semantic", "coarse", "fine"} of every stage).
        """
        key = jax.random.key(0) if key is None else key
        keys = jax.random.split(key, 3)
        semantic = self.semantic_tokens(text_ids, text_lengths, voice, keys[0], temperatures[0],
                                        top_k, top_p)
        coarse, coarse_lengths = gen.generate_coarse(
            self._coarse, self.params["coarse"], semantic, keys[1], self.coarse,
            semantic_prompt=None if voice is None else voice.semantic_prompt,
            coarse_prompt=None if voice is None else voice.coarse_prompt,
            temperature=temperatures[1], top_k=top_k, top_p=top_p)
        fine = gen.generate_fine(self._fine, self.params["fine"], coarse, keys[2], self.fine,
                                 fine_prompt=None if voice is None else voice.fine_prompt,
                                 temperature=temperatures[2])
        frames = coarse_lengths // self.coarse.n_coarse_codebooks
        audio = self.decode(fine, frames)
        lengths = np.array([len(a) for a in audio])
        padded = np.zeros((len(audio), max(lengths, default=0)), np.float32)
        for row, a in enumerate(audio):
            padded[row, :len(a)] = a
        return padded, lengths, {"semantic": semantic, "coarse": coarse, "fine": fine}

    def tokenize(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Texts -> (ids [batch, n], lengths [batch]) of the BERT tokenizer, without special
        tokens; a text past `max_input_semantic_length` tokens is cut there, with a
        warning naming the limit.

        Raises:
          ValueError: the pipeline has no tokenizer (converted without one), or a
            text is empty.
        """
        if self.tokenizer is None:
            raise ValueError("this Bark export has no tokenizer (its directory had no "
                             "tokenizer.json or vocab.txt): pass token ids to `generate`")
        limit = self.semantic.max_input_semantic_length
        batch = self.tokenizer.encode(texts, limit, add_special_tokens=False)
        for i in batch.truncated:
            logging.warning("text %d is longer than Bark's %d-token text context: cut there",
                            i, limit)
        return batch.ids, batch.mask.sum(axis=1)

    def speak(self, texts: list[str], **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
        """Texts -> (audio [batch, samples], lengths [batch]); `kwargs` as `generate`'s."""
        ids, lengths = self.tokenize(texts)
        audio, lengths, _ = self.generate(ids, lengths, **kwargs)
        return audio, lengths

    def decode(self, codes: np.ndarray, frames: np.ndarray) -> list[np.ndarray]:
        """[batch, books, T] codes -> one waveform per row, each decoded from its own
        `frames[b]` frames alone (the decoder's LSTM would carry padding otherwise)."""
        out = []
        for row, n in zip(codes, frames):
            batch = jnp.asarray(np.asarray(row).T[None, :int(n)], jnp.int32)   # [1, n, books]
            out.append(np.asarray(self._decode(self.codec_variables, batch))[0, :, 0])
        return out


def load(path: str | Path) -> BarkPipeline:
    """A `BarkPipeline` from an export of `python -m audiolm_jax.convert bark` (its
    tokenizer too, when it has one).

    Raises:
      FileNotFoundError: not an export.
      ValueError: an export of another family (named).
    """
    from audiolm_jax.models.bark import MODEL_NAME
    from audiolm_jax.text.wordpiece import TOKENIZER_FILE, WordPieceTokenizer
    from audiolm_jax.training.export import load_exported

    path = Path(path)
    config, variables = load_exported(path, expected_model=MODEL_NAME)
    stages = {s: BarkStageConfig(**config[s]) for s in STAGES}
    generation = config.get("generation", {})
    tokenizer = (WordPieceTokenizer.from_file(path / TOKENIZER_FILE)
                 if (path / TOKENIZER_FILE).is_file() else None)
    return BarkPipeline(
        stages, {s: variables[s]["params"] for s in STAGES},
        CodecConfig.from_dict(config["codec"]), variables["codec"],
        gen.SemanticSettings(**generation.get("semantic", {})),
        gen.CoarseSettings(**generation.get("coarse", {})),
        gen.FineSettings(**generation.get("fine", {})), tokenizer)
