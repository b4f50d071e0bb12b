"""Semantic tokens: k-means clusters of one layer of a self-supervised speech encoder.

AudioLM's semantic tokens are k-means ids of a w2v-BERT layer at 25-50 Hz; most
open reimplementations use a HuBERT layer. Either encoder works here:

    encoder = load_semantic_encoder("runs/semantic_tiny/export")   # or a HF directory
    kmeans = fit_semantic_kmeans(encoder, layer=3, clips=clips, num_clusters=500)
    tokenizer = SemanticTokenizer(encoder, kmeans)
    ids = tokenizer.tokenize(audio, sample_rate=16_000)            # [frames] int32
    ids, runs = deduplicate(ids)                                   # run-length dedup

`kmeans.save(path)` stores the centroids with the encoder family, width and
layer they were fitted on; `SemanticTokenizer.load(encoder_path, kmeans_path)`
refuses a k-means model fitted on another layer or dimension.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from audiolm_jax.audio.io import mono_at
from audiolm_jax.quantization.minibatch_kmeans import KMeansModel, fit_minibatch_kmeans
from audiolm_jax.training.checkpointing import CheckpointMismatchError
from audiolm_jax.training.export import MODEL_FILE, read_model_file

ENCODER_FAMILIES = {"w2v_bert": "wav2vec2-bert", "hubert": "hubert"}   # export name: HF type


@dataclasses.dataclass
class SemanticEncoder:
    """A loaded encoder with what tokenization needs to know about it.

    Attributes:
      family: "w2v_bert" or "hubert".
      module: the Flax module (`W2vBert` or `HuBERT`).
      variables: its variables.
      sample_rate: input rate in Hz.
      frame_rate: output frames per second.
      num_layers: layers; `layer_features` indexes 0 (encoder input) .. num_layers.
      hidden_size: feature width.
      source: where it was loaded from.
    """

    family: str
    module: Any
    variables: Any
    sample_rate: int
    frame_rate: float
    num_layers: int
    hidden_size: int
    source: str = ""
    _forward: Any = dataclasses.field(default=None, repr=False)

    @property
    def name(self) -> str:
        """Family and shape, e.g. "w2v_bert 4x128": what a k-means model must match."""
        return f"{self.family} {self.num_layers}x{self.hidden_size}"

    def num_frames(self, num_samples: int) -> int:
        if self.family == "w2v_bert":
            return self.module.config.fbank.num_frames(num_samples)
        return self.module.config.num_frames(num_samples)

    def min_samples(self) -> int:
        if self.family == "w2v_bert":
            return self.module.config.fbank.min_samples()
        cfg = self.module.config
        return next(n for n in range(1, 100_000) if cfg.num_frames(n) >= 1)

    def layer_features(self, audio: np.ndarray, layers: Sequence[int]) -> list[np.ndarray]:
        """Hidden states of one clip at the chosen layers.

        Args:
          audio: [samples] mono waveform at `sample_rate`.
          layers: indices into the hidden states (0: encoder input, `num_layers`: last).

        Returns:
          One [frames, hidden_size] float32 array per layer.
        """
        audio = np.asarray(audio, np.float32)
        if audio.ndim != 1:
            raise ValueError(f"expected a mono waveform [samples], got shape {audio.shape}")
        if len(audio) < self.min_samples():
            raise ValueError(f"audio of {len(audio)} samples ({len(audio) / self.sample_rate:.3f}"
                             f" s) is shorter than one frame of the {self.name} encoder "
                             f"({self.min_samples()} samples at {self.sample_rate} Hz)")
        for layer in layers:
            if not 0 <= layer <= self.num_layers:
                raise ValueError(f"layer {layer} is out of range: the {self.name} encoder has "
                                 f"hidden states 0 (input) .. {self.num_layers}")
        if self._forward is None:
            # Variables are an argument, not closed-over constants: large encoders
            # would otherwise be baked into every compiled program.
            self._forward = jax.jit(self._hidden_states)
        frames = self.num_frames(len(audio))
        if self.family == "w2v_bert":
            # Pad to whole seconds (one compile per length bucket); the padding is
            # masked out of attention and the causal conv, so the frames are exact.
            padded = np.pad(audio, (0, -len(audio) % self.sample_rate))
            states = self._forward(self.variables, padded[None], jnp.asarray([len(audio)]))
        else:
            # HuBERT has no attention mask: run the exact length.
            states = self._forward(self.variables, audio[None], None)
        return [np.asarray(states[layer][0, :frames]) for layer in layers]

    def _hidden_states(self, variables: Any, audio: jax.Array,
                       lengths: jax.Array | None) -> list[jax.Array]:
        if self.family == "w2v_bert":
            from audiolm_jax.models.w2v_bert.model import encode_audio
            return encode_audio(self.module, variables, audio, lengths)["hidden_states"]
        if self.module.config.feat_extract_norm == "layer":
            # fairseq's large HuBERTs were trained on zero-mean, unit-variance input.
            audio = (audio - audio.mean(-1, keepdims=True)) / jnp.sqrt(
                audio.var(-1, keepdims=True) + 1e-7)
        return self.module.apply(variables, audio)["hidden_states"]


def encoder_family(path: str | Path) -> str:
    """"w2v_bert" or "hubert" for an export or Hugging Face directory, else a clear error."""
    path = Path(path)
    if (path / MODEL_FILE).is_file():
        family = read_model_file(path)["model"]
        if family not in ENCODER_FAMILIES:
            raise CheckpointMismatchError(
                f"{path} holds an exported {family!r} model; semantic tokens need a speech "
                f"encoder ({' or '.join(map(repr, ENCODER_FAMILIES))})")
        return family
    config = path / "config.json"
    if config.is_file():
        model_type = json.loads(config.read_text()).get("model_type")
        for family, hf_type in ENCODER_FAMILIES.items():
            if model_type == hf_type:
                return family
        raise CheckpointMismatchError(
            f"{config} describes model_type {model_type!r}; semantic tokens need a speech "
            f"encoder ({' or '.join(map(repr, ENCODER_FAMILIES.values()))})")
    raise FileNotFoundError(f"{path} is neither an export (no {MODEL_FILE}) nor a Hugging Face "
                            f"directory (no config.json)")


def load_semantic_encoder(path: str | Path) -> SemanticEncoder:
    """Loads a w2v-BERT or HuBERT encoder from an export or a Hugging Face directory."""
    family = encoder_family(path)
    if family == "w2v_bert":
        from audiolm_jax.convert.w2v_bert import load_w2v_bert
        module, variables = load_w2v_bert(path)
        cfg = module.config
        return SemanticEncoder(family, module, variables, cfg.sample_rate, cfg.frame_rate,
                               cfg.num_hidden_layers, cfg.hidden_size, str(path))
    from audiolm_jax.convert.hubert import load_hubert
    module, variables = load_hubert(path)
    cfg = module.config
    return SemanticEncoder(family, module, variables, 16_000, 16_000 / cfg.hop_length,
                           cfg.num_hidden_layers, cfg.hidden_size, str(path))


def fit_semantic_kmeans(encoder: SemanticEncoder, layer: int, clips: Iterable[np.ndarray],
                        num_clusters: int, *, num_steps: int = 300, batch_frames: int = 8192,
                        seed: int = 0, progress: bool = True) -> KMeansModel:
    """Mini-batch k-means on `layer`'s activations over `clips` (mono, at the encoder's rate).

    All clips' frames are gathered first (they fit in memory for corpora of hours),
    then `num_steps` batches of `batch_frames` random frames fit the centroids.
    """
    frames = np.concatenate([encoder.layer_features(c, [layer])[0] for c in clips])
    if len(frames) < num_clusters:
        raise ValueError(f"{len(frames)} frames are too few for {num_clusters} clusters")
    rng = np.random.default_rng(seed)

    def batches():
        while True:
            yield frames[rng.integers(0, len(frames), batch_frames)]

    model, _ = fit_minibatch_kmeans(
        batches(), num_clusters, num_steps=num_steps, seed=seed, progress=progress,
        metadata={"encoder": encoder.name, "layer": layer, "frame_rate": encoder.frame_rate,
                  "source": encoder.source})
    return model


def deduplicate(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run-length deduplication: [n] ids -> (ids without repeats [m], run lengths [m])."""
    ids = np.asarray(ids)
    if ids.size == 0:
        return ids, np.zeros(0, np.int32)
    starts = np.concatenate([[True], ids[1:] != ids[:-1]])
    positions = np.flatnonzero(starts)
    runs = np.diff(np.append(positions, ids.size)).astype(np.int32)
    return ids[positions], runs


@dataclasses.dataclass
class SemanticTokenizer:
    """Encoder layer + k-means: audio -> token ids at the encoder's frame rate.

    Raises (on construction):
      ValueError: when the k-means model was fitted on another encoder, layer or
        feature dimension.
    """

    encoder: SemanticEncoder
    kmeans: KMeansModel

    def __post_init__(self):
        meta = self.kmeans.metadata
        if "layer" not in meta:
            raise ValueError("the k-means model has no 'layer' in its metadata; fit it with "
                             "fit_semantic_kmeans")
        if self.kmeans.dim != self.encoder.hidden_size:
            raise ValueError(f"the k-means model clusters {self.kmeans.dim}-dimensional "
                             f"features, but the {self.encoder.name} encoder outputs "
                             f"{self.encoder.hidden_size} (fitted on {meta.get('encoder')!r})")
        if meta.get("encoder") not in (None, self.encoder.name):
            raise ValueError(f"the k-means model was fitted on a {meta['encoder']!r} encoder, "
                             f"not {self.encoder.name!r}")
        if not 0 <= int(meta["layer"]) <= self.encoder.num_layers:
            raise ValueError(f"the k-means model was fitted on layer {meta['layer']}, which the "
                             f"{self.encoder.name} encoder does not have")

    @property
    def layer(self) -> int:
        return int(self.kmeans.metadata["layer"])

    @property
    def vocab_size(self) -> int:
        return self.kmeans.num_clusters

    @classmethod
    def load(cls, encoder_path: str | Path, kmeans_path: str | Path,
             layer: int | None = None) -> SemanticTokenizer:
        """Encoder + saved k-means; `layer`, when given, must be the one it was fitted on."""
        encoder = load_semantic_encoder(encoder_path)
        expect = {"dim": encoder.hidden_size}
        if layer is not None:
            expect["layer"] = layer
        return cls(encoder, KMeansModel.load(kmeans_path, expect=expect))

    def tokenize(self, audio: np.ndarray, sample_rate: int, dedup: bool = False) -> np.ndarray:
        """Token ids of one clip.

        Args:
          audio: [samples] or [samples, channels] (channels are averaged).
          sample_rate: must equal the encoder's (resample first, e.g. with
            `audiolm_jax.audio.io.load_audio(path, sample_rate=...)`).
          dedup: drop consecutive repeats (AudioLM's semantic stream).

        Returns:
          [frames] int32 ids in [0, vocab_size) (fewer with `dedup`).
        """
        audio = mono_at(audio, sample_rate, self.encoder.sample_rate,
                        f"the {self.encoder.name} encoder")
        features = self.encoder.layer_features(audio, [self.layer])[0]
        ids = self.kmeans.predict(features).astype(np.int32)
        return deduplicate(ids)[0] if dedup else ids
