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
from typing import Callable

import chex
import jax
import jax.numpy as jnp
import optax
from flax import struct

from rlx import distributions, losses
from rlx.envs import make as make_env
from rlx.envs import normalize as obs_norm
from rlx.envs import validate_env_name
from rlx.envs.base import Env, EnvState
from rlx.networks import ACTIVATIONS, ActorCritic
from rlx.rollout import episode_stats, evaluate, reset, rollout
from rlx.training import Trainer, report

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
    normalize_observations: bool = True
    head: str = "auto"  # auto: categorical (discrete) / gaussian (continuous)
    policy_layers: tuple[int, ...] = (64, 64)
    value_layers: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    num_evals: int = 5
    eval_envs: int = 16  # per data-parallel shard
    axis_name: str | None = None  # data parallelism: envs split over this vmap/mesh axis

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

    def hparams(self) -> PPOHParams:
        """This config's hyper-parameters as the arrays `train` takes."""
        obj = objective_hparams(self.objective, self.clip_eps, self.kl_beta, self.kl_target)
        values = dict(lr=self.lr, ent_coef=self.ent_coef, vf_coef=self.vf_coef, gamma=self.gamma,
                      gae_lambda=self.gae_lambda, reward_scaling=self.reward_scaling,
                      max_grad_norm=self.max_grad_norm, **obj)
        return PPOHParams(**{k: jnp.asarray(v, jnp.float32) for k, v in values.items()})


@struct.dataclass
class PPOState:
    params: dict
    opt_state: optax.OptState
    obs_stats: obs_norm.RunningStats
    env_state: EnvState
    key: jax.Array
    eval_key: jax.Array
    update: jax.Array  # updates done so far
    kl_beta: jax.Array  # current KL coefficient (changes only for the adaptive variant)
    hparams: PPOHParams


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


def make_train(config: PPOConfig, env: Env | None = None,
               on_update: Callable[[jax.Array, jax.Array], None] | None = None) -> Trainer:
    """Build PPO's pure functions for `config` (validated here, before any compile).

    `on_update(update_index, mean_episode_return)` is called on the host after
    every update through `jax.debug.callback` (progress bars, logs).
    """
    config.validate()
    env = env or make_env(config.env, backend=config.backend, episode_length=config.episode_length,
                          fresh_reset=config.fresh_reset)
    net = make_network(config, env)
    head = net.head
    T, N, M = config.unroll_length, config.num_envs, config.num_minibatches
    batch_size = T * N
    mb_size = batch_size // M
    steps_per_update = batch_size
    updates_per_eval = max(1, math.ceil(config.total_steps / ((config.num_evals - 1) * steps_per_update)))
    num_updates = updates_per_eval * (config.num_evals - 1)
    axis = config.axis_name
    adam = optax.scale_by_adam(eps=1e-5)

    def norm(stats, obs):
        return obs_norm.normalize(stats, obs) if config.normalize_observations else obs

    def init(key: jax.Array, hparams: PPOHParams) -> PPOState:
        k_params, k_env, k_train, k_eval = jax.random.split(key, 4)
        if axis is not None:  # members of one agent share params, not envs
            shard = jax.lax.axis_index(axis)
            k_env, k_train = (jax.random.fold_in(k, shard) for k in (k_env, k_train))
        params = net.init(k_params, jnp.zeros((1,) + env.obs_shape, jnp.float32))
        return PPOState(params=params, opt_state=adam.init(params),
                        obs_stats=obs_norm.init(env.obs_shape), env_state=reset(env, k_env, N),
                        key=k_train, eval_key=k_eval, update=jnp.zeros((), jnp.int32),
                        kl_beta=jnp.asarray(hparams.kl_beta, jnp.float32), hparams=hparams)

    def loss_fn(params, mb, hp: PPOHParams, beta, key):
        dist_params, value = net.apply(params, mb["obs"])
        dist = distributions.make(head, dist_params)
        log_prob = dist.log_prob(mb["action"])
        adv = mb["advantages"]
        if config.normalize_advantages:
            adv = losses.normalize(adv, axis)
        pg = losses.ppo_surrogate(log_prob, mb["log_prob"], adv, hp.clip_eps)
        kl = distributions.make(head, mb["dist_params"]).kl(dist)
        kl_term = losses.kl_penalty(kl, beta)
        v_loss = losses.value_loss(value, mb["targets"])
        ent = dist.entropy(key)
        total = pg + kl_term + hp.vf_coef * v_loss + hp.ent_coef * losses.entropy_loss(ent)
        aux = {"policy_loss": pg, "value_loss": v_loss, "entropy": ent.mean(), "kl": kl.mean(),
               "approx_kl": losses.approx_kl(log_prob, mb["log_prob"]),
               "clip_frac": losses.clip_fraction(log_prob, mb["log_prob"], hp.clip_eps)}
        return total, aux

    def sgd_step(carry, xs):
        params, opt_state, hp, beta, lr = carry
        mb, key = xs
        grads, aux = jax.grad(loss_fn, has_aux=True)(params, mb, hp, beta, key)
        if axis is not None:
            grads = jax.lax.pmean(grads, axis)
        gnorm = optax.tree.norm(grads)
        grads = jax.tree.map(lambda g: g * jnp.minimum(1.0, hp.max_grad_norm / (gnorm + 1e-6)), grads)
        step, opt_state = adam.update(grads, opt_state, params)
        params = jax.tree.map(lambda p, u: p - lr * u, params, step)
        return (params, opt_state, hp, beta, lr), {**aux, "grad_norm": gnorm}

    def update(state: PPOState) -> tuple[PPOState, dict]:
        hp = state.hparams
        key, k_roll, k_sgd, k_ent = jax.random.split(state.key, 4)
        params, stats = state.params, state.obs_stats

        def policy(obs, k):
            dist_params, value = net.apply(params, norm(stats, obs))
            dist = distributions.make(head, dist_params)
            raw = dist.sample(k)
            return dist.to_env(raw), raw, {"log_prob": dist.log_prob(raw), "dist_params": dist_params,
                                           "value": value}

        env_state, traj = rollout(env, policy, state.env_state, k_roll, T)
        chex.assert_shape(traj.reward, (T, N))
        # one time step at a time: the whole batch at once would hold [T*N, width] activations
        next_values = jax.lax.map(lambda o: net.apply(params, norm(stats, o))[1], traj.final_obs)
        advantages, targets = losses.gae(traj.reward * hp.reward_scaling, traj.extras["value"],
                                         next_values, traj.terminated, traj.done,
                                         hp.gamma, hp.gae_lambda)
        batch = {"obs": norm(stats, traj.obs), "action": traj.action,
                 "log_prob": traj.extras["log_prob"], "dist_params": traj.extras["dist_params"],
                 "advantages": advantages, "targets": targets}
        batch = jax.tree.map(lambda x: x.reshape((batch_size,) + x.shape[2:]), batch)
        lr = hp.lr * (1.0 - state.update / num_updates if config.anneal_lr else 1.0)

        def epoch(carry, k):
            k_perm, k_mb = jax.random.split(k)
            perm = jax.random.permutation(k_perm, batch_size)
            mbs = jax.tree.map(lambda x: x[perm].reshape((M, mb_size) + x.shape[1:]), batch)
            return jax.lax.scan(sgd_step, carry, (mbs, jax.random.split(k_mb, M)))

        carry = (params, state.opt_state, hp, state.kl_beta, lr)
        (new_params, opt_state, *_), aux = jax.lax.scan(
            epoch, carry, jax.random.split(k_sgd, config.update_epochs))

        # KL[pi_old, pi_new] over the whole batch (minibatch by minibatch), for the adaptive
        # penalty and logs.
        def batch_kl(mb):
            new_dist_params, _ = net.apply(new_params, mb["obs"])
            return distributions.make(head, mb["dist_params"]).kl(
                distributions.make(head, new_dist_params)).mean()

        chunks = jax.tree.map(lambda x: x.reshape((M, mb_size) + x.shape[1:]),
                              {"obs": batch["obs"], "dist_params": batch["dist_params"]})
        kl = jax.lax.map(batch_kl, chunks).mean()
        ep = episode_stats(traj)
        if axis is not None:
            kl = jax.lax.pmean(kl, axis)
            ep = jax.lax.psum(ep, axis)
        kl_beta = losses.adaptive_kl_beta(state.kl_beta, kl, hp.kl_target)
        obs_stats = obs_norm.update(stats, traj.obs, axis) if config.normalize_observations else stats
        new_state = state.replace(params=new_params, opt_state=opt_state, obs_stats=obs_stats,
                                  env_state=env_state, key=key, update=state.update + 1,
                                  kl_beta=kl_beta)
        metrics = {k: v.mean() for k, v in aux.items()}
        metrics.update(ep)
        metrics.update(kl_full=kl, kl_beta=kl_beta,
                       episode_return=ep["episode_return_sum"] / jnp.maximum(ep["episode_count"], 1.0))
        report(on_update, new_state.update, metrics["episode_return"], new_state)
        return new_state, metrics

    def act_deterministic(state: PPOState):
        def act(obs):
            dist_params, _ = net.apply(state.params, norm(state.obs_stats, obs))
            return distributions.make(head, dist_params).mode()
        return act

    def evaluate_fn(state: PPOState) -> dict:
        key = jax.random.fold_in(state.eval_key, state.update)
        if axis is None:
            return evaluate(env, act_deterministic(state), key, config.eval_envs)
        # data parallel: every shard evaluates `eval_envs` episodes of its own
        key = jax.random.fold_in(key, jax.lax.axis_index(axis))
        return jax.lax.pmean(evaluate(env, act_deterministic(state), key, config.eval_envs), axis)

    return Trainer(init=init, update=update, evaluate=evaluate_fn, default_hparams=config.hparams(),
                   num_evals=config.num_evals, updates_per_eval=updates_per_eval,
                   steps_per_update=steps_per_update, axis_name=axis, config=config)


def policy_fn(config: PPOConfig, env: Env, deterministic: bool = True):
    """`act(state, obs, key) -> env action` for a trained `PPOState` (inspection, notebooks)."""
    net = make_network(config, env)

    def act(state: PPOState, obs: jax.Array, key: jax.Array | None = None) -> jax.Array:
        o = obs_norm.normalize(state.obs_stats, obs) if config.normalize_observations else obs
        dist = distributions.make(net.head, net.apply(state.params, o)[0])
        return dist.mode() if deterministic else dist.to_env(dist.sample(key))

    return act
