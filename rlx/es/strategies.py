"""One strategy interface over rlx's OpenAI-ES and every evosax algorithm.

`make_strategy(name, ...)` returns an object with

    init(key, params_pytree, hp) -> state
    ask(key, state, hp) -> population           (leading axis N)
    tell(key, population, returns, state, hp) -> (state, metrics)   returns maximised
    context(state, hp) / decode(context, member) -> one member's parameter pytree
    mean(state, hp) -> the parameter pytree the strategy currently proposes

so the sharded evaluator (`rlx.es.evaluate`) and the generation loop
(`rlx.es.loop`) never know which strategy runs. `hp` is always an
`OpenAIESParams` (sigma, weight_decay): the hyper-parameters a run may sweep.
`name="openai_es"` is rlx's own strategy (members are keys and signs, noise is
regenerated where the member lives); any other name is looked up in
`evosax.algorithms.algorithms` (`Open_ES`, `CMA_ES`, `SNES`, `xNES`, `PGPE`,
`SimpleGA`, ...), whose `ask` builds the [N, D] population (inherent to those
algorithms) and which minimise fitness: the adapter passes `-returns` after
mapping non-finite returns below every finite one (failed members rank last).
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree
from jax.sharding import Mesh

from rlx import population as pop_lib
from rlx.es.openai_es import OpenAIES, OpenAIESParams
from rlx.population import AXIS

RLX_STRATEGIES = ("openai_es",)


def evosax_names() -> tuple[str, ...]:
    from evosax.algorithms import algorithms

    return tuple(sorted(algorithms))


def validate_strategy_name(name: str) -> None:
    if name in RLX_STRATEGIES:
        return
    names = evosax_names()
    if name not in names:
        raise ValueError(f"unknown ES strategy {name!r}; rlx: {', '.join(RLX_STRATEGIES)}; "
                         f"evosax: {', '.join(names)}")


def validate_strategy(name: str, kwargs: tuple[tuple[str, Any], ...] = ()) -> None:
    """Raise `ValueError` for an unknown name or a keyword its evosax class does not take."""
    validate_strategy_name(name)
    for item in kwargs:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
            raise ValueError(f"strategy_kwargs are (name, value) pairs, got {item!r}")
    if not kwargs:
        return
    if name in RLX_STRATEGIES:
        raise ValueError(f"strategy {name!r} takes no strategy_kwargs, got {dict(kwargs)!r}")
    from evosax.algorithms import algorithms

    accepted = set(inspect.signature(algorithms[name].__init__).parameters) - {
        "self", "population_size", "solution"}
    for key, _ in kwargs:
        if key not in accepted:
            raise ValueError(f"strategy {name!r} has no argument {key!r}; valid: "
                             f"{', '.join(sorted(accepted))}")


def check_population(name: str, size: int, kwargs: tuple[tuple[str, Any], ...] = (),
                     what: str = "population_size") -> None:
    """Raise `ValueError` if strategy `name` samples mirrored pairs and `size` is odd."""
    antithetic = name == "openai_es" or (
        name == "Open_ES" and dict(kwargs).get("use_antithetic_sampling", True))
    if antithetic:
        pop_lib.check_even(size, f"{what} for {name}")


def sanitize_returns(returns: jax.Array) -> jax.Array:
    """Non-finite returns -> (lowest finite return - 1): below every finite member."""
    finite = jnp.isfinite(returns)
    worst = jnp.min(jnp.where(finite, returns, jnp.inf))
    return jnp.where(finite, returns, worst - 1.0)


@dataclasses.dataclass(frozen=True, eq=False)
class RlxStrategy:
    """rlx's OpenAI-ES behind the common interface (fast path: nothing N x D is built)."""

    algo: OpenAIES
    name: str = "openai_es"

    def init(self, key, params, hp: OpenAIESParams):
        return self.algo.init(key, params, hp)

    def ask(self, key, state, hp: OpenAIESParams):
        return self.algo.ask(key, state, hp)[0]

    def tell(self, key, population, returns, state, hp: OpenAIESParams):
        return self.algo.tell(key, population, -returns, state, hp)

    def context(self, state, hp: OpenAIESParams):
        return self.algo.context(state, hp)

    def decode(self, context, member):
        return self.algo.decode(context, member)

    def mean(self, state, hp):
        return self.algo.get_mean(state)


@dataclasses.dataclass(frozen=True, eq=False)
class EvosaxStrategy:
    """Any evosax algorithm behind the common interface.

    Distribution-based algorithms start from the given parameters as their
    mean; population-based ones (GAs, PSO, DE) from the given parameters plus
    sigma-noise, marked unevaluated (+inf). `std_init` (if the algorithm has
    it) is set to sigma; the evaluated "mean" of a population-based algorithm is
    its best member so far.
    """

    algo: Any
    name: str

    @property
    def distribution_based(self) -> bool:
        return hasattr(self.algo, "get_mean")

    def _params(self, hp: OpenAIESParams):
        p = self.algo.default_params
        if hasattr(p, "std_init"):
            p = p.replace(std_init=hp.sigma)
        return p

    def init(self, key, params, hp):
        p = self._params(hp)
        if self.distribution_based:
            return self.algo.init(key, params, p)
        flat, unravel = ravel_pytree(params)
        n = self.algo.population_size
        pop = flat + hp.sigma * jax.random.normal(key, (n, flat.size))
        return self.algo.init(key, jax.vmap(unravel)(pop), jnp.full((n,), jnp.inf), p)

    def ask(self, key, state, hp):
        population, _ = self.algo.ask(key, state, self._params(hp))
        return population

    def tell(self, key, population, returns, state, hp):
        state, metrics = self.algo.tell(key, population, -sanitize_returns(returns), state,
                                        self._params(hp))
        scalars = {k: v for k, v in metrics.items()
                   if jnp.ndim(v) == 0 and k in ("best_fitness", "best_fitness_in_generation")}
        return state, {k: -jnp.asarray(v, jnp.float32) for k, v in scalars.items()}

    def context(self, state, hp):
        return None

    def decode(self, context, member):
        return member

    def mean(self, state, hp):
        if self.distribution_based:
            return self.algo.get_mean(state)
        return self.algo._unravel_solution(state.best_solution)


def make_strategy(name: str, population_size: int, solution: Any, *,
                  lr: float | optax.Schedule = 0.01,
                  sigma: float = 0.02, weight_decay: float = 0.005, mesh: Mesh | None = None,
                  axis: str = AXIS, chunk_size: int | None = None,
                  kwargs: dict | None = None) -> RlxStrategy | EvosaxStrategy:
    """Build a strategy by name (see the module docstring); `kwargs` go to the evosax class.

    `lr` may be an optax schedule (EPG's x0.1 step). For evosax classes that take them,
    `optimizer` defaults to `optax.adam(lr)` and
    `std_schedule` to a constant `sigma`; `mesh` / `chunk_size` only shape rlx's
    OpenAI-ES (evosax's `tell` runs on the gathered N x D population).
    """
    validate_strategy_name(name)
    if name == "openai_es":
        return RlxStrategy(OpenAIES(population_size, solution, optimizer=optax.adam(lr),
                                    sigma=sigma, weight_decay=weight_decay, mesh=mesh, axis=axis,
                                    chunk_size=chunk_size))
    from evosax.algorithms import algorithms

    cls = algorithms[name]
    accepted = inspect.signature(cls.__init__).parameters
    kw = {}
    if "optimizer" in accepted:
        kw["optimizer"] = optax.adam(lr)
    if "std_schedule" in accepted:
        kw["std_schedule"] = optax.constant_schedule(sigma)
    kw.update(kwargs or {})
    return EvosaxStrategy(cls(population_size=population_size, solution=solution, **kw), name)


__all__ = ["OpenAIESParams", "RlxStrategy", "EvosaxStrategy", "make_strategy", "sanitize_returns",
           "validate_strategy_name", "validate_strategy", "check_population", "evosax_names",
           "RLX_STRATEGIES"]
