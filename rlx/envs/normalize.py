"""Running observation statistics as a pure value (Welford / Chan et al.)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class RunningStats:
    """Count, mean and sum of squared deviations (M2) of everything seen so far.

    var = M2 / count. Merging a batch B into (n_a, mean_a, M2_a):
      n = n_a + n_b,  delta = mean_b - mean_a,
      mean = mean_a + delta * n_b / n,
      M2 = M2_a + M2_b + delta^2 * n_a * n_b / n.
    """

    count: jax.Array
    mean: jax.Array
    m2: jax.Array

    @property
    def var(self) -> jax.Array:
        return self.m2 / jnp.maximum(self.count, 1.0)

    @property
    def std(self) -> jax.Array:
        return jnp.sqrt(self.var)


def init(shape: tuple[int, ...]) -> RunningStats:
    return RunningStats(count=jnp.zeros((), jnp.float32), mean=jnp.zeros(shape, jnp.float32),
                        m2=jnp.zeros(shape, jnp.float32))


def update(stats: RunningStats, batch: jax.Array, axis_name: str | None = None,
           weights: jax.Array | None = None) -> RunningStats:
    """Merge a batch `[..., *shape]` into `stats`.

    With `axis_name`, the batch is the union of every member's batch along that
    (vmap or shard_map) axis: only count, sum and M2 are communicated.
    `weights` (same leading shape as the batch, 0/1) masks samples out.
    """
    shape = stats.mean.shape
    x = batch.reshape((-1,) + shape).astype(jnp.float32)
    w = jnp.ones(x.shape[0], jnp.float32) if weights is None else weights.reshape(-1).astype(jnp.float32)
    wx = w.reshape((-1,) + (1,) * len(shape))
    n_b = w.sum()
    s_b = (wx * x).sum(0)
    if axis_name is not None:
        n_b = jax.lax.psum(n_b, axis_name)
        s_b = jax.lax.psum(s_b, axis_name)
    mean_b = s_b / jnp.maximum(n_b, 1.0)
    m2_b = (wx * (x - mean_b) ** 2).sum(0)
    if axis_name is not None:
        m2_b = jax.lax.psum(m2_b, axis_name)
    return merge(stats, RunningStats(count=n_b, mean=mean_b, m2=m2_b))


def merge(a: RunningStats, b: RunningStats) -> RunningStats:
    """Chan et al.'s parallel merge of two statistics (the equations in `RunningStats`)."""
    n = a.count + b.count
    delta = b.mean - a.mean
    safe_n = jnp.maximum(n, 1.0)
    mean = a.mean + delta * b.count / safe_n
    m2 = a.m2 + b.m2 + delta**2 * a.count * b.count / safe_n
    return RunningStats(count=n, mean=mean, m2=m2)


def from_sums(count: jax.Array, sum_dev: jax.Array, sum_sq_dev: jax.Array,
              shift: jax.Array) -> RunningStats:
    """Statistics of samples x given sufficient statistics taken about a shift c.

    With n = count, S1 = sum(x - c), S2 = sum((x - c)^2):
      mean = c + S1 / n,  M2 = S2 - S1^2 / n  (clamped at 0).
    Sums of this form add across members and devices (one psum each); taking
    them about the running mean keeps the float32 cancellation in M2 small.
    """
    safe_n = jnp.maximum(count, 1.0)
    mean = jnp.where(count > 0, shift + sum_dev / safe_n, shift)
    m2 = jnp.maximum(sum_sq_dev - sum_dev**2 / safe_n, 0.0)
    return RunningStats(count=jnp.asarray(count, jnp.float32), mean=mean, m2=m2)


def normalize(stats: RunningStats, x: jax.Array, clip: float = 10.0,
              eps: float = 1e-8) -> jax.Array:
    """(x - mean) / std, clipped to [-clip, clip]; identity before any data."""
    std = jnp.where(stats.count > 0, jnp.sqrt(stats.var + eps), 1.0)
    return jnp.clip((x - stats.mean) / std, -clip, clip)
