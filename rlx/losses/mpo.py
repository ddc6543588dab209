"""Maximum a posteriori Policy Optimisation (Abdolmaleki et al. 2018, arXiv 1806.06920 and
1812.02256, the decoupled-KL form): the actor update WPO is measured against.

Per state s (batch B), N actions a_n are sampled from the target policy pi_t (shapes: actions
[B, N, A], Q-values [B, N]):

  E-step, a non-parametric improved policy q(a_n|s) proportional to pi_t(a_n|s) exp(Q(s, a_n)/eta):

    w_bn = softmax_n(Q(s_b, a_bn) / eta)                                          (`e_step_weights`)

  with the temperature eta > 0 from the dual of "max E_q[Q] s.t. KL(q || pi_t) <= epsilon":

    L_eta(eta) = eta epsilon + eta mean_b log (1/N) sum_n exp(Q_bn / eta)         (`temperature_dual_loss`)
    dL_eta/deta = epsilon - mean_b KL(w_b || uniform)                            (`nonparametric_kl`)

  so minimising L_eta raises eta while the weights are sharper than epsilon allows and lowers
  it otherwise.

  M-step, a weighted maximum likelihood fit of the Gaussian pi = N(mu, sigma^2) to q, its mean and
  std decoupled (each fitted with the other held at the target's):

    L_mu    = -mean_b sum_n w_bn log N(a_bn; mu_b, sigma_t,b^2)
    L_sigma = -mean_b sum_n w_bn log N(a_bn; mu_t,b, sigma_b^2)                   (`m_step_losses`)

  subject to KL[pi_t || pi] <= epsilon_mean on the mean part and <= epsilon_std on the std part
  (`rlx.losses.wpo.decoupled_kl`), as penalties alpha_mean KL_mean + alpha_std KL_std with Lagrange
  multipliers trained on their own duals (`rlx.losses.wpo.kl_penalty_and_dual_loss`).

Every dual lives in softplus space (eta = softplus(log_eta) + 1e-8, likewise alpha), as in Acme's
`acme/jax/losses/mpo.py`; `MPOConfig` holds Acme's Gaussian defaults. Without Acme's action
penalisation (MO-MPO): here actions are a tanh-Gaussian's pre-tanh u, bounded by the tanh.
`engine_mpo` wraps all of it as the actor update of the off-policy engine (`rlx.algos.sac`,
`SACConfig(actor_loss="mpo")`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from rlx import distributions
from rlx.losses.sac import HEAD
from rlx.losses.wpo import (MIN_LOG_ALPHA, EngineActorUpdate, PolicyFn, decoupled_kl,
                            initial_extra, kl_penalty_and_dual_loss, periodic_target,
                            tanh_gaussian_policy)
from rlx.optim import optimizer_step

Params = Any
MIN_LOG_TEMPERATURE = -18.0  # the temperature's floor in softplus space (Acme's)
_DUAL_EPS = 1e-8


def _dual(x: jax.Array) -> jax.Array:
    """softplus(x) + 1e-8: a dual variable from its unconstrained parameter."""
    return jax.nn.softplus(x) + _DUAL_EPS


# ---- E-step ------------------------------------------------------------------------------------

def e_step_weights(q_values: jax.Array, temperature: jax.Array) -> jax.Array:
    """w_bn = softmax_n(Q_bn / eta) `[B, N]` for Q `[B, N]` and eta (scalar or [1]); no gradient."""
    chex.assert_rank(q_values, 2)
    return jax.lax.stop_gradient(jax.nn.softmax(q_values / temperature, axis=1))


def temperature_dual_loss(q_values: jax.Array, temperature: jax.Array,
                          epsilon: float | jax.Array) -> jax.Array:
    """L_eta = eta (epsilon + mean_b [logsumexp_n(Q_bn / eta) - log N]), Q held fixed; its
    gradient in eta is epsilon - mean_b KL(w_b || uniform)."""
    chex.assert_rank(q_values, 2)
    tempered = jax.lax.stop_gradient(q_values) / temperature
    log_mean_exp = jax.scipy.special.logsumexp(tempered, axis=1) - jnp.log(q_values.shape[1])
    return jnp.sum(temperature * (epsilon + jnp.mean(log_mean_exp)))


def nonparametric_kl(weights: jax.Array) -> jax.Array:
    """KL(w_b || uniform) = sum_n w_bn log(N w_bn) `[B]`: how far the E-step moved from pi_t's
    samples (0 for equal weights, log N for all weight on one sample)."""
    chex.assert_rank(weights, 2)
    return jnp.sum(jax.scipy.special.xlogy(weights, weights.shape[1] * weights), axis=1)


# ---- M-step ------------------------------------------------------------------------------------

def weighted_log_likelihood(mean: jax.Array, std: jax.Array, actions: jax.Array,
                            weights: jax.Array) -> jax.Array:
    """mean_b sum_n w_bn log N(a_bn; mean_b, diag std_b^2): mean, std `[B, A]`, actions
    `[B, N, A]`, weights `[B, N]`."""
    chex.assert_rank(actions, 3)
    chex.assert_equal_shape([mean, std, actions[:, 0]])
    chex.assert_equal_shape([weights, actions[..., 0]])
    z = (actions - mean[:, None]) / std[:, None]
    log_prob = jnp.sum(-0.5 * z ** 2 - jnp.log(std[:, None]) - 0.5 * jnp.log(2 * jnp.pi), -1)
    return jnp.mean(jnp.sum(weights * log_prob, axis=1))


def m_step_losses(mean: jax.Array, std: jax.Array, target_mean: jax.Array, target_std: jax.Array,
                  actions: jax.Array, weights: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The decoupled M-step (L_mu, L_sigma): the weighted negative log-likelihood of the samples
    under N(mu, sigma_t^2) (the mean fitted, the target's std) and under N(mu_t, sigma^2) (the
    std fitted, the target's mean). L_mu is minimised at mu_b = sum_n w_bn a_bn."""
    sg = jax.lax.stop_gradient
    return (-weighted_log_likelihood(mean, sg(target_std), actions, weights),
            -weighted_log_likelihood(sg(target_mean), std, actions, weights))


# ---- duals and the whole loss ------------------------------------------------------------------

class MPODuals(NamedTuple):
    """MPO's Lagrange multipliers in softplus space: the E-step temperature [1] and the KL
    duals of mean and std ([A] per dimension, else [1])."""

    log_temperature: jax.Array
    log_alpha_mean: jax.Array
    log_alpha_std: jax.Array


@dataclasses.dataclass(frozen=True)
class MPOConfig:
    """The actor loss's settings (defaults: Acme's `GaussianPolicyLossConfig` and MPO agent)."""

    epsilon: float = 0.1  # KL(q || pi_t) bound of the E-step
    epsilon_mean: float = 0.0025  # KL bound on the mean part (per dimension with per_dim)
    epsilon_std: float = 1e-6  # KL bound on the std part
    init_log_temperature: float = 10.0
    init_log_alpha_mean: float = 10.0
    init_log_alpha_std: float = 1000.0
    per_dim: bool = True  # one KL constraint per action dimension (else one on the summed KL)
    num_samples: int = 20  # N: actions sampled per state from the target policy
    dual_lr: float = 1e-2  # Adam step size of the duals

    def __post_init__(self):
        for name in ("epsilon", "epsilon_mean", "epsilon_std", "dual_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {self.num_samples!r}")


def init_duals(action_dim: int, config: MPOConfig) -> MPODuals:
    """The duals at their initial values (alphas [action_dim] with per_dim, else [1])."""
    shape = (action_dim,) if config.per_dim else (1,)
    return MPODuals(jnp.full((1,), config.init_log_temperature, jnp.float32),
                    jnp.full(shape, config.init_log_alpha_mean, jnp.float32),
                    jnp.full(shape, config.init_log_alpha_std, jnp.float32))


def clip_duals(duals: MPODuals) -> MPODuals:
    """Each dual's parameter >= -18 (apply after each dual step)."""
    return MPODuals(jnp.maximum(duals.log_temperature, MIN_LOG_TEMPERATURE),
                    jnp.maximum(duals.log_alpha_mean, MIN_LOG_ALPHA),
                    jnp.maximum(duals.log_alpha_std, MIN_LOG_ALPHA))


def dual_loss(duals: MPODuals, q_values: jax.Array, kl_mean: jax.Array, kl_std: jax.Array,
              config: MPOConfig) -> jax.Array:
    """L_eta + sum_{mean, std} alpha (epsilon - sg(mean_b KL part)): the loss the duals descend;
    q_values `[B, N]`, KL parts `[B, A]` (a batch mean `[1, A]` gives the same value)."""
    t = temperature_dual_loss(q_values, _dual(duals.log_temperature), config.epsilon)
    dm = kl_penalty_and_dual_loss(kl_mean, _dual(duals.log_alpha_mean), config.epsilon_mean)[1]
    ds = kl_penalty_and_dual_loss(kl_std, _dual(duals.log_alpha_std), config.epsilon_std)[1]
    return t + dm + ds


def mpo_loss(params: Params, duals: MPODuals, target_params: Params, policy_fn: PolicyFn,
             obs: jax.Array, actions: jax.Array, q_values: jax.Array, config: MPOConfig
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """MPO's whole loss for a diagonal Gaussian policy (minimise over params and duals):

        L = L_mu + L_sigma + sg(alpha_mean) KL_mean + sg(alpha_std) KL_std + `dual_loss`

    with (mu, log sigma) = policy_fn(params, obs), the target policy (held fixed) from
    target_params, actions `[B, N, A]` sampled from it and their Q-values `[B, N]`. Returns
    (loss, stats): the duals, the KLs relative to their bounds, the losses, Q and std ranges.
    """
    mean, log_std = policy_fn(params, obs)
    std = jnp.exp(log_std)
    t_mean, t_log_std = jax.lax.stop_gradient(policy_fn(target_params, obs))
    t_std = jnp.exp(t_log_std)
    chex.assert_equal_shape([mean, actions[:, 0]])
    temperature = _dual(duals.log_temperature)
    weights = e_step_weights(q_values, temperature)
    loss_mu, loss_sigma = m_step_losses(mean, std, t_mean, t_std, actions, weights)
    kl_mean, kl_std = decoupled_kl(mean, std, t_mean, t_std)
    alpha_mean, alpha_std = _dual(duals.log_alpha_mean), _dual(duals.log_alpha_std)
    pen = (kl_penalty_and_dual_loss(kl_mean, alpha_mean, config.epsilon_mean)[0]
           + kl_penalty_and_dual_loss(kl_std, alpha_std, config.epsilon_std)[0])
    dual = dual_loss(duals, q_values, kl_mean, kl_std, config)
    loss = loss_mu + loss_sigma + pen + dual
    stats = {"loss_policy": loss_mu + loss_sigma, "loss_kl": pen, "loss_dual": dual,
             "temperature": jnp.mean(temperature), "alpha_mean": jnp.mean(alpha_mean),
             "alpha_std": jnp.mean(alpha_std),
             "kl_q_rel": jnp.mean(nonparametric_kl(weights)) / config.epsilon,
             "kl_mean_rel": jnp.mean(jnp.sum(kl_mean, -1)) / config.epsilon_mean,
             "kl_std_rel": jnp.mean(jnp.sum(kl_std, -1)) / config.epsilon_std,
             "q_min": jnp.mean(jnp.min(q_values, 1)), "q_max": jnp.mean(jnp.max(q_values, 1)),
             "std_min": jnp.mean(jnp.min(std, -1)), "std_max": jnp.mean(jnp.max(std, -1))}
    return loss, stats


# ---- the off-policy engine's actor hook --------------------------------------------------------

EngineMPO = EngineActorUpdate  # MPO's (config `actor_loss="mpo"`)


def engine_mpo(config: MPOConfig = MPOConfig(), target_update_period: int = 100) -> EngineMPO:
    """MPO's actor update for the engine's tanh-Gaussian actor and min-of-twins critic q_fn.

    Per state, N = config.num_samples u_n ~ N(mu_t, sigma_t^2), the *target* actor's pre-tanh
    Gaussian (`rlx.losses.wpo.tanh_gaussian_policy`); Q_n = q_fn(s, tanh(u_n)) (the engine's
    freshly updated online critic; Acme uses a target critic); then `mpo_loss` on the Gaussian
    in u-space. The target actor is a copy of the actor taken every `target_update_period`
    gradient steps (Acme's 100). After each actor step the duals (temperature, alpha_mean,
    alpha_std) take one Adam(dual_lr) step on `dual_loss` at the step's Q-values and batch-mean
    KLs, then are clipped (`clip_duals`); Acme trains them jointly with the policy, the same
    gradient.

    Entropy: none (the engine runs it with alpha = 0, plain Q targets, no temperature step), as
    in Acme's MPO: the E-step KL bound and the std constraint keep the policy stochastic.
    metrics: "log_prob" (online log pi of the first sample, no gradient; the engine's entropy
    readout), "q_pi", mpo_loss's stats; "_q" [B, N], "_kl_mean", "_kl_std" [A] (consumed by
    update_extra; keys starting with "_" are not logged).
    """
    if target_update_period < 1:
        raise ValueError(f"target_update_period must be >= 1, got {target_update_period!r}")
    dual_tx = optax.adam(config.dual_lr)

    def loss(actor_params: Params, apply_fn: Callable, obs: jax.Array, key: jax.Array,
             q_fn: Callable[[jax.Array, jax.Array], jax.Array], ctx: Any
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
        chex.assert_rank(obs, 2)
        extra = ctx.extra
        policy = tanh_gaussian_policy(apply_fn)
        t_mean, t_log_std = jax.lax.stop_gradient(policy(extra["target_actor"], obs))
        b, a = t_mean.shape
        n = config.num_samples
        eps = jax.random.normal(key, (b, n, a), t_mean.dtype)
        u = t_mean[:, None] + jnp.exp(t_log_std)[:, None] * eps  # [B, N, A]
        q = jax.lax.stop_gradient(
            q_fn(jnp.repeat(obs, n, axis=0), jnp.tanh(u.reshape(b * n, a))).reshape(b, n))
        value, stats = mpo_loss(actor_params, extra["duals"], extra["target_actor"], policy, obs,
                                u, q, config)
        dist = distributions.make(HEAD, jax.lax.stop_gradient(apply_fn(actor_params, obs)))
        kl_mean, kl_std = decoupled_kl(dist.loc, dist.scale, t_mean, jnp.exp(t_log_std))
        metrics = {**stats, "log_prob": dist.log_prob(u[:, 0]).mean(), "q_pi": jnp.mean(q),
                   "_q": q, "_kl_mean": jnp.mean(kl_mean, 0), "_kl_std": jnp.mean(kl_std, 0)}
        return value, jax.lax.stop_gradient(metrics)

    def init_extra(actor_params: Params, action_size: int) -> dict[str, Any]:
        return initial_extra(actor_params, init_duals(action_size, config), dual_tx)

    def update_extra(extra: dict[str, Any], actor_params: Params, metrics: dict[str, jax.Array],
                     step: jax.Array) -> dict[str, Any]:
        target = periodic_target(actor_params, extra["target_actor"], step, target_update_period)
        grads = jax.grad(dual_loss)(extra["duals"], metrics["_q"], metrics["_kl_mean"][None],
                                    metrics["_kl_std"][None], config)
        duals, dual_opt, _ = optimizer_step(dual_tx, extra["duals"], extra["dual_opt"], grads)
        return {"target_actor": target, "duals": clip_duals(duals), "dual_opt": dual_opt}

    return EngineMPO(loss, init_extra, update_extra)


__all__ = ["e_step_weights", "temperature_dual_loss", "nonparametric_kl",
           "weighted_log_likelihood", "m_step_losses", "MPODuals", "MPOConfig", "init_duals",
           "clip_duals", "dual_loss", "mpo_loss", "EngineMPO", "engine_mpo", "MIN_LOG_TEMPERATURE"]
