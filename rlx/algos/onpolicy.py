"""The one on-policy engine: rollout -> batch (advantage estimator) -> epochs x minibatches of
optimiser steps on a loss.

PPO (all four objectives), A2C, n-step soft Q-learning and EPG's inner loop are
configurations of `Engine`: an acting function, a batch function (the advantage
estimator, or a replay of recent steps), a loss function and an optax transformation.
Adding a variant is a new loss (or batch) function, not a copy of a trainer.

One update of `Engine.update(env, state, hparams, *loss_args)`:

    key, k_roll, k_sgd, _ = split(state.key, 4)
    env_state, traj = rollout(env, act, state.env_state, k_roll, unroll_length)
    batch, extra    = batch_fn(params, traj, state, hparams)
    for epoch in 1..epochs:                       # lax.scan
        minibatches of `batch` (a permutation of its leading axis; or the whole batch)
        params <- optimizer_step(loss_fn(params, minibatch, key, hparams, extra, *loss_args))
    obs_stats <- Welford merge of the rollout's observations (if normalising)

`rlx.optim.optimizer_step` is the only place in rlx where an optax update is applied
to parameters (the ES strategies' mean updates go through it too). Data parallelism is `axis_name`: members of a vmapped/sharded axis are
shards of ONE agent (their envs differ; gradients, advantage statistics, observation
statistics and episode counts are all-reduced over the axis).

The batch's leading axis is what minibatches split, so a batch of token sequences
([B, L] with a mask) runs through the same epochs x minibatches loop as a batch of
transitions [T * N]; only `act`/`rollout` and `batch_fn` change.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp
import optax
from flax import struct

from rlx.envs import normalize as obs_norm
from rlx.optim import optimizer_step
from rlx.envs.base import Env, EnvState
from rlx.rollout import Policy, Transition, episode_stats, evaluate, reset, rollout
from rlx.training import Trainer, report

Metrics = dict[str, jax.Array]
# act(params, obs [N, ...] (normalised if enabled), key, hparams) -> (env_action, raw, extras)
ActFn = Callable[[Any, jax.Array, jax.Array, Any], tuple[jax.Array, jax.Array, dict]]
# batch_fn(params, traj [T, N], state, hparams) -> (batch with a leading axis to minibatch, extra)
BatchFn = Callable[[Any, Transition, "EngineState", Any], tuple[Any, Any]]
# loss_fn(params, minibatch, key, hparams, extra, *loss_args) -> (scalar to minimise, aux metrics)
LossFn = Callable[..., tuple[jax.Array, Metrics]]
# optimizer(hparams, update_index) -> optax transformation (hyper-parameters may be traced)
OptimizerFn = Callable[[Any, jax.Array], optax.GradientTransformation]
# mode(params, obs [N, ...] (normalised if enabled), hparams) -> deterministic env action
ModeFn = Callable[[Any, jax.Array, Any], jax.Array]


def sgd(loss_fn: Callable[[Any, Any, jax.Array], tuple[jax.Array, Metrics]],
        tx: optax.GradientTransformation, params: Any, opt_state: Any, batch: Any,
        key: jax.Array, epochs: int, minibatches: int, axis_name: str | None = None
        ) -> tuple[Any, Any, Metrics]:
    """`epochs` passes over `batch`, each `minibatches` optimiser steps on `loss_fn`.

    minibatches >= 1: every epoch draws a permutation of the batch's leading axis and
    splits it into that many equal minibatches (PPO); minibatches = 0: every epoch is
    one step on the whole batch, unshuffled (A2C, soft Q, EPG). `loss_fn(params,
    minibatch, key) -> (loss, aux)`. Returns (params, opt_state, aux) with aux stacked
    `[epochs, minibatches]` (`[epochs]` for minibatches = 0), including "loss" and
    "grad_norm".
    """
    def step(carry, xs):
        p, s = carry
        mb, k = xs
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, mb, k)
        p, s, info = optimizer_step(tx, p, s, grads, axis_name)
        return (p, s), {"loss": loss, **aux, "grad_norm": info["grad_norm"]}

    if minibatches == 0:
        epoch = lambda carry, k: step(carry, (batch, k))  # noqa: E731
    else:
        size = jax.tree.leaves(batch)[0].shape[0]
        if size % minibatches:
            raise ValueError(f"a batch of {size} does not split into {minibatches} minibatches")
        mb_size = size // minibatches

        def epoch(carry, k):
            k_perm, k_mb = jax.random.split(k)
            perm = jax.random.permutation(k_perm, size)
            mbs = jax.tree.map(lambda x: x[perm].reshape((minibatches, mb_size) + x.shape[1:]),
                               batch)
            return jax.lax.scan(step, carry, (mbs, jax.random.split(k_mb, minibatches)))

    (params, opt_state), aux = jax.lax.scan(epoch, (params, opt_state),
                                            jax.random.split(key, epochs))
    return params, opt_state, aux


@struct.dataclass
class EngineState:
    """What every on-policy learner carries; `extra` is the algorithm's own (PPO: the KL
    coefficient; EPG: its replay of recent steps)."""

    params: Any
    opt_state: Any
    obs_stats: obs_norm.RunningStats
    env_state: EnvState
    key: jax.Array
    eval_key: jax.Array
    update: jax.Array  # updates done so far
    hparams: Any
    extra: Any


@struct.dataclass
class UpdateOutput:
    """What one update produced besides the new state: SGD metrics stacked
    `[epochs(, minibatches)]`, the rollout `[T, N]` and the batch it trained on."""

    aux: Metrics
    traj: Transition
    batch: Any


def no_batch(params: Any, traj: Transition, state: EngineState, hparams: Any) -> tuple[Any, Any]:
    """The trajectory itself is the batch (losses that form their own returns: A2C, soft Q)."""
    return traj, state.extra


@dataclasses.dataclass(frozen=True, eq=False)
class Engine:
    """An on-policy learner as data; see the module docstring for one update.

    init_params(key, obs_shape) -> params. Keys of `init`: (params, envs, training,
    evaluation) = split(key, 4); data-parallel shards fold their axis index into the
    env and training keys.
    """

    init_params: Callable[[jax.Array], Any]
    act: ActFn
    mode: ModeFn
    batch_fn: BatchFn
    loss_fn: LossFn
    optimizer: OptimizerFn
    num_envs: int
    unroll_length: int
    epochs: int = 1
    minibatches: int = 0  # 0: one step per epoch on the whole batch
    normalize_observations: bool = False
    axis_name: str | None = None
    init_extra: Callable[[Any], Any] = lambda hparams: ()

    @property
    def steps_per_update(self) -> int:
        return self.num_envs * self.unroll_length

    def normalize(self, stats: obs_norm.RunningStats, obs: jax.Array) -> jax.Array:
        return obs_norm.normalize(stats, obs) if self.normalize_observations else obs

    def init(self, env: Env, key: jax.Array, hparams: Any) -> EngineState:
        k_params, k_env, k_train, k_eval = jax.random.split(key, 4)
        if self.axis_name is not None:  # shards of one agent share params, not envs
            shard = jax.lax.axis_index(self.axis_name)
            k_env, k_train = (jax.random.fold_in(k, shard) for k in (k_env, k_train))
        params = self.init_params(k_params)
        tx = self.optimizer(hparams, jnp.zeros((), jnp.int32))
        return EngineState(params=params, opt_state=tx.init(params),
                           obs_stats=obs_norm.init(env.obs_shape),
                           env_state=reset(env, k_env, self.num_envs), key=k_train,
                           eval_key=k_eval, update=jnp.zeros((), jnp.int32), hparams=hparams,
                           extra=self.init_extra(hparams))

    def policy(self, state: EngineState, params: Any | None = None) -> Policy:
        """The acting policy of `state` as `rlx.rollout` takes it (observations normalised)."""
        params = state.params if params is None else params
        return lambda obs, k: self.act(params, self.normalize(state.obs_stats, obs), k,
                                       state.hparams)

    def collect(self, env: Env, state: EngineState, key: jax.Array, length: int
                ) -> tuple[EnvState, Transition]:
        env_state, traj = rollout(env, self.policy(state), state.env_state, key, length)
        chex.assert_shape(traj.reward, (length, self.num_envs))
        return env_state, traj

    def update(self, env: Env, state: EngineState, *loss_args: Any
               ) -> tuple[EngineState, UpdateOutput]:
        """One update (see the module docstring)."""
        hp = state.hparams
        key, k_roll, k_sgd, _ = jax.random.split(state.key, 4)
        env_state, traj = self.collect(env, state, k_roll, self.unroll_length)
        batch, extra = self.batch_fn(state.params, traj, state, hp)
        tx = self.optimizer(hp, state.update)

        def loss(params, mb, k):
            return self.loss_fn(params, mb, k, hp, extra, *loss_args)

        params, opt_state, aux = sgd(loss, tx, state.params, state.opt_state, batch, k_sgd,
                                     self.epochs, self.minibatches, self.axis_name)
        stats = (obs_norm.update(state.obs_stats, traj.obs, self.axis_name)
                 if self.normalize_observations else state.obs_stats)
        state = state.replace(params=params, opt_state=opt_state, obs_stats=stats,
                              env_state=env_state, key=key, update=state.update + 1, extra=extra)
        return state, UpdateOutput(aux=aux, traj=traj, batch=batch)

    def act_deterministic(self, state: EngineState) -> Callable[[jax.Array], jax.Array]:
        return lambda obs: self.mode(state.params, self.normalize(state.obs_stats, obs),
                                     state.hparams)

    def evaluate(self, env: Env, state: EngineState, key: jax.Array, episodes: int) -> Metrics:
        """`rlx.rollout.evaluate` of the deterministic policy; data-parallel shards each run
        `episodes` of their own and average."""
        if self.axis_name is None:
            return evaluate(env, self.act_deterministic(state), key, episodes)
        key = jax.random.fold_in(key, jax.lax.axis_index(self.axis_name))
        return jax.lax.pmean(evaluate(env, self.act_deterministic(state), key, episodes),
                             self.axis_name)


def episode_metrics(traj: Transition, axis_name: str | None = None) -> Metrics:
    """Finished-episode sums of a rollout and their mean return (0 where none finished),
    summed over data-parallel shards."""
    ep = episode_stats(traj)
    if axis_name is not None:
        ep = jax.lax.psum(ep, axis_name)
    return {**ep, "episode_return": ep["episode_return_sum"] / jnp.maximum(ep["episode_count"], 1.0)}


def make_trainer(engine: Engine, env: Env, *, hparams: Any, total_steps: int, num_evals: int,
                 eval_envs: int, config: Any = None,
                 finish: Callable[[EngineState, UpdateOutput], tuple[EngineState, Metrics]]
                 | None = None,
                 on_update: Callable[[jax.Array, jax.Array], None] | None = None) -> Trainer:
    """A `rlx.training.Trainer` running `engine` on `env`: `total_steps` env steps per member
    (rounded up to whole evaluation chunks), `num_evals` evaluations of `eval_envs` episodes.

    `finish(state, output) -> (state, metrics)` turns one update's `UpdateOutput` into the
    logged metrics (default: the means of its SGD metrics) and may update `state.extra`;
    finished-episode statistics (`episode_metrics`) are added after it.
    """
    steps_per_update = engine.steps_per_update
    updates_per_eval = max(1, math.ceil(total_steps / ((num_evals - 1) * steps_per_update)))

    def init(key: jax.Array, hp: Any) -> EngineState:
        return engine.init(env, key, hp)

    def update(state: EngineState) -> tuple[EngineState, Metrics]:
        state, out = engine.update(env, state)
        if finish is None:
            metrics = {k: v.mean() for k, v in out.aux.items()}
        else:
            state, metrics = finish(state, out)
        metrics.update(episode_metrics(out.traj, engine.axis_name))
        report(on_update, state.update, metrics["episode_return"], state)
        return state, metrics

    def evaluate_fn(state: EngineState) -> Metrics:
        return engine.evaluate(env, state, jax.random.fold_in(state.eval_key, state.update),
                               eval_envs)

    return Trainer(init=init, update=update, evaluate=evaluate_fn, default_hparams=hparams,
                   num_evals=num_evals, updates_per_eval=updates_per_eval,
                   steps_per_update=steps_per_update, axis_name=engine.axis_name, config=config)


__all__ = ["Engine", "EngineState", "UpdateOutput", "sgd", "no_batch", "episode_metrics",
           "make_trainer"]
