"""The replay buffer of off-policy learners: a jitted ring buffer of env-step rows.

Built on flashbax's trajectory buffer (`flashbax.buffers.trajectory_buffer`, pure
functions on a pytree state). Every leaf is stored `[num_envs, rows, ...]`: one row per
env step of a batch of `num_envs` envs, `rows` = capacity / num_envs. `insert` writes the
next rows at the write head, wrapping around and overwriting the oldest; `sample` draws
windows of `length` consecutive rows of one env, uniformly over every (env, start) whose
whole window is held (so n-step returns can be formed at sampling time). A window never
crosses the write head, i.e. never joins the newest row to an overwritten one, and
nothing is sampled from rows not written yet.

The state is an ordinary pytree of arrays: vmappable over seeds, shardable, and saved /
restored bit-exactly with the rest of a trainer's state.
"""

from __future__ import annotations

from typing import Any

import chex
import jax
import jax.numpy as jnp
from flashbax.buffers import trajectory_buffer as _fbx

ReplayState = _fbx.TrajectoryBufferState  # experience [num_envs, rows, ...], current_index, is_full


def init(example: Any, num_envs: int, rows: int) -> ReplayState:
    """An empty buffer of `rows` env steps of `num_envs` envs, items shaped like `example`
    (one env's transition: a pytree of arrays without batch axes)."""
    if num_envs < 1 or rows < 1:
        raise ValueError(f"a replay buffer needs num_envs >= 1 and rows >= 1, got {num_envs}, {rows}")
    state = _fbx.init(jax.tree.map(jnp.asarray, example), num_envs, rows)
    # fixed dtypes (flashbax's counter is weakly typed): a restored checkpoint has the same types
    return state.replace(experience=jax.tree.map(jnp.zeros_like, state.experience),
                         current_index=jnp.zeros((), jnp.int32),
                         is_full=jnp.zeros((), jnp.bool_))


def capacity_rows(state: ReplayState) -> int:
    """Rows (env steps of all envs) the buffer holds when full."""
    return jax.tree.leaves(state.experience)[0].shape[1]


def num_envs(state: ReplayState) -> int:
    return jax.tree.leaves(state.experience)[0].shape[0]


def rows_held(state: ReplayState) -> jax.Array:
    """Rows written and not yet overwritten (int32)."""
    return jnp.where(state.is_full, capacity_rows(state), state.current_index).astype(jnp.int32)


def size(state: ReplayState) -> jax.Array:
    """Transitions held: rows_held x num_envs."""
    return rows_held(state) * num_envs(state)


def insert(state: ReplayState, rows: Any) -> ReplayState:
    """Append time-major rows `[k, num_envs, ...]` (a rollout's layout) at the write head."""
    leaves = jax.tree.leaves(rows)
    chex.assert_rank(leaves[0], jax.tree.leaves(state.experience)[0].ndim)
    chex.assert_axis_dimension(leaves[0], 1, num_envs(state))
    if leaves[0].shape[0] > capacity_rows(state):
        raise ValueError(f"inserting {leaves[0].shape[0]} rows into a buffer of "
                         f"{capacity_rows(state)} rows")
    return _fbx.add(state, jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), rows))


def sample(state: ReplayState, key: jax.Array, batch_size: int, length: int = 1) -> Any:
    """`batch_size` windows `[batch_size, length, ...]` of `length` consecutive rows of one
    env, uniform over the (env, start) pairs whose window is held (with replacement).

    Meaningless (but finite: zeros or old rows) while fewer than `length` rows are held:
    callers gate their use on `rows_held(state) >= length`.
    """
    if length < 1 or length > capacity_rows(state):
        raise ValueError(f"window length {length} must be in [1, {capacity_rows(state)}]")
    out = _fbx.sample(state, key, batch_size, length, 1).experience
    chex.assert_axis_dimension(jax.tree.leaves(out)[0], 1, length)
    return out


__all__ = ["ReplayState", "init", "insert", "sample", "size", "rows_held", "capacity_rows",
           "num_envs"]
