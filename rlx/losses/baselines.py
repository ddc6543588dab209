"""Baselines for policy gradients: state baselines, the action-dependent factorised baseline
of Wu et al. 2018 (arXiv 1803.07246), Wu's linear-feature baseline, and the nested
Monte-Carlo variance decomposition of Tucker et al. 2018 (arXiv 1802.10031).

For a policy that factorises over action dimensions, pi(a|s) = prod_i pi_i(a_i|s),

    grad J = E[ sum_i grad log pi_i(a_i|s) (Q(s, a) - b_i(s, a_-i)) ]

for any baselines b_i that do not see their own dimension a_i (a_-i = a with dimension i
removed): E_{a_i}[grad log pi_i(a_i|s)] = 0 given s and a_-i. A state baseline is the case
b_i(s, a_-i) = V(s) for all i. Arrays are time-major `[T, ...]` like `rlx.losses.gae`;
per-dimension quantities carry a trailing axis `A` (the action dimension).
"""

from __future__ import annotations

from typing import Callable

import chex
import jax
import jax.numpy as jnp

from rlx.losses.advantages import gae, masked_mean


# ---------------------------------------------------------------------------------------------
# Advantage estimators


def state_baseline_advantages(rewards: jax.Array, values: jax.Array, next_values: jax.Array,
                              terminated: jax.Array, done: jax.Array, gamma: float | jax.Array,
                              lam: float | jax.Array) -> tuple[jax.Array, jax.Array]:
    """Advantages with a state baseline V(s): `rlx.losses.gae` itself,

        delta_t = r_t + gamma (1 - terminated_t) V(s'_t) - V(s_t)
        A_t     = delta_t + gamma lambda (1 - done_t) A_{t+1}.

    Every action dimension gets the same A_t (broadcast `A_t[..., None]` against
    per-dimension log-probabilities). Returns (A_t, value targets A_t + V(s_t)).
    """
    return gae(rewards, values, next_values, terminated, done, gamma, lam)


def factorised_advantages(rewards: jax.Array, values: jax.Array, next_values: jax.Array,
                          terminated: jax.Array, done: jax.Array, gamma: float | jax.Array,
                          lam: float | jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-dimension GAE with action-dependent baselines b_i(s, a_-i) (Wu et al. 2018, eq. 9):

        delta_{t,i} = r_t + gamma (1 - terminated_t) b_i(s'_t, a'_{-i,t}) - b_i(s_t, a_{-i,t})
        A_{t,i}     = delta_{t,i} + gamma lambda (1 - done_t) A_{t+1,i}

    `values[t, ..., i]` = b_i(s_t, a_{-i,t}); `next_values[t, ..., i]` = b_i(s'_t, a'_{-i,t})
    at the state the transition reached before any reset (`final_obs`) and the action taken
    there (`next_step_actions` builds a'), so truncation bootstraps and termination does not,
    exactly as in `gae`. With lambda = 1, A_{t,i} = G_t - b_i(s_t, a_{-i,t}) (unbiased).

    rewards, terminated, done: `[T, ...]`; values, next_values: `[T, ..., A]`.
    Returns (A_{t,i}, targets A_{t,i} + b_i(s_t, a_{-i,t})), both `[T, ..., A]`.
    """
    chex.assert_equal_shape([values, next_values])
    chex.assert_equal_shape([rewards, terminated, done])
    chex.assert_equal_shape_prefix([rewards, values], rewards.ndim)
    chex.assert_rank(values, rewards.ndim + 1)
    expand = lambda x: jnp.broadcast_to(x[..., None], values.shape)  # noqa: E731
    return gae(expand(rewards), values, next_values, expand(terminated), expand(done),
               gamma, lam)


def next_step_actions(actions: jax.Array, final_actions: jax.Array, done: jax.Array) -> jax.Array:
    """a'_t, the action taken at the state transition t reached (for `factorised_advantages`):

        a'_t = a_{t+1}        if t < T - 1 and not done_t
        a'_t = final_actions_t  otherwise

    `final_actions[t]` is an action sampled at `final_obs[t]` (only used at episode
    boundaries and at the rollout's last step, where a_{t+1} is not the next action).
    actions, final_actions: `[T, ..., A]`; done: `[T, ...]`.
    """
    chex.assert_equal_shape([actions, final_actions])
    chex.assert_equal_shape_prefix([actions, done], done.ndim)
    shifted = jnp.concatenate([actions[1:], final_actions[-1:]], axis=0)
    last = jnp.zeros(done.shape, bool).at[-1].set(True)
    use_final = jnp.logical_or(done.astype(bool), last)[..., None]
    return jnp.where(use_final, final_actions, shifted)


# ---------------------------------------------------------------------------------------------
# Surrogates / gradient estimators


def pg_loss(log_prob_per_dim: jax.Array, advantages: jax.Array,
            mask: jax.Array | None = None) -> jax.Array:
    """The plain policy-gradient estimator as a loss (gradient = minus the estimator):

        L = -mean_t sum_i log pi_i(a_{t,i}|s_t) sg(A_{t,i}),
        -grad L = mean_t sum_i grad log pi_i(a_{t,i}|s_t) A_{t,i}

    `log_prob_per_dim` `[..., A]` (`rlx.distributions` `log_prob_per_dim`); `advantages`
    `[..., A]` (factorised) or `[...]` (one advantage for every dimension: a state
    baseline, where the sum is grad log pi(a|s) A). `mask` `[...]` drops positions.
    """
    if advantages.ndim == log_prob_per_dim.ndim - 1:
        advantages = advantages[..., None]
    advantages = jnp.broadcast_to(jax.lax.stop_gradient(advantages), log_prob_per_dim.shape)
    return -masked_mean(jnp.sum(log_prob_per_dim * advantages, axis=-1), mask)


def factorised_surrogate(log_prob_per_dim: jax.Array, old_log_prob_per_dim: jax.Array,
                         advantages: jax.Array, clip_eps: float | jax.Array = jnp.inf,
                         mask: jax.Array | None = None) -> jax.Array:
    """Wu et al.'s factorised surrogate, negated (a loss):

        r_{t,i} = exp(log pi_i(a_{t,i}|s_t) - log pi_old,i(a_{t,i}|s_t))
        L = -mean_t sum_i min(r_{t,i} A_{t,i}, clip(r_{t,i}, 1 - eps, 1 + eps) A_{t,i})

    `clip_eps = inf` (default) is their unclipped -mean_t sum_i r_{t,i} A_{t,i}; at
    pi = pi_old its gradient is `pg_loss`'s. All inputs `[..., A]`; `mask` `[...]`.
    """
    chex.assert_equal_shape([log_prob_per_dim, old_log_prob_per_dim, advantages])
    ratio = jnp.exp(log_prob_per_dim - old_log_prob_per_dim)
    clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    per_dim = jnp.minimum(ratio * advantages, clipped * advantages)
    return -masked_mean(jnp.sum(per_dim, axis=-1), mask)


# ---------------------------------------------------------------------------------------------
# Inputs of action-dependent baselines


def others(actions: jax.Array) -> jax.Array:
    """a_-i for every i: `[..., A]` -> `[..., A, A]` with out[..., i, j] = a_j (j != i), 0 (j = i).

    Row i is the input of baseline b_i; the zeroed entry carries no information about a_i.
    """
    A = actions.shape[-1]
    keep = 1.0 - jnp.eye(A, dtype=actions.dtype)
    out = actions[..., None, :] * keep
    chex.assert_shape(out, actions.shape + (A,))
    return out


def linear_baseline_features(obs: jax.Array, actions: jax.Array, time: jax.Array) -> jax.Array:
    """Wu et al.'s linear-feature baseline inputs, one row per action dimension i:

        phi_i = [o, o^2, a_-i, a_-i^2, t/100, (t/100)^2, (t/100)^3, 1]

    (rllab's `LinearFeatureBaseline` plus the other action dimensions; a_-i as in `others`,
    a constant feature for the intercept). obs `[..., D]`, actions `[..., A]`, time `[...]`
    (steps since the episode began) -> `[..., A, 2 D + 2 A + 4]`.
    """
    chex.assert_equal_shape_prefix([obs, actions, time], time.ndim)
    chex.assert_rank([obs, actions], time.ndim + 1)
    A = actions.shape[-1]
    o = jnp.broadcast_to(obs[..., None, :], obs.shape[:-1] + (A, obs.shape[-1]))
    a = others(actions)
    t = jnp.broadcast_to((time.astype(obs.dtype) / 100.0)[..., None, None], a.shape[:-1] + (1,))
    return jnp.concatenate([o, o**2, a, a**2, t, t**2, t**3, jnp.ones_like(t)], axis=-1)


def fit_linear_baseline(features: jax.Array, targets: jax.Array, reg: float | jax.Array = 1e-5,
                        mask: jax.Array | None = None) -> jax.Array:
    """Ridge regression per action dimension, in closed form:

        w_i = (Phi_i^T M Phi_i + reg I)^{-1} Phi_i^T M y_i

    features `[N, A, F]` (`linear_baseline_features`, flattened over time and batch),
    targets `[N, A]` (e.g. the returns or `factorised_advantages` targets), mask `[N]`
    (M = diag(mask), default all ones). Returns weights `[A, F]`.
    """
    chex.assert_rank(features, 3)
    chex.assert_equal_shape_prefix([features, targets], 2)
    m = jnp.ones(features.shape[0], features.dtype) if mask is None else mask.astype(features.dtype)
    F = features.shape[-1]
    xm = features * m[:, None, None]
    gram = jnp.einsum("naf,nag->afg", xm, features) + reg * jnp.eye(F, dtype=features.dtype)
    rhs = jnp.einsum("naf,na->af", xm, targets)
    return jax.vmap(spd_solve)(gram, rhs)


def spd_solve(a: jax.Array, b: jax.Array) -> jax.Array:
    """x = a^{-1} b for a symmetric positive definite a `[F, F]` and b `[F]`: a = L L^T by
    Cholesky (each pivot floored at 1e-6 a_jj against float32 round-off), then L y = b and
    L^T x = y, in plain JAX loops. Not `jnp.linalg.solve`: batched
    LAPACK calls inside rlx's vmapped programs hang XLA:CPU in jaxlib 0.10.2 (all threads idle;
    seen in experiments.factorized_baselines' learning curves)."""
    chex.assert_rank([a, b], [2, 1])
    F = a.shape[-1]
    idx = jnp.arange(F)

    def chol(j, L):
        s = a[:, j] - L @ L[j]
        d = jnp.sqrt(jnp.maximum(s[j], 1e-6 * a[j, j]))  # float32 round-off: a may be barely PD
        return L.at[:, j].set(jnp.where(idx > j, s / d, jnp.where(idx == j, d, 0.0)))

    L = jax.lax.fori_loop(0, F, chol, jnp.zeros_like(a))
    y = jax.lax.fori_loop(0, F, lambda i, y: y.at[i].set((b[i] - L[i] @ y) / L[i, i]),
                          jnp.zeros_like(b))
    return jax.lax.fori_loop(
        0, F, lambda k, x: x.at[F - 1 - k].set((y[F - 1 - k] - L[:, F - 1 - k] @ x)
                                              / L[F - 1 - k, F - 1 - k]), jnp.zeros_like(b))


def linear_baseline(weights: jax.Array, features: jax.Array) -> jax.Array:
    """b_i = phi_i . w_i: weights `[A, F]`, features `[..., A, F]` -> `[..., A]`."""
    chex.assert_equal_shape_suffix([weights, features], 2)
    return jnp.einsum("...af,af->...a", features, weights)


# ---------------------------------------------------------------------------------------------
# Variance decomposition (Tucker et al. 2018)


def estimator_sample(score_per_dim: jax.Array, ret: jax.Array, baseline: jax.Array) -> jax.Array:
    """One draw of the policy-gradient estimator at a state-action pair:

        g = sum_i grad_theta log pi_i(a_i|s) (G - b_i)

    score_per_dim `[A, P]` (gradient of each factor w.r.t. the P parameters), ret: the
    sampled return G (a scalar), baseline `[A]` (b_i(s, a_-i); a state baseline repeats
    V(s)). Returns `[P]`.
    """
    chex.assert_rank([score_per_dim, ret, baseline], [2, 0, 1])
    return jnp.einsum("ap,a->p", score_per_dim, ret - baseline)


def variance_decomposition(key: jax.Array, sample_state: Callable[[jax.Array], jax.Array],
                           sample_action: Callable[[jax.Array, jax.Array], jax.Array],
                           sample_return: Callable[[jax.Array, jax.Array, jax.Array], jax.Array],
                           score_per_dim: Callable[[jax.Array, jax.Array], jax.Array],
                           baseline: Callable[[jax.Array, jax.Array], jax.Array],
                           num_states: int, num_actions: int, num_returns: int,
                           q_value: Callable[[jax.Array, jax.Array], jax.Array] | None = None
                           ) -> dict[str, jax.Array]:
    """Var[g] = Sigma_tau + Sigma_a + Sigma_s (law of total variance; Tucker et al. eq. 3-5):

        Sigma_tau = E_s E_{a|s} Var_{tau|s,a}[g]            (trajectory noise)
        Sigma_a   = E_s Var_{a|s} E_{tau|s,a}[g]            (action sampling; baseline-dependent)
        Sigma_s   = Var_s E_{a|s} E_{tau|s,a}[g]            (state sampling)

    for g = `estimator_sample`(score_per_dim(s, a), G, baseline(s, a)), by nested Monte
    Carlo (s may be any pytree, e.g. a saved `rlx.envs.EnvState` to reset a simulator to):
    `num_states` states s ~ sample_state(key); `num_actions` actions per state
    a ~ sample_action(key, s); `num_returns` continuations per pair G ~ sample_return(key,
    s, a), all vmapped. The nested (random-effects ANOVA) estimators are unbiased:

        Sigma_tau^ = mean_{s,a} S^2_tau,   Sigma_a^ = mean_s S^2_a - Sigma_tau^ / n_tau,
        Sigma_s^ = S^2_s - mean_s S^2_a / n_a

    with S^2 the (ddof = 1) sample variances of the group means one level down. With the
    exact `q_value(s, a)` = Q(s, a) = E[G | s, a] (as Tucker et al. use on the LQG), the
    conditional means E_tau[g | s, a] = sum_i score_i (Q - b_i) are exact instead of averages
    of n_tau draws, which removes the Sigma_tau / n_tau noise from Sigma_a and Sigma_s:

        Sigma_tau^ = mean_{s,a} mean_tau (g - E_tau[g|s,a])^2,   Sigma_a^ = mean_s S^2_a,
        Sigma_s^ = S^2_s - mean_s S^2_a / n_a.

    Values are the diagonals (per-parameter variances, `[P]`); sum them for traces. Also
    returns "total" (their sum) and "mean" (the estimator's mean, `[P]`).
    """
    if min(num_states, num_actions, num_returns) < 2:
        raise ValueError("variance_decomposition needs at least 2 samples per level, got "
                         f"{(num_states, num_actions, num_returns)}")
    k_s, k_a, k_r = jax.random.split(key, 3)
    n_s, n_a, n_r = num_states, num_actions, num_returns
    s = jax.vmap(sample_state)(jax.random.split(k_s, n_s))                       # [n_s, ...]
    s_rep = jax.tree.map(lambda x: jnp.repeat(x, n_a, axis=0), s)                 # [n_s n_a, ...]
    a = jax.vmap(sample_action)(jax.random.split(k_a, n_s * n_a), s_rep)          # [n_s n_a, ...]
    score = jax.vmap(score_per_dim)(s_rep, a)                                     # [n_s n_a, A, P]
    b = jax.vmap(baseline)(s_rep, a)                                              # [n_s n_a, A]
    rep = lambda x: jnp.repeat(x, n_r, axis=0)  # noqa: E731
    rets = jax.vmap(sample_return)(jax.random.split(k_r, n_s * n_a * n_r),
                                   jax.tree.map(rep, s_rep), rep(a))             # [n_s n_a n_r]
    g = jax.vmap(estimator_sample)(rep(score), rets, rep(b))
    g = g.reshape((n_s, n_a, n_r) + g.shape[1:])                          # [n_s, n_a, n_r, P]
    if q_value is None:
        sigma_tau = jnp.var(g, axis=2, ddof=1).mean(axis=(0, 1))
        g_sa = g.mean(axis=2)                                             # [n_s, n_a, P]
    else:
        q = jax.vmap(q_value)(s_rep, a)                                   # [n_s n_a]
        g_sa = jax.vmap(estimator_sample)(score, q, b).reshape(g.shape[:2] + g.shape[3:])
        sigma_tau = jnp.mean((g - g_sa[:, :, None]) ** 2, axis=(0, 1, 2))
    var_a = jnp.var(g_sa, axis=1, ddof=1)                                 # [n_s, P]
    g_s = g_sa.mean(axis=1)
    var_s = jnp.var(g_s, axis=0, ddof=1)                                  # [P]
    sigma_a = var_a.mean(axis=0) - (sigma_tau / num_returns if q_value is None else 0.0)
    sigma_s = var_s - var_a.mean(axis=0) / num_actions
    return {"sigma_tau": sigma_tau, "sigma_a": sigma_a, "sigma_s": sigma_s,
            "total": sigma_tau + sigma_a + sigma_s, "mean": g_s.mean(axis=0)}


__all__ = ["state_baseline_advantages", "factorised_advantages", "next_step_actions", "pg_loss",
           "factorised_surrogate", "others", "linear_baseline_features", "fit_linear_baseline", "spd_solve",
           "linear_baseline", "estimator_sample", "variance_decomposition"]
