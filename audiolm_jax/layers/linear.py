"""The one logically partitioned Dense every family uses.

MaxText's `DenseGeneral` in spirit: the kernel `[in, out]` carries the logical
axis names `axes`, and the bias `[out]` carries the output axis, so a rule
table shards both consistently.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn


def logical_dense(features: int, axes: tuple[str | None, str | None], name: str,
                  use_bias: bool = True, kernel_init: Any = None, dtype: Any = None) -> nn.Dense:
    """nn.Dense with a logically partitioned kernel `[in, out]` and bias `[out]`.

    Args:
      features: output features.
      axes: logical names of the kernel's `(in, out)` dimensions, e.g.
        `("embed", "mlp")`; the bias takes `axes[1:]`.
      name: the parameter scope's name (checkpoint importers rely on it).
      use_bias: add a bias (zeros at init).
      kernel_init: LeCun normal when None.
      dtype: compute dtype; params stay float32.
    """
    kernel_init = kernel_init or nn.initializers.lecun_normal()
    return nn.Dense(features, use_bias=use_bias, name=name, dtype=dtype,
                    kernel_init=nn.with_logical_partitioning(kernel_init, axes),
                    bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[1:]))
