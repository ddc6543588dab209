"""Soft actor-critic (Haarnoja et al. 2018): rlx's off-policy engine, as `make_train(config)`.

One update (one env step of every env, then `grad_updates_per_step` gradient steps):

    key, k_act, k_sample, k_sgd = split(state.key, 4)
    act with a ~ pi(.|normalise(s)) in `num_envs` envs for one step (`rlx.rollout`)
    obs_stats <- Welford merge of the step's observations (if normalising)
    buffer    <- insert the step's transitions (`rlx.replay`, a jitted ring buffer)
    windows   <- G x B windows of `n_step` consecutive steps of one env (uniform, valid only)
    G, disc   <- `rlx.losses.n_step_window` (scaled rewards; bootstraps through truncation)
    if the buffer holds `min_replay_size` transitions (warm-up before):
        for each of the G batches (lax.scan):
            critic step on L_Q (target critics, alpha, a' ~ pi(.|s'))
            actor step on the pluggable actor loss with the *new* critic (`ACTOR_LOSSES`)
            temperature step on L_alpha (from the actor loss's log pi)
            target critics <- (1 - tau) target + tau critics   (Polyak)

The losses and their equations are `rlx.losses.sac`. Everything is a pure function of a
`SACState` pytree (replay buffer included): the whole run is one `lax.scan`, `vmap`s over
seeds and hyper-parameters (`SACHParams`), is sharded by `rlx.runner` and resumes
bit-exactly from its checkpoints. The actor update is a hook: `ACTOR_LOSSES[name]` (config
`actor_loss`, default "sac") or any function with `rlx.losses.sac.sac_actor_loss`'s
signature passed to `make_train(..., actor_loss=fn)`. A registered loss may keep its own
state (`ActorExtra`: `SACState.extra`, handed to the loss as `ctx.extra` and updated after
each actor step) and may turn the entropy off (`soft=False`: alpha = 0 in the critic targets,
no temperature step). "wpo" (`rlx.losses.wpo.engine_wpo`, Acme's WPO defaults, 20 action
samples) keeps a target actor, copied every 100 gradient steps, and the KL duals, and runs
without entropy. "mpo" (`rlx.losses.mpo.engine_mpo`, Acme's MPO defaults, 20 action samples
from the target actor), the reference WPO is measured against, keeps the same target actor and
learns its E-step temperature and KL duals; no entropy either.

Observations are normalised with the running statistics at use (the buffer keeps raw
observations); evaluation runs the deterministic policy tanh(loc).
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

from rlx import distributions, replay
from rlx.envs import make as make_env
from rlx.envs import normalize as obs_norm
from rlx.envs import validate_env_name
from rlx.envs.base import Env, EnvState
from rlx.algos.onpolicy import episode_metrics
from rlx.losses import n_step_window
from rlx.losses import mpo as mpo_losses
from rlx.losses import wpo as wpo_losses
from rlx.losses.sac import (HEAD, ActorContext, critic_loss, sac_actor_loss, sample_actions,
                            soft_target, temperature_loss)
from rlx.networks import ACTIVATIONS, MLP, ContinuousQ
from rlx.optim import optimizer_step
from rlx.rollout import evaluate, reset, rollout
from rlx.training import Trainer, report

Metrics = dict[str, jax.Array]
# actor_loss(actor_params, apply_fn, obs [B, O], key, q_fn, ctx) -> (loss, metrics); see
# rlx.losses.sac. metrics may hold "log_prob" (mean log pi of its samples) for the temperature.
ActorLoss = Callable[..., tuple[jax.Array, Metrics]]
ACTOR_LOSSES: dict[str, ActorLoss] = {"sac": sac_actor_loss}


@dataclasses.dataclass(frozen=True)
class ActorExtra:
    """The state an actor loss keeps besides the actor (None: it keeps none).

    init(actor_params, action_size) -> extra; update(extra, new actor params, the loss's
    metrics, gradient step) -> extra, after each actor step. soft: whether the run keeps SAC's
    entropy temperature (False: alpha = 0 in the critic targets, no temperature step)."""

    init: Callable[[Any, int], Any]
    update: Callable[[Any, Any, Metrics, jax.Array], Any]
    soft: bool = True


ACTOR_EXTRAS: dict[str, ActorExtra] = {}
# XLA:CPU hands each plain matmul to its YNN dot library (2-D dots only: the fusions of
# elementwise and reduce ops that rlx turns off globally, see rlx/__init__.py, stay off).
# SAC's many small [batch, 256] x [256, 256] matmuls run ~1.3x faster; applied per program
# (`Trainer.compiler_options`) on the CPU backend when `SACConfig.fast_cpu_dots`.
COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}


def register_actor_loss(name: str, fn: ActorLoss, extra: ActorExtra | None = None) -> None:
    """Make `fn` selectable as `SACConfig(actor_loss=name)` (with its state, if any)."""
    ACTOR_LOSSES[name] = fn
    if extra is None:
        ACTOR_EXTRAS.pop(name, None)
    else:
        ACTOR_EXTRAS[name] = extra


def register_wpo(name: str = "wpo", config: wpo_losses.WPOConfig = wpo_losses.WPOConfig(),
                 target_update_period: int = 100) -> None:
    """Register WPO (`rlx.losses.wpo.engine_wpo`) with these settings under `name`."""
    w = wpo_losses.engine_wpo(config, target_update_period)
    register_actor_loss(name, w.loss, ActorExtra(w.init_extra, w.update_extra, soft=False))


def register_mpo(name: str = "mpo", config: mpo_losses.MPOConfig = mpo_losses.MPOConfig(),
                 target_update_period: int = 100) -> None:
    """Register MPO (`rlx.losses.mpo.engine_mpo`) with these settings under `name`."""
    m = mpo_losses.engine_mpo(config, target_update_period)
    register_actor_loss(name, m.loss, ActorExtra(m.init_extra, m.update_extra, soft=False))


register_wpo()
register_mpo()


@struct.dataclass
class SACHParams:
    """Hyper-parameters that may differ across a vmapped population of agents."""

    lr: jax.Array  # actor and critic Adam step size
    alpha_lr: jax.Array  # temperature Adam step size
    gamma: jax.Array
    tau: jax.Array  # Polyak rate of the target critics
    reward_scaling: jax.Array
    target_entropy_per_dim: jax.Array  # H_target = this x action dimension


@dataclasses.dataclass(frozen=True)
class SACConfig:
    """Everything a SAC run needs. Defaults: Brax's SAC notebook settings for
    inverted_pendulum (`../shared/anchors/brax_sac.py`)."""

    env: str = "inverted_pendulum"
    backend: str = "positional"  # Brax physics backend (ignored for gymnax envs)
    episode_length: int | None = None  # time limit; None: the env's own (Brax: 1000)
    fresh_reset: bool = False  # Brax: new random start per episode (False: Brax's cached start)
    total_steps: int = 300_000
    num_envs: int = 64
    batch_size: int = 64
    grad_updates_per_step: int = 32  # gradient steps per env step of all envs
    min_replay_size: int = 512  # transitions held before the first gradient step (warm-up)
    max_replay_size: int = 16_384  # a multiple of num_envs
    n_step: int = 1
    gamma: float = 0.97
    tau: float = 0.005
    lr: float = 3e-4
    alpha_lr: float = 3e-4
    init_alpha: float = 1.0
    target_entropy_per_dim: float = -0.5  # Brax's; the SAC paper's is -1
    reward_scaling: float = 10.0
    normalize_observations: bool = True
    actor_layers: tuple[int, ...] = (256, 256)
    critic_layers: tuple[int, ...] = (256, 256)
    activation: str = "relu"
    num_critics: int = 2
    actor_loss: str = "sac"  # a key of rlx.algos.sac.ACTOR_LOSSES
    fast_cpu_dots: bool = True  # CPU: compile with COMPILER_OPTIONS (YNN matmuls)
    num_evals: int = 6
    eval_envs: int = 32

    def validate(self) -> None:
        """Raise `ValueError` for any value that cannot work, before anything compiles."""
        validate_env_name(self.env)
        for name in ("total_steps", "num_envs", "batch_size", "grad_updates_per_step",
                     "max_replay_size", "n_step", "eval_envs", "num_critics"):
            if not getattr(self, name) >= 1:
                raise ValueError(f"SACConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("lr", "alpha_lr", "init_alpha", "reward_scaling"):
            if not getattr(self, name) > 0:
                raise ValueError(f"SACConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if self.num_evals < 2:
            raise ValueError(f"SACConfig.num_evals must be >= 2 (first and last), got {self.num_evals}")
        if self.max_replay_size % self.num_envs:
            raise ValueError(f"SACConfig.max_replay_size = {self.max_replay_size} is not a multiple "
                             f"of num_envs = {self.num_envs}")
        rows = self.max_replay_size // self.num_envs
        if rows < self.n_step + 1:
            raise ValueError(f"SACConfig.max_replay_size = {self.max_replay_size} holds {rows} "
                             f"steps per env, fewer than n_step + 1 = {self.n_step + 1}")
        if not 0 <= self.min_replay_size <= self.max_replay_size:
            raise ValueError(f"SACConfig.min_replay_size = {self.min_replay_size} must be in "
                             f"[0, max_replay_size = {self.max_replay_size}]")
        if self.min_replay_size >= self.total_steps:
            raise ValueError(f"SACConfig.min_replay_size = {self.min_replay_size} >= total_steps = "
                             f"{self.total_steps}: no gradient step would be taken")
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"SACConfig.gamma must be in (0, 1], got {self.gamma}")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"SACConfig.tau must be in (0, 1], got {self.tau}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; valid: {', '.join(ACTIVATIONS)}")
        if self.actor_loss not in ACTOR_LOSSES:
            raise ValueError(f"unknown actor loss {self.actor_loss!r}; valid: "
                             f"{', '.join(sorted(ACTOR_LOSSES))}")

    def hparams(self) -> SACHParams:
        """This config's hyper-parameters as the arrays `train` takes."""
        values = dict(lr=self.lr, alpha_lr=self.alpha_lr, gamma=self.gamma, tau=self.tau,
                      reward_scaling=self.reward_scaling,
                      target_entropy_per_dim=self.target_entropy_per_dim)
        return SACHParams(**{k: jnp.asarray(v, jnp.float32) for k, v in values.items()})

    def make_env(self) -> Env:
        return make_env(self.env, backend=self.backend, episode_length=self.episode_length,
                        fresh_reset=self.fresh_reset)

    @property
    def warmup_updates(self) -> int:
        """Updates (env steps of all envs) before the first gradient step."""
        return max(math.ceil(self.min_replay_size / self.num_envs), self.n_step, 1)


@struct.dataclass
class SACState:
    """A SAC learner. params: {"actor", "critic", "target_critic", "log_alpha"};
    opt_state: {"actor", "critic", "alpha"}; buffer: `rlx.replay` state of raw transitions."""

    params: dict[str, Any]
    opt_state: dict[str, Any]
    obs_stats: obs_norm.RunningStats
    env_state: EnvState
    buffer: replay.ReplayState
    key: jax.Array
    eval_key: jax.Array
    update: jax.Array  # updates (env steps of all envs) done so far
    grad_steps: jax.Array  # gradient steps done so far
    hparams: SACHParams
    extra: Any = None  # the actor loss's own state (`ActorExtra`); None for SAC


def polyak(target: Any, online: Any, tau: jax.Array | float) -> Any:
    """target <- (1 - tau) target + tau online, leaf by leaf."""
    return optax.incremental_update(online, target, tau)


@dataclasses.dataclass(frozen=True, eq=False)
class Networks:
    """The actor and twin critics of a config, as pure functions.

    actor(params, obs [..., O] (normalised)) -> tanh-Gaussian parameters [..., 2A];
    critic(params, obs, action) -> [num_critics, ...]."""

    actor_net: MLP
    critic_net: ContinuousQ
    obs_shape: tuple[int, ...]
    action_size: int

    def actor(self, params: Any, obs: jax.Array) -> jax.Array:
        x = obs.reshape(obs.shape[: obs.ndim - len(self.obs_shape)] + (-1,))
        return self.actor_net.apply(params, x)

    def critic(self, params: Any, obs: jax.Array, action: jax.Array) -> jax.Array:
        return self.critic_net.apply(params, obs, action)

    def init(self, key: jax.Array) -> tuple[Any, Any]:
        k_actor, k_critic = jax.random.split(key)
        obs = jnp.zeros((1,) + self.obs_shape, jnp.float32)
        act = jnp.zeros((1, self.action_size), jnp.float32)
        return (self.actor_net.init(k_actor, obs.reshape(1, -1)),
                self.critic_net.init(k_critic, obs, act))


def make_networks(config: SACConfig, env: Env) -> Networks:
    if env.action_spec.discrete:
        raise ValueError(f"SAC needs continuous actions; {env.name} is discrete")
    A = env.action_spec.size
    return Networks(actor_net=MLP(tuple(config.actor_layers), 2 * A, config.activation, 0.01),
                    critic_net=ContinuousQ(tuple(config.critic_layers), config.activation,
                                           config.num_critics, len(env.obs_shape)),
                    obs_shape=tuple(env.obs_shape), action_size=A)


def _item(env: Env) -> dict[str, jax.Array]:
    """One stored transition (raw observations)."""
    obs = jnp.zeros(env.obs_shape, jnp.float32)
    return {"obs": obs, "action": jnp.zeros((env.action_spec.size,), jnp.float32),
            "reward": jnp.zeros((), jnp.float32), "terminated": jnp.zeros((), jnp.bool_),
            "done": jnp.zeros((), jnp.bool_), "final_obs": obs}


def make_train(config: SACConfig, env: Env | None = None, actor_loss: ActorLoss | None = None,
               on_update: Callable[[jax.Array, jax.Array], None] | None = None) -> Trainer:
    """Build SAC's pure functions for `config` (validated here, before any compile).

    `actor_loss`: an actor update overriding `ACTOR_LOSSES[config.actor_loss]`.
    `on_update(update_index, mean_episode_return)`: a host hook after every update
    (`rlx.training.report`; the runner's own progress needs none).
    """
    config.validate()
    env = env or config.make_env()
    nets = make_networks(config, env)
    actor_loss_fn = ACTOR_LOSSES[config.actor_loss] if actor_loss is None else actor_loss
    extra_spec = ACTOR_EXTRAS.get(config.actor_loss) if actor_loss is None else None
    soft = extra_spec is None or extra_spec.soft
    N, B, G, n = config.num_envs, config.batch_size, config.grad_updates_per_step, config.n_step
    rows = config.max_replay_size // N
    steps_per_update = N
    updates_per_eval = max(1, math.ceil(config.total_steps / ((config.num_evals - 1) * N)))
    warmup = config.warmup_updates

    def norm(stats: obs_norm.RunningStats, obs: jax.Array) -> jax.Array:
        return obs_norm.normalize(stats, obs) if config.normalize_observations else obs

    def optimizers(hp: SACHParams) -> dict[str, optax.GradientTransformation]:
        return {"actor": optax.adam(hp.lr), "critic": optax.adam(hp.lr),
                "alpha": optax.adam(hp.alpha_lr)}

    def init(key: jax.Array, hp: SACHParams) -> SACState:
        k_params, k_env, k_train, k_eval = jax.random.split(key, 4)
        actor_params, critic_params = nets.init(k_params)
        params = {"actor": actor_params, "critic": critic_params, "target_critic": critic_params,
                  "log_alpha": jnp.asarray(math.log(config.init_alpha), jnp.float32)}
        txs = optimizers(hp)
        opt_state = {"actor": txs["actor"].init(actor_params),
                     "critic": txs["critic"].init(critic_params),
                     "alpha": txs["alpha"].init(params["log_alpha"])}
        return SACState(params=params, opt_state=opt_state, obs_stats=obs_norm.init(env.obs_shape),
                        env_state=reset(env, k_env, N),
                        buffer=replay.init(_item(env), N, rows), key=k_train, eval_key=k_eval,
                        update=jnp.zeros((), jnp.int32), grad_steps=jnp.zeros((), jnp.int32),
                        hparams=hp, extra=(None if extra_spec is None else
                                           extra_spec.init(actor_params, nets.action_size)))

    def grad_step(hp: SACHParams, carry: tuple, xs: tuple) -> tuple[tuple, Metrics]:
        """One critic, actor, temperature and target step on one batch."""
        params, opt_state, step, extra = carry
        mb, key = xs
        k_next, k_actor, k_alpha = jax.random.split(key, 3)
        txs = optimizers(hp)
        alpha = jnp.exp(params["log_alpha"]) if soft else jnp.zeros((), jnp.float32)
        # critic
        next_actions, next_log_prob = sample_actions(nets.actor(params["actor"], mb["next_obs"]),
                                                     k_next)
        next_q = nets.critic(params["target_critic"], mb["next_obs"], next_actions)
        target = soft_target(mb["returns"], mb["discount"], next_q, next_log_prob, alpha)

        def q_loss(critic_params):
            q = nets.critic(critic_params, mb["obs"], mb["action"])
            return critic_loss(q, target), q.mean()

        (c_loss, q_mean), grads = jax.value_and_grad(q_loss, has_aux=True)(params["critic"])
        critic, critic_opt, _ = optimizer_step(txs["critic"], params["critic"],
                                               opt_state["critic"], grads)
        # actor, against the updated critic
        q_fn = lambda o, a: jnp.min(nets.critic(critic, o, a), axis=0)  # noqa: E731
        ctx = ActorContext(alpha=alpha, step=step, extra=extra)
        (a_loss, a_metrics), grads = jax.value_and_grad(actor_loss_fn, has_aux=True)(
            params["actor"], nets.actor, mb["obs"], k_actor, q_fn, ctx)
        actor, actor_opt, _ = optimizer_step(txs["actor"], params["actor"], opt_state["actor"],
                                             grads)
        if extra_spec is not None:
            extra = extra_spec.update(extra, actor, a_metrics, step)
        # temperature, from the (pre-step) policy's log-probabilities
        log_prob = a_metrics.get("log_prob")
        if log_prob is None:
            log_prob = sample_actions(nets.actor(params["actor"], mb["obs"]), k_alpha)[1]
        if soft:
            target_entropy = hp.target_entropy_per_dim * nets.action_size
            grads = jax.grad(temperature_loss)(params["log_alpha"], log_prob, target_entropy)
            log_alpha, alpha_opt, _ = optimizer_step(txs["alpha"], params["log_alpha"],
                                                     opt_state["alpha"], grads)
        else:  # no entropy temperature: log_alpha stays, alpha reads 0
            log_alpha, alpha_opt = params["log_alpha"], opt_state["alpha"]
        new_params = {"actor": actor, "critic": critic,
                      "target_critic": polyak(params["target_critic"], critic, hp.tau),
                      "log_alpha": log_alpha}
        new_opt = {"actor": actor_opt, "critic": critic_opt, "alpha": alpha_opt}
        metrics = {"critic_loss": c_loss, "actor_loss": a_loss, "q": q_mean,
                   "entropy": -jnp.mean(log_prob),
                   "alpha": jnp.exp(log_alpha) if soft else jnp.zeros((), jnp.float32),
                   **{f"actor_{k}": v for k, v in a_metrics.items()
                      if k != "log_prob" and not k.startswith("_")}}
        return (new_params, new_opt, step + 1, extra), metrics

    def make_batches(stats: obs_norm.RunningStats, windows: dict, hp: SACHParams) -> dict:
        """Replay windows `[G*B, n, ...]` -> G batches of B n-step transitions (normalised)."""
        returns, discount, last = n_step_window(windows["reward"] * hp.reward_scaling,
                                                windows["terminated"], windows["done"], hp.gamma)
        next_obs = jnp.take_along_axis(
            windows["final_obs"], last.reshape((-1,) + (1,) * (windows["final_obs"].ndim - 1)),
            axis=1)[:, 0]
        batch = {"obs": norm(stats, windows["obs"][:, 0]), "action": windows["action"][:, 0],
                 "returns": returns, "discount": discount, "next_obs": norm(stats, next_obs)}
        return jax.tree.map(lambda x: x.reshape((G, B) + x.shape[1:]), batch)

    def update(state: SACState) -> tuple[SACState, Metrics]:
        hp = state.hparams
        key, k_act, k_sample, k_sgd = jax.random.split(state.key, 4)

        def policy(obs, k):
            a, _ = sample_actions(nets.actor(state.params["actor"], norm(state.obs_stats, obs)), k)
            return a, a, {}

        env_state, traj = rollout(env, policy, state.env_state, k_act, 1)
        chex.assert_shape(traj.reward, (1, N))
        stats = (obs_norm.update(state.obs_stats, traj.obs) if config.normalize_observations
                 else state.obs_stats)
        buffer = replay.insert(state.buffer, {
            "obs": traj.obs, "action": traj.action, "reward": traj.reward,
            "terminated": traj.terminated, "done": traj.done, "final_obs": traj.final_obs})
        batches = make_batches(stats, replay.sample(buffer, k_sample, G * B, n), hp)

        def learn(operand):
            (params, opt_state, steps, extra), m = jax.lax.scan(
                lambda c, xs: grad_step(hp, c, xs), operand,
                (batches, jax.random.split(k_sgd, G)))
            return (params, opt_state, steps, extra), {k: v.mean() for k, v in m.items()}

        operand = (state.params, state.opt_state, state.grad_steps, state.extra)
        shapes = jax.eval_shape(learn, operand)[1]
        ready = state.update + 1 >= warmup
        (params, opt_state, grad_steps, extra), metrics = jax.lax.cond(
            ready, learn,
            lambda o: (o, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)), operand)
        state = state.replace(params=params, opt_state=opt_state, obs_stats=stats,
                              env_state=env_state, buffer=buffer, key=key,
                              update=state.update + 1, grad_steps=grad_steps, extra=extra)
        metrics.update(episode_metrics(traj))
        metrics["buffer_size"] = replay.size(buffer).astype(jnp.float32)
        report(on_update, state.update, metrics["episode_return"], state)
        return state, metrics

    def evaluate_fn(state: SACState) -> Metrics:
        def act(obs):
            dist_params = nets.actor(state.params["actor"], norm(state.obs_stats, obs))
            return distributions.make(HEAD, dist_params).mode()  # tanh(loc)

        return evaluate(env, act, jax.random.fold_in(state.eval_key, state.update),
                        config.eval_envs)

    options = (dict(COMPILER_OPTIONS)
               if config.fast_cpu_dots and jax.default_backend() == "cpu" else None)
    return Trainer(init=init, update=update, evaluate=evaluate_fn,
                   default_hparams=config.hparams(), num_evals=config.num_evals,
                   updates_per_eval=updates_per_eval, steps_per_update=steps_per_update,
                   config=config, compiler_options=options)


# Tiny sizes (`--quick`: tests and smoke runs).
QUICK: dict = dict(total_steps=4_000, num_envs=16, batch_size=32, grad_updates_per_step=2,
                   min_replay_size=256, max_replay_size=2_048, num_evals=3, eval_envs=4,
                   actor_layers=(32, 32), critic_layers=(32, 32), episode_length=100)


__all__ = ["SACConfig", "SACHParams", "SACState", "ACTOR_LOSSES", "ACTOR_EXTRAS", "ActorExtra",
           "register_actor_loss", "register_wpo", "register_mpo",
           "make_train", "make_networks", "Networks", "polyak", "QUICK"]
