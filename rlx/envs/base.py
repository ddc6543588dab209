"""The one functional environment interface rlx trainers use.

An `Env` acts on a *single* environment; batches come from `jax.vmap`. Every
`step` auto-resets: when an episode ends the returned state already holds the
first observation of the next episode, and `StepOut.final_obs` keeps the last
observation of the finished one so trainers can bootstrap through time-limit
truncation (but not through termination).
"""

from __future__ import annotations

import abc
import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class EnvState:
    """State of one environment plus the episode bookkeeping rlx adds.

    Attributes:
      inner: the backend's own state (Brax `State`, gymnax state, ...).
      obs: current observation (first of the next episode after an auto-reset).
      key: per-environment PRNG key, advanced on every step.
      time: steps taken in the current episode.
      episode_return: undiscounted return accumulated in the current episode.
    """

    inner: Any
    obs: jax.Array
    key: jax.Array
    time: jax.Array
    episode_return: jax.Array


@struct.dataclass
class StepOut:
    """What one `Env.step` reports besides the new state.

    Attributes:
      reward: reward of the transition.
      terminated: the episode reached a terminal state (do not bootstrap).
      truncated: the episode hit its time limit without terminating (bootstrap).
      final_obs: observation reached by the transition, before any auto-reset.
      episode_return: return of the episode that just ended (valid where done).
      episode_length: length of the episode that just ended (valid where done).
    """

    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    final_obs: jax.Array
    episode_return: jax.Array
    episode_length: jax.Array

    @property
    def done(self) -> jax.Array:
        return jnp.logical_or(self.terminated, self.truncated)


@dataclasses.dataclass(frozen=True)
class ActionSpec:
    """Discrete actions are integers in [0, num_actions); continuous ones are
    float vectors of size `size` in [-1, 1]."""

    discrete: bool
    size: int  # number of actions (discrete) or action dimension (continuous)


class Env(abc.ABC):
    """A single jittable environment with auto-reset and episode statistics."""

    name: str
    obs_shape: tuple[int, ...]
    action_spec: ActionSpec
    max_episode_steps: int

    @abc.abstractmethod
    def _reset(self, key: jax.Array) -> tuple[Any, jax.Array]:
        """Backend reset: (inner state, observation)."""

    @abc.abstractmethod
    def _step(self, key: jax.Array, inner: Any, action: jax.Array, time: jax.Array
              ) -> tuple[Any, jax.Array, jax.Array, jax.Array, jax.Array, jax.Array]:
        """Backend step with auto-reset; `time` counts steps including this one.

        Returns (inner, obs, reward, terminated, final_obs, truncated): `inner` and
        `obs` already belong to the next episode where terminated or truncated.
        """

    @functools.cached_property
    def _traced(self) -> tuple[Any, Any]:
        """`_reset` and `_step` under `jax.jit`: JAX traces a jitted function once per input
        shape, so every program that steps this env (init, evaluate, updates) shares one trace
        of the physics instead of tracing it anew (seconds for Brax)."""
        return jax.jit(self._reset), jax.jit(self._step)

    def reset(self, key: jax.Array) -> EnvState:
        key, sub = jax.random.split(key)
        inner, obs = self._traced[0](sub)
        # a weak type (gymnax's `time = 0`) would not survive a program's output, and a step
        # traced on both kinds would be traced twice
        inner = jax.tree.map(lambda x: jax.lax.convert_element_type(x, x.dtype), inner)
        return EnvState(inner=inner, obs=obs, key=key, time=jnp.zeros((), jnp.int32),
                        episode_return=jnp.zeros((), jnp.float32))

    def step(self, state: EnvState, action: jax.Array) -> tuple[EnvState, StepOut]:
        key, sub = jax.random.split(state.key)
        time = state.time + 1
        inner, obs, reward, terminated, final_obs, truncated = self._traced[1](
            sub, state.inner, action, time)
        reward = jnp.asarray(reward, jnp.float32)
        terminated = jnp.asarray(terminated).astype(bool)
        truncated = jnp.logical_and(jnp.asarray(truncated).astype(bool), ~terminated)
        done = jnp.logical_or(terminated, truncated)
        ep_return = state.episode_return + reward
        new_state = EnvState(
            inner=inner, obs=obs, key=key,
            time=jnp.where(done, 0, time).astype(jnp.int32),
            episode_return=jnp.where(done, 0.0, ep_return))
        out = StepOut(reward=reward, terminated=terminated, truncated=truncated,
                      final_obs=final_obs, episode_return=ep_return, episode_length=time)
        return new_state, out
