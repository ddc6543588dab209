"""The sharded ES evaluator: fitness of every member, and nothing but sums leave a device.

`Evaluator(...)(decode, context, population, obs_stats, key)` runs, on every
device of the mesh (`shard_map`, members sharded as P(axis)), its own members in
sequential chunks of `members_per_chunk` (`lax.map`: memory grows with the chunk,
not the population). A chunk decodes each member's parameters (rlx's OpenAI-ES
regenerates them from a key), resets `episodes` environments per member and
steps them with the member's deterministic policy in a `lax.while_loop` that
stops when every episode of the chunk has ended (or at the time limit). The
loop carries returns and observation sums, never trajectories.

Episode starts: by default the two members of a mirrored pair (global indices
2j, 2j+1) share their starts and pairs differ, so the population covers many
starts while each +/- difference compares like with like. `shared_starts=True`
gives every member the same starts (common random numbers, as evosax's
BraxProblem). Starts depend on global member indices, never on the device.

Outputs: per-member mean undiscounted return and episode length (sharded, N
scalars), the env steps consumed, and the observation statistics of the
evaluated rollouts, built from per-device sums about the running mean

    n = sum 1,  S1 = sum (o - m),  S2 = sum (o - m)^2   (over alive steps)

psummed across devices (2 x obs + 1 floats). Members whose return or sums are
not finite are left out of the statistics (and rank last in the strategies).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp
from flax import struct
from jax.sharding import Mesh, PartitionSpec as P

from rlx.envs import normalize as obs_norm
from rlx.envs.base import Env, EnvState
from rlx.es.openai_es import pairwise_sum
from rlx import population as pop_lib
from rlx.population import AXIS

# act(params, obs [B, *obs_shape]) -> env action [B, ...] (deterministic)
Act = Callable[[Any, jax.Array], jax.Array]
# decode(context, member) -> that member's parameter pytree
Decode = Callable[[Any, Any], Any]


@struct.dataclass
class EvalOut:
    """What a population evaluation returns (the only things that cross devices)."""

    returns: jax.Array  # [N] mean undiscounted return over the member's episodes
    lengths: jax.Array  # [N] mean episode length
    env_steps: jax.Array  # scalar: env steps taken inside episodes (all members)
    obs_stats: obs_norm.RunningStats  # statistics of this evaluation's observations


# Envs stepped at once per device on CPU; larger populations go in sequential chunks
# (memory grows with the chunk, not the population). Measured on Brax reacher, MLP 32-32,
# one idle 2-core EPYC device (steps/s, ES evaluator / env alone with constant actions):
# 32 at once 239k / 266k, 64: 235k / 257k, 128: 288k / 324k, 256: 299k / 358k.
CPU_ENVS_PER_CHUNK = 256


def auto_chunk(local_members: int, episodes: int = 1, platform: str | None = None) -> int:
    """Members per chunk when none is given: on CPU the largest divisor of the local
    member count with members x episodes <= CPU_ENVS_PER_CHUNK; elsewhere all of them."""
    platform = platform or jax.default_backend()
    if platform != "cpu":
        return local_members
    target = max(1, CPU_ENVS_PER_CHUNK // max(episodes, 1))
    return max(d for d in range(1, min(target, local_members) + 1) if local_members % d == 0)


population_size = pop_lib.size  # the common leading size of a population's leaves


@dataclasses.dataclass(frozen=True, eq=False)
class Evaluator:
    """Episode returns of a population of deterministic policies (see the module docstring).

    env: any `rlx.envs.Env`. act: the policy. episodes: per member (fitness is
    their mean). max_steps: episode cap (default: the env's time limit).
    members_per_chunk: members evaluated at once per device (None: `auto_chunk`,
    on CPU up to CPU_ENVS_PER_CHUNK envs, elsewhere all local members).
    mesh/axis: shard members over this mesh (None: one device).
    normalize_observations / obs_clip: policies see clip((o - mean)/std, +-clip).
    shared_starts: every member meets the same starts (else one set per mirrored pair).
    """

    env: Env
    act: Act
    episodes: int = 1
    max_steps: int | None = None
    members_per_chunk: int | None = None
    mesh: Mesh | None = None
    axis: str = AXIS
    normalize_observations: bool = True
    obs_clip: float = 5.0
    shared_starts: bool = False

    @property
    def steps(self) -> int:
        return int(self.max_steps or self.env.max_episode_steps)

    def chunk(self, local_members: int) -> int:
        c = (auto_chunk(local_members, self.episodes) if self.members_per_chunk is None
             else min(self.members_per_chunk, local_members))
        if local_members % c:
            raise ValueError(f"{local_members} members per device do not split into chunks of "
                             f"members_per_chunk={self.members_per_chunk}")
        return c

    def starts(self, key: jax.Array, episodes: int | None = None) -> EnvState:
        """`episodes` initial states from `key`."""
        return jax.vmap(self.env.reset)(jax.random.split(key, episodes or self.episodes))

    def member_starts(self, key: jax.Array, index: jax.Array) -> EnvState:
        """Starts [C, E] of the members with global indices `index` [C]."""
        if self.shared_starts:
            s = self.starts(key)
            return jax.tree.map(lambda x: jnp.broadcast_to(x, index.shape + x.shape), s)
        return jax.vmap(lambda i: self.starts(jax.random.fold_in(key, i // 2)))(index)

    def rollout(self, params: Any, starts: EnvState, obs_stats: obs_norm.RunningStats
                ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array]:
        """Run C members (params leading [C]) from their starts [C, E] until all episodes end.

        Returns per member: returns [C, E], lengths [C, E], observation count [C],
        S1 [C, *obs], S2 [C, *obs] (sums about obs_stats.mean over alive steps).
        """
        c = population_size(params)
        e = jax.tree.leaves(starts)[0].shape[1]
        obs_shape = self.env.obs_shape
        # envs live on one flat batch axis [C * E] (one vmap: no unit axes in the physics);
        # only the policy sees [C, E, ...] (a free reshape) to pair members with their envs
        state = jax.tree.map(lambda x: x.reshape((c * e,) + x.shape[2:]), starts)
        step = jax.vmap(self.env.step)
        act = jax.vmap(self.act)
        shift = obs_stats.mean

        def observe(obs):
            if not self.normalize_observations:
                return obs
            return obs_norm.normalize(obs_stats, obs, clip=self.obs_clip)

        def policy(obs):
            a = act(params, observe(obs).reshape((c, e) + obs_shape))
            return a.reshape((c * e,) + a.shape[2:])

        def cond(carry):
            t, _, _, _, alive, *_ = carry
            return jnp.logical_and(t < self.steps, jnp.any(alive))

        def body(carry):
            # the observations counted are those acted on while alive: as many as the length
            t, s, ret, length, alive, s1, s2 = carry
            action = policy(s.obs)
            dev = (s.obs - shift) * alive.reshape(alive.shape + (1,) * len(obs_shape))
            s, out = step(s, action)
            ret = ret + out.reward * alive
            length = length + alive
            s1 = s1 + dev
            s2 = s2 + dev * dev
            alive = alive * (1.0 - out.done.astype(jnp.float32))
            return t + 1, s, ret, length, alive, s1, s2

        zeros = jnp.zeros((c * e,), jnp.float32)
        zobs = jnp.zeros((c * e,) + obs_shape, jnp.float32)
        carry = (jnp.zeros((), jnp.int32), state, zeros, zeros, zeros + 1.0, zobs, zobs)
        _, _, ret, length, _, s1, s2 = jax.lax.while_loop(cond, body, carry)
        per_member = lambda x: x.reshape((c, e) + x.shape[1:])  # noqa: E731
        return (per_member(ret), per_member(length), per_member(length).sum(1),
                per_member(s1).sum(1), per_member(s2).sum(1))

    def _local(self, decode: Decode, context: Any, members: Any,
               obs_stats: obs_norm.RunningStats, key: jax.Array):
        """One device: its members in chunks; per-member returns and summed moments."""
        n = population_size(members)
        c = self.chunk(n)
        index = pop_lib.member_index(n, self.mesh, self.axis)
        chunks = jax.tree.map(lambda x: x.reshape((n // c, c) + x.shape[1:]), (members, index))

        def one_chunk(xs):
            m, idx = xs
            params = jax.vmap(decode, in_axes=(None, 0))(context, m)
            ret, length, cnt, s1, s2 = self.rollout(params, self.member_starts(key, idx), obs_stats)
            mret = ret.mean(1)
            ok = jnp.isfinite(mret) & jnp.isfinite(s1.reshape(c, -1)).all(1) & jnp.isfinite(
                s2.reshape(c, -1)).all(1)
            okx = ok.reshape((c,) + (1,) * (s1.ndim - 1))
            # fixed-order (tree) sums: the same bits on every device count
            sums = (pairwise_sum(jnp.where(ok, cnt, 0.0)), pairwise_sum(jnp.where(okx, s1, 0.0)),
                    pairwise_sum(jnp.where(okx, s2, 0.0)), pairwise_sum(length.sum(1)))
            return (mret, length.mean(1)), sums

        (returns, lengths), sums = jax.lax.map(one_chunk, chunks)
        sums = jax.tree.map(pairwise_sum, sums)
        if self.mesh is not None:
            sums = jax.lax.psum(sums, self.axis)
        return returns.reshape(n), lengths.reshape(n), sums

    def __call__(self, decode: Decode, context: Any, population: Any,
                 obs_stats: obs_norm.RunningStats, key: jax.Array) -> EvalOut:
        """Evaluate every member of `population` (leading axis N, sharded over the mesh)."""
        n = population_size(population)
        local = functools.partial(self._local, decode)
        if self.mesh is not None:
            pop_lib.check_divisible(n, self.mesh)
            local = jax.shard_map(local, mesh=self.mesh,
                                  in_specs=(P(), P(self.axis), P(), P()),
                                  out_specs=(P(self.axis), P(self.axis), P()), check_vma=False)
        returns, lengths, (cnt, s1, s2, steps) = local(context, population, obs_stats, key)
        chex.assert_shape([returns, lengths], (n,))
        stats = obs_norm.from_sums(cnt, s1, s2, obs_stats.mean)
        return EvalOut(returns=returns, lengths=lengths, env_steps=steps, obs_stats=stats)

    def evaluate_params(self, params: Any, obs_stats: obs_norm.RunningStats, key: jax.Array,
                        episodes: int) -> dict[str, jax.Array]:
        """Mean, std and length of `episodes` episodes of one parameter pytree (no sharding)."""
        batched = jax.tree.map(lambda x: x[None], params)
        starts = jax.tree.map(lambda x: x[None], self.starts(key, episodes))
        ret, length, *_ = self.rollout(batched, starts, obs_stats)
        return {"eval_return": ret.mean(), "eval_return_std": ret.std(),
                "eval_length": length.mean()}


__all__ = ["Evaluator", "EvalOut", "Act", "Decode", "population_size", "auto_chunk",
           "CPU_ENVS_PER_CHUNK"]
