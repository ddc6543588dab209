"""Proximal Policy Optimization (Schulman et al. 2017) as `make_train(config) -> train(key)`.

One update: roll out `num_envs x unroll_length` steps, compute GAE with the
rollout-time values (bootstrapping through truncation), run `update_epochs`
epochs of `num_minibatches` Adam steps on the PPO objective, then update the
observation statistics and (for the adaptive variant) the KL coefficient.

The paper's variants are values, not code paths: the surrogate is
`ppo_surrogate(clip_eps) + kl_beta * KL[pi_old, pi]` with the adaptive beta rule
when `kl_target > 0`, so the whole clipping ablation (and any hyper-parameter
sweep) is one vmapped program over `PPOHParams`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import struct

from rlx import distributions, losses
from rlx.envs import make as make_env
from rlx.envs import normalize as obs_norm
from rlx.envs import validate_env_name
from rlx.envs.base import Env
from rlx.algos.onpolicy import Engine, EngineState, UpdateOutput, make_trainer
from rlx.optim import clipped_adam
from rlx.networks import ACTIVATIONS, ActorCritic
from rlx.training import Trainer

OBJECTIVES = ("clip", "none", "kl_fixed", "kl_adaptive")


@struct.dataclass
class PPOHParams:
    """Hyper-parameters that may differ across a vmapped population of agents."""

    lr: jax.Array
    clip_eps: jax.Array  # inf: no clipping
    kl_beta: jax.Array  # initial KL-penalty coefficient (0: no penalty)
    kl_target: jax.Array  # > 0: adapt beta towards this KL (the paper's d_targ)
    ent_coef: jax.Array
    vf_coef: jax.Array
    gamma: jax.Array
    gae_lambda: jax.Array
    max_grad_norm: jax.Array  # inf: no clipping
    reward_scaling: jax.Array


def objective_hparams(objective: str, clip_eps: float = 0.2, kl_beta: float = 1.0,
                      kl_target: float = 0.01) -> dict[str, float]:
    """The (clip_eps, kl_beta, kl_target) triple that selects a PPO paper variant.

    clip: clipped surrogate;  none: plain ratio surrogate;  kl_fixed: surrogate +
    beta KL;  kl_adaptive: the same with beta adapted towards `kl_target`.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown PPO objective {objective!r}; valid: {', '.join(OBJECTIVES)}")
    inf = float("inf")
    return {
        "clip": dict(clip_eps=clip_eps, kl_beta=0.0, kl_target=0.0),
        "none": dict(clip_eps=inf, kl_beta=0.0, kl_target=0.0),
        "kl_fixed": dict(clip_eps=inf, kl_beta=kl_beta, kl_target=0.0),
        "kl_adaptive": dict(clip_eps=inf, kl_beta=kl_beta, kl_target=kl_target),
    }[objective]


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """Everything a PPO run needs. Defaults: a small CPU run on Brax reacher."""

    env: str = "reacher"
    backend: str = "spring"  # Brax physics backend (ignored for gymnax envs)
    episode_length: int | None = None  # time limit; None: the env's own (Brax: 1000)
    fresh_reset: bool = True  # Brax: new random start per episode (False: Brax's cached start)
    total_steps: int = 1_000_000
    num_envs: int = 64
    unroll_length: int = 128  # steps per env per update
    num_minibatches: int = 8
    update_epochs: int = 4
    objective: str = "clip"
    clip_eps: float = 0.2
    kl_beta: float = 1.0
    kl_target: float = 0.01
    lr: float = 3e-4
    anneal_lr: bool = False
    max_grad_norm: float = 0.5
    gamma: float = 0.99
    gae_lambda: float = 0.95
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    reward_scaling: float = 1.0
    normalize_advantages: bool = True
    clip_value: bool = False  # value loss clipped at clip_eps around the rollout's values (PureJaxRL)
    normalize_observations: bool = True
    head: str = "auto"  # auto: categorical (discrete) / gaussian (continuous)
    policy_layers: tuple[int, ...] = (64, 64)
    value_layers: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    num_evals: int = 5
    eval_envs: int = 16  # per data-parallel shard
    axis_name: str | None = None  # data parallelism: envs split over this vmap/mesh axis
    # Data parallelism as an option: one agent whose envs, eval episodes and steps are split
    # over this many shards (devices); gradients and statistics are averaged over them.
    data_parallel: int = 1

    def validate(self) -> None:
        """Raise `ValueError` for any value that cannot work, before anything compiles."""
        validate_env_name(self.env)
        positive = ("total_steps", "num_envs", "unroll_length", "num_minibatches", "update_epochs",
                    "eval_envs", "lr")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"PPOConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if self.num_evals < 2:
            raise ValueError(f"PPOConfig.num_evals must be >= 2 (first and last), got {self.num_evals}")
        batch = self.num_envs * self.unroll_length
        if batch % self.num_minibatches:
            raise ValueError(
                f"num_envs x unroll_length = {self.num_envs} x {self.unroll_length} = {batch} "
                f"is not divisible by num_minibatches = {self.num_minibatches}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"unknown PPO objective {self.objective!r}; valid: {', '.join(OBJECTIVES)}")
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {self.gamma}")
        if not 0.0 <= self.gae_lambda <= 1.0:
            raise ValueError(f"gae_lambda must be in [0, 1], got {self.gae_lambda}")
        if self.clip_eps <= 0 or self.kl_beta < 0 or self.kl_target < 0:
            raise ValueError("clip_eps must be > 0 and kl_beta, kl_target >= 0, got "
                             f"{self.clip_eps}, {self.kl_beta}, {self.kl_target}")
        if self.head not in ("auto",) + distributions.HEADS:
            raise ValueError(f"unknown head {self.head!r}; valid: auto, {', '.join(distributions.HEADS)}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; valid: {', '.join(ACTIVATIONS)}")
        if self.data_parallel < 1:
            raise ValueError(f"PPOConfig.data_parallel must be >= 1, got {self.data_parallel!r}")
        for name in ("num_envs", "eval_envs"):
            if getattr(self, name) % self.data_parallel:
                raise ValueError(f"PPOConfig.{name} = {getattr(self, name)} does not split over "
                                 f"data_parallel = {self.data_parallel} shards")

    def shard(self) -> "PPOConfig":
        """The config of one data-parallel shard: 1/data_parallel of the envs, evaluation
        episodes and steps, collectives over the axis "dp" (itself when data_parallel = 1)."""
        d = self.data_parallel
        if d == 1:
            return self
        return dataclasses.replace(self, num_envs=self.num_envs // d, eval_envs=self.eval_envs // d,
                                   total_steps=-(-self.total_steps // d), axis_name="dp",
                                   data_parallel=1)

    def hparams(self) -> PPOHParams:
        """This config's hyper-parameters as the arrays `train` takes."""
        obj = objective_hparams(self.objective, self.clip_eps, self.kl_beta, self.kl_target)
        values = dict(lr=self.lr, ent_coef=self.ent_coef, vf_coef=self.vf_coef, gamma=self.gamma,
                      gae_lambda=self.gae_lambda, reward_scaling=self.reward_scaling,
                      max_grad_norm=self.max_grad_norm, **obj)
        return PPOHParams(**{k: jnp.asarray(v, jnp.float32) for k, v in values.items()})


PPOState = EngineState  # extra: the current KL coefficient (changes only for kl_adaptive)


def head_for(config: PPOConfig, env: Env) -> str:
    if config.head != "auto":
        if config.head == "categorical" and not env.action_spec.discrete:
            raise ValueError(f"head 'categorical' needs discrete actions; {env.name} is continuous")
        if config.head != "categorical" and env.action_spec.discrete:
            raise ValueError(f"head {config.head!r} needs continuous actions; {env.name} is discrete")
        return config.head
    return "categorical" if env.action_spec.discrete else "gaussian"


def make_network(config: PPOConfig, env: Env) -> ActorCritic:
    return ActorCritic(action_size=env.action_spec.size, head=head_for(config, env),
                       policy_layers=tuple(config.policy_layers),
                       value_layers=tuple(config.value_layers), activation=config.activation,
                       obs_ndim=len(env.obs_shape))


def ppo_loss(net: ActorCritic, params: Any, mb: dict, hp: PPOHParams, beta: jax.Array,
             key: jax.Array, normalize_advantages: bool = True, axis_name: str | None = None,
             clip_value: bool = False) -> tuple[jax.Array, dict]:
    """PPO's objective on a minibatch (to minimise), every paper variant as values:

        L = ppo_surrogate(clip_eps) + beta KL[pi_old, pi] + vf_coef L_V - ent_coef H[pi]

    `mb`: obs, action (raw), log_prob and dist_params of the behaviour policy,
    advantages and value targets (`make_batch`).
    """
    head = net.head
    dist_params, value = net.apply(params, mb["obs"])
    dist = distributions.make(head, dist_params)
    log_prob = dist.log_prob(mb["action"])
    adv = mb["advantages"]
    if normalize_advantages:
        adv = losses.normalize(adv, axis_name)
    pg = losses.ppo_surrogate(log_prob, mb["log_prob"], adv, hp.clip_eps)
    kl = distributions.make(head, mb["dist_params"]).kl(dist)
    kl_term = losses.kl_penalty(kl, beta)
    if clip_value:  # mb["value"]: the rollout-time values
        v_loss = losses.value_loss(value, mb["targets"], mb["value"], hp.clip_eps)
    else:
        v_loss = losses.value_loss(value, mb["targets"])
    ent = dist.entropy(key)
    total = pg + kl_term + hp.vf_coef * v_loss + hp.ent_coef * losses.entropy_loss(ent)
    aux = {"policy_loss": pg, "value_loss": v_loss, "entropy": ent.mean(), "kl": kl.mean(),
           "approx_kl": losses.approx_kl(log_prob, mb["log_prob"]),
           "clip_frac": losses.clip_fraction(log_prob, mb["log_prob"], hp.clip_eps)}
    return total, aux


def make_engine(config: PPOConfig, env: Env) -> Engine:
    """PPO as a configuration of `rlx.algos.onpolicy.Engine` (validated config assumed)."""
    net = make_network(config, env)
    head = net.head
    T, N = config.unroll_length, config.num_envs
    batch_size = T * N
    num_updates = max(1, math.ceil(config.total_steps / ((config.num_evals - 1) * batch_size))
                      ) * (config.num_evals - 1)
    axis = config.axis_name

    def act(params, obs, k, hp):
        dist_params, value = net.apply(params, obs)
        dist = distributions.make(head, dist_params)
        raw = dist.sample(k)
        return dist.to_env(raw), raw, {"log_prob": dist.log_prob(raw), "dist_params": dist_params,
                                       "value": value}

    def mode(params, obs, hp):
        return distributions.make(head, net.apply(params, obs)[0]).mode()

    def make_batch(params, traj, state: EngineState, hp: PPOHParams):
        """GAE with the rollout-time values, bootstrapping from `final_obs`; flattened to [T*N]."""
        norm = lambda o: (obs_norm.normalize(state.obs_stats, o)  # noqa: E731
                          if config.normalize_observations else o)
        # one time step at a time: the whole batch at once would hold [T*N, width] activations
        next_values = jax.lax.map(lambda o: net.apply(params, norm(o))[1], traj.final_obs)
        advantages, targets = losses.gae(traj.reward * hp.reward_scaling, traj.extras["value"],
                                         next_values, traj.terminated, traj.done,
                                         hp.gamma, hp.gae_lambda)
        batch = {"obs": norm(traj.obs), "action": traj.action,
                 "log_prob": traj.extras["log_prob"], "dist_params": traj.extras["dist_params"],
                 "advantages": advantages, "targets": targets}
        if config.clip_value:
            batch["value"] = traj.extras["value"]
        return jax.tree.map(lambda x: x.reshape((batch_size,) + x.shape[2:]), batch), state.extra

    def loss_fn(params, mb, key, hp, beta):
        return ppo_loss(net, params, mb, hp, beta, key, config.normalize_advantages, axis,
                        config.clip_value)

    def optimizer(hp: PPOHParams, update):
        lr = hp.lr * (1.0 - update / num_updates if config.anneal_lr else 1.0)
        return clipped_adam(lr, hp.max_grad_norm)

    return Engine(init_params=lambda k: net.init(k, jnp.zeros((1,) + env.obs_shape, jnp.float32)),
                  act=act, mode=mode, batch_fn=make_batch, loss_fn=loss_fn, optimizer=optimizer,
                  num_envs=N, unroll_length=T, epochs=config.update_epochs,
                  minibatches=config.num_minibatches,
                  normalize_observations=config.normalize_observations, axis_name=axis,
                  init_extra=lambda hp: jnp.asarray(hp.kl_beta, jnp.float32))


def make_train(config: PPOConfig, env: Env | None = None,
               on_update: Callable[[jax.Array, jax.Array], None] | None = None) -> Trainer:
    """Build PPO's pure functions for `config` (validated here, before any compile).

    `on_update(update_index, mean_episode_return)`: a host hook after every update
    (`rlx.training.report`; the runner's own progress bar needs none). With
    `config.data_parallel = D > 1` the trainer's members are the D shards of one agent
    (`Trainer.shards`; `rlx.runner.run` places them, one per device).
    """
    config.validate()
    shards, config = config.data_parallel, config.shard()
    env = env or make_env(config.env, backend=config.backend, episode_length=config.episode_length,
                          fresh_reset=config.fresh_reset)
    engine = make_engine(config, env)
    net = make_network(config, env)
    head = net.head
    M = config.num_minibatches
    mb_size = engine.steps_per_update // M
    axis = config.axis_name

    def finish(state: EngineState, step: UpdateOutput) -> tuple[EngineState, dict]:
        """KL[pi_old, pi_new] over the whole batch (minibatch by minibatch: the adaptive
        penalty's d and a log), then the adaptive beta rule."""
        def batch_kl(mb):
            new_dist_params, _ = net.apply(state.params, mb["obs"])
            return distributions.make(head, mb["dist_params"]).kl(
                distributions.make(head, new_dist_params)).mean()

        chunks = jax.tree.map(lambda x: x.reshape((M, mb_size) + x.shape[1:]),
                              {"obs": step.batch["obs"], "dist_params": step.batch["dist_params"]})
        kl = jax.lax.map(batch_kl, chunks).mean()
        if axis is not None:
            kl = jax.lax.pmean(kl, axis)
        kl_beta = losses.adaptive_kl_beta(state.extra, kl, state.hparams.kl_target)
        metrics = {k: v.mean() for k, v in step.aux.items()}
        metrics.update(kl_full=kl, kl_beta=kl_beta)
        return state.replace(extra=kl_beta), metrics

    trainer = make_trainer(engine, env, hparams=config.hparams(), total_steps=config.total_steps,
                           num_evals=config.num_evals, eval_envs=config.eval_envs, config=config,
                           finish=finish, on_update=on_update)
    return dataclasses.replace(trainer, shards=shards)


def policy_fn(config: PPOConfig, env: Env, deterministic: bool = True):
    """`act(state, obs, key) -> env action` for a trained `PPOState` (inspection, notebooks)."""
    net = make_network(config, env)

    def act(state: PPOState, obs: jax.Array, key: jax.Array | None = None) -> jax.Array:
        o = obs_norm.normalize(state.obs_stats, obs) if config.normalize_observations else obs
        dist = distributions.make(net.head, net.apply(state.params, o)[0])
        return dist.mode() if deterministic else dist.to_env(dist.sample(key))

    return act


# Named sets of PPOConfig overrides (`experiments.ppo --preset`, `experiments.bench_ppo`).
PRESETS: dict[str, dict] = {
    # a small config that learns quickly on CPU (Brax envs)
    "default": dict(num_envs=64, unroll_length=128, num_minibatches=8, update_epochs=4, lr=3e-4,
                    gamma=0.95, reward_scaling=5.0, ent_coef=0.0, num_evals=11, eval_envs=32),
    # Brax's PPO defaults (bench_ppo.py and ../shared/anchors/brax_ppo.py)
    "brax": dict(num_envs=256, unroll_length=1600, num_minibatches=32, update_epochs=8, lr=3e-4,
                 gamma=0.95, gae_lambda=0.95, clip_eps=0.3, ent_coef=1e-3, reward_scaling=5.0,
                 max_grad_norm=float("inf"), head="tanh_gaussian", policy_layers=(32,) * 4,
                 value_layers=(256,) * 5, activation="swish", num_evals=5, eval_envs=128,
                 fresh_reset=False),
    # MuJoCo Playground's DM Control Suite PPO settings at CPU size: Brax's networks, discount
    # 0.995, reward scaling 10, lr 1e-3, entropy 1e-2, and whole 1000-step episodes per update
    # (32 envs x 1000 steps: the envs never terminate, so short unrolls see one slice of the
    # episode per update; measured on CartpoleBalance in the README)
    "playground": dict(num_envs=32, unroll_length=1000, num_minibatches=32, update_epochs=4,
                       lr=1e-3, gamma=0.995, gae_lambda=0.95, clip_eps=0.3, ent_coef=1e-2,
                       reward_scaling=10.0, max_grad_norm=float("inf"), head="tanh_gaussian",
                       policy_layers=(32,) * 4, value_layers=(64, 64), activation="swish",
                       num_evals=5, eval_envs=32, fresh_reset=False),
    # PureJaxRL's hyper-parameters without its value clipping (other gymnax envs)
    "classic": dict(num_envs=4, unroll_length=128, num_minibatches=4, update_epochs=4, lr=2.5e-4,
                    anneal_lr=True, gamma=0.99, ent_coef=0.01, normalize_observations=False,
                    num_evals=11, eval_envs=32),
    # PureJaxRL's purejaxrl/ppo.py (CartPole-v1): 4 envs x 128 steps, 4 epochs of 4 minibatches,
    # lr 2.5e-4 annealed to 0, 64-64 tanh, clipped value loss, no observation normalisation,
    # 500k steps (gymnax classic control)
    "purejaxrl": dict(num_envs=4, unroll_length=128, num_minibatches=4, update_epochs=4, lr=2.5e-4,
                      anneal_lr=True, gamma=0.99, gae_lambda=0.95, clip_eps=0.2, ent_coef=0.01,
                      vf_coef=0.5, max_grad_norm=0.5, clip_value=True, policy_layers=(64, 64),
                      value_layers=(64, 64), activation="tanh", normalize_observations=False,
                      total_steps=500_000, num_evals=11, eval_envs=32),
    # PureJaxRL's examples/brax_minatar.ipynb (gymnax MinAtar): 64 envs x 128 steps, 4 epochs of
    # 8 minibatches, lr 5e-3 annealed to 0, 64-64 relu on flattened frames, clipped value loss,
    # 10M steps
    "minatar": dict(num_envs=64, unroll_length=128, num_minibatches=8, update_epochs=4, lr=5e-3,
                    anneal_lr=True, gamma=0.99, gae_lambda=0.95, clip_eps=0.2, ent_coef=0.01,
                    vf_coef=0.5, max_grad_norm=0.5, clip_value=True, policy_layers=(64, 64),
                    value_layers=(64, 64), activation="relu", normalize_observations=False,
                    total_steps=10_000_000, num_evals=11, eval_envs=32),
}
# Tiny sizes on top of any preset (`--quick`: tests and smoke runs).
QUICK: dict = dict(num_envs=8, unroll_length=32, num_minibatches=2, update_epochs=2, num_evals=3,
                   eval_envs=4, policy_layers=(16, 16), value_layers=(16, 16), episode_length=100)
CLASSIC_CONTROL = ("CartPole-v1", "Acrobot-v1", "MountainCar-v0", "Pendulum-v1",
                   "MountainCarContinuous-v0")


def preset_for(env: str) -> str:
    """The preset an env gets when none is named: Brax `default`, MuJoCo Playground
    `playground`, gymnax classic control `purejaxrl`, MinAtar `minatar`, any other gymnax env
    `classic`."""
    from rlx.envs import is_continuous_control
    from rlx.envs.registry import is_playground

    if is_playground(env):
        return "playground"
    if is_continuous_control(env):
        return "default"
    if env in CLASSIC_CONTROL:
        return "purejaxrl"
    if env.endswith("-MinAtar"):
        return "minatar"
    return "classic"
