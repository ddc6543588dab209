"""Policy-gradient surrogate losses (to be *minimised*), PPO's family among them."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from rlx.losses.advantages import masked_mean


def ppo_surrogate(log_prob: jax.Array, old_log_prob: jax.Array, advantages: jax.Array,
                  clip_eps: float | jax.Array = 0.2, mask: jax.Array | None = None) -> jax.Array:
    """PPO's clipped surrogate (Schulman et al. 2017, eq. 7), negated:

        r_t = exp(log pi(a_t|s_t) - log pi_old(a_t|s_t))
        L   = -mean_t min(r_t A_t, clip(r_t, 1 - eps, 1 + eps) A_t)

    `clip_eps = inf` gives the unclipped surrogate -mean_t r_t A_t (the paper's
    "no clipping or penalty" row), so one traced value selects the variant.
    With `mask` (e.g. [B, L] token positions), the mean runs over m_t = 1 only.
    """
    chex.assert_equal_shape([log_prob, old_log_prob, advantages])
    ratio = jnp.exp(log_prob - old_log_prob)
    clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    return -masked_mean(jnp.minimum(ratio * advantages, clipped * advantages), mask)


def kl_penalty(kl: jax.Array, beta: float | jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """PPO's KL penalty term (eq. 8), to add to the surrogate: beta * mean_t KL[pi_old, pi]_t."""
    return beta * masked_mean(kl, mask)


def adaptive_kl_beta(beta: jax.Array, kl: jax.Array, kl_target: float | jax.Array) -> jax.Array:
    """The paper's adaptive penalty coefficient update (Section 4), after each policy update:

        d = mean KL[pi_old, pi];  d < d_targ / 1.5  ->  beta / 2;  d > 1.5 d_targ  ->  beta * 2

    `kl_target <= 0` keeps beta fixed (the fixed-penalty variant).
    """
    new = jnp.where(kl < kl_target / 1.5, beta / 2.0, jnp.where(kl > kl_target * 1.5, beta * 2.0, beta))
    return jnp.where(kl_target > 0, new, beta)


def entropy_loss(entropy: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Entropy bonus as a loss: -mean_t H[pi(.|s_t)] (multiply by the entropy coefficient)."""
    return -masked_mean(entropy, mask)


def clip_fraction(log_prob: jax.Array, old_log_prob: jax.Array, clip_eps: float | jax.Array,
                  mask: jax.Array | None = None) -> jax.Array:
    """Fraction of samples whose ratio left [1 - eps, 1 + eps] (a diagnostic)."""
    outside = jnp.abs(jnp.exp(log_prob - old_log_prob) - 1.0) > clip_eps
    return jnp.mean(outside) if mask is None else masked_mean(outside.astype(jnp.float32), mask)


def approx_kl(log_prob: jax.Array, old_log_prob: jax.Array,
              mask: jax.Array | None = None) -> jax.Array:
    """Low-variance estimator of KL[pi_old, pi]: mean((r - 1) - log r) (Schulman's k3)."""
    log_ratio = log_prob - old_log_prob
    return masked_mean(jnp.expm1(log_ratio) - log_ratio, mask)


__all__ = ["ppo_surrogate", "kl_penalty", "adaptive_kl_beta", "entropy_loss", "clip_fraction",
           "approx_kl"]
