"""Advantage and return estimators: pure functions of time-major arrays `[T, ...]`."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


def gae(rewards: jax.Array, values: jax.Array, next_values: jax.Array,
        terminated: jax.Array, done: jax.Array, gamma: float | jax.Array,
        lam: float | jax.Array) -> tuple[jax.Array, jax.Array]:
    """Generalised advantage estimation (Schulman et al. 2016), with auto-reset.

        delta_t = r_t + gamma * (1 - terminated_t) * V(s'_t) - V(s_t)
        A_t     = delta_t + gamma * lambda * (1 - done_t) * A_{t+1},   A_T = 0

    `next_values[t]` is V of the state the transition reached *before* any reset,
    so a time-limit truncation (done but not terminated) still bootstraps, while
    `done` cuts the recursion at every episode boundary.

    Returns (advantages A_t, value targets A_t + V(s_t)), both shaped like `rewards`.
    """
    chex.assert_equal_shape([rewards, values, next_values, terminated, done])
    not_term = 1.0 - terminated.astype(values.dtype)
    not_done = 1.0 - done.astype(values.dtype)
    deltas = rewards + gamma * not_term * next_values - values

    def body(acc, xs):
        delta, nd = xs
        acc = delta + gamma * lam * nd * acc
        return acc, acc

    _, adv = jax.lax.scan(body, jnp.zeros_like(deltas[0]), (deltas, not_done), reverse=True)
    return adv, adv + values


def normalize(x: jax.Array, axis_name: str | None = None, eps: float = 1e-8) -> jax.Array:
    """(x - mean) / (std + eps) over all elements (and over `axis_name` members)."""
    mean = x.mean()
    sq = (x**2).mean()
    if axis_name is not None:
        mean = jax.lax.pmean(mean, axis_name)
        sq = jax.lax.pmean(sq, axis_name)
    std = jnp.sqrt(jnp.maximum(sq - mean**2, 0.0))
    return (x - mean) / (std + eps)
