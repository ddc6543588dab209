"""EPG's outer loop: ES over the learned loss's parameters, as a `rlx.training.Trainer`.

One update is one generation (Houthooft et al. 2018, Algorithm 1), run by the
ES generation loop `rlx.es.loop.make_trainer` with the default strategy
(`strategy="openai_es"`; any `rlx.es.strategies` name works):

    members  = antithetic (key, sign) pairs           rlx.es.OpenAIES.ask
    phi_i    = mu + sigma * s_i * eps(k_i)             regenerated on the member's device
    tasks    = tasks_per_member goals from the training region (a mirrored pair shares them)
    F_i      = mean over its tasks of the final return of an inner lifetime trained on L_phi_i
    mu      <- Adam(-g + lambda mu),  g = 1/(N sigma) sum_i rank(F)_i s_i eps(k_i)

The N x K inner lifetimes are one `shard_map` over the device mesh (members
P('pop'), each device vmaps its own members x tasks); only N fitness scalars and
one D-vector all-reduce (the ES gradient) cross devices. The PPO auxiliary
weight alpha = ppo_coef * max(0, 1 - generation / (ppo_anneal_frac * G)).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, PartitionSpec as P

from rlx import population as pop_lib
from rlx.epg.config import EPGConfig, openai_epg
from rlx.epg.inner import Inner
from rlx.es import strategies
from rlx.es.loop import SearchState, SearchTrainer, make_trainer

EPGState = SearchState  # EPG keeps nothing beyond the search state


def ppo_weight(config: EPGConfig, generation: jax.Array) -> jax.Array:
    """alpha(g) = ppo_coef * clip(1 - g / (ppo_anneal_frac * G), 0, 1); constant if frac = 0."""
    if config.ppo_coef == 0:
        return jnp.zeros((), jnp.float32)
    if config.ppo_anneal_frac == 0:
        return jnp.asarray(config.ppo_coef, jnp.float32)
    span = config.ppo_anneal_frac * config.generations
    return config.ppo_coef * jnp.clip(1.0 - generation.astype(jnp.float32) / span, 0.0, 1.0)


def make_strategy(config: EPGConfig, template: Any, mesh: Mesh | None) -> Any:
    """`config.strategy` over the loss parameters; Adam's step is x0.1 after
    `outer_lr_decay_at` of the generations (for strategies with an optimizer)."""
    decay_at = int(config.outer_lr_decay_at * config.generations)
    lr = (optax.piecewise_constant_schedule(config.outer_lr, {decay_at: 0.1})
          if config.outer_lr_decay_at < 1 else config.outer_lr)
    return strategies.make_strategy(config.strategy, config.population_size, template, lr=lr,
                                    sigma=config.sigma, weight_decay=config.weight_decay,
                                    mesh=mesh, kwargs=dict(config.strategy_kwargs))


def build(config: EPGConfig, mesh: Mesh | None = None):
    """(inner, strategy, mesh) on `mesh` (None: one device, not sharded), validated before any
    compile."""
    config.validate()
    pop_lib.local_size(config.population_size, mesh)
    inner = Inner(config)
    template = inner.init_loss_params(jax.random.PRNGKey(0))
    return inner, make_strategy(config, template, mesh), mesh


def population_fitness(config: EPGConfig, inner: Inner, strategy: Any, mesh: Mesh | None,
                       context: Any, members: Any, key: jax.Array, alpha: jax.Array):
    """Final returns [N, K] of every member on its K tasks and each member's mean learned
    loss [N], sharded over `mesh`. `members`: any strategy's population (leading axis N)."""
    family = inner.family
    k = config.tasks_per_member

    def local(context, members, key, alpha):
        index = pop_lib.member_index(pop_lib.size(members), mesh)

        def one(member, i):
            phi = strategy.decode(context, member)
            pair_key = jax.random.fold_in(key, i // 2)  # a mirrored pair: same tasks and seeds
            k_task, k_life = jax.random.split(pair_key)
            tasks = family.sample(k_task, k, config.train_region)
            ret, m = jax.vmap(lambda t, kk: inner.lifetime(phi, t, kk, alpha))(
                tasks, jax.random.split(k_life, k))
            return ret, m["loss"].mean()

        return jax.vmap(one)(members, index)

    if mesh is not None:
        pop_lib.check_divisible(pop_lib.size(members), mesh)
        local = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(pop_lib.AXIS), P(), P()),
                              out_specs=(P(pop_lib.AXIS), P(pop_lib.AXIS)), check_vma=False)
    return local(context, members, key, alpha)


def make_train(config: EPGConfig, mesh: Mesh | None = None,
               on_update: Callable[[jax.Array, jax.Array], None] | None = None) -> SearchTrainer:
    """EPG as a `Trainer` whose population of loss perturbations is sharded over `mesh` (None:
    one device; the runner places it on the devices it runs on, `rlx.runner.place`).

    Train metrics per generation: return_mean/max/min (fitness over members),
    alpha (PPO weight), learned_loss, env_steps, params_norm (+ the strategy's own:
    grad_norm, update_norm for OpenAI-ES).
    Eval metrics: the mean loss trains fresh agents on `eval_tasks` new training-region
    tasks (eval_return) and test-region tasks (ood_return), alpha as at that generation.
    """
    inner, strategy, mesh = build(config, mesh)
    family = inner.family
    steps_per_gen = config.population_size * config.tasks_per_member * config.inner_env_steps
    updates_per_eval = max(1, math.ceil(config.generations / (config.num_evals - 1)))

    def fitness(context: Any, members: Any, key: jax.Array, state: EPGState):
        alpha = ppo_weight(config, state.generation)
        returns, loss = population_fitness(config, inner, strategy, mesh, context, members, key,
                                           alpha)
        return returns.mean(1), (alpha, loss)

    def after_tell(state: EPGState, aux) -> tuple[EPGState, dict]:
        alpha, loss = aux
        return state, {"alpha": alpha,
                       "learned_loss": jnp.where(jnp.isfinite(loss), loss, 0.0).sum()
                       / jnp.maximum(jnp.isfinite(loss).sum(), 1),  # diverged members rank last
                       "env_steps": jnp.asarray(steps_per_gen, jnp.float32)}

    def evaluate_mean(phi: Any, state: EPGState) -> dict:
        key = jax.random.fold_in(state.eval_key, state.generation)
        alpha = ppo_weight(config, state.generation)
        k_in, k_out, k_life = jax.random.split(key, 3)
        n = config.eval_tasks
        tasks = jnp.concatenate([family.sample(k_in, n, config.train_region),
                                 family.sample(k_out, n, config.test_region)])
        ret, _ = jax.vmap(lambda t, k: inner.lifetime(phi, t, k, alpha))(
            tasks, jax.random.split(k_life, 2 * n))
        return {"eval_return": ret[:n].mean(), "ood_return": ret[n:].mean()}

    return make_trainer(strategy, inner.init_loss_params, fitness, evaluate_mean,
                        default_hparams=config.hparams(), num_evals=config.num_evals,
                        updates_per_eval=updates_per_eval, steps_per_update=steps_per_gen,
                        mesh=mesh, place=lambda m: make_train(config, m, on_update),
                        config=config, state_type=EPGState, after_tell=after_tell,
                        on_update=on_update)


def loss_params(config: EPGConfig, state: EPGState) -> Any:
    """The learned loss (what the strategy proposes: its mean) of a trained state, as a
    parameter pytree."""
    template = Inner(config).init_loss_params(jax.random.PRNGKey(0))
    return make_strategy(config, template, None).mean(state.strategy_state, state.hparams)


__all__ = ["EPGConfig", "EPGState", "make_train", "build", "ppo_weight", "population_fitness",
           "loss_params", "make_strategy", "openai_epg"]
