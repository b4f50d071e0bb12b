"""MuLan and melody embeddings and tokens, for notebooks and for MusicLM's stages.

    mulan = MuLanEmbedder.load("runs/mulan_tiny/export")
    text = mulan.embed_text(["a slow piano melody in A minor"])     # [1, E] unit vectors
    audio = mulan.embed_audio(clip, sample_rate=24_000)             # [E]
    mulan.rank("an upbeat organ tune", clip_embeddings)            # indices, best first

    tokens = MuLanTokenizer.load("runs/mulan_tiny/export")          # + export/rvq.npz
    tokens.text_tokens(captions)      # [N, 12] int32: MusicLM's conditioning at generation
    tokens.audio_tokens(clip, 24_000) # [12] int32: ... and at training time

    melody = MelodyTokenizer.load("runs/melody_tiny/export")
    melody.tokens(hummed, 16_000)     # [windows, Q] int32, one stack per hop

Audio of any sample rate is resampled to the model's. A clip longer than the
tower's window is embedded window by window (the last window flush with the
end) and the unit embeddings are averaged and renormalized, as MuLan does for
long clips; a clip shorter than the window is refused.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from audiolm_jax.audio.io import resample
from audiolm_jax.data.pipeline import BadFileReport, decode_record
from audiolm_jax.models.melody.model import MODEL_NAME as MELODY_MODEL
from audiolm_jax.models.melody.model import MelodyConfig, MelodyEmbedder
from audiolm_jax.models.mulan.model import MODEL_NAME as MULAN_MODEL
from audiolm_jax.models.mulan.model import MuLan, MuLanConfig, window_starts
from audiolm_jax.quantization.residual_kmeans import ResidualKMeans, fit_residual_kmeans
from audiolm_jax.text.wordpiece import TOKENIZER_FILE, WordPieceTokenizer
from audiolm_jax.training.export import MODEL_FILE, exported_fingerprint, load_exported

RVQ_FILE = "rvq.npz"
BATCH = 16  # embeddings are computed in fixed-size batches: one compilation per shape


def _as_mono(audio: Any, sample_rate: int, target_rate: int) -> np.ndarray:
    audio = np.asarray(audio, np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    if audio.ndim != 1:
        raise ValueError(f"audio must be [samples] or [samples, channels], got {audio.shape}")
    if audio.size == 0:
        raise ValueError("audio is empty")
    if sample_rate != target_rate:
        audio = resample(audio[:, None], sample_rate, target_rate)[:, 0]
    return audio


def _windows(audio: np.ndarray, window: int, hop: int | None, sample_rate: int) -> np.ndarray:
    """[S] -> [W, window], or a ValueError saying how long the clip must be."""
    try:
        starts = window_starts(len(audio), window, hop)
    except ValueError:
        raise ValueError(f"clip of {len(audio) / sample_rate:.2f} s is shorter than the "
                         f"model's {window / sample_rate:g} s window") from None
    return np.stack([audio[s:s + window] for s in starts])


def _batched(fn, *arrays: np.ndarray) -> np.ndarray:
    """fn(*rows) over [N, ...] arrays in batches of BATCH rows (the last one padded by
    repeating its final row), so every call has one shape and compiles once."""
    out = []
    for i in range(0, len(arrays[0]), BATCH):
        chunks = [x[i:i + BATCH] for x in arrays]
        pad = BATCH - len(chunks[0])
        if pad:
            chunks = [np.concatenate([c, np.repeat(c[-1:], pad, axis=0)]) for c in chunks]
        out.append(np.asarray(fn(*[jnp.asarray(c) for c in chunks]))[:BATCH - pad])
    return np.concatenate(out)


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class MuLanEmbedder:
    """A trained MuLan export: text and audio into the shared space."""

    def __init__(self, config: MuLanConfig, params: Any, tokenizer: WordPieceTokenizer,
                 path: str = "<memory>"):
        tokenizer.check_compatible(config.text, f"{path}/{TOKENIZER_FILE}")
        self.config, self.params, self.tokenizer, self.path = config, params, tokenizer, path
        model = MuLan(config)
        self._audio = jax.jit(lambda p, a: model.apply({"params": p}, a,
                                                       method=MuLan.embed_audio))
        self._text = jax.jit(lambda p, i, m: model.apply({"params": p}, i, m,
                                                         method=MuLan.embed_text))

    @classmethod
    def load(cls, path: str | os.PathLike) -> MuLanEmbedder:
        """From an export written by `train/mulan.py` (model.json, variables/, tokenizer.json)."""
        path = Path(path)
        config, variables = load_exported(path, MULAN_MODEL)
        if not (path / TOKENIZER_FILE).is_file():
            raise FileNotFoundError(f"{path} has no {TOKENIZER_FILE}: a MuLan export carries "
                                    "the text tower's tokenizer")
        return cls(MuLanConfig.from_dict(config), variables["params"],
                   WordPieceTokenizer.from_file(path / TOKENIZER_FILE), str(path))

    @property
    def sample_rate(self) -> int:
        return self.config.audio.sample_rate

    def embed_text(self, captions: Sequence[str]) -> np.ndarray:
        """Captions -> [N, E] unit vectors. Empty captions are refused; captions longer
        than `max_text_length` tokens are truncated with a warning."""
        if isinstance(captions, str):
            captions = [captions]
        tokens = self.tokenizer.encode(list(captions), self.config.max_text_length)
        return _batched(lambda ids, mask: self._text(self.params, ids, mask), tokens.ids,
                        tokens.mask)

    def embed_windows(self, audio: Any, sample_rate: int, hop_seconds: float | None = None
                      ) -> np.ndarray:
        """One clip -> [W, E]: unit embeddings of its windows."""
        audio = _as_mono(audio, sample_rate, self.sample_rate)
        hop = None if hop_seconds is None else int(round(hop_seconds * self.sample_rate))
        return self.embed_window_batch(
            _windows(audio, self.config.audio.clip_samples, hop, self.sample_rate))

    def embed_window_batch(self, windows: np.ndarray) -> np.ndarray:
        """[W, clip_samples] audio windows at `sample_rate` -> [W, E] unit embeddings."""
        windows = np.asarray(windows, np.float32)
        if windows.ndim != 2 or windows.shape[1] != self.config.audio.clip_samples:
            raise ValueError(f"expected [windows, {self.config.audio.clip_samples}] audio, got "
                             f"{windows.shape}")
        return _batched(lambda x: self._audio(self.params, x), windows)

    def embed_audio(self, audio: Any, sample_rate: int) -> np.ndarray:
        """One clip -> [E]: the renormalized mean of its windows' embeddings."""
        return _normalize(self.embed_windows(audio, sample_rate).mean(axis=0))

    def rank(self, query: str, clip_embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Clips ordered by cosine similarity to a text query: (indices, similarities)."""
        scores = np.asarray(clip_embeddings) @ self.embed_text([query])[0]
        order = np.argsort(-scores, kind="stable")
        return order, scores[order]


def _load_rvq(path: Path, expect: dict, model_path: Path | None = None) -> ResidualKMeans:
    """The residual codebooks at `path`; refused when they record a fitting model other
    than the export at `model_path` (weights fingerprints compared)."""
    file = path / RVQ_FILE if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"no residual codebooks at {file}: the trainer writes them at "
                                "the end of training (or run train/mulan.py --fit_rvq_only)")
    model_fingerprint = None
    if model_path is not None and (Path(model_path) / MODEL_FILE).is_file():
        model_fingerprint = exported_fingerprint(model_path)
    return ResidualKMeans.load(file, expect=expect, encoder_fingerprint=model_fingerprint)


class MuLanTokenizer:
    """MuLan embeddings quantized with residual codebooks (MusicLM: 12 x 1024)."""

    def __init__(self, embedder: MuLanEmbedder, rvq: ResidualKMeans):
        self.embedder, self.rvq = embedder, rvq

    @classmethod
    def load(cls, path: str | os.PathLike, rvq_path: str | os.PathLike | None = None
             ) -> MuLanTokenizer:
        embedder = MuLanEmbedder.load(path)
        rvq = _load_rvq(Path(rvq_path or path), {"model": MULAN_MODEL,
                                                 "dim": embedder.config.embed_dim}, Path(path))
        return cls(embedder, rvq)

    def text_tokens(self, captions: Sequence[str]) -> np.ndarray:
        """[N] captions -> [N, num_quantizers] int32."""
        return self.rvq.encode(self.embedder.embed_text(captions))

    def audio_tokens(self, audio: Any, sample_rate: int, per_window: bool = False) -> np.ndarray:
        """One clip -> [num_quantizers] int32 (or [W, num_quantizers] per window)."""
        if per_window:
            return self.rvq.encode(self.embedder.embed_windows(audio, sample_rate))
        return self.rvq.encode(self.embedder.embed_audio(audio, sample_rate))


class MelodyTokenizer:
    """A trained melody embedder (and, when present, its residual codebooks)."""

    def __init__(self, config: MelodyConfig, params: Any, rvq: ResidualKMeans | None = None,
                 path: str = "<memory>"):
        self.config, self.params, self.rvq, self.path = config, params, rvq, path
        model = MelodyEmbedder(config)
        self._embed = jax.jit(lambda p, a: model.apply({"params": p}, a))

    @classmethod
    def load(cls, path: str | os.PathLike, require_rvq: bool = True) -> MelodyTokenizer:
        path = Path(path)
        config, variables = load_exported(path, MELODY_MODEL)
        config = MelodyConfig(**config)
        rvq = None
        if require_rvq or (path / RVQ_FILE).is_file():
            rvq = _load_rvq(path, {"model": MELODY_MODEL, "dim": config.embed_dim}, path)
        return cls(config, variables["params"], rvq, str(path))

    def embed(self, audio: Any, sample_rate: int, hop_seconds: float = 1.0) -> np.ndarray:
        """One clip -> [W, E] unit embeddings of windows `hop_seconds` apart."""
        audio = _as_mono(audio, sample_rate, self.config.sample_rate)
        return self.embed_window_batch(_windows(
            audio, self.config.clip_samples, int(round(hop_seconds * self.config.sample_rate)),
            self.config.sample_rate))

    def embed_window_batch(self, windows: np.ndarray) -> np.ndarray:
        """[W, clip_samples] audio windows at `config.sample_rate` -> [W, E] unit vectors."""
        windows = np.asarray(windows, np.float32)
        if windows.ndim != 2 or windows.shape[1] != self.config.clip_samples:
            raise ValueError(f"expected [windows, {self.config.clip_samples}] audio, got "
                             f"{windows.shape}")
        return _batched(lambda x: self._embed(self.params, x), windows)

    def tokens(self, audio: Any, sample_rate: int, hop_seconds: float = 1.0) -> np.ndarray:
        """One clip -> [W, num_quantizers] int32 melody tokens."""
        if self.rvq is None:
            raise ValueError(f"{self.path} has no {RVQ_FILE}: melody tokens need the residual "
                             "codebooks the trainer fits")
        return self.rvq.encode(self.embed(audio, sample_rate, hop_seconds))


def fit_window_codebooks(source: Any, embed_window_batch, sample_rate: int, window: int,
                         rvq: Any, seed: int, metadata: dict, out: Path) -> dict:
    """Fits and saves (`out / rvq.npz`) residual codebooks on embeddings of random windows.

    Args:
      source: records to draw from (e.g. the training clips); unreadable ones and
        clips shorter than `window` are skipped.
      embed_window_batch: [W, window] audio at `sample_rate` -> [W, E] embeddings.
      rvq: `num_quantizers`, `codebook_size`, `steps`, `windows_per_clip` (a config block).
      metadata: stored with the codebooks (`model` is what the tokenizers check).

    Returns:
      {"vectors": count, "residual_energy": per-stage relative residual energy}.
    """
    rng = np.random.default_rng(seed)
    report = BadFileReport()
    embeddings = []
    for i in tqdm(range(len(source)), desc="token windows"):
        audio = decode_record(source[i], sample_rate, report)
        if audio is None or len(audio) < window:
            continue
        starts = rng.integers(0, len(audio) - window + 1, rvq.windows_per_clip)
        embeddings.append(embed_window_batch(np.stack([audio[s:s + window, 0] for s in starts])))
    vectors = np.concatenate(embeddings)
    if (Path(out) / MODEL_FILE).is_file():   # fitted next to an export: record whose embeddings
        metadata = {**metadata, "encoder_fingerprint": exported_fingerprint(out)}
    codebooks, energy = fit_residual_kmeans(
        vectors, rvq.num_quantizers, min(rvq.codebook_size, len(vectors)), steps=rvq.steps,
        seed=seed, metadata={**metadata, "vectors": int(len(vectors))})
    codebooks.save(Path(out) / RVQ_FILE)
    return {"vectors": int(len(vectors)), "residual_energy": energy}

