"""OpenAI-ES (Salimans et al. 2017, arXiv 1703.03864) over members that are (key, sign).

A generation samples N = 2M members in mirrored pairs: member i has parameters

    theta_i = mu + sigma * s_i * eps(k_i),   eps(k) = Normal(k, [D]),  s_i = +1 / -1,

where the two members of a pair share the key k. Fitness is shaped into centered
ranks u_i in [-0.5, 0.5] and the search gradient of E[F(mu + sigma eps)] is

    g = 1 / (N sigma) * sum_i u_i s_i eps(k_i).

Adam (optax) then descends  -g + lambda * mu  (L2 weight decay lambda, the
paper's public code applies it the same way), so `mu` ascends the fitness.

The population is never stored as a matrix: `ask` returns only the keys and
signs, every device regenerates eps for its own members, and the gradient is a
per-device sum followed by one all-reduce of D floats (`weighted_noise_sum`).

The class speaks evosax's protocol -- `init(key, mean, params)`,
`ask(key, state, params)`, `tell(key, population, fitness, state, params)` with
fitness *minimised* -- so it is interchangeable with evosax's algorithms (the
rlx trainer passes `-return`). Non-finite fitness (NaN, +-inf) ranks last.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import chex
import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.flatten_util import ravel_pytree
from jax.sharding import Mesh, PartitionSpec as P

from rlx import population as pop_lib
from rlx.optim import optimizer_step
from rlx.population import AXIS


@struct.dataclass
class Members:
    """A population as keys and signs (member i: theta = mu + sigma * sign_i * eps(key_i))."""

    key: jax.Array  # [N] PRNG keys (raw uint32 [N, 2] or typed)
    sign: jax.Array  # [N] float32, +1 or -1


@struct.dataclass
class OpenAIESParams:
    """Hyper-parameters that may vary across a vmapped sweep."""

    sigma: jax.Array  # noise standard deviation
    weight_decay: jax.Array  # L2 coefficient lambda


@struct.dataclass
class OpenAIESState:
    mean: jax.Array  # [D] flat search mean mu
    opt_state: optax.OptState
    generation_counter: jax.Array


def noise(key: jax.Array, num_dims: int) -> jax.Array:
    """eps(k): the D standard-normal perturbation regenerated from a member's key."""
    return jax.random.normal(key, (num_dims,), jnp.float32)


def antithetic_members(key: jax.Array, population_size: int) -> Members:
    """Mirrored sampling: members (k_j, +1), (k_j, -1) for j < N/2, pairs adjacent."""
    pop_lib.check_even(population_size, "antithetic sampling's population size")
    half = jax.random.split(key, population_size // 2)
    keys = jnp.repeat(half, 2, axis=0)
    sign = jnp.tile(jnp.asarray([1.0, -1.0], jnp.float32), population_size // 2)
    return Members(key=keys, sign=sign)


def centered_ranks(x: jax.Array) -> jax.Array:
    """Centered ranks of `x` (higher is better) in [-0.5, 0.5].

    u_i = rank_i / (N - 1) - 0.5 with rank 0 for the smallest value; ties share
    their average rank; non-finite values (NaN, +-inf) all rank below every finite
    one (tied with each other), i.e. failed members rank last.
    """
    chex.assert_rank(x, 1)
    n = x.shape[0]
    x = jnp.where(jnp.isfinite(x), x, -jnp.inf)
    ranks = jax.scipy.stats.rankdata(x, method="average") - 1.0
    return (ranks / max(n - 1, 1) - 0.5).astype(jnp.float32)


def pairwise_sum(x: jax.Array) -> jax.Array:
    """Sum over the leading axis as a balanced binary tree (zero-padded to a power of two).

    The fixed order makes a sharded sum reproducible: when each of 2^k devices
    holds 2^j consecutive chunks, (tree on each device) + all-reduce gives the
    same bits as the tree over all chunks on one device.
    """
    n = x.shape[0]
    size = 1 << max(n - 1, 0).bit_length()
    if size > n:
        x = jnp.concatenate([x, jnp.zeros((size - n,) + x.shape[1:], x.dtype)])
    while x.shape[0] > 1:
        x = x[0::2] + x[1::2]
    return x[0]


def weighted_noise_sum(weights: jax.Array, members: Members, num_dims: int,
                       chunk_size: int | None = None) -> jax.Array:
    """sum_i w_i s_i eps(k_i) over the given members, regenerating eps chunk by chunk.

    `lax.map` over chunks of `chunk_size` members keeps memory at chunk_size x D
    (plus one D-vector per chunk); the chunk sums are added by `pairwise_sum`.
    """
    n = weights.shape[0]
    chex.assert_shape(members.sign, (n,))
    chunk = n if chunk_size is None else min(chunk_size, n)
    if n % chunk:
        raise ValueError(f"{n} members do not split into chunks of {chunk}")
    coef = (weights * members.sign).reshape(n // chunk, chunk)
    keys = members.key.reshape((n // chunk, chunk) + members.key.shape[1:])

    def chunk_sum(xs):
        c, k = xs
        return c @ jax.vmap(noise, in_axes=(0, None))(k, num_dims)

    return pairwise_sum(jax.lax.map(chunk_sum, (coef, keys)))


@dataclasses.dataclass(frozen=True, eq=False)
class OpenAIES:
    """OpenAI-ES with evosax's `init / ask / tell` protocol (fitness minimised).

    population_size: N, even. solution: a parameter pytree (shape template).
    optimizer: applied to the descent direction -g + lambda * mu.
    mesh: when given, `tell` regenerates noise on the device that owns each
      member (members sharded as P(axis)) and all-reduces the D-vector.
    chunk_size: members per noise-regeneration chunk (bounds memory and fixes the
      summation order: with the same chunk size and a power-of-two number of
      chunks per device, 1 and 2^k devices give bit-identical results).
    """

    population_size: int
    solution: Any
    optimizer: optax.GradientTransformation = dataclasses.field(
        default_factory=lambda: optax.adam(0.01))
    sigma: float = 0.02
    weight_decay: float = 0.005
    mesh: Mesh | None = None
    axis: str = AXIS
    chunk_size: int | None = None

    def __post_init__(self):
        if self.population_size < 2:
            raise ValueError(f"OpenAI-ES needs a population size >= 2, got {self.population_size}")
        pop_lib.check_even(self.population_size, "OpenAI-ES population size")
        if self.mesh is not None:
            pop_lib.check_divisible(self.population_size, self.mesh)

    @property
    def num_dims(self) -> int:
        return int(ravel_pytree(self.solution)[0].size)

    def _unravel(self, flat: jax.Array) -> Any:
        return ravel_pytree(self.solution)[1](flat)

    @property
    def default_params(self) -> OpenAIESParams:
        return OpenAIESParams(sigma=jnp.asarray(self.sigma, jnp.float32),
                              weight_decay=jnp.asarray(self.weight_decay, jnp.float32))

    def init(self, key: jax.Array, mean: Any, params: OpenAIESParams) -> OpenAIESState:
        flat = ravel_pytree(mean)[0].astype(jnp.float32)
        return OpenAIESState(mean=flat, opt_state=self.optimizer.init(flat),
                             generation_counter=jnp.zeros((), jnp.int32))

    def ask(self, key: jax.Array, state: OpenAIESState, params: OpenAIESParams
            ) -> tuple[Members, OpenAIESState]:
        return antithetic_members(key, self.population_size), state

    # --- what the sharded evaluator needs: a replicated context + a per-member decode ---
    def context(self, state: OpenAIESState, params: OpenAIESParams) -> tuple[jax.Array, jax.Array]:
        return state.mean, params.sigma

    def decode(self, context: tuple[jax.Array, jax.Array], member: Members) -> Any:
        """One member's parameter pytree, regenerated from its key and sign."""
        mean, sigma = context
        return self._unravel(mean + sigma * member.sign * noise(member.key, mean.shape[0]))

    def population_matrix(self, population: Members, state: OpenAIESState,
                          params: OpenAIESParams) -> jax.Array:
        """The [N, D] parameter matrix (tests and inspection only; the fast path never builds it)."""
        eps = jax.vmap(noise, in_axes=(0, None))(population.key, state.mean.shape[0])
        return state.mean + params.sigma * population.sign[:, None] * eps

    def get_mean(self, state: OpenAIESState) -> Any:
        return self._unravel(state.mean)

    def gradient(self, population: Members, fitness: jax.Array, state: OpenAIESState,
                 params: OpenAIESParams) -> jax.Array:
        """g = 1/(N sigma) sum_i u_i s_i eps(k_i), u = centered_ranks(-fitness)."""
        n, d = self.population_size, state.mean.shape[0]
        chex.assert_shape(fitness, (n,))
        u = centered_ranks(-fitness)
        if self.mesh is None:
            total = weighted_noise_sum(u, population, d, self.chunk_size)
        else:
            def local(w, members):
                return jax.lax.psum(weighted_noise_sum(w, members, d, self.chunk_size), self.axis)

            total = jax.shard_map(local, mesh=self.mesh, in_specs=(P(self.axis), P(self.axis)),
                                  out_specs=P(), check_vma=False)(u, population)
        return total / (n * params.sigma)

    def tell(self, key: jax.Array, population: Members, fitness: jax.Array,
             state: OpenAIESState, params: OpenAIESParams) -> tuple[OpenAIESState, dict]:
        """Adam step on -g + lambda * mu; returns (state, metrics)."""
        g = self.gradient(population, fitness, state, params)
        direction = -g + params.weight_decay * state.mean
        mean, opt_state, info = optimizer_step(self.optimizer, state.mean, state.opt_state,
                                               direction)
        metrics = {"grad_norm": jnp.linalg.norm(g), "update_norm": info["update_norm"]}
        return (OpenAIESState(mean=mean, opt_state=opt_state,
                              generation_counter=state.generation_counter + 1), metrics)


__all__ = ["OpenAIES", "OpenAIESParams", "OpenAIESState", "Members", "noise",
           "antithetic_members", "centered_ranks", "weighted_noise_sum", "pairwise_sum"]
