"""Device mesh, logical-axis rules and the shardings derived from them.

Every model annotates its parameters with logical axis names (`embed`, `mlp`,
`heads`, `kv`, `vocab`, `conv_in`, `conv_out`, ...) and its activations with
(`batch`, `length`, `embed`, ...). A table of rules maps those names onto the
three mesh axes `('data', 'fsdp', 'tensor')`. Data parallel, FSDP and tensor
parallel are different rule tables (or mesh shapes), never different model code.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
# The batch dimension of inputs is split over every axis that holds a copy of
# the model's computation: data-parallel replicas and FSDP shards.
BATCH_AXES = ("data", "fsdp")

Rules = Sequence[tuple[str, Any]]

# Logical axis names, as constants so a typo is an import error, not a silently
# replicated tensor. Activations and caches:
BATCH, LENGTH = "batch", "length"
CACHE_BATCH, CACHE_LENGTH, CACHE_HEADS, CACHE_KV = (
    "cache_batch", "cache_length", "cache_heads", "cache_kv")
# Parameters (and the feature axes of activations):
EMBED, MLP, HEADS, KV, VOCAB = "embed", "mlp", "heads", "kv", "vocab"
CONV_IN, CONV_OUT = "conv_in", "conv_out"
CODEBOOKS, CODEBOOK_SIZE, CODEBOOK_DIM = "codebooks", "codebook_size", "codebook_dim"

# Names whose dimension is the batch: they must come first in a table (see below).
BATCH_NAMES = (BATCH, CACHE_BATCH)
# Every logical name a model may use. Each rule set maps every one of them,
# explicitly `None` where it must never be sharded; `validate_rules` and
# tests/test_rules.py hold every table and every family's parameters to this.
LOGICAL_AXES = (BATCH, LENGTH, CACHE_BATCH, CACHE_LENGTH, CACHE_HEADS, CACHE_KV, EMBED, MLP,
                HEADS, KV, VOCAB, CONV_IN, CONV_OUT, CODEBOOKS, CODEBOOK_SIZE, CODEBOOK_DIM)


def _table(**axes: Any) -> list[tuple[str, Any]]:
    """A full rule table: the batch names first, then every other name in
    `LOGICAL_AXES` order, `None` unless given."""
    unknown = set(axes) - set(LOGICAL_AXES)
    assert not unknown, unknown
    table = [(BATCH, BATCH_AXES), (CACHE_BATCH, BATCH_AXES)]
    return table + [(name, axes.get(name)) for name in LOGICAL_AXES if name not in BATCH_NAMES]


# Named rule tables. Flax applies the rules in table order and never uses a mesh
# axis twice in one tensor: the batch rules come first, so in an activation
# `[batch, length, embed]` the batch takes `fsdp` and `embed -> fsdp` is skipped,
# while a parameter (no batch axis) is split along `embed`. A table that put
# `embed` first would silently stop splitting activations' batch over fsdp,
# which is why `validate_rules` refuses it.
RULE_SETS: dict[str, list[tuple[str, Any]]] = {
    # Pure data parallel: parameters replicated.
    "dp": _table(),
    # ZeRO-3 style: every parameter split along its `embed`/`conv_out` axis.
    "fsdp": _table(embed="fsdp", conv_out="fsdp"),
    # Megatron style: MLP hidden units, attention heads (and the KV cache's
    # heads) and vocabulary split.
    "tp": _table(mlp="tensor", heads="tensor", cache_heads="tensor", vocab="tensor",
                 conv_out="tensor"),
    # Both at once, for meshes with fsdp > 1 and tensor > 1.
    "fsdp_tp": _table(embed="fsdp", mlp="tensor", heads="tensor", cache_heads="tensor",
                      vocab="tensor", conv_out="tensor"),
}


def _mesh_axes_of(axes: Any) -> tuple[str, ...]:
    if axes is None:
        return ()
    return (axes,) if isinstance(axes, str) else tuple(axes)


def validate_rules(rules: Rules) -> list[tuple[str, Any]]:
    """Checks a rule table and returns it as a list of `(name, mesh_axes)` pairs.

    A table must map every name in `LOGICAL_AXES` exactly once (use `None` for
    "never shard"), only onto the mesh axes `('data', 'fsdp', 'tensor')`, and
    list the batch names first: Flax gives a mesh axis to the first rule that
    claims it, so a parameter rule placed before `batch` would take the batch's
    mesh axis away from every activation.

    Raises:
      ValueError naming the offending entry.
    """
    table = []
    for entry in rules:
        if not (isinstance(entry, list | tuple) and len(entry) == 2 and isinstance(entry[0], str)):
            raise ValueError(f"sharding rule {entry!r}: expected a (logical_name, mesh_axes) pair")
        name, axes = entry
        axes = tuple(axes) if isinstance(axes, list) else axes
        bad = [a for a in _mesh_axes_of(axes) if a not in MESH_AXES]
        if bad:
            raise ValueError(f"sharding rule {name!r} -> {axes!r}: unknown mesh axes {bad}; "
                             f"expected some of {MESH_AXES}")
        table.append((name, axes))
    names = [name for name, _ in table]
    unknown = sorted(set(names) - set(LOGICAL_AXES))
    if unknown:
        raise ValueError(f"sharding rules name unknown logical axes {unknown}; "
                         f"known: {list(LOGICAL_AXES)}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"sharding rules map {repeated} more than once; give each name one rule")
    missing = [n for n in LOGICAL_AXES if n not in names]
    if missing:
        raise ValueError(f"sharding rules miss logical axes {missing}; map each one explicitly "
                         "(None: never shard)")
    first_other = min(i for i, n in enumerate(names) if n not in BATCH_NAMES)
    late = [n for n in BATCH_NAMES if names.index(n) > first_other]
    if late:
        raise ValueError(f"sharding rules list {late} after {names[first_other]!r}: the batch rules "
                         "must come first, or a parameter rule would take their mesh axes away "
                         "from every activation (Flax applies rules in table order)")
    return table


def get_rules(rules: str | Rules) -> list[tuple[str, Any]]:
    """A rule table by name (`dp`, `fsdp`, `tp`, `fsdp_tp`) or a custom list of
    `(logical_name, mesh_axes)` pairs, checked by `validate_rules`."""
    if isinstance(rules, str):
        if rules not in RULE_SETS:
            raise ValueError(f"unknown sharding rules {rules!r}; expected one of {list(RULE_SETS)}"
                             " or a list of (logical_name, mesh_axes) pairs")
        return list(RULE_SETS[rules])
    return validate_rules(rules)


def resolve_mesh_shape(shape: dict[str, int] | Sequence[int], num_devices: int) -> tuple[int, ...]:
    """Fills the single `-1` entry so that the product equals `num_devices`.

    Args:
      shape: sizes of ('data', 'fsdp', 'tensor'), as a dict or a sequence.
    """
    if isinstance(shape, dict):
        unknown = set(shape) - set(MESH_AXES)
        if unknown:
            raise ValueError(f"unknown mesh axes {sorted(unknown)}; expected {MESH_AXES}")
        sizes = [int(shape.get(axis, 1)) for axis in MESH_AXES]
    else:
        sizes = [int(s) for s in shape]
    if sizes.count(-1) > 1:
        raise ValueError(f"mesh shape {sizes}: at most one axis may be -1")
    known = int(np.prod([s for s in sizes if s != -1]))
    if -1 in sizes:
        if num_devices % known:
            raise ValueError(f"mesh shape {sizes} does not divide {num_devices} devices")
        sizes[sizes.index(-1)] = num_devices // known
    if int(np.prod(sizes)) != num_devices:
        raise ValueError(f"mesh shape {dict(zip(MESH_AXES, sizes))} needs {int(np.prod(sizes))} "
                         f"devices but {num_devices} are available")
    return tuple(sizes)


def create_mesh(shape: dict[str, int] | Sequence[int] = (-1, 1, 1),
                devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A ('data', 'fsdp', 'tensor') mesh over `devices` (all devices when None).

    Axes are `Auto`: placement is decided by `jit` from the in/out shardings and
    the logical constraints, the classic GSPMD workflow.
    """
    devices = list(devices) if devices is not None else jax.devices()
    sizes = resolve_mesh_shape(shape, len(devices))
    axis_types = (AxisType.Auto,) * len(MESH_AXES)
    if len(devices) == len(jax.devices()):
        return jax.make_mesh(sizes, MESH_AXES, axis_types=axis_types)
    return Mesh(np.asarray(devices).reshape(sizes), MESH_AXES, axis_types=axis_types)


def maybe_initialize_distributed(config: Any) -> None:
    """Calls `jax.distributed.initialize` when `config.distributed` asks for it.

    `config.distributed` may be True (auto-detect on TPU/SLURM/GKE) or a dict with
    `coordinator_address`, `num_processes`, `process_id`.
    """
    setting = getattr(config, "distributed", None)
    if not setting:
        return
    kwargs = dict(setting) if not isinstance(setting, bool) else {}
    jax.distributed.initialize(**kwargs)
    logging.info("jax.distributed: process %d of %d", jax.process_index(), jax.process_count())


@contextlib.contextmanager
def sharding_context(mesh: Mesh, rules: Rules) -> Iterator[None]:
    """Makes `mesh` and `rules` current, as `nn.with_logical_constraint` needs when tracing."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(list(rules)):
        yield


def logical_to_shardings(logical_specs: Any, mesh: Mesh, rules: Rules) -> Any:
    """Maps a pytree of logical PartitionSpecs to NamedShardings on `mesh`."""
    return nn.logical_to_mesh_sharding(logical_specs, mesh, list(rules))


def fit_to_shapes(shardings: Any, shapes: Any) -> Any:
    """Replicates any dimension that its mesh axes do not divide evenly.

    A rule such as `conv_out -> fsdp` cannot split a conv with one output
    channel (a mono decoder's last layer) over 8 devices; that dimension is
    kept whole instead of failing, the way big_vision's FSDP skips
    indivisible axes. Everything divisible stays as the rules say.

    Args:
      shardings: pytree of NamedShardings.
      shapes: matching pytree of arrays or ShapeDtypeStructs.
    """

    def fit(sharding: NamedSharding, shape: Any) -> NamedSharding:
        spec = list(sharding.spec) + [None] * (len(shape.shape) - len(sharding.spec))
        changed = False
        for dim, axes in enumerate(spec):
            if axes is None:
                continue
            names = (axes,) if isinstance(axes, str) else tuple(axes)
            parts = int(np.prod([sharding.mesh.shape[a] for a in names]))
            if shape.shape[dim] % parts:
                spec[dim], changed = None, True
        return NamedSharding(sharding.mesh, P(*spec)) if changed else sharding

    return jax.tree.map(fit, shardings, shapes)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def replicate_host_arrays(tree: Any, mesh: Mesh, what: str = "host arrays") -> Any:
    """Host arrays that every process holds identically (held-out clips, fitted
    centroids) -> replicated global `jax.Array`s on `mesh`.

    Eval data must not be process-local: `jit` takes a host array to be the same
    on every process, so a process that passes its own shard silently computes
    with values the others do not have. In a multi-process run this compares a
    hash of `tree` across processes and raises naming `what` when they differ.
    """
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        digest = hashlib.sha256()
        for leaf in (np.ascontiguousarray(np.asarray(x)) for x in jax.tree.leaves(tree)):
            digest.update(f"{leaf.dtype}{leaf.shape}".encode())
            digest.update(leaf.tobytes())
        mine = np.frombuffer(digest.digest()[:8], np.int32)
        gathered = np.asarray(multihost_utils.process_allgather(mine))
        if not (gathered == gathered[0]).all():
            raise ValueError(f"{what} differ between processes (process {jax.process_index()} "
                             f"of {jax.process_count()}); read them unsharded, the same on "
                             "every host")
    return jax.device_put(tree, replicated(mesh))


def broadcast_from_process_0(tree: Any) -> Any:
    """`tree` (host arrays) as process 0 has it, on every process: for things one host
    computes (k-means targets) that every host must use identically."""
    if jax.process_count() == 1:
        return tree
    from jax.experimental import multihost_utils

    return jax.tree.map(np.asarray, multihost_utils.broadcast_one_to_all(tree))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over data+fsdp, everything else whole."""
    return NamedSharding(mesh, P(BATCH_AXES))


def global_batch_size_divisor(mesh: Mesh) -> int:
    return int(np.prod([mesh.shape[a] for a in BATCH_AXES]))


def make_global_batch(local_batch: Any, mesh: Mesh) -> Any:
    """Assembles each process's slice of the batch into global, batch-sharded arrays.

    Args:
      local_batch: pytree of numpy arrays `[local_batch, ...]`; on one host this is
        the whole batch.

    Returns:
      The same pytree of `jax.Array`s `[local_batch * process_count, ...]`.
    """
    sharding = batch_sharding(mesh)

    def to_global(x: np.ndarray) -> jax.Array:
        x = np.asarray(x)
        return jax.make_array_from_process_local_data(sharding, x)

    return jax.tree.map(to_global, local_batch)
