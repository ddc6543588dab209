"""Soft actor-critic losses (Haarnoja et al. 2018, arXiv 1812.05905), as pure functions.

With twin critics Q_1, Q_2, target critics Q'_i, a tanh-Gaussian policy pi and the
entropy temperature alpha = exp(log_alpha):

    critic:       L_Q = 1/2 mean_{i, batch} (Q_i(s, a) - y)^2,
                  y = G + disc * (min_i Q'_i(s', a') - alpha log pi(a'|s')),  a' ~ pi(.|s')
                  (G, disc: the n-step reward sum and bootstrap discount of
                  `rlx.losses.n_step_window`; rewards already scaled)
    actor:        L_pi = mean_batch (alpha log pi(a|s) - min_i Q_i(s, a)),  a ~ pi(.|s)
                  (reparametrised: the gradient flows through a into Q)
    temperature:  L_alpha = alpha * mean_batch(-log pi(a|s) - H_target)   (eq. 18)

The actor loss has the signature every pluggable actor update shares
(`rlx.algos.sac.ACTOR_LOSSES`):
    actor_loss(actor_params, apply_fn, obs [B, O], key, q_fn, ctx) -> (loss, metrics)
apply_fn(params, obs) -> tanh-Gaussian parameters `[B, 2A]` (`rlx.distributions`),
q_fn(obs, actions) -> min_i Q_i `[B]` (differentiable in the actions: grad_a Q),
ctx: `ActorContext` (alpha, ...). metrics["log_prob"] (mean log pi of the policy's own
samples, no gradient) feeds the temperature update.
"""

from __future__ import annotations

from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp
from flax import struct

from rlx import distributions

HEAD = "tanh_gaussian"
QFn = Callable[[jax.Array, jax.Array], jax.Array]
ApplyFn = Callable[[Any, jax.Array], jax.Array]


@struct.dataclass
class ActorContext:
    """What an actor loss may use besides the policy and the critic.

    alpha: the entropy temperature (no gradient). step: gradient steps done so far.
    extra: the actor loss's own state (`rlx.algos.sac.ActorExtra`; None for SAC), e.g. WPO's
    target policy and KL duals.
    """

    alpha: jax.Array
    step: jax.Array
    extra: Any = None


def sample_actions(dist_params: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(a = tanh(u), log pi(a|s)) for u ~ N(loc, scale^2): a reparametrised sample of the
    tanh-Gaussian with its log-density (the tanh Jacobian included)."""
    dist = distributions.make(HEAD, dist_params)
    raw = dist.sample(key)
    return dist.to_env(raw), dist.log_prob(raw)


def soft_target(returns: jax.Array, discount: jax.Array, next_q: jax.Array,
                next_log_prob: jax.Array, alpha: jax.Array) -> jax.Array:
    """y = G + disc * (min_i Q'_i(s', a') - alpha log pi(a'|s')), no gradient.

    `next_q`: `[num_critics, B]` target-critic values at (s', a'); the rest `[B]`."""
    chex.assert_equal_shape([returns, discount, next_log_prob, next_q[0]])
    next_v = jnp.min(next_q, axis=0) - alpha * next_log_prob
    return jax.lax.stop_gradient(returns + discount * next_v)


def critic_loss(q: jax.Array, target: jax.Array) -> jax.Array:
    """1/2 mean over critics and batch of (Q_i(s, a) - y)^2; `q` `[num_critics, B]`, `target`
    `[B]`."""
    chex.assert_equal_shape([q[0], target])
    return 0.5 * jnp.mean(jnp.square(q - target[None]))


def temperature_loss(log_alpha: jax.Array, log_prob: jax.Array,
                     target_entropy: jax.Array) -> jax.Array:
    """alpha * mean(-log pi - H_target): raises alpha while the policy's entropy (-log pi) is
    below the target and lowers it above."""
    return jnp.exp(log_alpha) * jnp.mean(jax.lax.stop_gradient(-log_prob - target_entropy))


def sac_actor_loss(actor_params: Any, apply_fn: ApplyFn, obs: jax.Array, key: jax.Array,
                   q_fn: QFn, ctx: ActorContext) -> tuple[jax.Array, dict[str, jax.Array]]:
    """SAC's reparametrised actor loss mean(alpha log pi(a|s) - min_i Q_i(s, a)), a ~ pi."""
    chex.assert_rank(obs, 2)
    actions, log_prob = sample_actions(apply_fn(actor_params, obs), key)
    q = q_fn(obs, actions)
    chex.assert_equal_shape([q, log_prob])
    loss = jnp.mean(ctx.alpha * log_prob - q)
    return loss, {"log_prob": jax.lax.stop_gradient(log_prob.mean()),
                  "q_pi": jax.lax.stop_gradient(q.mean())}


__all__ = ["ActorContext", "sample_actions", "soft_target", "critic_loss", "temperature_loss",
           "sac_actor_loss", "HEAD"]
