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


def n_step_returns(rewards: jax.Array, next_values: jax.Array, terminated: jax.Array,
                   done: jax.Array, gamma: float | jax.Array,
                   n: int | jax.Array | None = None) -> jax.Array:
    """n-step bootstrapped returns inside a rollout with auto-reset.

        G_t = sum_{d=0}^{k-1} gamma^d r_{t+d} + gamma^k (1 - term_{t+k-1}) V'_{t+k-1}

    with k = min(n, T - t, 1 + first d >= 0 where done_{t+d}): at most n steps, never
    past the end of the rollout (A3C's "up to n-step" when n = T) nor across an
    episode boundary. `next_values[t]` = V of the state step t reached *before* any
    reset (V(final_obs_t)), so a truncated episode bootstraps and a terminated one
    does not. `n = None` means n = T (every state bootstraps at the rollout's end);
    then the returns equal `gae(..., lam=1)` targets. `n` may be a traced integer
    (e.g. a vmapped hyper-parameter); the scan then runs T steps instead of n.
    """
    chex.assert_equal_shape([rewards, next_values, terminated, done])
    T = rewards.shape[0]
    if n is None:
        n = T
    if isinstance(n, int):
        if n < 1:
            raise ValueError(f"n-step returns need n >= 1, got {n}")
        n = min(n, T)
        steps = n
    else:
        steps = T
    dtype = rewards.dtype
    t_idx = jnp.arange(T).reshape((T,) + (1,) * (rewards.ndim - 1))

    def pad(x: jax.Array) -> jax.Array:
        x = x.astype(dtype)
        return jnp.concatenate([x, jnp.zeros((steps,) + x.shape[1:], dtype)])

    r, v, term, is_done = pad(rewards), pad(next_values), pad(terminated), pad(done)

    def body(carry, d):
        g, disc, alive = carry  # alive: still summing at offset d (per t)
        at = lambda x: jax.lax.dynamic_slice_in_dim(x, d, T)  # noqa: E731 — x_{t+d} for all t
        g = g + alive * disc * at(r)
        last = jnp.maximum(at(is_done), ((d >= n - 1) | (t_idx + d >= T - 1)).astype(dtype))
        stop = alive * last
        g = g + stop * disc * gamma * (1 - at(term)) * at(v)
        return (g, disc * gamma, alive * (1 - stop)), None

    zeros = jnp.zeros_like(rewards, dtype)
    (g, _, _), _ = jax.lax.scan(body, (zeros, jnp.ones((), dtype), zeros + 1), jnp.arange(steps))
    return g


def n_step_window(rewards: jax.Array, terminated: jax.Array, done: jax.Array,
                  gamma: float | jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The n-step return of a window's first step, as (reward sum, bootstrap discount, last).

    `rewards`, `terminated`, `done`: `[..., n]`, n consecutive steps of one env (a replay
    window). With k = min(n, 1 + first d where done_d) (never across an episode boundary):

        G    = sum_{d=0}^{k-1} gamma^d r_d
        disc = gamma^k (1 - term_{k-1})
        last = k - 1

    so that G + disc * V(final_obs_last) is `n_step_returns`' G_0 for the same steps
    (a truncated episode bootstraps from its final observation, a terminated one does not).
    """
    chex.assert_equal_shape([rewards, terminated, done])
    n = rewards.shape[-1]
    dtype = rewards.dtype
    done_f = done.astype(dtype)
    # alive_d = 1 while no step before d ended the episode
    alive = jnp.cumprod(jnp.concatenate([jnp.ones_like(done_f[..., :1]), 1.0 - done_f[..., :-1]],
                                        axis=-1), axis=-1)
    powers = jnp.asarray(gamma, dtype) ** jnp.arange(n, dtype=dtype)
    ret = jnp.sum(alive * powers * rewards, axis=-1)
    k = jnp.sum(alive, axis=-1).astype(jnp.int32)  # steps summed (>= 1)
    last = k - 1
    term_last = jnp.take_along_axis(terminated.astype(dtype), last[..., None], axis=-1)[..., 0]
    disc = jnp.asarray(gamma, dtype) ** k.astype(dtype) * (1.0 - term_last)
    return ret, disc, last


def normalize(x: jax.Array, axis_name: str | None = None, eps: float = 1e-8) -> jax.Array:
    """(x - mean) / (std + eps) over all elements (and over `axis_name` members)."""
    mean = x.mean()
    sq = (x**2).mean()
    if axis_name is not None:
        mean = jax.lax.pmean(mean, axis_name)
        sq = jax.lax.pmean(sq, axis_name)
    std = jnp.sqrt(jnp.maximum(sq - mean**2, 0.0))
    return (x - mean) / (std + eps)


def masked_mean(x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """mean_t x_t, or with a mask sum_t m_t x_t / max(sum_t m_t, 1) (padded batches, token
    sequences: positions with m_t = 0 do not count). `mask=None` is exactly `jnp.mean`."""
    if mask is None:
        return jnp.mean(x)
    mask = jnp.broadcast_to(mask.astype(x.dtype), x.shape)
    return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)
