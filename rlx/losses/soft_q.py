"""Entropy-regularised policy gradients and soft Q-learning (Schulman, Chen & Abbeel 2017).

Discrete actions, temperature tau, and a reference policy pibar: the objective is

    eta(pi) = E[ sum_t gamma^t (r_t - tau KL_t) ],   KL_t = KL[pi(.|s_t) || pibar(.|s_t)].

`ref_log_probs = None` means pibar = 1 for every action (the counting measure), so
KL_t = -H[pi(.|s_t)] and the penalty is the plain entropy bonus +tau H_t; a uniform
pibar gives the same up to the constant tau log|A| per step.

The paper's identity (Section 4), checked numerically in tests/test_softq.py:
parametrise Q = V + tau log(pi / pibar). Then the Boltzmann policy of Q is pi, its
soft value is V, and the gradient of the n-step soft Q-learning loss is

    grad L_softQ = tau * grad L_PG + grad L_V

where L_PG is the entropy-regularised policy-gradient surrogate whose returns carry
the single-sample penalty tau log(pi/pibar)(a_t|s_t), and L_V the value regression on
the same returns. The usual estimator (`kl_estimate="exact"`: the KL summed over all
actions in the returns plus its gradient at s_t) differs from it per sample, by terms
whose expectation is zero under on-policy actions.

All arrays are time-major `[T, ...]` with any batch shape after the time axis; the
action axis of logits / Q-values is last. Every function is pure.
"""

from __future__ import annotations

from typing import Literal

import chex
import jax
import jax.numpy as jnp

from rlx.losses.advantages import n_step_returns

KLEstimate = Literal["exact", "sample"]
KL_ESTIMATES: tuple[str, ...] = ("exact", "sample")


def _log_ref(ref_log_probs: jax.Array | None, like: jax.Array) -> jax.Array:
    """log pibar broadcast to `like` (zeros, the counting measure, when None)."""
    if ref_log_probs is None:
        return jnp.zeros_like(like)
    return jnp.broadcast_to(ref_log_probs, like.shape).astype(like.dtype)


def _take(x: jax.Array, actions: jax.Array) -> jax.Array:
    """x[..., a] for integer actions shaped like x without its last axis."""
    return jnp.take_along_axis(x, actions.astype(jnp.int32)[..., None], axis=-1)[..., 0]


def kl_to_reference(logits: jax.Array, ref_log_probs: jax.Array | None = None) -> jax.Array:
    """KL[pi || pibar] = sum_a pi(a) (log pi(a) - log pibar(a)), pi = softmax(logits).

    With `ref_log_probs = None` (pibar = 1) this is -H[pi].
    """
    log_pi = jax.nn.log_softmax(logits, axis=-1)
    return jnp.sum(jnp.exp(log_pi) * (log_pi - _log_ref(ref_log_probs, log_pi)), axis=-1)


def boltzmann(q: jax.Array, tau: float | jax.Array,
              ref_log_probs: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Soft value and Boltzmann policy of Q-values `[..., A]`:

        V(s)       = tau * log sum_a pibar(a|s) exp(Q(s,a) / tau)
        log pi(a|s) = log pibar(a|s) + (Q(s,a) - V(s)) / tau

    Returns (V `[...]`, log pi `[..., A]`).
    """
    log_ref = _log_ref(ref_log_probs, q)
    v = tau * jax.nn.logsumexp(q / tau + log_ref, axis=-1)
    return v, log_ref + (q - v[..., None]) / tau


def q_from_policy(logits: jax.Array, values: jax.Array, tau: float | jax.Array,
                  ref_log_probs: jax.Array | None = None) -> jax.Array:
    """The paper's parametrisation Q(s,a) = V(s) + tau * log(pi(a|s) / pibar(a|s)).

    Its Boltzmann policy (`boltzmann(Q, tau, ref)`) is softmax(logits) and its soft
    value is V, exactly: sum_a pibar exp(Q/tau) = exp(V/tau) sum_a pi = exp(V/tau).
    """
    chex.assert_equal_shape_prefix([logits, values], values.ndim)
    log_pi = jax.nn.log_softmax(logits, axis=-1)
    return values[..., None] + tau * (log_pi - _log_ref(ref_log_probs, log_pi))


def soft_q_loss(q: jax.Array, next_q: jax.Array, actions: jax.Array, rewards: jax.Array,
                terminated: jax.Array, done: jax.Array, tau: float | jax.Array,
                gamma: float | jax.Array, n: int | jax.Array | None = None,
                ref_log_probs: jax.Array | None = None,
                next_ref_log_probs: jax.Array | None = None) -> tuple[jax.Array, dict]:
    """n-step soft Q-learning (the paper's eq. for the n-step soft Q target):

        y_t = r_t + sum_{d=1}^{k-1} gamma^d (r_{t+d} - tau log(pi/pibar)(a_{t+d}|s_{t+d}))
                  + gamma^k V(s_{t+k})
        L   = 0.5 * mean_t (Q(s_t, a_t) - y_t)^2,       y_t held fixed (stop-gradient)

    where V and pi are the soft value and Boltzmann policy of Q itself (`boltzmann`),
    k is as in `n_step_returns` (n steps, cut at episode ends and the rollout's end,
    no bootstrap after termination), V(s_{t+k}) comes from `next_q` = Q(final_obs),
    and KL_{t+d} is estimated by the log-ratio of the action taken (no penalty at d = 0:
    Q(s_t, a_t) already conditions on a_t). Equivalently y_t = G_t + tau log(pi/pibar)(a_t|s_t)
    with G_t the n-step return of the penalised rewards r - tau log(pi/pibar)(a).

    q, next_q: `[T, ..., A]`; actions, rewards, terminated, done: `[T, ...]`.
    ref_log_probs / next_ref_log_probs: log pibar at s_t / at final_obs_t, broadcastable
    to `q` (None: pibar = 1, the entropy form). Returns (loss, aux).
    """
    chex.assert_equal_shape([q, next_q])
    chex.assert_equal_shape([actions, rewards, terminated, done])
    chex.assert_equal_shape_prefix([q, rewards], rewards.ndim)
    v, log_pi = boltzmann(q, tau, ref_log_probs)
    log_ratio = _take(log_pi - _log_ref(ref_log_probs, q), actions)  # = (Q(s,a) - V(s)) / tau
    next_v, _ = boltzmann(next_q, tau, next_ref_log_probs)
    penalty = jax.lax.stop_gradient(tau * log_ratio)
    returns = n_step_returns(rewards - penalty, jax.lax.stop_gradient(next_v), terminated, done,
                             gamma, n)
    target = jax.lax.stop_gradient(returns + penalty)
    q_taken = _take(q, actions)
    err = q_taken - target
    aux = {"q_taken": q_taken.mean(), "soft_value": v.mean(), "target": target.mean(),
           "td_abs": jnp.abs(err).mean(), "entropy": -jnp.sum(jnp.exp(log_pi) * log_pi, -1).mean()}
    return 0.5 * jnp.mean(err**2), aux


def entropy_pg_loss(logits: jax.Array, values: jax.Array, next_values: jax.Array,
                    actions: jax.Array, rewards: jax.Array, terminated: jax.Array,
                    done: jax.Array, tau: float | jax.Array, gamma: float | jax.Array,
                    n: int | jax.Array | None = None, ref_log_probs: jax.Array | None = None,
                    kl_estimate: KLEstimate = "exact") -> tuple[jax.Array, jax.Array, dict]:
    """Entropy(KL)-regularised policy gradient with a learned value (A2C, the paper's eq. for
    the regularised policy gradient), the penalty folded into the rewards:

        r~_t = r_t - tau * kl_t,   G_t = n_step_returns(r~, V', ...),   A_t = G_t - V(s_t)
        L_PG = -mean_t log pi(a_t|s_t) A_t  [+ tau * mean_t KL_t   if exact]
        L_V  = 0.5 * mean_t (V(s_t) - G_t)^2,        A_t, G_t held fixed

    kl_estimate "exact": kl_t = KL[pi||pibar](s_t) summed over all actions, with its
    own gradient in L_PG (the standard estimator, "A2C with a proper entropy bonus");
    "sample": kl_t = log(pi/pibar)(a_t|s_t) of the action taken and no explicit KL
    gradient (the score-function term already estimates it) -- the estimator the
    soft-Q gradient expands into, exactly: grad L_softQ = tau grad L_PG + grad L_V.
    Both have the same expectation under on-policy actions.

    logits `[T, ..., A]`; values, next_values (V(final_obs_t)), actions, rewards,
    terminated, done `[T, ...]`. Returns (L_PG, L_V, aux); the trainer weights them.
    """
    if kl_estimate not in KL_ESTIMATES:
        raise ValueError(f"unknown kl_estimate {kl_estimate!r}; valid: {', '.join(KL_ESTIMATES)}")
    chex.assert_equal_shape([values, next_values, actions, rewards, terminated, done])
    chex.assert_equal_shape_prefix([logits, values], values.ndim)
    log_pi = jax.nn.log_softmax(logits, axis=-1)
    log_pi_a = _take(log_pi, actions)
    kl = kl_to_reference(logits, ref_log_probs)
    kl_t = kl if kl_estimate == "exact" else log_pi_a - _take(_log_ref(ref_log_probs, log_pi), actions)
    returns = jax.lax.stop_gradient(n_step_returns(rewards - tau * kl_t, next_values, terminated,
                                                   done, gamma, n))
    adv = returns - jax.lax.stop_gradient(values)
    pg = -jnp.mean(log_pi_a * adv)
    if kl_estimate == "exact":
        pg = pg + tau * jnp.mean(kl)
    v_loss = 0.5 * jnp.mean((values - returns) ** 2)
    aux = {"advantage": adv.mean(), "returns": returns.mean(), "kl": kl.mean(),
           "entropy": -jnp.sum(jnp.exp(log_pi) * log_pi, -1).mean()}
    return pg, v_loss, aux


__all__ = ["n_step_returns", "kl_to_reference", "boltzmann", "q_from_policy", "soft_q_loss",
           "entropy_pg_loss", "KL_ESTIMATES"]
