"""Lloyd's k-means in JAX, used to initialize vector-quantizer codebooks.

This is EnCodec's `kmeans` (facebookresearch/encodec, `quantization/core_vq.py`)
made jit-able: centroids start as random samples, every iteration assigns each
vector to its nearest centroid and moves each centroid to the mean of its
vectors, and a cluster that received no vector keeps its previous centroid.

Two additions over EnCodec: an optional `mask` (padding frames must not become
centroids or pull them), and the distance is the expanded form
`|x|^2 - 2 x.c + |c|^2` (the same formula EnCodec's codebook uses for its
nearest-code search) instead of materializing `[n, k, d]` differences.

All reductions are plain sums over the sample axis, so under `jit` with a
batch-sharded global `jax.Array` they run over the global batch and every
device ends with the same centroids.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

# Full float32 matmuls: the default precision on TPU (bfloat16 passes) or GPU
# (TF32) would round distances and change which code wins, breaking bit-for-bit
# agreement with the PyTorch reference.
_PRECISION = jax.lax.Precision.HIGHEST


def nearest_centroid(x: jax.Array, centroids: jax.Array) -> jax.Array:
    """Index of the nearest centroid under squared L2 distance, as EnCodec computes it.

    Mirrors `EncodecEuclideanCodebook.quantize` operation for operation:
    `dist = -(|x|^2 - 2 x @ c.T + |c|^2)` and the first index of the maximum, so
    codes agree with the PyTorch model (ties go to the lowest index in both).

    Args:
      x: [n, d] float32 vectors.
      centroids: [k, d] float32 codebook.

    Returns:
      [n] int32 indices in [0, k).
    """
    embed = centroids.T                                                     # [d, k]
    scaled = jnp.sum(jnp.square(x), axis=1, keepdims=True)                 # [n, 1]
    dots = jnp.matmul(x, embed, precision=_PRECISION)                      # [n, k]
    dist = -(scaled - 2 * dots + jnp.sum(jnp.square(embed), axis=0, keepdims=True))
    return jnp.argmax(dist, axis=-1).astype(jnp.int32)


def sample_vectors(rng: jax.Array, samples: jax.Array, num: int,
                   mask: jax.Array | None = None) -> jax.Array:
    """Draws `num` rows of `samples`, distinct when enough valid rows exist.

    EnCodec's `sample_vectors` uses `randperm` when there are at least `num`
    samples and `randint` (with replacement) otherwise. Here the number of valid
    rows is only known at run time (it depends on `mask`), so both cases share
    one static-shape path: a random ordering of the valid rows (top-k of random
    scores, invalid rows scored lowest) supplies the first `n_valid` draws and
    uniform draws with replacement among the valid rows fill the rest.

    Args:
      rng: PRNG key.
      samples: [n, d].
      num: how many vectors to draw (static).
      mask: [n] bool, True for rows that may be drawn; all rows when None. At
        least one row should be valid (otherwise arbitrary rows come back).

    Returns:
      [num, d] rows of `samples`.
    """
    n = samples.shape[0]
    if mask is None:
        mask = jnp.ones((n,), bool)
    # One draw of raw bits for both the ordering and the fill: it compiles to a
    # fraction of what `gumbel` + `randint` do, which matters because this runs
    # in every layer of an RVQ train step. Scores are 31-bit, >= 1 on valid rows.
    bits = jax.random.bits(rng, (n + num,), jnp.uint32)
    scores = jnp.where(mask, (bits[:n] >> 1).astype(jnp.int32) | 1, 0)
    take = min(n, num)
    _, order = jax.lax.top_k(scores, take)                                  # valid rows first
    if take < num:
        order = jnp.concatenate([order, jnp.zeros((num - take,), order.dtype)])
    n_valid = jnp.sum(mask.astype(jnp.int32))
    # Modulo bias is below n / 2**32: negligible.
    fill = order[(bits[n:] % jnp.maximum(n_valid, 1).astype(jnp.uint32)).astype(jnp.int32)]
    index = jnp.where(jnp.arange(num) < n_valid, order, fill)
    return samples[index]


def _assignment_stats(x: jax.Array, weights: jax.Array,
                      centroids: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(weighted counts [k], weighted sums [k, d]) of the vectors nearest each centroid."""
    buckets = nearest_centroid(x, centroids)
    onehot = jax.nn.one_hot(buckets, centroids.shape[0], dtype=jnp.float32) * weights[:, None]
    # One-hot matmuls rather than scatter-adds: fast on TPU/GPU, and a
    # contraction over the (possibly sharded) sample axis becomes an all-reduce.
    return jnp.sum(onehot, axis=0), jnp.matmul(onehot.T, x, precision=_PRECISION)


@functools.partial(jax.jit, static_argnames=("num_clusters", "num_iters"))
def kmeans(rng: jax.Array, x: jax.Array, num_clusters: int, num_iters: int,
           mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Lloyd's k-means with EnCodec's initialization and empty-cluster rule.

    Args:
      rng: PRNG key for the initial centroids (random samples of `x`).
      x: [n, d] vectors.
      num_clusters: k (static).
      num_iters: Lloyd iterations (static); 0 returns the random samples.
      mask: [n] bool, True for vectors that take part; all when None.

    Returns:
      centroids: [k, d] float32. A cluster that ends an iteration empty keeps
        its previous centroid.
      counts: [k] float32, the number of (valid) vectors assigned to each
        centroid in the last assignment step, i.e. before the final mean update,
        as EnCodec's `bins`.
    """
    x = x.astype(jnp.float32)
    n = x.shape[0]
    weights = jnp.ones((n,), jnp.float32) if mask is None else mask.astype(jnp.float32)
    means = sample_vectors(rng, x, num_clusters, None if mask is None else mask.astype(bool))
    if num_iters == 0:
        counts, _ = _assignment_stats(x, weights, means)
        return means, counts

    def step(_, carry):
        means, _ = carry
        counts, sums = _assignment_stats(x, weights, means)
        empty = counts == 0
        new_means = sums / jnp.where(empty, 1.0, counts)[:, None]
        return jnp.where(empty[:, None], means, new_means), counts

    return jax.lax.fori_loop(0, num_iters, step,
                             (means, jnp.zeros((num_clusters,), jnp.float32)))
