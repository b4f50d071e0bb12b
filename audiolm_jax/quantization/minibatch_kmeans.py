"""Mini-batch k-means in JAX, for semantic tokens (k-means over encoder activations).

AudioLM's semantic tokens are the cluster ids of a self-supervised encoder's
activations; HuBERT-style pipelines fit k = 100-1024 clusters on millions of
frames, more than one Lloyd pass over memory allows. This is Sculley's
mini-batch k-means (as scikit-learn's `MiniBatchKMeans`):

- **init**: k-means++ (D^2 sampling) on the first batch;
- **update**: each batch is assigned to its nearest centroids, and every
  centroid moves to the running mean of all vectors it has received
  (learning rate 1 / count), so late batches move it less;
- **restarts**: a cluster whose count falls below `restart_ratio` times the
  largest count (an empty or starved cluster) is moved to a random vector of
  the current batch.

`fit_minibatch_kmeans` drives it over any iterable of [n, d] feature batches
with a progress bar and returns a `KMeansModel`, which predicts ids, saves to
and loads from an `.npz` with the metadata (feature layer, dimension) that
`load` checks so a model fitted on one layer cannot silently tokenize another.

Saves are atomic (a temporary file renamed onto the target, exactly the path
given: no ".npz" is appended). The metadata may hold `encoder_fingerprint`,
the weights fingerprint (`audiolm_jax.files.fingerprint`) of the encoder whose
features the model was fitted on; `load(..., encoder_fingerprint=...)` refuses
a model fitted on another encoder's features, naming both fingerprints
(`force=True` overrides; models saved without one are accepted).
`KMeansModel.fingerprint` is the model's own (of its centroids), which token
files record.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from audiolm_jax.files import check_fingerprint, fingerprint, save_npz_atomic
from audiolm_jax.quantization.kmeans import nearest_centroid

ENCODER_FINGERPRINT = "encoder_fingerprint"
"""Metadata key: the weights fingerprint of the encoder whose features were clustered."""

_PRECISION = jax.lax.Precision.HIGHEST


def _squared_distances(x: jax.Array, centroids: jax.Array) -> jax.Array:
    """[n, k] squared L2 distances, clipped at 0 against rounding."""
    d = (jnp.sum(jnp.square(x), axis=1, keepdims=True)
         - 2 * jnp.matmul(x, centroids.T, precision=_PRECISION)
         + jnp.sum(jnp.square(centroids), axis=1)[None, :])
    return jnp.maximum(d, 0.0)


@functools.partial(jax.jit, static_argnames=("num_clusters",))
def kmeans_plusplus(rng: jax.Array, x: jax.Array, num_clusters: int) -> jax.Array:
    """k-means++ seeding: each next centroid drawn with probability ~ D(x)^2.

    Args:
      rng: PRNG key.
      x: [n, d] vectors, n >= 1.
      num_clusters: k (static).

    Returns:
      [k, d] float32 centroids, rows of `x`.
    """
    x = x.astype(jnp.float32)
    first_key, rest_key = jax.random.split(rng)
    first = jax.random.randint(first_key, (), 0, x.shape[0])
    centroids = jnp.zeros((num_clusters, x.shape[1]), jnp.float32).at[0].set(x[first])
    min_dist = _squared_distances(x, x[first][None])[:, 0]

    def add(i, carry):
        centroids, min_dist = carry
        # All-zero distances (fewer distinct vectors than k) fall back to uniform.
        total = jnp.sum(min_dist)
        logits = jnp.where(total > 0, jnp.log(min_dist + 1e-30), 0.0)
        pick = jax.random.categorical(jax.random.fold_in(rest_key, i), logits)
        centroids = centroids.at[i].set(x[pick])
        min_dist = jnp.minimum(min_dist, _squared_distances(x, x[pick][None])[:, 0])
        return centroids, min_dist

    centroids, _ = jax.lax.fori_loop(1, num_clusters, add, (centroids, min_dist))
    return centroids


class KMeansState(NamedTuple):
    """centroids [k, d] float32; counts [k] float32 (vectors each has absorbed)."""

    centroids: jax.Array
    counts: jax.Array


@functools.partial(jax.jit, static_argnames=("restart_ratio",))
def minibatch_step(state: KMeansState, x: jax.Array, rng: jax.Array,
                   restart_ratio: float = 0.01) -> tuple[KMeansState, dict[str, jax.Array]]:
    """One mini-batch update (assign, running-mean move, restart starved clusters).

    Args:
      state: current centroids and counts.
      x: [n, d] batch.
      rng: PRNG key for the restarts.
      restart_ratio: clusters with count < ratio * max count are restarted.

    Returns:
      (new state, {"inertia": mean squared distance of the batch before the
      update, "restarted": number of clusters restarted}).
    """
    x = x.astype(jnp.float32)
    k = state.centroids.shape[0]
    dist = _squared_distances(x, state.centroids)
    ids = jnp.argmin(dist, axis=1)
    inertia = jnp.mean(jnp.min(dist, axis=1))
    onehot = jax.nn.one_hot(ids, k, dtype=jnp.float32)
    batch_counts = jnp.sum(onehot, axis=0)
    batch_sums = jnp.matmul(onehot.T, x, precision=_PRECISION)
    counts = state.counts + batch_counts
    # Running mean: c <- c + (sum_b - n_b c) / (n_old + n_b).
    centroids = state.centroids + (batch_sums - batch_counts[:, None] * state.centroids) / \
        jnp.maximum(counts, 1.0)[:, None]
    starved = counts < restart_ratio * jnp.max(counts)
    picks = jax.random.randint(rng, (k,), 0, x.shape[0])
    centroids = jnp.where(starved[:, None], x[picks], centroids)
    # A restarted cluster starts with the smallest surviving count, so it is not
    # restarted again before it has had a chance to attract vectors.
    floor = jnp.min(jnp.where(starved, jnp.inf, counts))
    counts = jnp.where(starved, floor, counts)
    return KMeansState(centroids, counts), {"inertia": inertia,
                                            "restarted": jnp.sum(starved.astype(jnp.int32))}


class FittedOnEncoder:
    """What the k-means models share: the encoder fingerprint their metadata records.

    Subclasses have a `metadata` dict and name what they were fitted on in
    `_fitted_on` (for the refusal message).
    """

    metadata: dict[str, Any]
    _fitted_on = "an encoder's features"

    @property
    def encoder_fingerprint(self) -> str | None:
        """The fingerprint of the encoder it was fitted on (None: not recorded)."""
        return self.metadata.get(ENCODER_FINGERPRINT)

    def check_encoder(self, encoder_fingerprint: str | None, what: str,
                      force: bool = False) -> None:
        """Refuses an encoder other than the one whose outputs this model was fitted on.

        Raises:
          FingerprintMismatchError: naming both fingerprints, unless `force` (or
            either fingerprint is unknown).
        """
        check_fingerprint(encoder_fingerprint, self.encoder_fingerprint,
                          f"{what} (fitted on {self._fitted_on})", force=force)


@dataclasses.dataclass
class KMeansModel(FittedOnEncoder):
    """A fitted k-means tokenizer.

    Attributes:
      centroids: [k, d] float32.
      metadata: what the features were (e.g. {"encoder": ..., "layer": 6}); `load`
        can require fields to match.
    """

    centroids: np.ndarray
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def num_clusters(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def dim(self) -> int:
        return int(self.centroids.shape[1])

    def _check(self, x: Any) -> jax.Array:
        x = jnp.asarray(x, jnp.float32)
        if x.ndim < 1 or x.shape[-1] != self.dim:
            raise ValueError(f"k-means model expects features of dimension {self.dim} "
                             f"(metadata {self.metadata}), got shape {tuple(x.shape)}")
        return x

    def predict(self, x: Any) -> np.ndarray:
        """[..., d] features -> [...] int32 cluster ids."""
        x = self._check(x)
        flat = x.reshape(-1, self.dim)
        ids = _predict(flat, jnp.asarray(self.centroids))
        return np.asarray(ids).reshape(x.shape[:-1])

    def inertia(self, x: Any) -> float:
        """Mean squared distance of [..., d] features to their nearest centroid."""
        flat = self._check(x).reshape(-1, self.dim)
        return float(jnp.mean(jnp.min(_squared_distances(flat, jnp.asarray(self.centroids)),
                                      axis=1)))

    @property
    def fingerprint(self) -> str:
        """16 hex digits identifying the centroids (what token files record)."""
        return fingerprint({"centroids": np.asarray(self.centroids, np.float32)})

    def save(self, path: str | Path) -> Path:
        """Writes the centroids and metadata to exactly `path`, atomically."""
        return save_npz_atomic(path, centroids=np.asarray(self.centroids, np.float32),
                               metadata=np.asarray(json.dumps(self.metadata)))

    @classmethod
    def load(cls, path: str | Path, expect: Mapping[str, Any] | None = None, *,
             encoder_fingerprint: str | None = None, force: bool = False) -> KMeansModel:
        """Loads a saved model; `expect` fields (and `dim`) must match its metadata.

        Args:
          encoder_fingerprint: the fingerprint of the encoder it will tokenize;
            a model fitted on another encoder's features is refused.
          force: accept a fingerprint mismatch.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no k-means model at {path}")
        with np.load(path, allow_pickle=False) as data:
            if "centroids" not in data:
                raise ValueError(f"{path} holds no k-means model (keys: {list(data)})")
            model = cls(np.asarray(data["centroids"], np.float32),
                        json.loads(str(data["metadata"])))
        for key, want in (expect or {}).items():
            have = model.dim if key == "dim" else model.metadata.get(key)
            if have != want:
                raise ValueError(f"k-means model {path} was fitted with {key}={have!r}, "
                                 f"but {key}={want!r} was expected")
        model.check_encoder(encoder_fingerprint, f"k-means model {path}", force=force)
        return model


@jax.jit
def _predict(x: jax.Array, centroids: jax.Array) -> jax.Array:
    return nearest_centroid(x, centroids)


def fit_minibatch_kmeans(batches: Iterable[Any], num_clusters: int, *, num_steps: int,
                         seed: int = 0, restart_ratio: float = 0.01,
                         metadata: Mapping[str, Any] | None = None,
                         progress: bool = True) -> tuple[KMeansModel, list[dict[str, float]]]:
    """Fits k-means on a stream of feature batches.

    Args:
      batches: yields [n, d] arrays (numpy or JAX); the first seeds k-means++ and
        needs n >= num_clusters. Batches are reshaped to [-1, d].
      num_clusters: k.
      num_steps: mini-batch updates (the stream may end sooner).
      seed: PRNG seed.
      restart_ratio: see `minibatch_step`.
      metadata: stored with the model.
      progress: show a tqdm bar with the batch inertia.

    Returns:
      (model, history of {"step", "inertia", "restarted"}).
    """
    if num_clusters < 1 or num_steps < 1:
        raise ValueError(f"num_clusters and num_steps must be positive, got {num_clusters} "
                         f"and {num_steps}")
    init_rng, rng = jax.random.split(jax.random.key(seed))
    iterator = iter(batches)
    state, history = None, []
    bar = tqdm(total=num_steps, desc=f"k-means (k={num_clusters})", disable=not progress,
               dynamic_ncols=True)
    for step in range(num_steps):
        try:
            batch = next(iterator)
        except StopIteration:
            break
        x = jnp.asarray(batch, jnp.float32)
        x = x.reshape(-1, x.shape[-1])
        if state is None:
            if x.shape[0] < num_clusters:
                raise ValueError(f"the first batch has {x.shape[0]} vectors; k-means++ needs at "
                                 f"least num_clusters={num_clusters}")
            centroids = kmeans_plusplus(init_rng, x, num_clusters)
            state = KMeansState(centroids, jnp.zeros((num_clusters,), jnp.float32))
        state, stats = minibatch_step(state, x, jax.random.fold_in(rng, step), restart_ratio)
        stats = {"step": step + 1, **{k: float(v) for k, v in stats.items()}}
        history.append(stats)
        bar.update(1)
        bar.set_postfix(inertia=f"{stats['inertia']:.4g}")
    bar.close()
    if state is None:
        raise ValueError("fit_minibatch_kmeans: the batch stream was empty")
    return KMeansModel(np.asarray(state.centroids), dict(metadata or {})), history
