"""Advantage actor-critic with an entropy (KL) bonus folded into the returns, as
`make_train(config) -> Trainer`, and the n-step configuration of the on-policy engine
(`rlx.algos.onpolicy`) it shares with `rlx.algos.softq`.

One update: roll out `num_envs x unroll_length` steps with the current policy,
form n-step returns of the penalised rewards r - tau KL (`rlx.losses.entropy_pg_loss`:
"A2C with a proper entropy bonus", Schulman, Chen & Abbeel 2017), and take one Adam
step on L_PG + vf_coef L_V. There is no replay, target network, epochs or
minibatches; bootstrap values come from the current parameters at `final_obs`, so a
time-limit truncation bootstraps and a termination does not.

`build_trainer` configures the engine for n-step learners: a trainer supplies its
network, its loss on a rollout and the logits of the policy it acts with. A2C and
soft Q-learning differ only in those.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from rlx import losses
from rlx.envs import make as make_env
from rlx.envs import validate_env_name
from rlx.envs.base import Env
from rlx.networks import ACTIVATIONS, ActorCritic
from rlx.algos.onpolicy import Engine, make_trainer, no_batch
from rlx.optim import clipped_adam
from rlx.rollout import Transition
from rlx.training import Trainer

# loss(params, rollout [T, N], hparams) -> (scalar to minimise, aux metrics)
LossFn = Callable[[Any, Transition, Any], tuple[jax.Array, dict]]
# logits(params, obs [N, ...], hparams) -> logits [N, A] of the policy that acts
LogitsFn = Callable[[Any, jax.Array, Any], jax.Array]


@dataclasses.dataclass(frozen=True)
class NStepConfig:
    """What every n-step on-policy trainer here needs (A2C and soft Q-learning).

    Defaults: a CPU-sized MinAtar run (64 envs x 5 steps per update, the paper's
    5-step updates, entropy temperature tau = 0.01 as in its Atari runs).
    """

    env: str = "Breakout-MinAtar"
    episode_length: int | None = None  # None: the env's own time limit
    total_steps: int = 1_000_000  # env steps per seed (rounded up to whole eval chunks)
    num_envs: int = 64
    unroll_length: int = 5  # steps per env per update
    n_step: int | None = None  # None: bootstrap at the end of the unroll (A3C's "up to T steps")
    lr: float = 1e-3
    adam_eps: float = 1e-5
    max_grad_norm: float = 0.5  # inf: no clipping
    tau: float = 0.01  # temperature of the entropy / KL penalty
    gamma: float = 0.99
    policy_layers: tuple[int, ...] = (256, 256)
    value_layers: tuple[int, ...] = (256, 256)
    activation: str = "relu"
    num_evals: int = 11
    eval_envs: int = 16

    def validate(self) -> None:
        """Raise `ValueError` naming any value that cannot work, before anything compiles."""
        name = type(self).__name__
        validate_env_name(self.env)
        for field in ("total_steps", "num_envs", "unroll_length", "eval_envs", "lr", "tau",
                      "adam_eps", "max_grad_norm"):
            if not getattr(self, field) > 0:
                raise ValueError(f"{name}.{field} must be > 0, got {getattr(self, field)!r}")
        if self.n_step is not None and self.n_step < 1:
            raise ValueError(f"{name}.n_step must be >= 1 or None, got {self.n_step!r}")
        if self.episode_length is not None and self.episode_length < 1:
            raise ValueError(f"{name}.episode_length must be >= 1 or None, got {self.episode_length!r}")
        if self.num_evals < 2:
            raise ValueError(f"{name}.num_evals must be >= 2 (first and last), got {self.num_evals!r}")
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"{name}.gamma must be in (0, 1], got {self.gamma!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"{name}.activation {self.activation!r} is unknown; "
                             f"valid: {', '.join(ACTIVATIONS)}")
        for field in ("policy_layers", "value_layers"):
            if any(int(w) < 1 for w in getattr(self, field)):
                raise ValueError(f"{name}.{field} widths must be >= 1, got {getattr(self, field)!r}")

    def make_env(self) -> Env:
        env = make_env(self.env, episode_length=self.episode_length)
        if not env.action_spec.discrete:
            raise ValueError(f"{type(self).__name__}.env {self.env!r} has continuous actions; "
                             "these trainers need discrete ones (e.g. Breakout-MinAtar, CartPole-v1)")
        return env

    def actor_critic(self, env: Env) -> ActorCritic:
        """Separate policy (logits) and value MLPs over the flattened observation."""
        return ActorCritic(action_size=env.action_spec.size, head="categorical",
                           policy_layers=tuple(self.policy_layers),
                           value_layers=tuple(self.value_layers), activation=self.activation,
                           obs_ndim=len(env.obs_shape))


# NStepConfig overrides shared by soft Q-learning and A2C on MinAtar
# (`experiments.softq_equivalence`). The paper's A2C: 5-step updates, entropy coefficient
# (tau) 0.01. On MinAtar a 2x2 sweep (lr 3e-4 / 1e-3 x tau 0.01 / 0.03, Breakout, 2M steps,
# both algorithms) put tau 0.01 on a plateau near 5.5 and tau 0.03 at about 9, so the
# presets use tau 0.03, lr 1e-3.
_MINATAR = dict(num_envs=64, unroll_length=5, lr=1e-3, tau=0.03, gamma=0.99)
PRESETS: dict[str, dict] = {
    # CPU
    "default": dict(_MINATAR, policy_layers=(64, 64), value_layers=(64, 64), num_evals=16,
                    eval_envs=16),
    # GPU: the paper's Atari figure scaled to MinAtar
    "full": dict(_MINATAR, num_envs=256, policy_layers=(256, 256), value_layers=(256, 256),
                 num_evals=41, eval_envs=64),
    # tests and smoke runs
    "quick": dict(_MINATAR, num_envs=8, policy_layers=(16,), value_layers=(16,), num_evals=3,
                  eval_envs=4),
}

def build_trainer(config: NStepConfig, env: Env, net: nn.Module, loss_fn: LossFn,
                  logits_fn: LogitsFn, hparams: Any,
                  on_update: Callable[[jax.Array, jax.Array], None] | None = None) -> Trainer:
    """An n-step trainer as a configuration of the on-policy engine (`rlx.algos.onpolicy`):
    rollout -> one Adam step on `loss_fn` of the whole rollout per update.

    `hparams` must carry `lr` and `max_grad_norm` (read here); the rest is the loss's.
    Actions are sampled from `logits_fn`; evaluation acts greedily (its argmax) on
    `eval_envs` fresh episodes.
    """
    num_actions = env.action_spec.size

    def act(params, obs, k, hp):
        logits = logits_fn(params, obs, hp)
        chex.assert_shape(logits, (config.num_envs, num_actions))
        action = jax.random.categorical(k, logits)
        return action, action, {}

    engine = Engine(
        init_params=lambda k: net.init(k, jnp.zeros((1,) + env.obs_shape, jnp.float32)),
        act=act, mode=lambda params, obs, hp: jnp.argmax(logits_fn(params, obs, hp), axis=-1),
        batch_fn=no_batch, loss_fn=lambda params, traj, key, hp, extra: loss_fn(params, traj, hp),
        optimizer=lambda hp, update: clipped_adam(hp.lr, hp.max_grad_norm, config.adam_eps),
        num_envs=config.num_envs, unroll_length=config.unroll_length)
    return make_trainer(engine, env, hparams=hparams, total_steps=config.total_steps,
                        num_evals=config.num_evals, eval_envs=config.eval_envs, config=config,
                        on_update=on_update)


# ---- A2C ------------------------------------------------------------------------------------

@struct.dataclass
class A2CHParams:
    """Hyper-parameters that may differ across a vmapped population of agents."""

    lr: jax.Array
    tau: jax.Array
    gamma: jax.Array
    vf_coef: jax.Array
    max_grad_norm: jax.Array


@dataclasses.dataclass(frozen=True)
class A2CConfig(NStepConfig):
    """A2C with the entropy penalty in the returns (see `rlx.losses.entropy_pg_loss`)."""

    vf_coef: float = 0.5
    kl_estimate: str = "exact"  # exact: KL over all actions (+ its gradient); sample: log-ratio

    def validate(self) -> None:
        super().validate()
        if self.kl_estimate not in losses.soft_q.KL_ESTIMATES:
            raise ValueError(f"A2CConfig.kl_estimate {self.kl_estimate!r} is unknown; "
                             f"valid: {', '.join(losses.soft_q.KL_ESTIMATES)}")
        if not self.vf_coef >= 0:
            raise ValueError(f"A2CConfig.vf_coef must be >= 0, got {self.vf_coef!r}")

    def hparams(self) -> A2CHParams:
        values = dict(lr=self.lr, tau=self.tau, gamma=self.gamma, vf_coef=self.vf_coef,
                      max_grad_norm=self.max_grad_norm)
        return A2CHParams(**{k: jnp.asarray(v, jnp.float32) for k, v in values.items()})


def make_train(config: A2CConfig, env: Env | None = None,
               on_update: Callable[[jax.Array, jax.Array], None] | None = None) -> Trainer:
    """Build A2C's pure functions for `config` (validated here, before any compile).

    Loss per update: L_PG + vf_coef * L_V of `rlx.losses.entropy_pg_loss` on the rollout.
    `on_update(update_index, mean_episode_return)` is called on the host after every update.
    """
    config.validate()
    env = env or config.make_env()
    net = config.actor_critic(env)

    def loss_fn(params, tr: Transition, hp: A2CHParams):
        logits, values = net.apply(params, tr.obs)
        _, next_values = net.apply(params, tr.final_obs)
        pg, v_loss, aux = losses.entropy_pg_loss(
            logits, values, jax.lax.stop_gradient(next_values), tr.action, tr.reward,
            tr.terminated, tr.done, hp.tau, hp.gamma, config.n_step, kl_estimate=config.kl_estimate)
        return pg + hp.vf_coef * v_loss, {"policy_loss": pg, "value_loss": v_loss, **aux}

    def logits_fn(params, obs, hp):
        return net.apply(params, obs)[0]

    return build_trainer(config, env, net, loss_fn, logits_fn, config.hparams(), on_update)


__all__ = ["NStepConfig", "PRESETS", "build_trainer", "A2CConfig", "A2CHParams", "make_train"]
