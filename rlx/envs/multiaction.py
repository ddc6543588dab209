"""Wu et al. 2018's synthetic high-dimensional-action task (`MultiactionPointEnv`, cathywu/rllab).

A point in R^d must reach the origin; each coordinate is pushed by k action dimensions whose
(clipped, scaled) values are summed, so the action has d k dimensions that all matter:

    s_0 ~ U[-1, 1]^d,   u_c(a) = action_scale sum_{j<k} clip(a_{c k + j}, -1, 1)   (c < d)
    s_{t+1} = s_t + u(a_t),   r_t = -||s_{t+1}|| - 1   (-||s_{t+1}||^2 - 1 with `squared`)

The episode terminates when every |s_c| < `goal_tol` and is truncated after `horizon` steps
(Wu et al.: d = 2, k in {6, 50, 200, 500}, horizon 50). rllab's action box is [-0.1, 0.1]
per dimension: rlx actions live in [-1, 1] and `action_scale` 0.1 maps them there. The
authors' code subtracts the squared norm; the paper's description is -||s|| - 1 (the default).
With `observe_time` the observation is [s, t / horizon] (a finite-horizon task: baselines need
the time left, as rllab's linear-feature baseline has it). With `horizon_terminates` reaching the
horizon *terminates* the episode (the horizon is part of the task: nothing to bootstrap past
it, as rllab treats a finite horizon) instead of truncating it (rlx's time-limit default: the
learners bootstrap from the final observation's value).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rlx.envs.base import ActionSpec, Env


class MultiactionPointEnv(Env):
    """The task above as an `rlx.envs.Env` (observation s `[d]` (+ t / horizon), action
    `[d k]`)."""

    name = "multiaction_point"

    def __init__(self, d: int = 2, k: int = 1, horizon: int = 50, action_scale: float = 0.1,
                 goal_tol: float = 0.01, squared: bool = False, observe_time: bool = False,
                 horizon_terminates: bool = False):
        if d < 1 or k < 1 or horizon < 1 or not action_scale > 0 or not goal_tol >= 0:
            raise ValueError(f"MultiactionPointEnv needs d, k, horizon >= 1, action_scale > 0, "
                             f"goal_tol >= 0; got d={d}, k={k}, horizon={horizon}, "
                             f"action_scale={action_scale}, goal_tol={goal_tol}")
        self.d, self.k = int(d), int(k)
        self.action_scale, self.goal_tol, self.squared = float(action_scale), float(goal_tol), squared
        self.observe_time, self.horizon_terminates = observe_time, bool(horizon_terminates)
        self.obs_shape = (self.d + int(observe_time),)
        self.action_spec = ActionSpec(discrete=False, size=self.d * self.k)
        self.max_episode_steps = int(horizon)

    def coordinate_push(self, action: jax.Array) -> jax.Array:
        """u(a) `[..., d]` from actions `[..., d k]` (dimension c k + j pushes coordinate c)."""
        a = jnp.clip(action, -1.0, 1.0).reshape(action.shape[:-1] + (self.d, self.k))
        return self.action_scale * jnp.sum(a, axis=-1)

    def reward(self, s_next: jax.Array) -> jax.Array:
        """-||s'|| - 1 (or -||s'||^2 - 1)."""
        sq = jnp.sum(s_next**2, axis=-1)
        return -(sq if self.squared else jnp.sqrt(sq)) - 1.0

    def _obs(self, s: jax.Array, time: jax.Array) -> jax.Array:
        if not self.observe_time:
            return s
        return jnp.concatenate([s, (time / self.max_episode_steps)[None].astype(s.dtype)])

    def _reset(self, key):
        s = jax.random.uniform(key, (self.d,), jnp.float32, -1.0, 1.0)
        return s, self._obs(s, jnp.zeros((), jnp.int32))

    def _step(self, key, s, action, time):
        s_next = s + self.coordinate_push(action)
        terminated = jnp.all(jnp.abs(s_next) < self.goal_tol)
        truncated = time >= self.max_episode_steps
        if self.horizon_terminates:
            terminated, truncated = jnp.logical_or(terminated, truncated), jnp.zeros_like(truncated)
        done = jnp.logical_or(terminated, truncated)
        s0 = jax.random.uniform(key, (self.d,), jnp.float32, -1.0, 1.0)
        s_new = jnp.where(done, s0, s_next)
        obs = jnp.where(done, self._obs(s0, jnp.zeros_like(time)), self._obs(s_next, time))
        return s_new, obs, self.reward(s_next), terminated, self._obs(s_next, time), truncated


__all__ = ["MultiactionPointEnv"]
