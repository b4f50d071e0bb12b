"""Optimizers and learning-rate schedules from config."""

from __future__ import annotations

from typing import Any

import optax


def make_schedule(config: Any) -> optax.Schedule:
    """Linear warm-up then cosine (or constant) decay.

    Config fields: `lr`, `warmup_steps`, `schedule` ('cosine' | 'constant'),
    `decay_steps`, `end_lr_ratio`.
    """
    warmup = int(config.get("warmup_steps", 0))
    kind = config.get("schedule", "cosine")
    if kind == "constant":
        after = optax.constant_schedule(config.lr)
    elif kind == "cosine":
        decay_steps = max(int(config.decay_steps) - warmup, 1)
        after = optax.cosine_decay_schedule(config.lr, decay_steps,
                                            alpha=float(config.get("end_lr_ratio", 0.1)))
    else:
        raise ValueError(f"optimizer.schedule={kind!r}: expected 'cosine' or 'constant'")
    if warmup == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, config.lr, warmup), after], [warmup])


def make_optimizer(config: Any) -> optax.GradientTransformation:
    """AdamW (or Adam) with global-norm clipping.

    Config fields: `name` ('adamw' | 'adam'), `b1`, `b2`, `eps`, `weight_decay`,
    `grad_clip_norm` (0 disables), plus the schedule fields above.
    """
    schedule = make_schedule(config)
    name = config.get("name", "adamw")
    b1, b2, eps = config.get("b1", 0.9), config.get("b2", 0.98), config.get("eps", 1e-8)
    if name == "adamw":
        opt = optax.adamw(schedule, b1=b1, b2=b2, eps=eps,
                          weight_decay=config.get("weight_decay", 0.01))
    elif name == "adam":
        opt = optax.adam(schedule, b1=b1, b2=b2, eps=eps)
    else:
        raise ValueError(f"optimizer.name={name!r}: expected 'adamw' or 'adam'")
    clip = float(config.get("grad_clip_norm", 1.0))
    return optax.chain(optax.clip_by_global_norm(clip), opt) if clip > 0 else opt
