"""The one rollout every trainer uses: a `lax.scan` over steps of a batch of envs."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from flax import struct

from rlx.envs.base import Env, EnvState

# policy(obs [N, ...], key) -> (env_action [N, ...], raw_action [N, ...], extras {name: [N, ...]})
Policy = Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array, dict[str, jax.Array]]]


@struct.dataclass
class Transition:
    """A time-major batch of transitions `[T, N, ...]`.

    `obs` is the observation the action was taken in; `final_obs` the one the
    transition reached before any auto-reset (bootstrap from it on truncation).
    `episode_return` / `episode_length` describe the episode that ended at this
    step and are meaningful only where `done`.
    """

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    final_obs: jax.Array
    episode_return: jax.Array
    episode_length: jax.Array
    extras: dict[str, jax.Array]

    @property
    def done(self) -> jax.Array:
        return jnp.logical_or(self.terminated, self.truncated)


def reset(env: Env, key: jax.Array, num_envs: int) -> EnvState:
    """`num_envs` independent environments, batched on the leading axis."""
    return jax.vmap(env.reset)(jax.random.split(key, num_envs))


def rollout(env: Env, policy: Policy, env_state: EnvState, key: jax.Array,
            length: int) -> tuple[EnvState, Transition]:
    """Run `policy` for `length` steps in the batched `env_state`."""
    step = jax.vmap(env.step)

    def body(state: EnvState, k: jax.Array):
        env_action, raw, extras = policy(state.obs, k)
        new_state, out = step(state, env_action)
        tr = Transition(obs=state.obs, action=raw, reward=out.reward, terminated=out.terminated,
                        truncated=out.truncated, final_obs=out.final_obs,
                        episode_return=out.episode_return, episode_length=out.episode_length,
                        extras=extras)
        return new_state, tr

    return jax.lax.scan(body, env_state, jax.random.split(key, length))


def random_policy(env: Env) -> Policy:
    """Uniformly random actions: integers in [0, n) or floats in [-1, 1]^d."""
    spec = env.action_spec

    def policy(obs: jax.Array, key: jax.Array):
        n = obs.shape[0]
        if spec.discrete:
            a = jax.random.randint(key, (n,), 0, spec.size)
        else:
            a = jax.random.uniform(key, (n, spec.size), minval=-1.0, maxval=1.0)
        return a, a, {}

    return policy


def random_return(env: Env, key: jax.Array, num_envs: int = 16, episodes_per_env: int = 2) -> jax.Array:
    """Mean return of the episodes a uniformly random policy finishes (a score's zero)."""
    k_reset, k_roll = jax.random.split(key)
    _, tr = rollout(env, random_policy(env), reset(env, k_reset, num_envs), k_roll,
                    episodes_per_env * env.max_episode_steps)
    stats = episode_stats(tr)
    return stats["episode_return_sum"] / jnp.maximum(stats["episode_count"], 1.0)


def episode_stats(tr: Transition) -> dict[str, jax.Array]:
    """Sum and count of returns and lengths of the episodes that ended in `tr`."""
    done = tr.done.astype(jnp.float32)
    return {"episode_return_sum": jnp.sum(tr.episode_return * done),
            "episode_length_sum": jnp.sum(tr.episode_length * done),
            "episode_count": jnp.sum(done)}


def evaluate(env: Env, act: Callable[[jax.Array], jax.Array], key: jax.Array, num_envs: int,
             num_steps: int | None = None) -> dict[str, jax.Array]:
    """Return and length of the first episode of `num_envs` fresh environments.

    `act(obs [N, ...]) -> env_action [N, ...]` (usually the deterministic policy).
    Episodes still running after `num_steps` (default: the env's time limit) are
    counted as they stand.
    """
    num_steps = num_steps or env.max_episode_steps
    state = reset(env, key, num_envs)
    step = jax.vmap(env.step)

    def body(carry, _):
        s, ret, length, active = carry
        s, out = step(s, act(s.obs))
        ret = ret + out.reward * active
        length = length + active
        active = active * (1.0 - out.done.astype(jnp.float32))
        return (s, ret, length, active), None

    zeros = jnp.zeros(num_envs, jnp.float32)
    (_, ret, length, _), _ = jax.lax.scan(body, (state, zeros, zeros, zeros + 1.0), None,
                                          length=num_steps)
    return {"eval_return": ret.mean(), "eval_return_std": ret.std(), "eval_length": length.mean()}


__all__ = ["Transition", "Policy", "reset", "rollout", "evaluate", "episode_stats", "random_policy",
           "random_return"]
