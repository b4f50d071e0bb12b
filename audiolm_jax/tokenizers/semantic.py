"""Semantic tokens: k-means clusters of one layer of a self-supervised speech encoder.

AudioLM's semantic tokens are k-means ids of a w2v-BERT layer at 25-50 Hz; most
open reimplementations use a HuBERT layer. Either encoder works here:

    encoder = load_semantic_encoder("runs/semantic_tiny/export")   # or a HF directory
    kmeans = fit_semantic_kmeans(encoder, layer=3, clips=clips, num_clusters=500)
    tokenizer = SemanticTokenizer(encoder, kmeans)
    ids = tokenizer.tokenize(audio, sample_rate=16_000)            # [frames] int32
    ids, runs = deduplicate(ids)                                   # run-length dedup

`kmeans.save(path)` stores the centroids with the encoder family, width and
layer they were fitted on, and the fingerprint of the encoder's weights
(`SemanticEncoder.fingerprint`: the export's recorded one, or computed from the
variables for a Hugging Face directory or an export older than fingerprints);
`SemanticTokenizer.load(encoder_path, kmeans_path)` refuses a k-means model
fitted on another layer or dimension, or on the features of another encoder
of the same shape (other weights), naming both fingerprints (`force=True`
overrides; k-means models saved before fingerprints are accepted).

Length buckets. `SemanticEncoder.layer_features` compiles the encoder once per
*length bucket*, not once per clip length, where padding is exact:

- **w2v-BERT**: a clip is zero-padded to `bucket_length(samples,
  bucket_seconds * sample_rate)` (that base times 1, 2, 3, 4, 6, 8, 12, 16, ...:
  powers of two and 1.5 x powers of two, so at most 50 % padding and about two
  buckets per doubling of length) and the real length is passed along: the
  front end's per-bin normalization uses the valid frames only, the padded
  frames are masked out of attention and of the convolution module, and only
  the real frames are kept. Measured on a random 2-layer encoder: features of
  the real frames within 1.4e-5 of the unpadded clip's (|features| ~3), tokens
  identical (`tests/test_semantic_tokens.py`).
- **HuBERT** runs at the exact length (one compile per distinct length): its
  model has no attention mask, its first conv layer's GroupNorm normalizes each
  channel over the whole time axis, and its convolutional positional embedding
  (kernel 128, "same" padding) reads the frames after the end, so padded
  frames change the real ones (measured: up to 1.8-4 on features of size ~3.5,
  30-80 % of tokens differ). That cannot be masked from outside the model.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from audiolm_jax.audio.io import mono_at
from audiolm_jax.files import fingerprint
from audiolm_jax.quantization.minibatch_kmeans import (
    ENCODER_FINGERPRINT,
    KMeansModel,
    fit_minibatch_kmeans,
)
from audiolm_jax.training.checkpointing import CheckpointMismatchError
from audiolm_jax.training.export import MODEL_FILE, exported_fingerprint, read_model_file

ENCODER_FAMILIES = {"w2v_bert": "wav2vec2-bert", "hubert": "hubert"}   # export name: HF type

DEFAULT_MAX_KMEANS_FRAMES = 100_000
"""Frames `fit_semantic_kmeans` keeps by default (a uniform reservoir sample of all the
clips' frames): 100k frames x 1024 dims x 4 bytes = 410 MB at most."""


def bucket_length(num_samples: int, base: int) -> int:
    """The padded length of a clip: `base` times the first of 1, 2, 3, 4, 6, 8, 12, 16, ...

    (powers of two and 1.5 x powers of two) that holds `num_samples`: at most
    50 % padding, about two buckets per doubling of length.
    """
    if num_samples < 1 or base < 1:
        raise ValueError(f"bucket_length needs positive lengths, got {num_samples} and {base}")
    units = -(-num_samples // base)
    power = 1 << max(0, (units - 1).bit_length() - 1)     # power < units <= 2 * power (or 1)
    multiple = next(m for m in (power, 3 * power // 2, 2 * power) if m >= units)
    return multiple * base


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
      bucket_seconds: w2v-BERT pads clips to `bucket_length` with this base
        (module docstring); HuBERT always runs the exact length.
      traces: how many times the encoder was traced (= compiled) so far.
    """

    family: str
    module: Any
    variables: Any
    sample_rate: int
    frame_rate: float
    num_layers: int
    hidden_size: int
    source: str = ""
    bucket_seconds: float = 1.0
    traces: int = dataclasses.field(default=0, repr=False)
    _fingerprint: str | None = dataclasses.field(default=None, repr=False)
    _forward: Any = dataclasses.field(default=None, repr=False)

    @property
    def name(self) -> str:
        """Family and shape, e.g. "w2v_bert 4x128": what a k-means model must match."""
        return f"{self.family} {self.num_layers}x{self.hidden_size}"

    @property
    def fingerprint(self) -> str:
        """16 hex digits identifying the weights: the export's recorded fingerprint, else
        computed from the variables (once)."""
        if self._fingerprint is None:
            self._fingerprint = fingerprint(self.variables)
        return self._fingerprint

    @property
    def pads_exactly(self) -> bool:
        """Whether a zero-padded clip gives the real frames' features unchanged (w2v-BERT,
        which masks padding; not HuBERT, see the module docstring)."""
        return self.family == "w2v_bert"

    def padded_length(self, num_samples: int) -> int:
        """The length a clip of `num_samples` runs at: its bucket, or itself for HuBERT."""
        if not self.pads_exactly:
            return num_samples
        return bucket_length(num_samples, max(1, round(self.bucket_seconds * self.sample_rate)))

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
        if self.pads_exactly:
            # Pad to the length bucket (one compile per bucket); the padding is
            # masked out of the front end, attention and the conv module, so the
            # real frames are exact (module docstring).
            padded = np.pad(audio, (0, self.padded_length(len(audio)) - len(audio)))
            states = self._forward(self.variables, padded[None], jnp.asarray([len(audio)]))
        else:
            # HuBERT has no attention mask: run the exact length.
            states = self._forward(self.variables, audio[None], None)
        return [np.asarray(states[layer][0, :frames]) for layer in layers]

    def _hidden_states(self, variables: Any, audio: jax.Array,
                       lengths: jax.Array | None) -> list[jax.Array]:
        self.traces += 1   # runs when jit traces, i.e. once per compiled shape
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
    # An export records its weights' fingerprint; otherwise it is computed on first use.
    recorded = exported_fingerprint(path) if (Path(path) / MODEL_FILE).is_file() else None
    if family == "w2v_bert":
        from audiolm_jax.convert.w2v_bert import load_w2v_bert
        module, variables = load_w2v_bert(path)
        cfg = module.config
        return SemanticEncoder(family, module, variables, cfg.sample_rate, cfg.frame_rate,
                               cfg.num_hidden_layers, cfg.hidden_size, str(path),
                               _fingerprint=recorded)
    from audiolm_jax.convert.hubert import load_hubert
    module, variables = load_hubert(path)
    cfg = module.config
    return SemanticEncoder(family, module, variables, 16_000, 16_000 / cfg.hop_length,
                           cfg.num_hidden_layers, cfg.hidden_size, str(path),
                           _fingerprint=recorded)


def reservoir_frames(features: Iterable[np.ndarray], max_frames: int | None,
                     seed: int = 0) -> tuple[np.ndarray, int]:
    """A uniform random sample of at most `max_frames` rows of a stream of [n, d] arrays.

    Reservoir sampling (Vitter's algorithm R, vectorized per array): memory is
    `max_frames` rows whatever the stream's length, and every row seen has the
    same chance to be kept. `max_frames=None` keeps every row.

    Returns:
      ([min(total, max_frames), d] float32 rows, total rows seen).
    """
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be positive, got {max_frames}")
    rng = np.random.default_rng(seed)
    kept: list[np.ndarray] = []
    pool: np.ndarray | None = None
    seen = 0
    for rows in features:
        rows = np.asarray(rows, np.float32)
        if max_frames is None:
            kept.append(rows)
            seen += len(rows)
            continue
        if pool is None:
            pool = np.empty((max_frames, rows.shape[1]), np.float32)   # pages touched lazily
        fill = min(len(rows), max(0, max_frames - seen))
        pool[seen:seen + fill] = rows[:fill]
        rest = rows[fill:]
        if len(rest):
            index = seen + fill + np.arange(len(rest))               # global row numbers
            slot = np.floor(rng.random(len(rest)) * (index + 1)).astype(np.int64)
            keep = slot < max_frames                                  # P = max_frames / (i + 1)
            pool[slot[keep]] = rest[keep]
        seen += len(rows)
    if max_frames is None:
        return (np.concatenate(kept) if kept else np.zeros((0, 0), np.float32)), seen
    if pool is None:
        return np.zeros((0, 0), np.float32), 0
    return pool[:min(seen, max_frames)], seen


def fit_semantic_kmeans(encoder: SemanticEncoder, layer: int, clips: Iterable[np.ndarray],
                        num_clusters: int, *, num_steps: int = 300, batch_frames: int = 8192,
                        max_frames: int | None = DEFAULT_MAX_KMEANS_FRAMES, seed: int = 0,
                        progress: bool = True) -> KMeansModel:
    """Mini-batch k-means on `layer`'s activations over `clips` (mono, at the encoder's rate).

    `clips` is consumed one clip at a time (a generator that decodes files
    lazily keeps one clip in memory); their frames go through a uniform
    reservoir sample of at most `max_frames` frames (`reservoir_frames`;
    None keeps all), then `num_steps` batches of `batch_frames` random frames
    of that sample fit the centroids. The model's metadata records the
    encoder's name, layer, frame rate, source, weights fingerprint
    (`encoder_fingerprint`), and the frames seen and kept.
    """
    frames, seen = reservoir_frames((encoder.layer_features(c, [layer])[0] for c in clips),
                                    max_frames, seed=seed)
    if len(frames) < num_clusters:
        raise ValueError(f"{len(frames)} frames are too few for {num_clusters} clusters")
    rng = np.random.default_rng(seed)

    def batches() -> Iterator[np.ndarray]:
        while True:
            yield frames[rng.integers(0, len(frames), batch_frames)]

    model, _ = fit_minibatch_kmeans(
        batches(), num_clusters, num_steps=num_steps, seed=seed, progress=progress,
        metadata={"encoder": encoder.name, "layer": layer, "frame_rate": encoder.frame_rate,
                  "source": encoder.source, ENCODER_FINGERPRINT: encoder.fingerprint,
                  "frames_seen": int(seen), "frames_used": int(len(frames))})
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

    Attributes:
      encoder: the encoder.
      kmeans: the k-means model over one of its layers.
      force: accept a k-means model whose recorded encoder fingerprint is not
        this encoder's (e.g. a command line's `--force`).

    Raises (on construction):
      ValueError: when the k-means model was fitted on another encoder, layer or
        feature dimension.
      FingerprintMismatchError (a ValueError): when it was fitted on the
        features of another encoder of the same shape (other weights), naming
        both fingerprints, unless `force`.
    """

    encoder: SemanticEncoder
    kmeans: KMeansModel
    force: bool = False

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
        if self.kmeans.encoder_fingerprint is not None:   # else: saved before fingerprints
            self.kmeans.check_encoder(self.encoder.fingerprint,
                                      f"the k-means model (for the {self.encoder.name} encoder "
                                      f"at {self.encoder.source or 'memory'})",
                                      force=self.force)

    @property
    def layer(self) -> int:
        return int(self.kmeans.metadata["layer"])

    @property
    def vocab_size(self) -> int:
        return self.kmeans.num_clusters

    @property
    def fingerprints(self) -> dict[str, str]:
        """{"encoder_fingerprint", "kmeans_fingerprint"}: what token files record."""
        return {"encoder_fingerprint": self.encoder.fingerprint,
                "kmeans_fingerprint": self.kmeans.fingerprint}

    @classmethod
    def load(cls, encoder_path: str | Path, kmeans_path: str | Path,
             layer: int | None = None, force: bool = False) -> SemanticTokenizer:
        """Encoder + saved k-means; `layer`, when given, must be the one it was fitted on.

        Raises:
          FingerprintMismatchError: the k-means model was fitted on another
            encoder's features (naming both fingerprints), unless `force`.
        """
        encoder = load_semantic_encoder(encoder_path)
        expect = {"dim": encoder.hidden_size}
        if layer is not None:
            expect["layer"] = layer
        kmeans = KMeansModel.load(kmeans_path, expect=expect)
        if kmeans.encoder_fingerprint is not None:   # checked here to name the file
            kmeans.check_encoder(encoder.fingerprint, f"k-means model {kmeans_path}", force=force)
        return cls(encoder, kmeans, force=force)

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
