"""n-step soft Q-learning (Schulman, Chen & Abbeel 2017) as `make_train(config) -> Trainer`.

The agent is a Q-function and nothing else: it acts with the Boltzmann policy
pi(a|s) = exp((Q(s,a) - V(s)) / tau), V(s) = tau logsumexp(Q(s,.)/tau), and its only
loss is the n-step soft Q-learning error `rlx.losses.soft_q_loss` -- no actor loss,
no target network, no epsilon-greedy schedule. Rollouts, optimiser and evaluation
are A2C's (`rlx.algos.a2c.build_trainer`), so the two trainers differ only in the loss.

Parametrisations (`SoftQConfig.parametrisation`):
  "policy": Q(s,a) = V(s) + tau log pi(a|s) from a logits MLP and a value MLP -- the
            paper's Atari setting, whose gradient equals tau x A2C's policy gradient
            plus the value gradient (tests/test_softq.py checks it);
  "direct": Q(s,.) straight from one MLP (plain soft Q-learning).
`loss_scale` multiplies the Q loss (default 1/tau, which puts the policy part of the
gradient on A2C's scale: grad L/tau = grad L_PG + grad L_V / tau).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from rlx import losses
from rlx.algos.a2c import NStepConfig, build_trainer
from rlx.envs.base import Env
from rlx.networks import QNetwork
from rlx.rollout import Transition
from rlx.training import Trainer

PARAMETRISATIONS = ("policy", "direct")


@struct.dataclass
class SoftQHParams:
    """Hyper-parameters that may differ across a vmapped population of agents."""

    lr: jax.Array
    tau: jax.Array
    gamma: jax.Array
    loss_scale: jax.Array
    max_grad_norm: jax.Array


@dataclasses.dataclass(frozen=True)
class SoftQConfig(NStepConfig):
    """n-step soft Q-learning; shares every rollout / optimiser field with `A2CConfig`."""

    parametrisation: str = "policy"
    loss_scale: float | None = None  # None: 1 / tau
    max_grad_norm: float = float("inf")  # the value part of grad L/tau is 1/tau larger than A2C's

    def validate(self) -> None:
        super().validate()
        if self.parametrisation not in PARAMETRISATIONS:
            raise ValueError(f"SoftQConfig.parametrisation {self.parametrisation!r} is unknown; "
                             f"valid: {', '.join(PARAMETRISATIONS)}")
        if self.loss_scale is not None and not self.loss_scale > 0:
            raise ValueError(f"SoftQConfig.loss_scale must be > 0 or None, got {self.loss_scale!r}")

    def hparams(self) -> SoftQHParams:
        scale = 1.0 / self.tau if self.loss_scale is None else self.loss_scale
        values = dict(lr=self.lr, tau=self.tau, gamma=self.gamma, loss_scale=scale,
                      max_grad_norm=self.max_grad_norm)
        return SoftQHParams(**{k: jnp.asarray(v, jnp.float32) for k, v in values.items()})


def make_q_fn(config: SoftQConfig, env: Env) -> tuple[nn.Module, Callable]:
    """(network, q(params, obs, hparams) -> Q-values [..., A]) for `config.parametrisation`."""
    if config.parametrisation == "direct":
        net = QNetwork(env.action_spec.size, tuple(config.policy_layers), config.activation,
                       len(env.obs_shape))
        return net, lambda params, obs, hp: net.apply(params, obs)
    net = config.actor_critic(env)

    def q_fn(params, obs, hp):
        logits, values = net.apply(params, obs)
        return losses.q_from_policy(logits, values, hp.tau)

    return net, q_fn


def make_train(config: SoftQConfig, env: Env | None = None,
               on_update: Callable[[jax.Array, jax.Array], None] | None = None) -> Trainer:
    """Build n-step soft Q-learning's pure functions for `config` (validated before compile).

    Loss per update: loss_scale * `rlx.losses.soft_q_loss` on the rollout, with V(s_{t+k})
    from Q at `final_obs` under the current parameters (no target network).
    """
    config.validate()
    env = env or config.make_env()
    net, q_fn = make_q_fn(config, env)

    def loss_fn(params, tr: Transition, hp: SoftQHParams):
        q = q_fn(params, tr.obs, hp)
        next_q = jax.lax.stop_gradient(q_fn(params, tr.final_obs, hp))
        loss, aux = losses.soft_q_loss(q, next_q, tr.action, tr.reward, tr.terminated, tr.done,
                                       hp.tau, hp.gamma, config.n_step)
        return hp.loss_scale * loss, {"q_loss": loss, **aux}

    def logits_fn(params, obs, hp):
        return losses.boltzmann(q_fn(params, obs, hp), hp.tau)[1]

    return build_trainer(config, env, net, loss_fn, logits_fn, config.hparams(), on_update)


__all__ = ["SoftQConfig", "SoftQHParams", "QNetwork", "make_q_fn", "make_train", "PARAMETRISATIONS"]
