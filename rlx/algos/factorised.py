"""Factorised policy gradients with a choice of baseline (Wu et al. 2018, arXiv 1803.07246), as
a configuration of the on-policy engine (`rlx.algos.onpolicy`).

One update: roll out `num_envs x unroll_length` steps of a factorised Gaussian policy, form
advantages with the baseline `hparams.baseline` selects (a traced index into
`FactorisedConfig.candidates`, so several baselines x seeds run as one vmapped program):

    none        A_t = GAE with V = 0 (discounted lambda-returns)
    state       A_t = GAE with the critic V(s) (`rlx.losses.baselines.state_baseline_advantages`)
    factorised  A_{t,i} = per-dimension GAE with the network b_i(s, a_-i)
                (`rlx.networks.FactorisedBaseline`, `factorised_advantages`)
    linear      A_{t,i} = per-dimension GAE with Wu's linear-feature b_i(s, a_-i, t), refitted
                in closed form on every batch (used on the next: rllab's order)

then `update_epochs x num_minibatches` Adam steps on

    L = pg_coef * factorised_surrogate(r_{t,i}, A_{t,i}, clip_eps) + vf_coef * L_baseline

(clip_eps = inf: Wu's unclipped surrogate; a state baseline repeats A_t for every i, which is
the ordinary PPO surrogate per dimension). `pg_coef = 0` trains only the baselines (what
`make_estimator`'s callers do before measuring estimator variance at a fixed policy).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp
from flax import struct

from rlx import distributions, losses
from rlx.algos.onpolicy import Engine, EngineState, make_trainer
from rlx.envs import make as make_env
from rlx.envs import normalize as obs_norm
from rlx.envs import validate_env_name
from rlx.envs.base import Env
from rlx.losses import baselines as bl
from rlx.networks import ACTIVATIONS, ActorCritic, FactorisedBaseline
from rlx.optim import clipped_adam
from rlx.rollout import Transition
from rlx.training import Trainer

BASELINES = ("none", "state", "factorised", "linear")
LINEAR_MAX_ACTIONS = 128  # the linear baseline's per-dimension ridge solve holds A F^2 floats


@struct.dataclass
class FactorisedHParams:
    """Hyper-parameters that may differ across a vmapped population of agents."""

    lr: jax.Array
    clip_eps: jax.Array  # inf: Wu et al.'s unclipped surrogate
    pg_coef: jax.Array  # 0: train the baselines only (a fixed policy)
    vf_coef: jax.Array
    gamma: jax.Array
    gae_lambda: jax.Array
    max_grad_norm: jax.Array
    linear_reg: jax.Array  # ridge of the linear-feature baseline
    reward_scaling: jax.Array  # rewards are multiplied by this before any advantage
    baseline: jax.Array  # index into FactorisedConfig.candidates (a traced choice)


@dataclasses.dataclass(frozen=True)
class FactorisedConfig:
    """A factorised-policy-gradient run. Defaults: Wu et al.'s synthetic task with k = 6
    (12 action dimensions), their gamma / lambda and horizon, CPU-sized networks."""

    env: str = "multiaction_point_k6"
    backend: str = "spring"  # Brax physics backend (ignored otherwise)
    episode_length: int | None = None  # None: the env's own (multiaction_point: 50)
    baseline: str = "factorised"  # none | state | factorised | linear
    # baselines one program can run, chosen per member by the traced hparams.baseline
    # (experiments vmap all of them as one program); empty: just `baseline`
    baselines: tuple[str, ...] = ()
    total_steps: int = 200_000
    num_envs: int = 32
    unroll_length: int = 50
    num_minibatches: int = 4
    update_epochs: int = 4
    clip_eps: float = 0.2  # inf: the unclipped surrogate
    lr: float = 3e-4
    max_grad_norm: float = 0.5
    gamma: float = 0.995
    gae_lambda: float = 0.97
    pg_coef: float = 1.0
    vf_coef: float = 0.5
    linear_reg: float = 1e-5
    reward_scaling: float = 1.0  # keeps the baselines' targets O(1) (tanh networks)
    normalize_advantages: bool = True
    normalize_observations: bool = False
    policy_layers: tuple[int, ...] = (64, 64)
    value_layers: tuple[int, ...] = (64, 64)  # the critic's and the factorised baseline's MLP
    embed: int = 8  # width of the factorised baseline's a_-i embedding
    activation: str = "tanh"
    init_log_std: float = 0.0
    num_evals: int = 5
    eval_envs: int = 16

    def validate(self) -> None:
        """Raise `ValueError` naming any value that cannot work, before anything compiles."""
        validate_env_name(self.env)
        for b in (self.baseline, *self.baselines):
            if b not in BASELINES:
                raise ValueError(f"FactorisedConfig.baseline {b!r} is unknown; valid: "
                                 f"{', '.join(BASELINES)}")
        if self.baselines and self.baseline not in self.baselines:
            raise ValueError(f"FactorisedConfig.baseline {self.baseline!r} is not among "
                             f"baselines {self.baselines!r}")
        if len(set(self.candidates)) != len(self.candidates):
            raise ValueError(f"FactorisedConfig.baselines repeats a name: {self.baselines!r}")
        for name in ("total_steps", "num_envs", "unroll_length", "num_minibatches",
                     "update_epochs", "eval_envs", "lr", "embed", "clip_eps", "max_grad_norm"):
            if not getattr(self, name) > 0:
                raise ValueError(f"FactorisedConfig.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("pg_coef", "vf_coef", "linear_reg", "reward_scaling"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"FactorisedConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        if self.num_evals < 2:
            raise ValueError(f"FactorisedConfig.num_evals must be >= 2, got {self.num_evals!r}")
        if (self.num_envs * self.unroll_length) % self.num_minibatches:
            raise ValueError(f"num_envs x unroll_length = {self.num_envs * self.unroll_length} is "
                             f"not divisible by num_minibatches = {self.num_minibatches}")
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"FactorisedConfig.gamma must be in (0, 1], got {self.gamma!r}")
        if not 0.0 <= self.gae_lambda <= 1.0:
            raise ValueError(f"FactorisedConfig.gae_lambda must be in [0, 1], got {self.gae_lambda!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"FactorisedConfig.activation {self.activation!r} is unknown; "
                             f"valid: {', '.join(ACTIVATIONS)}")

    def make_env(self) -> Env:
        env = make_env(self.env, backend=self.backend, episode_length=self.episode_length)
        if env.action_spec.discrete:
            raise ValueError(f"FactorisedConfig.env {self.env!r} has discrete actions; the "
                             "factorised learner needs continuous ones")
        if "linear" in self.candidates and env.action_spec.size > LINEAR_MAX_ACTIONS:
            raise ValueError(f"baseline 'linear' on {self.env!r} ({env.action_spec.size} action "
                             f"dimensions): the per-dimension ridge solve is limited to "
                             f"{LINEAR_MAX_ACTIONS}; use 'factorised'")
        return env

    @property
    def candidates(self) -> tuple[str, ...]:
        """The baselines the program holds (`hparams(baseline=...)` picks one)."""
        return tuple(self.baselines) or (self.baseline,)

    def hparams(self, baseline: str | None = None) -> FactorisedHParams:
        """The hyper-parameters as arrays; `baseline` (default `self.baseline`) must be one
        of `candidates`."""
        baseline = self.baseline if baseline is None else baseline
        if baseline not in self.candidates:
            raise ValueError(f"baseline {baseline!r} is not among {self.candidates!r}")
        values = dict(baseline=self.candidates.index(baseline), lr=self.lr, clip_eps=self.clip_eps, pg_coef=self.pg_coef,
                      vf_coef=self.vf_coef, gamma=self.gamma, gae_lambda=self.gae_lambda,
                      max_grad_norm=self.max_grad_norm, linear_reg=self.linear_reg,
                      reward_scaling=self.reward_scaling)
        return FactorisedHParams(**{k: jnp.asarray(v, jnp.float32) for k, v in values.items()})


def episode_time(t0: jax.Array, done: jax.Array) -> jax.Array:
    """Steps since the episode began at every step of a rollout `[T, N]`, from the start
    times `t0` `[N]` (the env states' `time`) and the done flags."""
    def body(t, d):
        return jnp.where(d, 0, t + 1), t

    return jax.lax.scan(body, t0.astype(jnp.int32), done)[1]


def _networks(config: FactorisedConfig, env: Env) -> tuple[ActorCritic, FactorisedBaseline]:
    A = env.action_spec.size
    ac = ActorCritic(action_size=A, head="gaussian", policy_layers=tuple(config.policy_layers),
                     value_layers=tuple(config.value_layers), activation=config.activation,
                     init_log_std=config.init_log_std, obs_ndim=len(env.obs_shape))
    fb = FactorisedBaseline(action_size=A, embed=config.embed, layers=tuple(config.value_layers),
                            activation=config.activation, obs_ndim=len(env.obs_shape))
    return ac, fb


def make_engine(config: FactorisedConfig, env: Env) -> Engine:
    """The learner as an `Engine` (validated config assumed). Params: {"ac": actor-critic,
    "fb": factorised baseline (baseline 'factorised' only)}; `state.extra`: the linear
    baseline's weights `[A, F]` (baseline 'linear'), else ()."""
    ac, fb = _networks(config, env)
    A = env.action_spec.size
    D = int(math.prod(env.obs_shape))
    T, N = config.unroll_length, config.num_envs
    kinds = config.candidates

    def selector(hp: FactorisedHParams) -> jax.Array:
        """One-hot weights over `kinds` (exactly 0 / 1: the selected values pass unchanged)."""
        return jax.nn.one_hot(jnp.round(hp.baseline).astype(jnp.int32), len(kinds))
    flat = lambda x: x.reshape((T * N,) + x.shape[2:])  # noqa: E731

    def init_params(k):
        k_ac, k_fb = jax.random.split(k)
        obs = jnp.zeros((1,) + env.obs_shape, jnp.float32)
        params = {"ac": ac.init(k_ac, obs)}
        if "factorised" in kinds:
            params["fb"] = fb.init(k_fb, obs, jnp.zeros((1, A), jnp.float32))
        return params

    def act(params, obs, k, hp):
        dist_params, value = ac.apply(params["ac"], obs)
        dist = distributions.make("gaussian", dist_params)
        raw = dist.sample(k)
        return dist.to_env(raw), raw, {"log_prob_per_dim": dist.log_prob_per_dim(raw),
                                       "value": value}

    def mode(params, obs, hp):
        return distributions.make("gaussian", ac.apply(params["ac"], obs)[0]).mode()

    def make_batch(params, traj: Transition, state: EngineState, hp: FactorisedHParams):
        """Advantages and targets `[T*N, A]` of the baseline `hp.baseline` selects."""
        norm = lambda o: (obs_norm.normalize(state.obs_stats, o)  # noqa: E731
                          if config.normalize_observations else o)
        obs, final = norm(traj.obs), norm(traj.final_obs)
        args = (traj.terminated, traj.done, hp.gamma, hp.gae_lambda)
        extra = state.extra
        reward = traj.reward * hp.reward_scaling
        per_dim = lambda x: jnp.broadcast_to(x[..., None], x.shape + (A,))  # noqa: E731
        a = distributions.Gaussian.to_env(traj.action)  # what the env saw
        results = {}
        if "none" in kinds:
            zero = jnp.zeros_like(reward)
            results["none"] = bl.state_baseline_advantages(reward, zero, zero, *args)
        if "state" in kinds:
            v_next = jax.lax.map(lambda o: ac.apply(params["ac"], o)[1], final)
            results["state"] = bl.state_baseline_advantages(reward, traj.extras["value"],
                                                            v_next, *args)
        results = {k: tuple(map(per_dim, v)) for k, v in results.items()}
        if "factorised" in kinds or "linear" in kinds:
            k_final = jax.random.fold_in(state.key, 1)  # not among the update's own keys
            final_raw = jax.vmap(lambda o, k: distributions.make(
                "gaussian", ac.apply(params["ac"], o)[0]).sample(k))(
                final, jax.random.split(k_final, T))
            a_next = bl.next_step_actions(a, distributions.Gaussian.to_env(final_raw), traj.done)
        if "factorised" in kinds:
            b = jax.lax.map(lambda x: fb.apply(params["fb"], *x), (obs, a))
            b_next = jax.lax.map(lambda x: fb.apply(params["fb"], *x), (final, a_next))
            results["factorised"] = bl.factorised_advantages(reward, b, b_next, *args)
        if "linear" in kinds:
            t = episode_time(state.env_state.time, traj.done)
            phi = bl.linear_baseline_features(obs, a, t)
            phi_next = bl.linear_baseline_features(final, a_next, t + 1)
            results["linear"] = bl.factorised_advantages(
                reward, bl.linear_baseline(extra, phi), bl.linear_baseline(extra, phi_next),
                *args)
            # refit on this batch's targets (rllab's order: used on the next batch)
            extra = bl.fit_linear_baseline(flat(phi), flat(results["linear"][1]), hp.linear_reg)
        w = selector(hp)
        adv = sum(w[j] * results[k][0] for j, k in enumerate(kinds))
        targets = sum(w[j] * results[k][1] for j, k in enumerate(kinds))
        batch = {"obs": obs, "action": traj.action, "env_action": a,
                 "log_prob_per_dim": traj.extras["log_prob_per_dim"], "advantages": adv,
                 "targets": targets}
        return jax.tree.map(flat, batch), extra

    def loss_fn(params, mb, key, hp, extra):
        dist_params, value = ac.apply(params["ac"], mb["obs"])
        lp = distributions.make("gaussian", dist_params).log_prob_per_dim(mb["action"])
        adv = mb["advantages"]
        if config.normalize_advantages:
            adv = losses.normalize(adv)
        pg = bl.factorised_surrogate(lp, mb["log_prob_per_dim"], adv, hp.clip_eps)
        w = selector(hp)
        v_loss = jnp.zeros(())  # none: nothing to fit; linear: fitted in closed form
        if "state" in kinds:  # V(s) regressed on the state baseline's targets (same for all i)
            v_loss += w[kinds.index("state")] * losses.value_loss(value, mb["targets"][:, 0])
        if "factorised" in kinds:
            v_loss += w[kinds.index("factorised")] * losses.value_loss(
                fb.apply(params["fb"], mb["obs"], mb["env_action"]), mb["targets"])
        aux = {"policy_loss": pg, "baseline_loss": v_loss,
               "approx_kl": losses.approx_kl(lp.sum(-1), mb["log_prob_per_dim"].sum(-1))}
        return hp.pg_coef * pg + hp.vf_coef * v_loss, aux

    F = 2 * D + 2 * A + 4
    return Engine(init_params=init_params, act=act, mode=mode, batch_fn=make_batch,
                  loss_fn=loss_fn,
                  optimizer=lambda hp, update: clipped_adam(hp.lr, hp.max_grad_norm),
                  num_envs=N, unroll_length=T, epochs=config.update_epochs,
                  minibatches=config.num_minibatches,
                  normalize_observations=config.normalize_observations,
                  init_extra=lambda hp: jnp.zeros((A, F)) if "linear" in kinds else ())


def make_train(config: FactorisedConfig, env: Env | None = None,
               on_update: Callable[[jax.Array, jax.Array], None] | None = None) -> Trainer:
    """The learner's pure functions for `config` (validated here, before any compile)."""
    config.validate()
    env = env or config.make_env()
    engine = make_engine(config, env)
    return make_trainer(engine, env, hparams=config.hparams(), total_steps=config.total_steps,
                        num_evals=config.num_evals, eval_envs=config.eval_envs, config=config,
                        on_update=on_update)


def make_estimator(config: FactorisedConfig, env: Env | None = None
                   ) -> Callable[[EngineState, jax.Array], jax.Array]:
    """`estimate(state, key) -> g` `[P]`: one batch's policy-gradient estimate (the flattened
    gradient w.r.t. the policy's parameters, advantages not normalised) at `state`'s policy
    and baselines:

        g = (1 / T N) sum_{t,n} sum_i grad log pi_i(a_{t,n,i} | s_{t,n}) A_{t,n,i}

    with a fresh rollout of `num_envs x unroll_length` steps from `state.env_state`; vmap it
    over keys for the estimator's variance (same policy, same baselines, independent batches).
    """
    config.validate()
    env = env or config.make_env()
    engine = make_engine(config, env)
    ac, _ = _networks(config, env)

    def estimate(state: EngineState, key: jax.Array) -> jax.Array:
        k_roll, k_batch = jax.random.split(key)
        _, traj = engine.collect(env, state, k_roll, config.unroll_length)
        batch, _ = engine.batch_fn(state.params, traj, state.replace(key=k_batch),
                                   state.hparams)

        def pg(policy_params):
            dist_params, _ = ac.apply({"params": {**state.params["ac"]["params"],
                                                  **policy_params}}, batch["obs"])
            lp = distributions.make("gaussian", dist_params).log_prob_per_dim(batch["action"])
            return bl.pg_loss(lp, batch["advantages"])

        p = state.params["ac"]["params"]
        policy = {k: v for k, v in p.items() if k != "value"}
        g = jax.grad(pg)(policy)
        return -jnp.concatenate([x.ravel() for x in jax.tree.leaves(g)])

    return estimate


__all__ = ["BASELINES", "FactorisedHParams", "FactorisedConfig", "episode_time", "make_engine",
           "make_train", "make_estimator", "estimator_samples",
           "env_decomposition_fns", "policy_mean_std", "oracle_estimator_samples",
           "cross_trace_variance"]


def estimator_samples(config: FactorisedConfig, key: jax.Array, fit_updates: int, batches: int,
                      env: Env | None = None) -> dict[str, jax.Array]:
    """Policy-gradient estimates `[batches, P]` per baseline of `config.candidates`, at one fixed
    policy (the initial one of `key`), after `fit_updates` updates that train only the
    baselines (pg_coef = 0). Every baseline sees the same policy, the same fitting rollouts
    and the same `batches` estimation rollouts (common random numbers: compare them paired).
    One program: the baselines are vmapped members."""
    if fit_updates < 0 or batches < 2:
        raise ValueError(f"estimator_samples needs fit_updates >= 0 and batches >= 2, got "
                         f"{fit_updates}, {batches}")
    cfg = dataclasses.replace(config, pg_coef=0.0)
    env = env or cfg.make_env()
    trainer, estimate = make_train(cfg, env), make_estimator(cfg, env)
    k_init, k_est = jax.random.split(key)
    hp = jax.tree.map(lambda *x: jnp.stack(x), *[cfg.hparams(b) for b in cfg.candidates])

    def one(h):
        state = trainer.init(k_init, h)
        state, _ = jax.lax.scan(lambda s, _: trainer.update(s), state, None, length=fit_updates)
        return jax.lax.map(lambda k: estimate(state, k), jax.random.split(k_est, batches))

    g = jax.jit(jax.vmap(one))(hp)
    return {b: g[i] for i, b in enumerate(cfg.candidates)}


# ---------------------------------------------------------------------------------------------
# Tucker et al.'s decomposition on any rlx Env, by resetting to saved env states


def _bits_key(key: jax.Array, x: jax.Array) -> jax.Array:
    """`key` folded with a hash of the bits of `x` (a deterministic function of x's value)."""
    bits = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32).ravel()
    h = jnp.sum(bits * (jnp.arange(bits.size, dtype=jnp.uint32) * jnp.uint32(2654435761)
                        + jnp.uint32(1)))
    return jax.random.fold_in(key, h)


def env_decomposition_fns(env: Env, mean_fn: Callable[[jax.Array], jax.Array], std: jax.Array,
                          states: Any, horizon: int, gamma: float, mc_samples: int,
                          key: jax.Array) -> tuple[dict[str, Callable], dict[str, Callable]]:
    """Samplers and baselines for `rlx.losses.baselines.variance_decomposition` on `env` with
    the Gaussian policy a ~ N(mean_fn(obs), diag(std^2)) (the env sees clip(a, -1, 1)), for
    the gradient w.r.t. the action mean at the state (P = A parameters):

        s ~ uniform over the saved env states `states` (a batched `EnvState`: the simulator
            is reset to s by using it as the state, no simulator hooks),
        a ~ pi(.|s),   G = sum_{l<horizon} gamma^l r_l from (s, a) then the policy (an episode
            that ends stops the sum),   score_{i,j} = delta_ij (a_i - mean_i(s)) / std_i^2.

    Baselines (Monte Carlo with `mc_samples` continuations, keyed by a hash of their inputs so
    each is a deterministic function of them): "none" 0; "state" V(s) = mean of G over fresh
    actions; "factorised" b_i(s, a_-i) = mean of G with a_i resampled (a_-i kept). Returns
    (samplers, baselines).
    """
    n = jax.tree.leaves(states)[0].shape[0]
    A = env.action_spec.size
    k_state, k_fact = jax.random.split(key)

    def sample_action(k, s):
        mu = mean_fn(s.obs[None])[0]
        return mu + std * jax.random.normal(k, mu.shape)

    def sample_return(k, s, a):
        def body(carry, k_l):
            st, G, disc, alive, act = carry
            st, out = env.step(st, jnp.clip(act, -1.0, 1.0))
            G = G + alive * disc * out.reward
            alive = alive * (1.0 - out.done.astype(jnp.float32))
            return (st, G, disc * gamma, alive, sample_action(k_l, st)), None

        init = (s, jnp.zeros(()), jnp.ones(()), jnp.ones(()), a)
        (_, G, _, _, _), _ = jax.lax.scan(body, init, jax.random.split(k, horizon))
        return G

    def mean_return(k, s, actions_fn):
        ks = jax.random.split(k, mc_samples)
        return jax.vmap(lambda kk: sample_return(jax.random.fold_in(kk, 1), s,
                                                 actions_fn(kk)))(ks).mean()

    def state_baseline(s, a):
        k = _bits_key(k_state, s.obs)
        return jnp.full((A,), mean_return(k, s, lambda kk: sample_action(kk, s)))

    def factorised_baseline(s, a):
        def b_i(i):
            a_minus = a.at[i].set(0.0)
            k = _bits_key(jax.random.fold_in(k_fact, i), jnp.concatenate([s.obs, a_minus]))
            return mean_return(k, s, lambda kk: a.at[i].set(sample_action(kk, s)[i]))

        return jax.vmap(b_i)(jnp.arange(A))

    samplers = {
        "sample_state": lambda k: jax.tree.map(lambda x: x[jax.random.randint(k, (), 0, n)],
                                               states),
        "sample_action": sample_action,
        "sample_return": sample_return,
        "score_per_dim": lambda s, a: jnp.diag((a - mean_fn(s.obs[None])[0]) / std**2),
    }
    baselines = {"none": lambda s, a: jnp.zeros((A,)), "state": state_baseline,
                 "factorised": factorised_baseline}
    return samplers, baselines


def policy_mean_std(config: FactorisedConfig, env: Env, params: Any, obs_stats: Any = None
                    ) -> tuple[Callable[[jax.Array], jax.Array], jax.Array]:
    """(mean_fn(obs [N, ...]) -> [N, A], std [A]) of a learner's Gaussian policy `params`
    (an `EngineState.params`), observations normalised with `obs_stats` if the config does."""
    ac, _ = _networks(config, env)

    def mean_fn(obs):
        o = obs_norm.normalize(obs_stats, obs) if config.normalize_observations else obs
        return jnp.split(ac.apply(params["ac"], o)[0], 2, axis=-1)[0]

    return mean_fn, jnp.exp(params["ac"]["params"]["log_std"])


# ---------------------------------------------------------------------------------------------
# The best possible baselines, by Monte Carlo from saved env states


def oracle_estimator_samples(config: FactorisedConfig, env: Env, params: Any, key: jax.Array,
                             num_samples: int, mc_samples: int, obs_stats: Any = None,
                             chunk: int = 64) -> dict[str, jax.Array]:
    """Single-sample policy-gradient estimates (flattened gradient w.r.t. the policy's
    parameters, as `make_estimator`) with the *optimal* baselines, estimated by Monte Carlo
    from saved env states (`params`: an `EngineState.params`; the policy is a ~ N(mean(s),
    std^2), the env sees clip(a, -1, 1)):

        s ~ the on-policy state distribution (`num_samples` envs rolled out from reset for
            one episode length, one uniformly random step of each: i.i.d. samples),
        a ~ pi(.|s),   G = sum_l gamma^l r_l from (s, a), then the policy, to the episode end,
        g_b = sum_i grad log pi_i(a_i|s) (G - b_i)   with
        none        b_i = 0
        state       b_i = V(s)          = mean of G over `mc_samples / 2` fresh actions
        factorised  b_i = b_i(s, a_-i)  = mean of G over `mc_samples / 2` draws of a_i (a_-i
                                          kept), i.e. E_{a_i}[Q(s, a)]
        tau         sum_i grad log pi_i(a_i|s) (G - G') / sqrt(2), G' a second continuation
                    of the same (s, a): E ||g_tau||^2 = Sigma_tau (trace; Tucker et al.).

    Each baseline is estimated twice from independent continuations (`[2, n, P]`): the MC
    noise of the two is independent and zero-mean given (s, a), so `cross_trace_variance` of
    the pair is an unbiased estimate of the variance with the exact E[G | ...] baseline.
    Every continuation is an independent rollout from the saved env state (a pytree), all
    vmapped (`chunk` samples at a time). Returns {"none": [n, P], "state": [2, n, P],
    "factorised": [2, n, P], "tau": [n, P]}.
    """
    if num_samples < 2 or mc_samples < 2 or mc_samples % 2:
        raise ValueError(f"oracle_estimator_samples needs num_samples >= 2 and an even "
                         f"mc_samples >= 2, got {num_samples}, {mc_samples}")
    from rlx.rollout import reset

    mean_fn, std = policy_mean_std(config, env, params, obs_stats)
    ac, _ = _networks(config, env)
    A, H, n, half = env.action_spec.size, env.max_episode_steps, num_samples, mc_samples // 2
    k_reset, k_roll, k_t, k_fns, k_samples = jax.random.split(key, 5)

    def body(st, k):
        a = mean_fn(st.obs) + std * jax.random.normal(k, (n, A))
        return jax.vmap(env.step)(st, jnp.clip(a, -1.0, 1.0))[0], st

    _, visited = jax.lax.scan(body, reset(env, k_reset, n), jax.random.split(k_roll, H))
    t = jax.random.randint(k_t, (n,), 0, H)
    states = jax.tree.map(lambda x: x[t, jnp.arange(n)], visited)
    fns, _ = env_decomposition_fns(env, mean_fn, std, states, H, config.gamma, 1, k_fns)
    sample_action, sample_return = fns["sample_action"], fns["sample_return"]

    policy = {k: v for k, v in params["ac"]["params"].items() if k != "value"}

    def log_prob(pp, obs, a):
        o = obs_norm.normalize(obs_stats, obs) if config.normalize_observations else obs
        dist_params, _ = ac.apply({"params": {**params["ac"]["params"], **pp}}, o[None])
        return distributions.make("gaussian", dist_params).log_prob_per_dim(a[None])[0]

    def one(x):
        s, k = x
        k_a, k_g, k_v, k_b = jax.random.split(k, 4)
        a = sample_action(k_a, s)
        G = jax.vmap(lambda kk: sample_return(kk, s, a))(jax.random.split(k_g, 2))

        def fresh(kk):  # one draw of V(s)
            k1, k2 = jax.random.split(kk)
            return sample_return(k2, s, sample_action(k1, s))

        def resample_i(i, kk):  # one draw of b_i(s, a_-i)
            k1, k2 = jax.random.split(kk)
            return sample_return(k2, s, a.at[i].set(sample_action(k1, s)[i]))

        V = jax.vmap(fresh)(jax.random.split(k_v, mc_samples)).reshape(2, half).mean(-1)
        B = jax.vmap(lambda i, kk: jax.vmap(lambda k3: resample_i(i, k3))(
            jax.random.split(kk, mc_samples)))(jnp.arange(A), jax.random.split(k_b, A))
        B = B.reshape(A, 2, half).mean(-1).T                                        # [2, A]
        ones = jnp.ones((A,))
        cot = jnp.stack([G[0] * ones, (G[0] - V[0]) * ones, (G[0] - V[1]) * ones,
                         G[0] - B[0], G[0] - B[1], (G[0] - G[1]) / jnp.sqrt(2.0) * ones])
        _, vjp = jax.vjp(lambda pp: log_prob(pp, s.obs, a), policy)
        return jax.vmap(lambda c: jnp.concatenate(
            [x.ravel() for x in jax.tree.leaves(vjp(c)[0])]))(cot)                  # [6, P]

    g = jax.lax.map(one, (states, jax.random.split(k_samples, n)), batch_size=chunk)
    return {"none": g[:, 0], "state": jnp.stack([g[:, 1], g[:, 2]]),
            "factorised": jnp.stack([g[:, 3], g[:, 4]]), "tau": g[:, 5]}


def cross_trace_variance(g1: jax.Array, g2: jax.Array) -> jax.Array:
    """Per-sample terms u_j `[n]` of the trace covariance of two estimates `[n, P]` of the
    same estimator whose noises are independent and zero-mean given the sample:

        tr Cov = sum_j u_j / (n - 1),   u_j = <g1_j - mean g1, g2_j - mean g2>

    (unbiased for the noise-free estimator's trace variance; g1 = g2 gives the usual one)."""
    chex.assert_equal_shape([g1, g2])
    return jnp.sum((g1 - g1.mean(0)) * (g2 - g2.mean(0)), axis=-1)
