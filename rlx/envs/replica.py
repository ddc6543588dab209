"""K copies of one continuous-control env run in lockstep as one env (`<env>_x<K>`, e.g.
`humanoid_x5`): a task of K times the action dimension with the base env's difficulty per
dimension, the WPO paper's device for its high-dimensional humanoids (several humanoids side by
side: 21 dims per copy there, 21/65/105 in the issue; Brax's humanoid has 17).

With base env E (observation o, action a of size A, reward r), copies c = 0..K-1:

    state    = the K copies' own `EnvState`s, stacked on a leading axis (each with its own key)
    obs      = concat_c o_c                                    [K O]
    action   a = concat_c a_c: chunk c (a[c A : (c + 1) A]) drives copy c
    reward   = (1/K) sum_c r_c          (the mean: returns stay on E's scale, so E's reward
                                         scaling, solved thresholds and learning rates carry
                                         over and returns compare across K; the sum would
                                         multiply returns and Q-values by K)
    done     = any_c done_c             (the joint episode ends when any copy's does; every
                                         copy then restarts: the finished ones through E's own
                                         auto-reset, the others from E.reset of their key)
    terminated = any_c terminated_c     (a copy reached a terminal state: no bootstrap)
    truncated  = any_c truncated_c and not terminated
    final_obs  = concat_c final_obs_c   (each copy's observation before any restart)

Copy c starts from its own reset key (`copy_keys`: split(key, K); the key itself for K = 1,
so `<env>_x1` is E bit for bit) and, while no other copy ends its episode, evolves exactly as
E run alone from that key with the action chunks c (time limits end all copies together, since
they start together). The time limit is E's.
"""

from __future__ import annotations

from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp

from rlx.envs.base import ActionSpec, Env, EnvState, StepOut


class ReplicaEnv(Env):
    """`k` copies of `base` (a continuous-action `Env`) as one `Env`; see the module docstring.

    `EnvState.inner` holds the copies' own `EnvState`s stacked on axis 0 (`[k, ...]`);
    `EnvState.key` is the reset key (unused: each copy advances its own)."""

    def __init__(self, base: Env, k: int):
        if not (isinstance(k, int) and k >= 1):
            raise ValueError(f"ReplicaEnv needs k >= 1 copies, got {k!r}")
        if base.action_spec.discrete:
            raise ValueError(f"replicas need continuous actions; {base.name!r} is discrete")
        self.base, self.k = base, k
        self.name = f"{base.name}_x{k}"
        self.obs_shape = (k * base.obs_shape[0],) + tuple(base.obs_shape[1:])
        self.action_spec = ActionSpec(discrete=False, size=k * base.action_spec.size)
        self.max_episode_steps = base.max_episode_steps

    def copy_keys(self, key: jax.Array) -> jax.Array:
        """The copies' reset keys `[k, ...]`: split(key, k), or key itself for k = 1."""
        return key[None] if self.k == 1 else jax.random.split(key, self.k)

    def _map(self, f: Callable, *args: Any) -> Any:
        """f over the copies' axis: vmap, or (k = 1) f on the one copy itself (bit-exact)."""
        if self.k == 1:
            out = f(*jax.tree.map(lambda x: x[0], args))
            return jax.tree.map(lambda x: x[None], out)
        return jax.vmap(f)(*args)

    def _join(self, x: jax.Array) -> jax.Array:
        """`[k, O, ...]` -> `[k O, ...]` (copy c's block at c O)."""
        return x.reshape((-1,) + x.shape[2:])

    def _reset(self, key):  # ReplicaEnv overrides reset and step themselves
        raise NotImplementedError("ReplicaEnv.reset resets the copies with their own keys")

    def _step(self, key, inner, action, time):
        raise NotImplementedError("ReplicaEnv.step steps the copies with their own keys")

    def reset(self, key: jax.Array) -> EnvState:
        copies = self._map(self.base.reset, self.copy_keys(key))
        return EnvState(inner=copies, obs=self._join(copies.obs), key=key,
                        time=jnp.zeros((), jnp.int32), episode_return=jnp.zeros((), jnp.float32))

    def step(self, state: EnvState, action: jax.Array) -> tuple[EnvState, StepOut]:
        chex.assert_shape(action, (self.action_spec.size,))
        chunks = action.reshape(self.k, self.base.action_spec.size)
        copies, outs = self._map(self.base.step, state.inner, chunks)
        terminated = jnp.any(outs.terminated)
        truncated = jnp.logical_and(jnp.any(outs.truncated), ~terminated)
        done = jnp.logical_or(terminated, truncated)
        if self.k > 1:  # copies still running when another's episode ended restart too
            restart = jnp.logical_and(done, ~outs.done)
            fresh = self._map(self.base.reset, copies.key)
            copies = jax.tree.map(
                lambda f, c: jnp.where(restart.reshape((-1,) + (1,) * (c.ndim - 1)), f, c),
                fresh, copies)
        reward = jnp.mean(outs.reward)
        time = state.time + 1
        ep_return = state.episode_return + reward
        new_state = EnvState(inner=copies, obs=self._join(copies.obs), key=state.key,
                             time=jnp.where(done, 0, time).astype(jnp.int32),
                             episode_return=jnp.where(done, 0.0, ep_return))
        out = StepOut(reward=reward, terminated=terminated, truncated=truncated,
                      final_obs=self._join(outs.final_obs), episode_return=ep_return,
                      episode_length=time)
        return new_state, out


__all__ = ["ReplicaEnv"]
