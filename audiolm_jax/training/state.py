"""Train state and how it is placed on the mesh.

The state is any pytree (one `TrainState` for a transformer; a dict of two for a
GAN). Its shardings are never written by hand: they are read off the logical
annotations (`nn.with_logical_partitioning`) that the model put on its
parameters, which optax's `init` carries over to the optimizer moments.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.sharding import Mesh

from audiolm_jax.training import mesh as mesh_lib


class TrainState(struct.PyTreeNode):
    """Step counter, parameters, optimizer state and mutable model collections.

    Attributes:
      step: int32 scalar, the number of updates applied.
      params: the `params` collection.
      opt_state: optax state for `params`.
      model_state: other mutable collections (batch statistics, EMA codebooks);
        an empty dict when the model has none.
      tx: the optax transformation (static, not saved).
    """

    step: jax.Array
    params: Any
    opt_state: Any
    model_state: Any
    tx: optax.GradientTransformation = struct.field(pytree_node=False)

    @classmethod
    def create(cls, params: Any, tx: optax.GradientTransformation,
               model_state: Any = None) -> TrainState:
        return cls(step=jax.numpy.zeros((), jax.numpy.int32), params=params,
                   opt_state=tx.init(params), model_state=model_state or {}, tx=tx)

    def apply_gradients(self, grads: Any, frozen: Mapping[str, Any] | None = None,
                        **changes: Any) -> TrainState:
        """One optimizer update.

        Args:
          grads: same structure as `params`.
          frozen: {top-level param name: bool, possibly traced}: where True that
            subtree is frozen. Its gradients are zeroed (so they neither count in
            global-norm clipping nor move its Adam moments) and so are its
            *updates*: AdamW's decoupled weight decay would otherwise still
            shrink "frozen" weights every step.
        """
        frozen = dict(frozen or {})
        unknown = set(frozen) - set(grads)
        if unknown:
            raise KeyError(f"frozen names {sorted(unknown)} are not top-level params "
                           f"{sorted(grads)}")
        grads = zero_subtrees(grads, frozen)
        updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
        updates = zero_subtrees(updates, frozen)
        params = optax.apply_updates(self.params, updates)
        return self.replace(step=self.step + 1, params=params, opt_state=opt_state, **changes)


def zero_subtrees(tree: Any, frozen: Mapping[str, Any]) -> Any:
    """`tree` with its top-level subtrees `frozen[name]` zeroed where the (possibly
    traced) bool is True."""
    if not frozen:
        return tree
    out = dict(tree)
    for name, condition in frozen.items():
        out[name] = jax.tree.map(lambda x, c=condition: jnp.where(c, jnp.zeros_like(x), x),
                                 tree[name])
    return type(tree)(out) if not isinstance(tree, dict) else out


def state_logical_specs(init_fn: Callable[..., Any], *args: Any) -> Any:
    """Logical PartitionSpecs for the (unboxed) pytree that `init_fn(*args)` returns.

    `init_fn` may return parameters boxed in `nn.LogicallyPartitioned`; leaves
    without annotation (step counters, unannotated params) are replicated.
    """
    abstract = jax.eval_shape(init_fn, *args)
    return nn.get_partition_spec(abstract)


def create_sharded_state(init_fn: Callable[..., Any], mesh: Mesh, rules: mesh_lib.Rules,
                         *args: Any) -> tuple[Any, Any]:
    """Initializes the state directly in its sharded layout.

    Each device materializes only its own shards: `init_fn` runs under `jit` with
    `out_shardings`, so a model larger than one device's memory still initializes.

    Args:
      init_fn: `(*args) -> state pytree` (boxed or not).
      mesh, rules: where the state goes.
      *args: `init_fn`'s arguments (typically a PRNG key).

    Returns:
      (state with plain arrays, matching pytree of NamedShardings).
    """
    specs = state_logical_specs(init_fn, *args)
    shapes = jax.eval_shape(lambda *a: nn.unbox(init_fn(*a)), *args)
    shardings = mesh_lib.fit_to_shapes(mesh_lib.logical_to_shardings(specs, mesh, rules), shapes)
    with mesh_lib.sharding_context(mesh, rules):
        state = jax.jit(lambda *a: nn.unbox(init_fn(*a)), out_shardings=shardings)(*args)
    return state, shardings


def abstract_state(init_fn: Callable[..., Any], mesh: Mesh, rules: mesh_lib.Rules,
                   *args: Any) -> tuple[Any, Any]:
    """Shapes, dtypes and shardings of the state without allocating it (for restores)."""
    specs = state_logical_specs(init_fn, *args)
    shapes = jax.eval_shape(lambda *a: nn.unbox(init_fn(*a)), *args)
    shardings = mesh_lib.fit_to_shapes(mesh_lib.logical_to_shardings(specs, mesh, rules), shapes)
    abstract = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                            shapes, shardings)
    return abstract, shardings


def count_params(params: Any) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(nn.unbox(params)))
