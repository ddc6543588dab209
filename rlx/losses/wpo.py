"""Wasserstein Policy Optimization (Pfau et al., ICML 2025, arXiv 2505.00663): the actor update.

WPO moves the policy along the Wasserstein gradient of E_pi[Q] pulled back to parameters:

    theta <- theta + lr F^-1 E_{s, a~pi}[ grad_theta grad_a log pi(a|s) . grad_a Q(s, a) ]

with F the Fisher information of pi. For a diagonal Gaussian pi = N(mu(s), diag sigma(s)^2),
grad_a log pi = -(a - mu) / sigma^2, F = diag(1/sigma^2, 2/sigma^2) in (mu, sigma) coordinates,
and per action dimension the update is (`gaussian_wpo_direction`, `wpo_exact_direction`)

    d mu    = E_a[ grad_a Q ]                            pulled back by grad_theta mu
    d sigma = E_a[ ((a - mu) / sigma) grad_a Q ]          pulled back by grad_theta sigma

By Stein's lemma (a = mu + sigma eps) this is, in expectation, the ordinary policy gradient
grad_{mu, sigma} E_pi[Q] = E[Q grad log pi]; per sample it is a different estimator: when Q
is linear in a, every sample gives the same d mu (zero variance), unlike the score function.

The practical loss (Acme's `compute_wpo_loss`; `wpo_surrogate`, `gaussian_wpo_surrogate`)

    L(theta) = -mean_B sum_{N, D} [grad_a log pi_theta(a | s)]_{a = sg(a_n)} . sg(squash(grad_a Q(s, a_n)))

has grad_theta L = -N x (the Monte-Carlo WPO step) once the Fisher is replaced by a fixed
rescaling of the distribution's gradients (`natural_gradient_scaling`): mean gradients times
sigma^2, std gradients times sigma^2 / 2 (the inverse of F's diagonal; forward values
unchanged). Without the KL penalty below the policy collapses to a deterministic one, so
the mean and the std are regularised separately towards a target policy (MPO's decoupled KL,
`decoupled_kl`, `kl_penalty_and_dual_loss`) with Lagrange duals alpha = softplus(log alpha).

Shapes: observations [B, O], sampled actions and grad_a Q [B, N, A] (N samples per state),
policy outputs (mean, log_std) [B, A]. Every function is pure; `wpo_loss` is the hook an
off-policy engine calls with (policy params, duals, target params) and differentiates with
respect to the first two (`init_duals`, `clip_duals` for the duals' own optimiser);
`sample_actions` and `action_gradients` build its actions and grad_a Q from the policy's
output and a critic. `engine_wpo` wraps all of it as the actor update of the off-policy engine
(`rlx.algos.sac`, `SACConfig(actor_loss="wpo")`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Literal, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from rlx import distributions
from rlx.losses.advantages import masked_mean
from rlx.losses.sac import HEAD
from rlx.optim import optimizer_step

Params = Any
PolicyFn = Callable[[Params, jax.Array], tuple[jax.Array, jax.Array]]  # (params, obs [B, O]) -> (mean, log_std) [B, A]
LogProbFn = Callable[[Params, jax.Array, jax.Array], jax.Array]  # (params, obs [O], action [A]) -> log pi(a|s)
Squash = Literal["identity", "cube_root"]
SQUASHES: tuple[str, ...] = ("identity", "cube_root")
MIN_LOG_ALPHA = -18.0  # duals are clipped below here (Acme's floor)
_ALPHA_EPS = 1e-8


def squash(x: jax.Array, kind: Squash = "identity") -> jax.Array:
    """The squashing applied to grad_a Q before it enters the loss: x, or cbrt(x) elementwise."""
    if kind == "identity":
        return x
    if kind == "cube_root":
        return jnp.cbrt(x)
    raise ValueError(f"unknown squash {kind!r}; valid: {', '.join(SQUASHES)}")


def _check(actions: jax.Array, q_grads: jax.Array, mean: jax.Array | None = None) -> None:
    chex.assert_rank(actions, 3)
    chex.assert_equal_shape([actions, q_grads])
    if mean is not None:
        chex.assert_rank(mean, 2)
        chex.assert_equal_shape([mean, actions[:, 0]])


# ---- the caller's inputs ------------------------------------------------------------------------

def sample_actions(key: jax.Array, mean: jax.Array, log_std: jax.Array, num_samples: int) -> jax.Array:
    """a_bn = mu_b + sigma_b eps_bn, eps ~ N(0, I): [B, N, A] from mean, log_std [B, A]."""
    chex.assert_equal_shape([mean, log_std])
    eps = jax.random.normal(key, (mean.shape[0], num_samples, mean.shape[1]), mean.dtype)
    return mean[:, None] + jnp.exp(log_std)[:, None] * eps


def action_gradients(q_fn: Callable[[jax.Array, jax.Array], jax.Array], obs: jax.Array,
                     actions: jax.Array) -> jax.Array:
    """grad_a Q(s_b, a_bn) [B, N, A] for q_fn(obs [O], action [A]) -> scalar (e.g. a critic with
    its parameters bound; for twin critics the caller picks the combination)."""
    chex.assert_rank(actions, 3)
    g = jax.grad(q_fn, argnums=1)
    return jax.vmap(jax.vmap(g, (None, 0)), (0, 0))(obs, actions)


# ---- (a) the exact Gaussian form ---------------------------------------------------------------

def gaussian_wpo_direction(mean: jax.Array, std: jax.Array, actions: jax.Array,
                           q_grads: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The Monte-Carlo WPO step in the Gaussian's own coordinates, per state and dimension:

        d mu    = (1/N) sum_n grad_a Q(a_n)
        d sigma = (1/N) sum_n ((a_n - mu) / sigma) grad_a Q(a_n)

    i.e. F^-1 E[grad_(mu, sigma) grad_a log pi . grad_a Q] with F = diag(1/sigma^2, 2/sigma^2).
    mean, std [B, A]; actions, q_grads [B, N, A]. Returns (d_mean, d_std) [B, A], an ascent
    direction (Q = -a^2/2 from mu = sigma = 1 gives d mu = -mu, d sigma = -sigma in expectation).
    """
    _check(actions, q_grads, mean)
    chex.assert_equal_shape([mean, std])
    eps = (actions - mean[:, None]) / std[:, None]
    return jnp.mean(q_grads, axis=1), jnp.mean(eps * q_grads, axis=1)


def wpo_exact_direction(params: Params, policy_fn: PolicyFn, obs: jax.Array, actions: jax.Array,
                        q_grads: jax.Array) -> Params:
    """The exact-form WPO step pulled back to parameters (an ascent direction, like params):

        d theta = (1/B) sum_b [ (grad_theta mu_b)^T d mu_b + (grad_theta sigma_b)^T d sigma_b ]

    with (d mu, d sigma) from `gaussian_wpo_direction` and sigma = exp(log_std).
    """
    def dist(p):
        mean, log_std = policy_fn(p, obs)
        return mean, jnp.exp(log_std)

    (mean, std), vjp = jax.vjp(dist, params)
    d_mean, d_std = gaussian_wpo_direction(mean, std, actions, q_grads)
    b = mean.shape[0]
    return vjp((d_mean / b, d_std / b))[0]


# ---- (b) the practical loss --------------------------------------------------------------------

def natural_gradient_scaling(mean: jax.Array, std: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(mean, std) unchanged in value, with gradients through them scaled by the inverse
    diagonal Fisher of N(mean, std^2): sigma^2 for the mean, sigma^2 / 2 for the std.

        mean' = sg(s^2) mean + sg((1 - s^2) mean),   std' = sg(s^2/2) std + sg((1 - s^2/2) std)
    """
    var = jax.lax.stop_gradient(std ** 2)
    sg = jax.lax.stop_gradient
    return var * mean + sg((1.0 - var) * mean), 0.5 * var * std + sg((1.0 - 0.5 * var) * std)


def wpo_surrogate(log_prob_fn: LogProbFn, params: Params, obs: jax.Array, actions: jax.Array,
                  q_grads: jax.Array, *, kind: Squash = "identity",
                  mask: jax.Array | None = None) -> jax.Array:
    """Acme's WPO loss for any policy with a per-sample log-density (no Fisher rescaling):

        L = -mean_b sum_{n, d} [grad_a log pi_theta(a | s_b)]_{a = sg(a_bn)} . sg(squash(grad_a Q_bn))

    log_prob_fn(params, obs [O], action [A]) -> log pi(a|s); obs [B, O]; actions, q_grads
    [B, N, A]; mask [B] (e.g. not-terminal) restricts the mean over states.
    """
    _check(actions, q_grads)
    score = jax.grad(log_prob_fn, argnums=2)
    per_sample = jax.vmap(jax.vmap(score, (None, None, 0)), (None, 0, 0))
    s = per_sample(params, obs, jax.lax.stop_gradient(actions))
    g = jax.lax.stop_gradient(squash(q_grads, kind))
    return -masked_mean(jnp.sum(s * g, axis=(1, 2)), mask)


def gaussian_wpo_surrogate(mean: jax.Array, std: jax.Array, actions: jax.Array, q_grads: jax.Array,
                           *, kind: Squash = "identity", natural: bool = True,
                           mask: jax.Array | None = None) -> jax.Array:
    """`wpo_surrogate` for a diagonal Gaussian, in closed form (grad_a log pi = -(a - mu)/sigma^2):

        L = -mean_b sum_{n, d} (-(sg(a) - mu) / sigma^2) sg(squash(grad_a Q))

    With `natural` (the default) mean and std first pass through `natural_gradient_scaling`,
    so that grad_(mu, sigma) L = -N (d mu, d sigma) of `gaussian_wpo_direction` (per batch, exactly).
    """
    _check(actions, q_grads, mean)
    chex.assert_equal_shape([mean, std])
    if natural:
        mean, std = natural_gradient_scaling(mean, std)
    score = -(jax.lax.stop_gradient(actions) - mean[:, None]) / std[:, None] ** 2
    g = jax.lax.stop_gradient(squash(q_grads, kind))
    return -masked_mean(jnp.sum(score * g, axis=(1, 2)), mask)


# ---- (c) the decoupled KL penalty with Lagrange duals ------------------------------------------

def decoupled_kl(mean: jax.Array, std: jax.Array, target_mean: jax.Array,
                 target_std: jax.Array) -> tuple[jax.Array, jax.Array]:
    """MPO's decomposition of KL[target || online] per dimension into a mean and a std part:

        KL_mean = KL[N(mu_t, s_t) || N(mu, s_t)] = (mu - mu_t)^2 / (2 s_t^2)
        KL_std  = KL[N(mu_t, s_t) || N(mu_t, s)] = log(s / s_t) + s_t^2 / (2 s^2) - 1/2

    All [B, A]; returns (KL_mean, KL_std) [B, A].
    """
    chex.assert_equal_shape([mean, std, target_mean, target_std])
    kl_mean = (mean - target_mean) ** 2 / (2.0 * target_std ** 2)
    ratio = target_std ** 2 / std ** 2
    kl_std = 0.5 * (ratio - 1.0 - jnp.log(ratio))
    return kl_mean, kl_std


def kl_penalty_and_dual_loss(kl: jax.Array, alpha: jax.Array, epsilon: float | jax.Array,
                             mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """The KL term of the Lagrangian and the loss of its dual, for kl [B, A] and alpha [A] or [1]:

        kl_bar      = mean_b kl              (per dimension, or summed over A when alpha is [1])
        L_penalty   = sum sg(alpha) kl_bar
        L_dual      = sum alpha (epsilon - sg(kl_bar))

    Minimising L_dual raises alpha while kl_bar > epsilon and lowers it otherwise.
    """
    chex.assert_rank(kl, 2)
    w = jnp.ones(kl.shape[:1], kl.dtype) if mask is None else mask.astype(kl.dtype)
    kl_bar = jnp.sum(kl * w[:, None], axis=0) / jnp.maximum(jnp.sum(w), 1.0)
    if alpha.shape == (1,):
        kl_bar = jnp.sum(kl_bar, keepdims=True)
    penalty = jnp.sum(jax.lax.stop_gradient(alpha) * kl_bar)
    dual = jnp.sum(alpha * (epsilon - jax.lax.stop_gradient(kl_bar)))
    return penalty, dual


class Duals(NamedTuple):
    """The Lagrange multipliers in log space (alpha = softplus(log_alpha) + 1e-8), [A] or [1]."""

    log_alpha_mean: jax.Array
    log_alpha_std: jax.Array


@dataclasses.dataclass(frozen=True)
class WPOConfig:
    """The actor loss's settings (defaults: Acme's `GaussianPolicyLossConfig` and WPO config)."""

    epsilon_mean: float = 0.0025  # KL bound on the mean part (per dimension with per_dim)
    epsilon_std: float = 1e-6  # KL bound on the std part
    init_log_alpha_mean: float = 0.0  # initial dual of the mean constraint (softplus-space)
    init_log_alpha_std: float = 10_000.0  # initial dual of the std constraint (softplus-space)
    policy_loss_scale: float = 1.0
    kl_loss_scale: float = 1.0
    dual_loss_scale: float = 0.0  # 0: fixed duals, a soft KL penalty (Acme's default)
    per_dim: bool = True  # one constraint per action dimension (else one on the summed KL)
    squash: str = "identity"  # applied to grad_a Q: identity | cube_root
    natural: bool = True  # sigma^2, sigma^2/2 rescaling of the distribution's gradients
    num_samples: int = 20  # N: actions sampled per state (the caller samples them)
    dual_lr: float = 1e-2  # learning rate of the duals' optimiser (the caller's)

    def __post_init__(self):
        if self.squash not in SQUASHES:
            raise ValueError(f"unknown squash {self.squash!r}; valid: {', '.join(SQUASHES)}")
        for name in ("epsilon_mean", "epsilon_std", "dual_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {self.num_samples!r}")


def init_duals(action_dim: int, config: WPOConfig) -> Duals:
    """Duals at their initial values: shape [action_dim] with per_dim, else [1]."""
    shape = (action_dim,) if config.per_dim else (1,)
    return Duals(jnp.full(shape, config.init_log_alpha_mean, jnp.float32),
                 jnp.full(shape, config.init_log_alpha_std, jnp.float32))


def clip_duals(duals: Duals) -> Duals:
    """log_alpha >= MIN_LOG_ALPHA (apply after each dual step)."""
    return Duals(*(jnp.maximum(x, MIN_LOG_ALPHA) for x in duals))


def wpo_loss(params: Params, duals: Duals, target_params: Params, policy_fn: PolicyFn,
             obs: jax.Array, actions: jax.Array, q_grads: jax.Array, config: WPOConfig,
             mask: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The whole actor loss of WPO for a diagonal Gaussian policy (minimise over params and duals):

        L = policy_loss_scale  * gaussian_wpo_surrogate(mu, sigma, a, grad_a Q)
          + kl_loss_scale      * sum_{mean, std} L_penalty(KL part, alpha part)
          + dual_loss_scale    * sum_{mean, std} L_dual(KL part, alpha part)

    with (mu, log sigma) = policy_fn(params, obs), the target policy policy_fn(target_params,
    obs) held fixed, and the KL parts of `decoupled_kl`. actions, q_grads [B, N, A] (sampled
    and computed by the caller, e.g. from the target or online policy); mask [B] optional.
    Returns (loss, stats) with the duals' alphas and the KL parts relative to their bounds.
    """
    mean, log_std = policy_fn(params, obs)
    _check(actions, q_grads, mean)
    std = jnp.exp(log_std)
    t_mean, t_log_std = jax.lax.stop_gradient(policy_fn(target_params, obs))
    t_std = jnp.exp(t_log_std)
    policy = gaussian_wpo_surrogate(mean, std, actions, q_grads, kind=config.squash,
                                    natural=config.natural, mask=mask)
    kl_mean, kl_std = decoupled_kl(mean, std, t_mean, t_std)
    alpha_mean = jax.nn.softplus(duals.log_alpha_mean) + _ALPHA_EPS
    alpha_std = jax.nn.softplus(duals.log_alpha_std) + _ALPHA_EPS
    pen_m, dual_m = kl_penalty_and_dual_loss(kl_mean, alpha_mean, config.epsilon_mean, mask)
    pen_s, dual_s = kl_penalty_and_dual_loss(kl_std, alpha_std, config.epsilon_std, mask)
    loss = (config.policy_loss_scale * policy + config.kl_loss_scale * (pen_m + pen_s)
            + config.dual_loss_scale * (dual_m + dual_s))
    stats = {"loss_policy": policy, "loss_kl": pen_m + pen_s, "loss_dual": dual_m + dual_s,
             "alpha_mean": jnp.mean(alpha_mean), "alpha_std": jnp.mean(alpha_std),
             "kl_mean_rel": masked_mean(jnp.sum(kl_mean, -1), mask) / config.epsilon_mean,
             "kl_std_rel": masked_mean(jnp.sum(kl_std, -1), mask) / config.epsilon_std,
             "std_min": jnp.mean(jnp.min(std, -1)), "std_max": jnp.mean(jnp.max(std, -1))}
    return loss, stats


# ---- (d) the off-policy engine's actor hook ----------------------------------------------------

def tanh_gaussian_policy(apply_fn: Callable[[Params, jax.Array], jax.Array]) -> PolicyFn:
    """(mean, log_std) of the pre-tanh Gaussian u ~ N(loc, scale^2) of a `tanh_gaussian` head
    (`rlx.distributions.TanhGaussian`: a = tanh(u), scale = softplus(raw) + min_std)."""
    def policy(params: Params, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        dist = distributions.make(HEAD, apply_fn(params, obs))
        return dist.loc, jnp.log(dist.scale)

    return policy


class EngineActorUpdate(NamedTuple):
    """An actor update of the off-policy engine (`rlx.algos.sac`) with a target actor and dual
    variables (WPO, MPO): loss(actor_params, apply_fn, obs [B, O], key, q_fn, ctx) -> (loss,
    metrics): the hook; init_extra(actor_params, action_size) -> extra; update_extra(extra, new
    actor params, the loss's metrics, step) -> extra. extra = {"target_actor", "duals",
    "dual_opt"}.
    """

    loss: Callable[..., tuple[jax.Array, dict[str, jax.Array]]]
    init_extra: Callable[[Params, int], Any]
    update_extra: Callable[[Any, Params, dict[str, jax.Array], jax.Array], Any]


EngineWPO = EngineActorUpdate  # WPO's (config `actor_loss="wpo"`)


def initial_extra(actor_params: Params, duals: Any, dual_tx: optax.GradientTransformation
                  ) -> dict[str, Any]:
    """extra of an `EngineActorUpdate` at the start: the target actor is the actor."""
    return {"target_actor": actor_params, "duals": duals, "dual_opt": dual_tx.init(duals)}


def periodic_target(actor_params: Params, target: Params, step: jax.Array, period: int
                    ) -> Params:
    """The target actor after optimiser step `step`: a copy of the actor every `period` steps
    ((step + 1) % period == 0), else unchanged."""
    copy = (step + 1) % period == 0
    return jax.tree.map(lambda new, old: jnp.where(copy, new, old), actor_params, target)


def engine_wpo(config: WPOConfig = WPOConfig(), target_update_period: int = 100) -> EngineWPO:
    """WPO's actor update for the engine's tanh-Gaussian actor and min-of-twins critic q_fn.

    The Gaussian is the pre-tanh one (`tanh_gaussian_policy`): per state, N = config.num_samples
    u_n ~ N(mu, sigma^2) of the *online* policy (no gradient), grad_u Q(s, tanh(u_n)) through
    q_fn (the tanh Jacobian included: WPO on the Gaussian in u-space for the critic Q o tanh),
    and `wpo_loss` (the practical sigma^2, sigma^2/2-rescaled loss plus the decoupled KL penalty
    on mean and std towards the target policy). The target policy is a copy of the actor taken
    every `target_update_period` gradient steps (Acme's 100). With config.dual_loss_scale > 0 the
    duals take an Adam(dual_lr) step on L_dual each gradient step and are clipped
    (`clip_duals`); with Acme's default 0 they stay at their initial values (a fixed penalty).

    Entropy: none. Like Acme's WPO there is no entropy temperature; the engine runs this
    update with alpha = 0 (plain, not soft, Q targets; no temperature step). The KL penalty on
    the std is what keeps the policy from collapsing.
    metrics: "log_prob" (log pi of the first sample, no gradient; the engine's entropy
    readout), "q_pi", wpo_loss's stats, and "_kl_mean", "_kl_std" ([A] or [1] batch means,
    consumed by update_extra; keys starting with "_" are not logged).
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
        dist = distributions.make(HEAD, jax.lax.stop_gradient(apply_fn(actor_params, obs)))
        u = sample_actions(key, dist.loc, jnp.log(dist.scale), config.num_samples)  # [B, N, A]
        b, n, a = u.shape
        obs_n = jnp.repeat(obs, n, axis=0)  # [B N, O], row b n <- state b

        def q_sum(u_flat: jax.Array) -> jax.Array:
            return jnp.sum(q_fn(obs_n, jnp.tanh(u_flat)))

        q_value, q_grads = jax.value_and_grad(q_sum)(u.reshape(b * n, a))
        q_grads = q_grads.reshape(b, n, a)
        value, stats = wpo_loss(actor_params, extra["duals"], extra["target_actor"], policy, obs,
                                u, q_grads, config)
        t_mean, t_log_std = policy(extra["target_actor"], obs)
        kl_mean, kl_std = decoupled_kl(dist.loc, dist.scale, t_mean, jnp.exp(t_log_std))
        reduce = (lambda k: jnp.mean(k, 0)) if config.per_dim else (
            lambda k: jnp.sum(jnp.mean(k, 0), keepdims=True))
        metrics = {**stats, "log_prob": dist.log_prob(u[:, 0]).mean(),
                   "q_pi": q_value / (b * n),
                   "_kl_mean": reduce(kl_mean), "_kl_std": reduce(kl_std)}
        return value, jax.lax.stop_gradient(metrics)

    def init_extra(actor_params: Params, action_size: int) -> dict[str, Any]:
        return initial_extra(actor_params, init_duals(action_size, config), dual_tx)

    def update_extra(extra: dict[str, Any], actor_params: Params, metrics: dict[str, jax.Array],
                     step: jax.Array) -> dict[str, Any]:
        target = periodic_target(actor_params, extra["target_actor"], step, target_update_period)
        duals, dual_opt = extra["duals"], extra["dual_opt"]
        if config.dual_loss_scale > 0:
            def dual_loss(d: Duals) -> jax.Array:
                alpha = lambda x: jax.nn.softplus(x) + _ALPHA_EPS  # noqa: E731
                dm = kl_penalty_and_dual_loss(metrics["_kl_mean"][None], alpha(d.log_alpha_mean),
                                              config.epsilon_mean)[1]
                ds = kl_penalty_and_dual_loss(metrics["_kl_std"][None], alpha(d.log_alpha_std),
                                              config.epsilon_std)[1]
                return config.dual_loss_scale * (dm + ds)

            duals, dual_opt, _ = optimizer_step(dual_tx, duals, dual_opt, jax.grad(dual_loss)(duals))
            duals = clip_duals(duals)
        return {"target_actor": target, "duals": duals, "dual_opt": dual_opt}

    return EngineWPO(loss, init_extra, update_extra)


__all__ = ["sample_actions", "action_gradients", "squash", "gaussian_wpo_direction", "wpo_exact_direction", "natural_gradient_scaling",
           "wpo_surrogate", "gaussian_wpo_surrogate", "decoupled_kl", "kl_penalty_and_dual_loss",
           "Duals", "WPOConfig", "init_duals", "clip_duals", "wpo_loss", "SQUASHES",
           "tanh_gaussian_policy", "EngineActorUpdate", "EngineWPO", "initial_extra",
           "periodic_target", "engine_wpo"]
