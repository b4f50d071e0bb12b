"""Train state and how it is placed on the mesh.

The state is any pytree (one `TrainState` for a transformer; a dict of two for a
GAN). Its shardings are never written by hand: they are read off the logical
annotations (`nn.with_logical_partitioning`) that the model put on its
parameters, which optax's `init` carries over to the optimizer moments.
"""

from __future__ import annotations

import logging
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


def ema_decay_at(step: jax.Array, decay: float) -> jax.Array:
    """The weights' EMA decay at `step`: `min(decay, (1 + step) / (10 + step))`, so the
    early average follows the fast-moving weights instead of remembering the init."""
    step = jnp.asarray(step, jnp.float32)
    return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def initial_model_state(params: Any, ema_decay: float) -> dict:
    """`{"ema": params}` when the run keeps a weights' EMA (`ema_decay > 0`), else `{}`."""
    return {"ema": params} if ema_decay > 0 else {}


def update_ema(old: TrainState, new: TrainState, ema_decay: float) -> TrainState:
    """`new` with `model_state["ema"]` moved toward `new.params` at the decay of
    `old.step` (see `ema_decay_at`); `new` unchanged when `ema_decay` is 0."""
    if ema_decay <= 0:
        return new
    decay = ema_decay_at(old.step, ema_decay)
    average = jax.tree.map(lambda a, p: decay * a + (1.0 - decay) * p,
                           old.model_state["ema"], new.params)
    return new.replace(model_state={**new.model_state, "ema": average})


def inference_params(state: TrainState) -> Any:
    """The weights to evaluate and export: the EMA when the run keeps one."""
    return state.model_state.get("ema", state.params)


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


def _train_states(state: Any) -> list[tuple[str, TrainState]]:
    """(path, TrainState) for the state itself or each TrainState value of a dict state
    (a GAN's {"generator": ..., "discriminator": ...})."""
    if isinstance(state, TrainState):
        return [("", state)]
    if isinstance(state, Mapping):
        return [(k, v) for k, v in state.items() if isinstance(v, TrainState)]
    return []


def params_of(state: Any) -> Any:
    """The parameters of a state (every TrainState's, for a dict of them); the state
    itself when it holds no TrainState."""
    found = _train_states(state)
    if not found:
        return state
    return found[0][1].params if found[0][0] == "" else {k: s.params for k, s in found}


def _same_shapes(a: Any, b: Any) -> bool:
    return jax.tree.structure(a) == jax.tree.structure(b) and all(
        x.shape == y.shape for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def warm_start(state: Any, shardings: Any, export_dir: str) -> Any:
    """`state` with the params of the TrainState whose tree matches the export's.

    The export's arrays are cast to the state's dtypes and placed in its layout;
    the optimizer moments stay fresh. Raises ValueError naming the mismatch when no
    TrainState of `state` has the export's parameter names and shapes.
    """
    from audiolm_jax.training.export import load_exported  # export imports this module's deps

    _, variables = load_exported(export_dir)
    # An export holds {"params": ...}, or several models' variables side by side
    # ({"musicgen": {"params": ...}, "codec": ...}): any of them may be the match.
    candidates = ([variables["params"]] if "params" in variables else
                  [v["params"] for v in variables.values()
                   if isinstance(v, Mapping) and "params" in v])
    tried = []
    for key, train_state in _train_states(state):
        target = train_state.params
        loaded = next((c for c in candidates if _same_shapes(target, c)), None)
        if loaded is not None:
            target_shardings = (shardings if key == "" else shardings[key]).params
            params = jax.tree.map(lambda x, t, s: jax.device_put(jnp.asarray(x, t.dtype), s),
                                  loaded, target, target_shardings)
            logging.info("warm start: %s params from %s", key or "the", export_dir)
            new = train_state.replace(params=params)
            return new if key == "" else {**state, key: new}
        tried.append(key or "state")
    raise ValueError(f"init_from={export_dir}: its params do not match the names and shapes "
                     f"of any parameter tree of this run (tried {tried}); was it exported by "
                     "the same config?")
