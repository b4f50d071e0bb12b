"""Residual vector quantization fitted after the fact: residual k-means over embeddings.

MusicLM turns MuLan embeddings (and melody embeddings) into tokens with a
residual VQ of 12 codebooks of 1024 entries, learned on embeddings of the
trained, frozen model. Fitting it is residual k-means: codebook 1 is k-means
on the embeddings, codebook 2 is k-means on what codebook 1 leaves over, and
so on. Each stage reuses the project's mini-batch k-means.

    rvq = fit_residual_kmeans(embeddings, num_quantizers=12, codebook_size=1024)
    codes = rvq.encode(x)            # [..., D] -> [..., 12] int32
    approx = rvq.decode(codes)       # [..., 12] -> [..., D]
    rvq.save("mulan_rvq.npz"); ResidualKMeans.load("mulan_rvq.npz", expect={...})

Saves are atomic and go to exactly the path given. The metadata may hold
`encoder_fingerprint`, the weights fingerprint of the model whose embeddings
were quantized; `load(..., encoder_fingerprint=...)` refuses codebooks fitted
on another model's embeddings, naming both (`force=True` overrides; codebooks
saved without one are accepted).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from audiolm_jax.families import canonical_model_name
from audiolm_jax.files import fingerprint, save_npz_atomic
from audiolm_jax.quantization.kmeans import nearest_centroid
from audiolm_jax.quantization.minibatch_kmeans import FittedOnEncoder, fit_minibatch_kmeans


@dataclasses.dataclass
class ResidualKMeans(FittedOnEncoder):
    """Residual codebooks.

    Attributes:
      codebooks: [num_quantizers, codebook_size, dim] float32.
      metadata: what was quantized (model, embedding kind, dim); `load` checks it.
    """

    codebooks: np.ndarray
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    _fitted_on = "a model's embeddings"

    @property
    def num_quantizers(self) -> int:
        return int(self.codebooks.shape[0])

    @property
    def codebook_size(self) -> int:
        return int(self.codebooks.shape[1])

    @property
    def dim(self) -> int:
        return int(self.codebooks.shape[2])

    def _check(self, x: Any) -> jax.Array:
        x = jnp.asarray(x, jnp.float32)
        if x.ndim < 1 or x.shape[-1] != self.dim:
            raise ValueError(f"residual codebooks expect vectors of dimension {self.dim} "
                             f"(metadata {self.metadata}), got shape {tuple(x.shape)}")
        return x

    def encode(self, x: Any, num_quantizers: int | None = None) -> np.ndarray:
        """[..., dim] -> [..., num_quantizers] int32 codes (greedy, stage by stage)."""
        x = self._check(x)
        n = self.num_quantizers if num_quantizers is None else num_quantizers
        if not 1 <= n <= self.num_quantizers:
            raise ValueError(f"num_quantizers must be in [1, {self.num_quantizers}], got {n}")
        codes = _encode(x.reshape(-1, self.dim), jnp.asarray(self.codebooks[:n]))
        return np.asarray(codes).reshape(*x.shape[:-1], n)

    def decode(self, codes: Any) -> np.ndarray:
        """[..., q] codes (q <= num_quantizers) -> [..., dim] sum of the chosen entries."""
        codes = np.asarray(codes)
        if codes.ndim < 1 or codes.shape[-1] > self.num_quantizers:
            raise ValueError(f"codes of shape {codes.shape}: the last axis must hold at most "
                             f"{self.num_quantizers} codebooks")
        if codes.size and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise ValueError(f"codes must be in [0, {self.codebook_size}), got "
                             f"[{codes.min()}, {codes.max()}]")
        q = codes.shape[-1]
        picked = self.codebooks[np.arange(q), codes]            # [..., q, dim]
        return picked.sum(axis=-2)

    @property
    def fingerprint(self) -> str:
        """16 hex digits identifying the codebooks (what token files may record)."""
        return fingerprint({"codebooks": np.asarray(self.codebooks, np.float32)})

    def save(self, path: str | Path) -> Path:
        """Writes the codebooks and metadata to exactly `path`, atomically."""
        return save_npz_atomic(path, codebooks=np.asarray(self.codebooks, np.float32),
                               metadata=np.asarray(json.dumps(self.metadata)))

    @classmethod
    def load(cls, path: str | Path, expect: Mapping[str, Any] | None = None, *,
             encoder_fingerprint: str | None = None, force: bool = False) -> ResidualKMeans:
        """Loads saved codebooks; `expect` fields (and `dim`) must match the metadata.

        Args:
          encoder_fingerprint: the fingerprint of the model whose embeddings
            will be quantized; codebooks fitted on another model's are refused.
          force: accept a fingerprint mismatch.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no residual codebooks at {path}")
        with np.load(path, allow_pickle=False) as data:
            if "codebooks" not in data:
                raise ValueError(f"{path} holds no residual codebooks (keys: {list(data)})")
            model = cls(np.asarray(data["codebooks"], np.float32),
                        json.loads(str(data["metadata"])))
        for key, want in (expect or {}).items():
            have = model.dim if key == "dim" else model.metadata.get(key)
            if key == "model":  # codebooks fitted under a family's earlier name still load
                matches = canonical_model_name(have) == canonical_model_name(want)
            else:
                matches = have == want
            if not matches:
                raise ValueError(f"residual codebooks {path} were fitted with {key}={have!r}, "
                                 f"but {key}={want!r} was expected")
        model.check_encoder(encoder_fingerprint, f"residual codebooks {path}", force=force)
        return model


@jax.jit
def _encode(flat: jax.Array, codebooks: jax.Array) -> jax.Array:
    def stage(residual, codebook):
        ids = nearest_centroid(residual, codebook)
        return residual - codebook[ids], ids

    _, ids = jax.lax.scan(stage, flat, codebooks)
    return ids.T                                               # [n, q]


def fit_residual_kmeans(vectors: Any, num_quantizers: int, codebook_size: int, *,
                        steps: int = 100, batch_size: int = 4096, seed: int = 0,
                        metadata: Mapping[str, Any] | None = None,
                        progress: bool = True) -> tuple[ResidualKMeans, list[float]]:
    """Fits residual codebooks on [N, dim] vectors.

    Args:
      vectors: the training embeddings; N must be at least `codebook_size`
        (k-means++ seeds from them).
      num_quantizers, codebook_size: e.g. 12 and 1024 (MusicLM).
      steps: mini-batch k-means updates per stage.
      batch_size: vectors per update (capped at N).

    Returns:
      (codebooks, relative residual energy after each stage: |x - decode(encode(x))|^2 / |x|^2).
    """
    x = np.asarray(vectors, np.float32)
    if x.ndim != 2:
        raise ValueError(f"expected [N, dim] vectors, got shape {x.shape}")
    if x.shape[0] < codebook_size:
        raise ValueError(f"{x.shape[0]} vectors cannot seed {codebook_size} codes: fit on at "
                         f"least codebook_size vectors (embed more clips or windows) or use "
                         f"a smaller codebook_size")
    rng = np.random.default_rng(seed)
    batch_size = min(batch_size, x.shape[0])
    residual = x.copy()
    total = float(np.sum(x ** 2))
    codebooks, energy = [], []
    bar = tqdm(range(num_quantizers), desc=f"residual k-means ({num_quantizers} x "
               f"{codebook_size})", disable=not progress, dynamic_ncols=True)
    for stage in bar:
        def batches(r=residual):
            first = True
            while True:
                # The first batch seeds k-means++: give it every vector (up to 4 batches' worth).
                n = min(len(r), 4 * batch_size) if first else batch_size
                first = False
                yield r[rng.choice(len(r), n, replace=False)]

        kmeans, _ = fit_minibatch_kmeans(batches(), codebook_size, num_steps=steps,
                                         seed=seed + stage, progress=False)
        ids = np.asarray(nearest_centroid(jnp.asarray(residual), jnp.asarray(kmeans.centroids)))
        residual = residual - kmeans.centroids[ids]
        codebooks.append(kmeans.centroids)
        energy.append(float(np.sum(residual ** 2)) / max(total, 1e-12))
        bar.set_postfix(residual_energy=f"{energy[-1]:.3f}")
    return ResidualKMeans(np.stack(codebooks), dict(metadata or {})), energy
