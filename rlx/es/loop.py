"""The one ES generation loop: any strategy, any fitness, as a `rlx.training.Trainer`.

One update is one generation:

    key, k_ask, k_eval, k_tell = split(state.key, 4)
    population     = strategy.ask(k_ask, ...)                  # keys + signs (rlx) or N x D (evosax)
    returns, aux   = fitness(context, population, k_eval, state)   # [N], sharded by the fitness
    strategy_state = strategy.tell(k_tell, population, returns, ...)  # returns maximised
    state, metrics = after_tell(state, aux)                    # the caller's own state and metrics

`rlx.es.trainer` (policies on environments: `after_tell` merges observation
statistics) and `rlx.epg.trainer` (learned losses: the PPO weight and the
learned loss's value) are configurations of `make_trainer`. The strategy is any
`rlx.es.strategies` strategy; the only way to read what it proposes is
`strategy.mean(strategy_state, hparams)` (`mean_vector` for a trainer's state).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import struct
from jax.flatten_util import ravel_pytree

from rlx.es.openai_es import OpenAIESParams
from rlx.training import Trainer, report

Metrics = dict[str, jax.Array]


@struct.dataclass
class SearchState:
    """What every ES run carries (trainers with more state subclass it)."""

    strategy_state: Any
    key: jax.Array
    eval_key: jax.Array
    generation: jax.Array
    hparams: OpenAIESParams


# fitness(context, population, key, state) -> (returns [N], aux); `state` is the state before
# this generation (for what the caller keeps in it, e.g. observation statistics)
Fitness = Callable[[Any, Any, jax.Array, Any], tuple[jax.Array, Any]]
# after_tell(state, aux) -> (state, metrics): `state` already holds the told strategy state,
# the new key and generation; the caller updates its own fields and adds metrics
AfterTell = Callable[[Any, Any], tuple[Any, Metrics]]
# evaluate_mean(params, state) -> eval metrics of the parameters the strategy proposes
EvaluateMean = Callable[[Any, Any], Metrics]


@dataclasses.dataclass(frozen=True, eq=False)
class SearchTrainer(Trainer):
    """A `Trainer` whose state is a `SearchState` driven by `strategy`."""

    strategy: Any = None


def fitness_metrics(returns: jax.Array) -> dict[str, jax.Array]:
    """Mean / max / min over finite returns and the count of non-finite ones."""
    finite = jnp.isfinite(returns)
    n = jnp.maximum(finite.sum(), 1)
    mean = jnp.where(finite, returns, 0.0).sum() / n
    mean = jnp.where(finite.any(), mean, jnp.nan)
    return {"return_mean": mean,
            "return_max": jnp.max(jnp.where(finite, returns, -jnp.inf)),
            "return_min": jnp.min(jnp.where(finite, returns, jnp.inf)),
            "nonfinite_members": (~finite).sum().astype(jnp.float32)}


def make_trainer(strategy: Any, init_params: Callable[[jax.Array], Any], fitness: Fitness,
                 evaluate_mean: EvaluateMean, *, default_hparams: OpenAIESParams,
                 num_evals: int, updates_per_eval: int, steps_per_update: int, mesh: Any = None,
                 place: Callable[[Any], SearchTrainer] | None = None, config: Any = None, state_type: type = SearchState,
                 init_extra: Callable[[], dict[str, Any]] | None = None,
                 after_tell: AfterTell | None = None,
                 on_update: Callable[[jax.Array, jax.Array], None] | None = None
                 ) -> SearchTrainer:
    """The generation loop of `strategy` on `fitness` (see the module docstring).

    init_params(key) -> the parameter pytree the search starts from (its shape is the
    strategy's template). init_extra() -> the initial values of `state_type`'s own fields.
    Train metrics: `fitness_metrics(returns)`, the strategy's `tell` metrics, `after_tell`'s,
    and params_norm (of the proposed parameters). Eval metrics: `evaluate_mean`'s.
    mesh: the mesh `strategy` and `fitness` shard the population over (None: one device);
    place(mesh): the same search rebuilt on another mesh (`rlx.runner.place` calls it).
    """

    def init(key: jax.Array, hp: OpenAIESParams) -> SearchState:
        k_params, k_strategy, k_train, k_eval = jax.random.split(key, 4)
        params = init_params(k_params)
        return state_type(strategy_state=strategy.init(k_strategy, params, hp), key=k_train,
                          eval_key=k_eval, generation=jnp.zeros((), jnp.int32), hparams=hp,
                          **(init_extra() if init_extra is not None else {}))

    def update(state: SearchState) -> tuple[SearchState, Metrics]:
        hp = state.hparams
        key, k_ask, k_eval, k_tell = jax.random.split(state.key, 4)
        population = strategy.ask(k_ask, state.strategy_state, hp)
        returns, aux = fitness(strategy.context(state.strategy_state, hp), population, k_eval,
                               state)
        ss, extra = strategy.tell(k_tell, population, returns, state.strategy_state, hp)
        new_state = state.replace(strategy_state=ss, key=key, generation=state.generation + 1)
        own: Metrics = {}
        if after_tell is not None:
            new_state, own = after_tell(new_state, aux)
        metrics = {**fitness_metrics(returns), **extra, **own,
                   "params_norm": jnp.linalg.norm(ravel_pytree(strategy.mean(ss, hp))[0])}
        report(on_update, new_state.generation, metrics["return_mean"], new_state)
        return new_state, metrics

    def evaluate(state: SearchState) -> Metrics:
        return evaluate_mean(strategy.mean(state.strategy_state, state.hparams), state)

    return SearchTrainer(init=init, update=update, evaluate=evaluate,
                         default_hparams=default_hparams, num_evals=num_evals,
                         updates_per_eval=updates_per_eval, steps_per_update=steps_per_update,
                         mesh=mesh, place=place, config=config, strategy=strategy)


def mean_vector(trainer: SearchTrainer, state: SearchState) -> jax.Array:
    """The flat parameters [D] the trainer's strategy proposes (its mean; a GA's best member),
    or [M, D] for a state with a leading member axis (the runner's seeds)."""
    def one(s: SearchState) -> jax.Array:
        return ravel_pytree(trainer.strategy.mean(s.strategy_state, s.hparams))[0]

    return one(state) if jnp.ndim(state.generation) == 0 else jax.vmap(one)(state)


__all__ = ["SearchState", "SearchTrainer", "make_trainer", "fitness_metrics", "mean_vector",
           "Fitness", "AfterTell", "EvaluateMean"]
