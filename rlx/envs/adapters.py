"""Adapters from Brax, gymnax and MuJoCo Playground environments to `rlx.envs.Env`."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from rlx.envs.base import ActionSpec, Env


def _where_tree(cond: jax.Array, a: Any, b: Any) -> Any:
    return jax.tree.map(lambda x, y: jnp.where(cond, x, y), a, b)


def brax_obs_shape(env: Any) -> tuple[int, ...]:
    """The observation shape of a Brax env, from a trace of its `reset` (Brax's own
    `observation_size` runs `reset` op by op: ~10 s on CPU)."""
    state = jax.eval_shape(env.reset, jax.ShapeDtypeStruct((2,), jnp.uint32))
    return tuple(int(d) for d in state.obs.shape)


class BraxEnv(Env):
    """A Brax environment (`brax.envs.get_environment`) with a time limit.

    On a finished episode the next one starts from a fresh `reset` with a new key
    (`fresh_reset=True`, each episode a new random start, e.g. a new reacher
    target) or, like Brax's own `AutoResetWrapper`, from the environment's first
    start state (`fresh_reset=False`, cheaper: no reset computed per step).
    """

    def __init__(self, name: str, backend: str = "spring", episode_length: int = 1000,
                 fresh_reset: bool = True, **kwargs: Any):
        import brax.envs  # local: importing brax costs seconds

        self.name = name
        self.backend = backend
        self._env = brax.envs.get_environment(name, backend=backend, **kwargs)
        self.obs_shape = brax_obs_shape(self._env)
        self.action_spec = ActionSpec(discrete=False, size=int(self._env.action_size))
        self.max_episode_steps = int(episode_length)
        self.fresh_reset = fresh_reset

    @property
    def brax_env(self):
        return self._env

    def _reset(self, key):
        s = self._env.reset(key)
        if not self.fresh_reset:
            s = s.replace(info={**s.info, "first_state": (s.pipeline_state, s.obs)})
        return s, s.obs.astype(jnp.float32)

    def _step(self, key, inner, action, time):
        s = self._env.step(inner, action)
        terminated = s.done > 0.5
        truncated = time >= self.max_episode_steps
        done = jnp.logical_or(terminated, truncated)
        final_obs = s.obs.astype(jnp.float32)
        if self.fresh_reset:
            r = self._env.reset(key)
            s_next = _where_tree(done, r, s)
        else:
            first_ps, first_obs = s.info["first_state"]
            s_next = s.replace(pipeline_state=_where_tree(done, first_ps, s.pipeline_state),
                               obs=jnp.where(done, first_obs, s.obs))
        s_next = s_next.replace(done=jnp.zeros_like(s.done))
        return s_next, s_next.obs.astype(jnp.float32), s.reward, terminated, final_obs, truncated


class GymnaxEnv(Env):
    """A gymnax environment (classic control, MinAtar, bsuite, ...).

    gymnax's own `step` auto-resets with a fresh key and reports `terminated`
    and `truncated` separately; its time limit is `params.max_steps_in_episode`.
    """

    def __init__(self, name: str, **param_overrides: Any):
        import gymnax

        self.name = name
        self._env, params = gymnax.make(name)
        if param_overrides:
            params = params.replace(**param_overrides)
        self.params = params
        space = self._env.action_space(params)
        obs_space = self._env.observation_space(params)
        self.obs_shape = tuple(int(d) for d in obs_space.shape)
        if hasattr(space, "n"):
            self.action_spec = ActionSpec(discrete=True, size=int(space.n))
        else:
            self.action_spec = ActionSpec(discrete=False, size=int(space.shape[0]))
            self._low = jnp.asarray(space.low, jnp.float32)
            self._high = jnp.asarray(space.high, jnp.float32)
        self.max_episode_steps = int(getattr(params, "max_steps_in_episode", 1000))

    def _reset(self, key):
        obs, s = self._env.reset(key, self.params)
        return s, obs.astype(jnp.float32)

    def _step(self, key, inner, action, time):
        if not self.action_spec.discrete:  # rlx actions live in [-1, 1]
            action = self._low + (action + 1.0) * 0.5 * (self._high - self._low)
        obs, s, reward, terminated, truncated, info = self._env.step(key, inner, action, self.params)
        return (s, obs.astype(jnp.float32), reward, terminated,
                info["final_observation"].astype(jnp.float32), truncated)


@struct.dataclass
class _NoEmpty:
    """A pytree with its zero-size arrays (MJX's unused `act`, `efc_*`, ...) kept as static
    shapes, so that checkpoints, which cannot hold zero-size arrays, can save the state."""

    leaves: tuple
    treedef: Any = struct.field(pytree_node=False)
    empty: tuple = struct.field(pytree_node=False)  # (position, shape, dtype) of each

    @classmethod
    def pack(cls, tree: Any) -> "_NoEmpty":
        leaves, treedef = jax.tree.flatten(tree)
        empty = tuple((i, x.shape, jnp.dtype(x.dtype)) for i, x in enumerate(leaves) if x.size == 0)
        return cls(tuple(x for x in leaves if x.size), treedef, empty)

    def unpack(self) -> Any:
        leaves = list(self.leaves)
        for i, shape, dtype in self.empty:
            leaves.insert(i, jnp.zeros(shape, dtype))
        return jax.tree.unflatten(self.treedef, leaves)


class PlaygroundEnv(Env):
    """A MuJoCo Playground environment (`mujoco_playground.registry.load`; the DM Control
    Suite tasks, e.g. `CartpoleBalance`, `CheetahRun`) on MJX's JAX physics (`impl="jax"`,
    which runs on CPU, GPU and TPU; Playground's own default, Warp, needs its GPU kernels).

    Every finished episode restarts from a fresh `reset` with a new key; the time limit is
    `episode_length` (default: the task's config, 1000 steps). `config_overrides` go to
    Playground's config (e.g. `ctrl_dt`).
    """

    def __init__(self, name: str, episode_length: int | None = None, impl: str = "jax",
                 **config_overrides: Any):
        from mujoco_playground import registry  # local: optional extra, slow to import

        self.name = name
        config = registry.get_default_config(name)
        self._env = registry.load(name, config_overrides={"impl": impl, **config_overrides})
        if int(config.get("action_repeat", 1)) != 1:
            raise ValueError(f"Playground task {name!r} repeats actions "
                             f"({config.action_repeat}x); rlx's adapter steps once per action")
        size = self._env.observation_size
        self._obs_key = "state" if isinstance(size, dict) else None  # dict obs: its "state"
        shape = size["state"] if self._obs_key else size
        self.obs_shape = (int(shape),) if isinstance(shape, int) else tuple(int(d) for d in shape)
        self.action_spec = ActionSpec(discrete=False, size=int(self._env.action_size))
        self.max_episode_steps = int(episode_length or config.episode_length)

    @property
    def playground_env(self):
        return self._env

    def _obs(self, s) -> jax.Array:
        o = s.obs[self._obs_key] if self._obs_key else s.obs
        return o.astype(jnp.float32)

    def _reset(self, key):
        s = self._env.reset(key)
        return _NoEmpty.pack(s), self._obs(s)

    def _step(self, key, inner, action, time):
        s = self._env.step(inner.unpack(), action)
        terminated = s.done > 0.5
        truncated = time >= self.max_episode_steps
        done = jnp.logical_or(terminated, truncated)
        final_obs = self._obs(s)
        s_next = _where_tree(done, self._env.reset(key), s)
        s_next = s_next.replace(done=jnp.zeros_like(s.done))
        return _NoEmpty.pack(s_next), self._obs(s_next), s.reward, terminated, final_obs, truncated
