"""MusicGen end to end: captions -> T5 -> delayed-codebook decoder -> EnCodec 32 kHz.

    from audiolm_jax.models import musicgen
    pipe = musicgen.load("exports/musicgen-small")          # `convert musicgen` output
    audio = pipe.generate(["a slow plucked-string melody in A minor"], seconds=10)
    # audio: [batch, samples] float32 at pipe.sample_rate (32 kHz)

    # continuation of a clip (any rate: resampled): the clip, then 5 s more
    audio = pipe.generate(["lo-fi drums"], seconds=5, prompt_audio=clip, prompt_sample_rate=44_100)

The text is encoded once; generation is one jitted loop over the delay pattern's
steps (`generation.generate`), guided with the null context by default
(guidance 3, top-k 250, temperature 1: MusicGen's defaults), and the codes are
decoded by the codec in one batch. A progress bar follows the generated frames.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from audiolm_jax.models.codec.model import Codec, CodecConfig
from audiolm_jax.models.musicgen import generation as gen
from audiolm_jax.models.musicgen.model import MODEL_NAME, MusicGen, MusicGenConfig
from audiolm_jax.sampling.streams import generate_windowed

TOKENIZER_FILE = "tokenizer.json"
# Past the context, each window adds this many seconds after the last
# (context - stride) seconds of music: audiocraft's `extend_stride`.
EXTEND_STRIDE_SECONDS = 18.0
DEFAULT_SETTINGS = gen.SamplingSettings()      # MusicGen's: guidance 3, top-k 250, temperature 1


@dataclasses.dataclass
class MusicGenPipeline:
    """MusicGen's text encoder and decoder with its codec.

    Attributes:
      config: the `MusicGenConfig`; params its params (`text_encoder`, `lm`, ...).
      codec_config, codec_variables: the EnCodec 32 kHz codec (`models.codec`).
      tokenizer: a `text.t5_tokenizer.T5Tokenizer` (None: `generate_codes` takes ids).
      dtype: compute dtype of the text encoder and decoder.
    """

    config: MusicGenConfig
    params: Any
    codec_config: CodecConfig
    codec_variables: Any
    tokenizer: Any = None
    dtype: Any = jnp.float32
    extend_stride_seconds: float = EXTEND_STRIDE_SECONDS

    def __post_init__(self):
        if self.codec_config.codebook_size != self.config.codebook_size:
            raise ValueError(f"the codec has {self.codec_config.codebook_size} codes per book, "
                             f"the decoder {self.config.codebook_size}")
        self.model = MusicGen(self.config, self.dtype)
        self._encode = jax.jit(functools.partial(self.model.apply, method=MusicGen.encode_text))
        codec = Codec(self.codec_config)
        self._decode = jax.jit(lambda v, codes: codec.apply(v, codes, method=Codec.decode))
        self._encode_audio = jax.jit(lambda v, audio: codec.apply(
            v, audio, self.config.num_codebooks, method=Codec.encode)[0])
        self._generate = jax.jit(gen.generate, static_argnums=(0, 4), static_argnames=(
            "settings", "progress"))
        self._bar = None

    @property
    def sample_rate(self) -> int:
        return self.codec_config.sample_rate

    @property
    def max_seconds(self) -> float:
        return self.config.max_frames / self.config.frame_rate

    # ------------------------------------------------------------------ text

    def tokenize(self, captions: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Captions -> (ids [b, C], mask [b, C]); a caption past `max_text_tokens` is cut
        there, with a notice.

        Raises:
          ValueError: no tokenizer, no caption, or an empty one (named).
        """
        if self.tokenizer is None:
            raise ValueError("this export has no tokenizer.json: pass token ids, or save the "
                             "T5 tokenizer into the export directory")
        if isinstance(captions, str) or not captions:
            raise ValueError("captions must be a non-empty list of strings")
        empty = [i for i, c in enumerate(captions) if not str(c).strip()]
        if empty:
            raise ValueError(f"caption(s) {empty} are empty: describe the music to generate")
        limit = self.config.max_text_tokens
        ids, mask, truncated = self.tokenizer.encode(list(captions), max_length=limit)
        for i, cut in enumerate(truncated):
            if cut:
                logging.warning("caption %d is longer than the text encoder's %d tokens: cut "
                                "there", i, limit)
        return ids, mask

    def encode_text(self, ids: np.ndarray, mask: np.ndarray) -> tuple[jax.Array, jax.Array]:
        """(context [b, C, embed], mask [b, C] bool) of token ids."""
        mask = jnp.asarray(mask, bool)
        return self._encode({"params": self.params}, jnp.asarray(ids, jnp.int32), mask), mask

    # ------------------------------------------------------------------ audio

    def frames_for(self, seconds: float) -> int:
        """Codec frames for `seconds` of audio (any length: past the context it is
        generated in windows, see `generate_codes`).

        Raises:
          ValueError: seconds <= 0.
        """
        if not seconds > 0:
            raise ValueError(f"seconds must be positive, got {seconds}")
        return max(1, round(seconds * self.config.frame_rate))

    @property
    def stride_frames(self) -> int:
        """New frames per window past the context."""
        stride = round(self.extend_stride_seconds * self.config.frame_rate)
        if not 0 < stride < self.config.max_frames:
            raise ValueError(f"extend_stride_seconds {self.extend_stride_seconds} must leave "
                             f"context inside MusicGen's {self.max_seconds:g} s")
        return stride

    def generate_codes(self, ids: np.ndarray, mask: np.ndarray, frames: int,
                       settings: gen.SamplingSettings = DEFAULT_SETTINGS, seed: int = 0,
                       prompt: np.ndarray | None = None, progress: bool = True) -> np.ndarray:
        """Token ids -> codes [b, frames, K] (int32, numpy): the new frames, after the
        `prompt` codes [b, T0, K] when given (`encode_audio`).

        Within the context (`T0 + frames <= max_frames`, 30 s) it is one generation.
        Past it, as audiocraft extends: the context is filled first, then each window
        adds `stride_frames` (18 s) after the last `max_frames - stride_frames` frames
        (12 s) of everything so far, with a fresh cache and the same caption.
        """
        context, mask = self.encode_text(ids, mask)
        known = 0 if prompt is None else prompt.shape[1]
        limit = self.config.max_frames
        if known >= limit:
            raise ValueError(f"a prompt of {known} frames leaves no room in the "
                             f"{limit}-frame context")
        first = min(frames, limit - known)
        key = jax.random.key(seed)
        codes = self._run(context, mask, first, settings, key, prompt, known, progress,
                          "MusicGen steps")
        if first == frames:
            return codes
        stride = self.stride_frames
        history = limit - stride
        windows = -(-(frames - first) // stride)
        logging.info("%.1f s is past MusicGen's %g s context: %d more window(s) of %g s, each "
                     "after the last %g s", frames / self.config.frame_rate, self.max_seconds,
                     windows, stride / self.config.frame_rate,
                     history / self.config.frame_rate)
        so_far = codes if prompt is None else np.concatenate([prompt, codes], axis=1)

        def run_window(w, done, past, past_frames):
            del done
            new = self._run(context, mask, stride, settings, jax.random.fold_in(key, w + 1),
                            past, history, progress, f"window {w + 1}/{windows}",
                            prompt_frames=past_frames)
            return new, np.full((new.shape[0],), stride)

        rest, _ = generate_windowed(run_window, so_far, frames - first, stride, history,
                                    self.config.pad_id)
        return np.concatenate([codes, rest], axis=1)

    def _run(self, context, mask, frames, settings, key, prompt, known, progress, label,
             prompt_frames=None) -> np.ndarray:
        """One jitted generation of `frames` new frames, with a progress bar."""
        callback = None
        if progress:
            from tqdm.auto import tqdm

            total = self.config.layout.sequence_length(known + frames)
            self._bar = tqdm(total=total, initial=known, desc=label, unit="step")
            callback = self._advance
        try:
            out = self._generate(self.model, self.params, context, mask, frames, key,
                                 settings=settings,
                                 prompt=None if prompt is None else jnp.asarray(prompt),
                                 progress=callback, prompt_frames=prompt_frames)
            return np.asarray(out.codes)
        finally:
            if self._bar is not None:
                self._bar.close()
                self._bar = None

    def _advance(self, written) -> None:
        """Host callback of each decode step: `written` steps are in the cache, the
        start step included."""
        if self._bar is not None:
            self._bar.update(max(0, int(written) - 1 - self._bar.n))

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Codes [b, frames, K] -> audio [b, frames * hop] float32."""
        audio = self._decode(self.codec_variables, jnp.asarray(codes, jnp.int32))
        return np.asarray(audio)[..., 0]

    def encode_audio(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """A clip to continue -> its codes [b, frames, K].

        Args:
          audio: [samples] (one clip) or [b, samples] float, at `sample_rate`
            (resampled to the codec's rate with a notice when it differs).

        Raises:
          ValueError: an empty clip, or one past the 30 s context (named).
        """
        from audiolm_jax.audio.io import resample

        audio = np.asarray(audio, np.float32)
        audio = audio[None] if audio.ndim == 1 else audio
        if audio.ndim != 2 or audio.shape[1] == 0:
            raise ValueError(f"a prompt clip is [samples] or [batch, samples] audio, got shape "
                             f"{audio.shape}")
        if sample_rate != self.sample_rate:
            logging.warning("prompt audio at %d Hz: resampled to the codec's %d Hz",
                            sample_rate, self.sample_rate)
            audio = resample(audio.T, sample_rate, self.sample_rate).T
        if audio.shape[1] / self.sample_rate >= self.max_seconds:
            raise ValueError(f"a prompt of {audio.shape[1] / self.sample_rate:.1f} s leaves no room "
                             f"in MusicGen's {self.max_seconds:g} s context")
        codes = self._encode_audio(self.codec_variables, jnp.asarray(audio)[..., None])
        return np.asarray(codes)

    def generate(self, captions: list[str], seconds: float = 10.0,
                 settings: gen.SamplingSettings = DEFAULT_SETTINGS, seed: int = 0,
                 progress: bool = True, prompt_audio: np.ndarray | None = None,
                 prompt_sample_rate: int | None = None) -> np.ndarray:
        """Captions -> audio [b, samples] float32 at `sample_rate`.

        With `prompt_audio` ([samples], or [b, samples] one per caption, at
        `prompt_sample_rate`) the music continues the clip: the result is the clip's
        codes decoded, then `seconds` of new music (transformers' and audiocraft's
        continuation).

        Past the 30 s context the music is generated in windows (`generate_codes`).

        Raises:
          ValueError: an empty caption, or `seconds` out of range (named).
        """
        frames = self.frames_for(seconds)
        ids, mask = self.tokenize(captions)
        prompt = None
        if prompt_audio is not None:
            if prompt_sample_rate is None:
                raise ValueError("prompt_audio needs prompt_sample_rate")
            prompt = self.encode_audio(prompt_audio, prompt_sample_rate)
            if prompt.shape[0] == 1 and len(captions) > 1:
                prompt = np.repeat(prompt, len(captions), axis=0)
            if prompt.shape[0] != len(captions):
                raise ValueError(f"{prompt.shape[0]} prompt clips for {len(captions)} captions")
        codes = self.generate_codes(ids, mask, frames, settings, seed, prompt=prompt,
                                    progress=progress)
        if prompt is not None:
            codes = np.concatenate([prompt, codes], axis=1)
        return self.decode(codes)

def load(path: str | Path, dtype: Any = jnp.float32) -> MusicGenPipeline:
    """A `MusicGenPipeline` from an export of `python -m audiolm_jax.convert musicgen`
    (its tokenizer too, when it has one).

    Raises:
      FileNotFoundError: not an export.
      CheckpointMismatchError: an export of another family (named).
    """
    from audiolm_jax.text.t5_tokenizer import T5Tokenizer
    from audiolm_jax.training.export import load_exported

    path = Path(path)
    config, variables = load_exported(path, expected_model=MODEL_NAME)
    musicgen = MusicGenConfig(**config["musicgen"])
    tokenizer = None
    if (path / TOKENIZER_FILE).is_file():
        tokenizer = T5Tokenizer.from_file(path / TOKENIZER_FILE)
        tokenizer.check_vocab_size(musicgen.text.vocab_size, str(path))
    return MusicGenPipeline(musicgen, variables["musicgen"]["params"],
                            CodecConfig.from_dict(config["codec"]), variables["codec"],
                            tokenizer, dtype)
