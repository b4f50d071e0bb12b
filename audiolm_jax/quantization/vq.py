"""Vector quantization and residual vector quantization (SoundStream / EnCodec).

`VectorQuantizer` is one EMA codebook (EnCodec's `EuclideanCodebook` plus the
straight-through estimator and commitment loss of its `VectorQuantization`);
`ResidualVectorQuantizer` applies `num_quantizers` of them to successive
residuals. Inputs and outputs are channels last: vectors `[batch, frames, dim]`,
codes `[batch, frames, n_q]`.

Codebook state is not trained by gradients. It lives in the mutable collection
`"codebook"`, one scope per layer, with EnCodec's buffers:

    codebook/layers_{i}/embed        [K, D]  the codes
    codebook/layers_{i}/embed_avg    [K, D]  EMA of the sum of vectors assigned
    codebook/layers_{i}/cluster_size [K]     EMA of the number assigned
    codebook/layers_{i}/initialized  []      float32, 1.0 once k-means ran
                                             (EnCodec's `inited`, shape [1])

so Hugging Face's `quantizer.layers.{i}.codebook.{embed, embed_avg,
cluster_size, inited}` map one to one. `embed`, `embed_avg` and `cluster_size`
carry logical axes `("codebook_size", "codebook_dim")` / `("codebook_size",)`;
no rule table maps those names, so codebooks are replicated: every device needs
the whole codebook for its nearest-code search, and a sharded contraction would
reorder the float sums and could flip near-tied codes.

Training (`train=True`) updates the codebook only when the `"codebook"`
collection is mutable (and never during `init`): k-means on the first batch,
EMA updates, dead-code restarts. All of it is traced, static-shape code (no
Python branching on values), so it runs inside a sharded `jit` train step.
Under data parallelism the batch is one global, batch-sharded `jax.Array`, so
every statistic (k-means, EMA counts and sums, the vectors drawn for dead
codes) is computed over the global batch and every replica applies the same
update; this replaces EnCodec's `distrib.broadcast_tensors`.

Departures from EnCodec (see also the docstrings):
  - After k-means, `embed_avg` starts at `centroid * count` (EnCodec: the bare
    centroid, so its first EMA step shrinks each code by about its count).
  - Dead codes are restarted after the EMA update and their `embed_avg` and
    `cluster_size` are reset with them (as lucidrains' vector-quantize-pytorch
    does). EnCodec replaces `embed` and then overwrites it with
    `embed_avg / cluster_size` in the same step, so its restarts never stick.
  - Commitment-loss gradients reach the input from every layer: layer `i`'s
    residual is `x - stop_gradient(q_0 + ... + q_{i-1})`. In EnCodec the
    residual is formed from the straight-through outputs, whose gradient with
    respect to the input cancels, so only layer 0's loss trains the encoder.
    The straight-through estimator is applied once to the sum of all layers,
    so d(quantized)/d(x) is exactly the identity.
  - The commitment loss and perplexity are also reported in evaluation.
  - Random draws (k-means seeds, restarted codes) come from JAX keys, so they
    differ from PyTorch's; encode/decode with given codebooks are identical.
  - Masks: padded frames take no part in any statistic or loss.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.scipy.special import xlogy

from audiolm_jax.quantization.kmeans import kmeans, nearest_centroid, sample_vectors

COLLECTION = "codebook"


@struct.dataclass
class QuantizerOutput:
    """What a quantizer's forward pass returns.

    Attributes:
      quantized: [batch, frames, dim]. In training `x + stop_gradient(q - x)`
        (straight-through), else the sum of the active layers' codes.
      codes: [batch, frames, n_q] int32, one column per layer that ran. With
        quantizer dropout every layer still encodes its residual, so the codes
        are always the full RVQ codes; only the first `num_active` columns went
        into `quantized`.
      commitment_loss: scalar, mean over the active layers of
        `commitment_weight * mse(stop_gradient(q_i), residual_i)` (masked mean
        over frames and features).
      perplexity: [n_q], `exp(entropy)` of each layer's code usage in this
        batch: K when all codes are used equally, 1 when one code takes all.
      num_active: int32 scalar, the number of layers summed into `quantized`.
    """

    quantized: jax.Array
    codes: jax.Array
    commitment_loss: jax.Array
    perplexity: jax.Array
    num_active: jax.Array


# ----------------------------------------------------------------------------
# Bandwidth <-> number of quantizers, and code validation.


def _bits_per_code(codebook_size: int) -> float:
    if codebook_size < 2:
        raise ValueError(f"codebook_size must be at least 2, got {codebook_size}")
    return math.log2(codebook_size)


def bandwidth_to_num_quantizers(bandwidth_kbps: float, frame_rate: float, codebook_size: int, *,
                                max_quantizers: int | None = None,
                                supported: Sequence[float] | None = None) -> int:
    """Number of codebooks that fit in a bitrate, as EnCodec computes it.

    `floor(bandwidth * 1000 / (log2(codebook_size) * frame_rate))`: at 24 kHz,
    75 frames/s and 1024 codes, 1.5/3/6/12/24 kbps give 2/4/8/16/32.

    Args:
      bandwidth_kbps: target bitrate in kbit/s.
      frame_rate: code frames per second.
      codebook_size: codes per codebook (K).
      max_quantizers: the model's number of codebooks; a bandwidth needing more
        is an error.
      supported: the bandwidths the model was trained for (EnCodec's
        `target_bandwidths`); any other bandwidth is an error.

    Returns:
      The number of quantizers, at least 1.

    Raises:
      ValueError: naming the bandwidth, when it is not positive and finite, not
        in `supported`, below one codebook's bitrate (EnCodec would silently
        use one codebook), or above `max_quantizers` codebooks.
    """
    if frame_rate <= 0:
        raise ValueError(f"frame_rate must be positive, got {frame_rate}")
    bits = _bits_per_code(codebook_size)
    try:
        value = float(bandwidth_kbps)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"unsupported bandwidth {bandwidth_kbps!r} kbps: expected a positive "
                         "number of kbit/s")
    bandwidth_kbps = value
    if supported is not None and not any(math.isclose(bandwidth_kbps, s) for s in supported):
        raise ValueError(f"unsupported bandwidth {bandwidth_kbps} kbps: this model supports "
                         f"{sorted(float(s) for s in supported)} kbps")
    bps_per_quantizer = bits * frame_rate
    # The tiny tolerance keeps e.g. 3 * (bits * rate) / 1000 kbps from flooring
    # to 2 through rounding; EnCodec's plain floor agrees on its bandwidths.
    num = math.floor(bandwidth_kbps * 1000 / bps_per_quantizer + 1e-9)
    if num < 1:
        raise ValueError(f"unsupported bandwidth {bandwidth_kbps} kbps: one codebook of "
                         f"{codebook_size} codes at {frame_rate} frames/s already needs "
                         f"{bps_per_quantizer / 1000:g} kbps")
    if max_quantizers is not None and num > max_quantizers:
        raise ValueError(f"unsupported bandwidth {bandwidth_kbps} kbps: needs {num} codebooks "
                         f"but the model has {max_quantizers} (at most "
                         f"{max_quantizers * bps_per_quantizer / 1000:g} kbps)")
    return int(num)


def num_quantizers_to_bandwidth(num_quantizers: int, frame_rate: float,
                                codebook_size: int) -> float:
    """Bitrate in kbit/s of `num_quantizers` codebooks: `n * log2(K) * frame_rate / 1000`."""
    if num_quantizers < 1:
        raise ValueError(f"num_quantizers must be at least 1, got {num_quantizers}")
    return num_quantizers * _bits_per_code(codebook_size) * frame_rate / 1000


def check_codes(codes: jax.Array | np.ndarray, codebook_size: int,
                codebook_axis: int | None = -1) -> None:
    """Raises a clear error for codes outside `[0, codebook_size)`.

    Works on concrete arrays only: inside `jit` the values are unknown and the
    check is skipped (the quantizers' lookup then returns NaN for a bad code,
    so it cannot pass unnoticed as a valid vector).

    Args:
      codes: integer array, e.g. [batch, frames, n_q].
      codebook_size: K.
      codebook_axis: the axis that indexes codebooks (named in the message);
        None for a single codebook.

    Raises:
      ValueError: naming the first bad value, its position and its codebook.
    """
    if isinstance(codes, jax.core.Tracer):
        if not jnp.issubdtype(codes.dtype, jnp.integer):
            raise ValueError(f"codes must be integers, got dtype {codes.dtype}")
        return
    array = np.asarray(codes)
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"codes must be integers, got dtype {array.dtype}")
    bad = (array < 0) | (array >= codebook_size)
    if not bad.any():
        return
    position = tuple(int(i) for i in np.argwhere(bad)[0])
    where = f"at index {position}"
    if codebook_axis is not None and array.ndim:
        where += f" (codebook {position[codebook_axis]})"
    raise ValueError(f"code {int(array[position])} {where} is out of range for a codebook of "
                     f"{codebook_size} codes (valid: 0..{codebook_size - 1}); "
                     f"{int(bad.sum())} of {array.size} codes are out of range")


# ----------------------------------------------------------------------------
# Small pieces shared by both modules.


def _flatten(x: jax.Array, mask: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """[..., d] vectors and [...] mask -> [n, d] float32 and [n] float32 weights."""
    flat = x.reshape(-1, x.shape[-1]).astype(jnp.float32)
    if mask is None:
        return flat, jnp.ones((flat.shape[0],), jnp.float32)
    if mask.shape != x.shape[:-1]:
        raise ValueError(f"mask shape {mask.shape} does not match the vectors' "
                         f"leading shape {x.shape[:-1]}")
    return flat, mask.reshape(-1).astype(jnp.float32)


def _masked_mse(a: jax.Array, b: jax.Array, weights: jax.Array) -> jax.Array:
    """Mean of (a - b)^2 over valid rows and features; a, b [n, d], weights [n]."""
    per_row = jnp.sum(jnp.square(a - b), axis=-1)
    denom = jnp.maximum(jnp.sum(weights), 1.0) * a.shape[-1]
    return jnp.sum(per_row * weights) / denom


def _perplexity(codes: jax.Array, weights: jax.Array, codebook_size: int) -> jax.Array:
    """exp(entropy) of the code histogram over valid rows; codes, weights [n]."""
    counts = jnp.sum(jax.nn.one_hot(codes, codebook_size, dtype=jnp.float32) * weights[:, None],
                     axis=0)
    probs = counts / jnp.maximum(jnp.sum(counts), 1.0)
    return jnp.exp(-jnp.sum(xlogy(probs, probs)))


def _check_dim(x: jax.Array, dim: int) -> None:
    if x.ndim < 2 or x.shape[-1] != dim:
        raise ValueError(f"expected vectors [..., {dim}], got shape {x.shape}")


# ----------------------------------------------------------------------------
# One codebook's step as a pure function: the modules read their variables,
# call it, and write the result back. Being pure, the RVQ can run it under
# `lax.scan` over stacked layer states, so compile time does not grow with n_q.


class CodebookSettings(NamedTuple):
    """A codebook's static hyperparameters (see `VectorQuantizer`)."""

    codebook_size: int
    decay: float
    epsilon: float
    kmeans_init: bool
    kmeans_iters: int
    threshold_ema_dead_code: float

    def needs_rng(self) -> bool:
        """Whether a codebook update draws random numbers."""
        return self.kmeans_init or self.threshold_ema_dead_code > 0


def _kmeans_init(state: dict, flat: jax.Array, weights: jax.Array, rng: jax.Array,
                 apply: jax.Array, settings: CodebookSettings) -> dict:
    """k-means on this batch if the codebook is not initialized yet.

    Under `lax.cond` only the taken branch runs, so after the first step the
    k-means costs nothing but the predicate.
    """
    old = state

    def run(_):
        centroids, counts = kmeans(rng, flat, settings.codebook_size, settings.kmeans_iters,
                                   mask=weights > 0)
        # embed_avg holds EMA *sums*, so it starts at centroid * count (as in
        # lucidrains' vector-quantize-pytorch). EnCodec stores the bare
        # centroids, which makes the first EMA step divide them by their counts
        # and shrink every code towards zero. Dtypes/shapes follow the current
        # state, so imported buffers (e.g. HF's `inited` of shape [1]) pass.
        return {"embed": centroids, "embed_avg": centroids * counts[:, None],
                "cluster_size": counts.astype(old["cluster_size"].dtype),
                "initialized": jnp.ones_like(old["initialized"])}

    pred = jnp.logical_and(apply, jnp.all(old["initialized"] <= 0))
    return jax.lax.cond(pred, run, lambda _: old, None)


def _ema_update(state: dict, flat: jax.Array, weights: jax.Array, codes: jax.Array,
                rng: jax.Array | None, apply: jax.Array, settings: CodebookSettings) -> dict:
    """EnCodec's EMA step, then dead-code restarts; kept only where `apply`."""
    k, decay, eps = settings.codebook_size, settings.decay, settings.epsilon
    threshold = settings.threshold_ema_dead_code
    onehot = jax.nn.one_hot(codes, k, dtype=jnp.float32) * weights[:, None]      # [n, K]
    # Sums over the (global) batch axis: with a batch-sharded input under jit
    # these are all-reduces, so every replica sees the same statistics.
    counts = jnp.sum(onehot, axis=0)
    embed_sum = jnp.matmul(onehot.T, flat, precision=jax.lax.Precision.HIGHEST)
    cluster_size = state["cluster_size"] * decay + counts * (1 - decay)
    embed_avg = state["embed_avg"] * decay + embed_sum * (1 - decay)
    total = jnp.sum(cluster_size)
    smoothed = (cluster_size + eps) / (total + k * eps) * total       # Laplace smoothing
    embed = embed_avg / smoothed[:, None]
    if threshold > 0:
        # After the EMA step (EnCodec restarts before it, and the EMA step then
        # overwrites the restarted codes). Resetting embed_avg and cluster_size
        # with the code makes the restart stick: embed_avg / cluster_size is
        # the restarted vector again.
        dead = cluster_size < threshold
        fresh = sample_vectors(rng, flat, k, weights > 0)
        embed = jnp.where(dead[:, None], fresh, embed)
        embed_avg = jnp.where(dead[:, None], fresh * threshold, embed_avg)
        cluster_size = jnp.where(dead, jnp.float32(threshold), cluster_size)
    new = {"embed": embed, "embed_avg": embed_avg, "cluster_size": cluster_size,
           "initialized": state["initialized"]}
    return jax.tree.map(lambda n, o: jnp.where(apply, n, o).astype(o.dtype), new, state)


@functools.partial(jax.jit, static_argnames=("update", "settings"))
def codebook_step(state: dict, flat: jax.Array, weights: jax.Array, rng: jax.Array | None,
                  active: bool | jax.Array, *, update: bool, settings: CodebookSettings
                  ) -> tuple[dict, jax.Array, jax.Array]:
    """One codebook's training-time step (EnCodec's `EuclideanCodebook.forward`).

    Order as in EnCodec: k-means init (first batch only) -> nearest codes and
    their vectors from the current codebook -> EMA update (and, here, dead-code
    restarts) for the next step.

    Args:
      state: {"embed" [K, D], "embed_avg" [K, D], "cluster_size" [K], "initialized" []}.
      flat: [n, D] float32 vectors (the residual, for RVQ layers).
      weights: [n] float32, 1 on valid rows and 0 on padding.
      rng: PRNG key; needed when `update` and `settings.needs_rng()`.
      active: bool or traced bool scalar; an inactive layer (quantizer dropout)
        computes codes but leaves its codebook untouched.
      update: statically enables the codebook updates.
      settings: the codebook's hyperparameters.

    Returns:
      (new state, codes [n] int32, code vectors [n, D] float32). The vectors
      carry no gradient; callers apply the straight-through trick.
    """
    # Codebook statistics never carry gradients.
    flat = jax.lax.stop_gradient(flat)
    if update:
        if rng is None and settings.needs_rng():
            raise ValueError("codebook updates (k-means init / dead-code restarts) need an "
                             "rng; pass rng=")
        k_init, k_dead = jax.random.split(rng) if rng is not None else (None, None)
        # An all-padding batch must not move anything.
        apply = jnp.logical_and(active, jnp.sum(weights) > 0)
        if settings.kmeans_init:
            state = _kmeans_init(state, flat, weights, k_init, apply, settings)
    codes = nearest_centroid(flat, state["embed"])
    quantized = jnp.take(state["embed"], codes, axis=0)
    if update:
        state = _ema_update(state, flat, weights, codes, k_dead, apply, settings)
    return state, codes, quantized


def _lookup(embed: jax.Array, codes: jax.Array) -> jax.Array:
    """embed[codes], with NaN for out-of-range codes.

    jnp indexing would silently clamp a bad code (or wrap a negative one), so a
    bad code inside `jit` would pass as a valid vector; NaN cannot.
    """
    k = embed.shape[0]
    valid = (codes >= 0) & (codes < k)
    vectors = jnp.take(embed, jnp.clip(codes, 0, k - 1), axis=0)
    return jnp.where(valid[..., None], vectors, jnp.nan)


# The residual stack as pure functions of the stacked layer states ([n, ...]
# leaves). Jitted so that eager calls reuse one executable per shape; under an
# outer jit they are inlined.


@functools.partial(jax.jit, static_argnames=("update", "dropout", "settings",
                                             "commitment_weight"))
def _residual_forward(states: dict, flat: jax.Array, weights: jax.Array, rng: jax.Array | None,
                      num_active: jax.Array, *, update: bool, dropout: bool,
                      settings: CodebookSettings, commitment_weight: float):
    """Runs `codebook_step` over the layers with one `lax.scan`.

    Returns:
      (new states, sum of the active layers' vectors [N, D], codes [n, N],
      commitment losses [n], perplexities [n]).
    """

    def layer_step(carry, inputs):
        residual, total = carry
        state, i = inputs
        active = i < num_active
        layer_rng = jax.random.fold_in(rng, i) if rng is not None else None
        state, codes, q = codebook_step(state, residual, weights, layer_rng, active,
                                        update=update, settings=settings)
        # The residual keeps its gradient path to x (q has none), so every
        # layer's commitment loss pulls the encoder output.
        loss = commitment_weight * _masked_mse(q, residual, weights)
        perplexity = _perplexity(codes, weights, settings.codebook_size)
        # Summed in layer order from q_0 (0 + q_0 is exact), as EnCodec's decode.
        total = total + (jnp.where(active, q, 0.0) if dropout else q)
        return (residual - q, total), (state, codes, loss, perplexity)

    n = states["embed"].shape[0]
    (_, total), (states, codes, losses, perplexities) = jax.lax.scan(
        layer_step, (flat, jnp.zeros_like(flat)), (states, jnp.arange(n, dtype=jnp.int32)))
    return states, total, codes, losses, perplexities


@jax.jit
def _residual_encode(embeds: jax.Array, flat: jax.Array) -> jax.Array:
    """[n, K, D] codebooks, [N, D] vectors -> [n, N] codes (EnCodec's encode loop)."""

    def layer_step(residual, embed):
        codes = nearest_centroid(residual, embed)
        return residual - jnp.take(embed, codes, axis=0), codes

    return jax.lax.scan(layer_step, flat, embeds)[1]


@jax.jit
def _residual_decode(embeds: jax.Array, codes: jax.Array) -> jax.Array:
    """[n, K, D] codebooks, [..., n] codes -> [..., D], summed in layer order."""
    total = _lookup(embeds[0], codes[..., 0])
    for i in range(1, codes.shape[-1]):      # gathers: cheap to compile unrolled
        total = total + _lookup(embeds[i], codes[..., i])
    return total


# ----------------------------------------------------------------------------
# Modules.

_STATE_KEYS = ("embed", "embed_avg", "cluster_size", "initialized")


class VectorQuantizer(nn.Module):
    """One EMA codebook with EnCodec's nearest-code search and updates.

    Attributes:
      dim: vector size D (EnCodec's `codebook_dim`; no projection).
      codebook_size: number of codes K.
      decay: EMA decay of `cluster_size` and `embed_avg`.
      epsilon: Laplace smoothing of the cluster sizes.
      kmeans_init: start from zeros and run k-means on the first training batch;
        otherwise start from EnCodec's Kaiming-uniform codes (needs a "params"
        rng at init).
      kmeans_iters: Lloyd iterations of that k-means.
      threshold_ema_dead_code: codes whose EMA cluster size falls below this are
        restarted from batch vectors; 0 disables restarts.
      commitment_weight: scale of the commitment loss.
    """

    dim: int
    codebook_size: int = 1024
    decay: float = 0.99
    epsilon: float = 1e-5
    kmeans_init: bool = True
    kmeans_iters: int = 50
    threshold_ema_dead_code: float = 2.0
    commitment_weight: float = 1.0

    def setup(self):
        k, d = self.codebook_size, self.dim

        def init_embed(shape):
            if self.kmeans_init:
                return jnp.zeros(shape, jnp.float32)
            # torch's kaiming_uniform_ on a [K, D] tensor: fan_in = D, gain sqrt(2).
            bound = math.sqrt(6.0 / shape[1])
            return jax.random.uniform(self.make_rng("params"), shape, jnp.float32, -bound, bound)

        self.embed = self.variable(
            COLLECTION, "embed",
            nn.with_logical_partitioning(init_embed, ("codebook_size", "codebook_dim")), (k, d))
        self.embed_avg = self.variable(
            COLLECTION, "embed_avg",
            nn.with_logical_partitioning(lambda: self.embed.value,
                                         ("codebook_size", "codebook_dim")))
        self.cluster_size = self.variable(
            COLLECTION, "cluster_size",
            nn.with_logical_partitioning(jnp.zeros, ("codebook_size",)), (k,), jnp.float32)
        # float32 like EnCodec's `inited` buffer (so tree-wide float ops, e.g. an
        # average of model states, work on it); 1.0 = ready, 0.0 = waiting for k-means.
        self.initialized = self.variable(
            COLLECTION, "initialized",
            lambda: jnp.asarray(0.0 if self.kmeans_init else 1.0, jnp.float32))

    @property
    def settings(self) -> CodebookSettings:
        return CodebookSettings(self.codebook_size, self.decay, self.epsilon, self.kmeans_init,
                                self.kmeans_iters, self.threshold_ema_dead_code)

    def get_state(self) -> dict:
        """The codebook variables as a dict (see `codebook_step`)."""
        return {key: getattr(self, key).value for key in _STATE_KEYS}

    def set_state(self, state: dict) -> None:
        for key in _STATE_KEYS:
            getattr(self, key).value = state[key]

    def encode(self, x: jax.Array) -> jax.Array:
        """Nearest codes. [..., D] -> [...] int32."""
        _check_dim(x, self.dim)
        flat = x.reshape(-1, self.dim).astype(jnp.float32)
        return nearest_centroid(flat, self.embed.value).reshape(x.shape[:-1])

    def decode(self, codes: jax.Array) -> jax.Array:
        """Code vectors. [...] int -> [..., D] float32.

        Raises ValueError for a bad code outside `jit`; inside it gives NaN.
        """
        check_codes(codes, self.codebook_size, codebook_axis=None)
        return _lookup(self.embed.value, codes)

    def __call__(self, x: jax.Array, *, train: bool, rng: jax.Array | None = None,
                 mask: jax.Array | None = None) -> QuantizerOutput:
        """Quantizes with one codebook.

        Args:
          x: [batch, frames, D].
          train: straight-through output; codebook updates when the "codebook"
            collection is mutable.
          rng: PRNG key for k-means init and dead-code restarts.
          mask: [batch, frames] bool, True on valid frames.

        Returns:
          QuantizerOutput with codes [batch, frames, 1].
        """
        _check_dim(x, self.dim)
        update = train and self.is_mutable_collection(COLLECTION) and not self.is_initializing()
        flat, weights = _flatten(x, mask)
        state, codes, q = codebook_step(self.get_state(), flat, weights, rng, True,
                                        update=update, settings=self.settings)
        if update:
            self.set_state(state)
        loss = self.commitment_weight * _masked_mse(q, flat, weights)
        out = flat + jax.lax.stop_gradient(q - flat) if train else q
        return QuantizerOutput(
            quantized=out.reshape(x.shape).astype(x.dtype),
            codes=codes.reshape(*x.shape[:-1], 1), commitment_loss=loss,
            perplexity=_perplexity(codes, weights, self.codebook_size)[None],
            num_active=jnp.ones((), jnp.int32))


class ResidualVectorQuantizer(nn.Module):
    """`num_quantizers` codebooks applied to successive residuals (SoundStream Alg. 1).

    Layer `i` quantizes `x - (q_0 + ... + q_{i-1})`; the output is the sum of
    the first n layers' vectors. Layers are the submodules `layers_{i}`; the
    forward pass stacks their states and runs one `lax.scan` over them, so the
    per-layer step (k-means, EMA, restarts) is compiled once whatever n_q is.

    Attributes:
      dim: vector size D.
      num_quantizers: number of codebooks n_q.
      codebook_size, decay, epsilon, kmeans_init, kmeans_iters,
        threshold_ema_dead_code, commitment_weight: per-layer settings, see
        `VectorQuantizer` (defaults are EnCodec's).
      quantizer_dropout: in training (and when `num_quantizers` is not given to
        the call) draw the number of active layers per batch uniformly from
        `allowed_num_quantizers`, so one model serves several bitrates.
      bandwidths: kbit/s the model should serve (EnCodec's
        `target_bandwidths`); with `frame_rate` they define the dropout choices.
        When None the choices are 1..num_quantizers (SoundStream).
      frame_rate: code frames per second (needed with `bandwidths`).
    """

    dim: int
    num_quantizers: int = 8
    codebook_size: int = 1024
    decay: float = 0.99
    epsilon: float = 1e-5
    kmeans_init: bool = True
    kmeans_iters: int = 50
    threshold_ema_dead_code: float = 2.0
    commitment_weight: float = 1.0
    quantizer_dropout: bool = False
    bandwidths: tuple[float, ...] | None = None
    frame_rate: float | None = None

    def setup(self):
        if self.num_quantizers < 1:
            raise ValueError(f"num_quantizers must be at least 1, got {self.num_quantizers}")
        _ = self.allowed_num_quantizers  # validates the bandwidth settings early
        self.layers = [
            VectorQuantizer(self.dim, self.codebook_size, self.decay, self.epsilon,
                            self.kmeans_init, self.kmeans_iters, self.threshold_ema_dead_code,
                            self.commitment_weight)
            for _ in range(self.num_quantizers)]

    @property
    def settings(self) -> CodebookSettings:
        return CodebookSettings(self.codebook_size, self.decay, self.epsilon, self.kmeans_init,
                                self.kmeans_iters, self.threshold_ema_dead_code)

    @property
    def allowed_num_quantizers(self) -> tuple[int, ...]:
        """The numbers of layers quantizer dropout chooses from, ascending."""
        if self.bandwidths is None:
            return tuple(range(1, self.num_quantizers + 1))
        if self.frame_rate is None:
            raise ValueError("ResidualVectorQuantizer.bandwidths needs frame_rate")
        return tuple(sorted({bandwidth_to_num_quantizers(
            b, self.frame_rate, self.codebook_size, max_quantizers=self.num_quantizers)
            for b in self.bandwidths}))

    def _num_quantizers(self, num_quantizers: int | None) -> int:
        if num_quantizers is None:
            return self.num_quantizers
        if not isinstance(num_quantizers, int | np.integer) or not (
                1 <= num_quantizers <= self.num_quantizers):
            raise ValueError(f"num_quantizers must be an int in 1..{self.num_quantizers}, "
                             f"got {num_quantizers!r}")
        return int(num_quantizers)

    def _stacked_states(self, n: int) -> dict:
        """The first n layers' states stacked on a leading axis; creates all at init."""
        # Linen creates a submodule's variables when it is first used; at init,
        # touch every layer so the tree is complete whatever n the call used.
        count = self.num_quantizers if self.is_initializing() else n
        states = [layer.get_state() for layer in self.layers[:count]][:n]
        return jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)

    def __call__(self, x: jax.Array, *, train: bool, num_quantizers: int | None = None,
                 rng: jax.Array | None = None, mask: jax.Array | None = None) -> QuantizerOutput:
        """Quantizes `x` with the first n codebooks.

        Args:
          x: [batch, frames, D].
          train: straight-through output; codebook updates (k-means init, EMA,
            dead-code restarts) when the "codebook" collection is mutable; quantizer
            dropout when enabled.
          num_quantizers: n (static); all layers when None. Given explicitly it
            also overrides quantizer dropout (a fixed bitrate).
          rng: PRNG key; required in training for dropout and codebook updates.
          mask: [batch, frames] bool, True on valid frames; padding takes no part
            in statistics, the loss or the perplexity.

        Returns:
          QuantizerOutput; `codes` is [batch, frames, n].
        """
        _check_dim(x, self.dim)
        n = self._num_quantizers(num_quantizers)
        settings = self.settings
        update = train and self.is_mutable_collection(COLLECTION) and not self.is_initializing()
        dropout = train and self.quantizer_dropout and num_quantizers is None
        if (dropout or (update and settings.needs_rng())) and rng is None:
            raise ValueError("ResidualVectorQuantizer in training needs rng= (for quantizer "
                             "dropout, k-means init or dead-code restarts)")
        if rng is not None:
            k_dropout, k_layers = jax.random.split(rng)
        if dropout:
            choices = jnp.asarray(self.allowed_num_quantizers, jnp.int32)
            # bits % len rather than randint (far cheaper to compile; bias < len / 2**32).
            pick = jax.random.bits(k_dropout, (), jnp.uint32) % jnp.uint32(choices.shape[0])
            num_active = choices[pick.astype(jnp.int32)]
        else:
            num_active = jnp.asarray(n, jnp.int32)

        flat, weights = _flatten(x, mask)
        states, total, codes, losses, perplexities = _residual_forward(
            self._stacked_states(n), flat, weights, k_layers if rng is not None else None,
            num_active, update=update, dropout=dropout, settings=settings,
            commitment_weight=float(self.commitment_weight))
        if update:
            for i, layer in enumerate(self.layers[:n]):
                layer.set_state(jax.tree.map(lambda leaf, i=i: leaf[i], states))

        loss = jnp.sum(jnp.where(jnp.arange(n) < num_active, losses, 0.0)) / num_active
        quantized = flat + jax.lax.stop_gradient(total - flat) if train else total
        quantized = quantized.reshape(x.shape).astype(x.dtype)
        return QuantizerOutput(
            quantized=nn.with_logical_constraint(quantized, ("batch", "length", "embed")),
            codes=jnp.moveaxis(codes, 0, -1).reshape(*x.shape[:-1], n),
            commitment_loss=loss, perplexity=perplexities, num_active=num_active)

    def encode(self, x: jax.Array, num_quantizers: int | None = None) -> jax.Array:
        """Codes of the first n codebooks (EnCodec's `encode`).

        Args:
          x: [batch, frames, D].
          num_quantizers: n; all when None.

        Returns:
          [batch, frames, n] int32.
        """
        _check_dim(x, self.dim)
        n = self._num_quantizers(num_quantizers)
        flat, _ = _flatten(x, None)
        codes = _residual_encode(self._stacked_states(n)["embed"], flat)
        return jnp.moveaxis(codes, 0, -1).reshape(*x.shape[:-1], n)

    def decode(self, codes: jax.Array) -> jax.Array:
        """Sum of the first n codebooks' vectors (EnCodec's `decode`).

        Args:
          codes: [batch, frames, n] integers, n <= num_quantizers.

        Returns:
          [batch, frames, D] float32.

        Raises:
          ValueError: for more codebooks than the model has, or (outside `jit`)
            for a code outside [0, codebook_size), naming it and its codebook.
        """
        if codes.ndim < 1 or not 1 <= codes.shape[-1] <= self.num_quantizers:
            raise ValueError(f"codes [..., n_q] need 1 <= n_q <= {self.num_quantizers}, "
                             f"got shape {codes.shape}")
        check_codes(codes, self.codebook_size, codebook_axis=-1)
        return _residual_decode(self._stacked_states(codes.shape[-1])["embed"], codes)
