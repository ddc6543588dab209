"""Value-function regression losses."""

from __future__ import annotations

import chex
import jax  # noqa: F401
import jax.numpy as jnp

from rlx.losses.advantages import masked_mean


def value_loss(values: jax.Array, targets: jax.Array, old_values: jax.Array | None = None,
               clip_eps: float | None = None, mask: jax.Array | None = None) -> jax.Array:
    """Squared error 0.5 * mean_t (V(s_t) - G_t)^2.

    With `old_values` and `clip_eps`, the clipped form of OpenAI baselines:
    0.5 * mean_t max((V - G)^2, (V_old + clip(V - V_old, -eps, eps) - G)^2).
    With `mask`, the mean runs over positions with m_t = 1 only.
    """
    chex.assert_equal_shape([values, targets])
    err = (values - targets) ** 2
    if old_values is not None and clip_eps is not None:
        clipped = old_values + jnp.clip(values - old_values, -clip_eps, clip_eps)
        err = jnp.maximum(err, (clipped - targets) ** 2)
    return 0.5 * masked_mean(err, mask)


