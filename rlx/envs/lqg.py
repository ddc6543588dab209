"""Linear-quadratic-Gaussian control with exact value functions (Tucker et al. 2018's point mass).

    s_0 ~ N(mu_s0, Sigma_0),   s_{t+1} = A s_t + B a_t + w_t,  w_t ~ N(0, W),
    r_t = -(s_t^T Q s_t + a_t^T R a_t),   t = 0 .. T-1,   J = E sum_t gamma^t r_t.

The point mass of dimension d (`point_mass`): s = [position; velocity] in R^{2d}, a in R^d,
A = I + dt [[0, I], [0, 0]], B = [0; dt/m I], dt 0.05, m 1, Q = I, R = 0.01 I, gamma 0.99,
T = 100, mu_s0 = [3, 4, .5, -.5], W = Sigma_0 = 1e-5 I (constants of brain-research/mirage-rl,
`lqg/lqr.py`); their policy (`tucker_policy`): mean_t ~ N(0, 0.3) at start, variance 1e-4.

For an open-loop, time-indexed, factorised Gaussian policy a_t ~ N(mu_t, diag(sigma_t^2))
everything is quadratic and exact (`exact_coefs`):

    Q_t(s, a) = -(z^T H_t z + h_t . z + k_t),   z = [s; a]
    V_t(s)    = -(s^T P_t s + p_t . s + c_t),   V_T = 0
    H_t = blkdiag(Q, R) + gamma [A B]^T P_{t+1} [A B],   h_t = gamma [A B]^T p_{t+1},
    k_t = gamma (c_{t+1} + tr(P_{t+1} W)),   P_t = H_ss,   p_t = h_s + 2 H_sa mu_t,
    c_t = mu_t^T H_aa mu_t + tr(H_aa diag(sigma_t^2)) + h_a . mu_t + k_t.

`LQGEnv` is the same system as an `rlx.envs.Env`; `decomposition_fns` and `exact_baselines`
feed `rlx.losses.baselines.variance_decomposition` at one time step; `state_term` is that
decomposition's Sigma_s (and the gradient's mean) in closed form.
"""

from __future__ import annotations

from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp
from flax import struct

from rlx.envs.base import ActionSpec, Env


@struct.dataclass
class LQGParams:
    """The system: A `[n, n]`, B `[n, m]`, Q `[n, n]`, R `[m, m]`, noise_cov W `[n, n]`,
    mu_s0 `[n]`, cov_s0 `[n, n]`, gamma, and the horizon T (static)."""

    A: jax.Array
    B: jax.Array
    Q: jax.Array
    R: jax.Array
    noise_cov: jax.Array
    mu_s0: jax.Array
    cov_s0: jax.Array
    gamma: float | jax.Array
    horizon: int = struct.field(pytree_node=False)

    @property
    def state_dim(self) -> int:
        return self.A.shape[0]

    @property
    def action_dim(self) -> int:
        return self.B.shape[1]


def point_mass(dim: int = 2, dt: float = 0.05, mass: float = 1.0, q: float = 1.0,
               r: float = 0.01, gamma: float = 0.99, horizon: int = 100, noise_var: float = 1e-5,
               mu_s0: Any = None) -> LQGParams:
    """Tucker et al.'s point mass in `dim` dimensions (see the module docstring);
    `mu_s0` defaults to [3, 4, .5, -.5] for dim 2 and must be given otherwise."""
    if dim < 1 or horizon < 1 or dt <= 0 or mass <= 0 or noise_var < 0:
        raise ValueError(f"point_mass needs dim, horizon >= 1, dt, mass > 0, noise_var >= 0; got "
                         f"dim={dim}, horizon={horizon}, dt={dt}, mass={mass}, "
                         f"noise_var={noise_var}")
    if mu_s0 is None:
        if dim != 2:
            raise ValueError(f"point_mass(dim={dim}) needs mu_s0 (the default is for dim 2)")
        mu_s0 = [3.0, 4.0, 0.5, -0.5]
    mu_s0 = jnp.asarray(mu_s0, jnp.float32)
    chex.assert_shape(mu_s0, (2 * dim,))
    eye = jnp.eye(dim)
    A = jnp.eye(2 * dim).at[:dim, dim:].add(dt * eye)
    B = jnp.zeros((2 * dim, dim)).at[dim:].set(dt / mass * eye)
    W = noise_var * jnp.eye(2 * dim)
    return LQGParams(A=A, B=B, Q=q * jnp.eye(2 * dim), R=r * eye, noise_cov=W, mu_s0=mu_s0,
                     cov_s0=W, gamma=gamma, horizon=horizon)


def tucker_policy(key: jax.Array, params: LQGParams, init_var: float = 0.3,
                  action_var: float = 1e-4) -> tuple[jax.Array, jax.Array]:
    """Tucker et al.'s initial open-loop policy: mean_t ~ N(0, init_var I), std_t = sqrt(
    action_var) (variance 1e-4), both `[T, m]`."""
    shape = (params.horizon, params.action_dim)
    return (jnp.sqrt(init_var) * jax.random.normal(key, shape),
            jnp.full(shape, jnp.sqrt(action_var), jnp.float32))


def reward(params: LQGParams, s: jax.Array, a: jax.Array) -> jax.Array:
    """r = -(s^T Q s + a^T R a)."""
    return -(s @ params.Q @ s + a @ params.R @ a)


def transition_mean(params: LQGParams, s: jax.Array, a: jax.Array) -> jax.Array:
    """E[s' | s, a] = A s + B a."""
    return params.A @ s + params.B @ a


def _psd_sqrt(cov: jax.Array) -> jax.Array:
    """L with L L^T = cov (symmetric square root; cov may be singular, e.g. W = 0)."""
    w, v = jnp.linalg.eigh(cov)
    return v * jnp.sqrt(jnp.maximum(w, 0.0))


def _gauss(key: jax.Array, mean: jax.Array, cov_sqrt: jax.Array) -> jax.Array:
    """N(mean, L L^T) with L = cov_sqrt."""
    return mean + cov_sqrt @ jax.random.normal(key, mean.shape, mean.dtype)


# ---------------------------------------------------------------------------------------------
# Closed form for an open-loop factorised Gaussian policy


@struct.dataclass
class QCoefs:
    """Q_t(s, a) = -(z^T H_t z + h_t . z + k_t), z = [s; a]:
    H `[T, n+m, n+m]`, h `[T, n+m]`, k `[T]`."""

    H: jax.Array
    h: jax.Array
    k: jax.Array


@struct.dataclass
class VCoefs:
    """V_t(s) = -(s^T P_t s + p_t . s + c_t): P `[T+1, n, n]`, p `[T+1, n]`, c `[T+1]` (V_T = 0)."""

    P: jax.Array
    p: jax.Array
    c: jax.Array


def _check_policy(params: LQGParams, mean: jax.Array, std: jax.Array) -> None:
    chex.assert_shape([mean, std], (params.horizon, params.action_dim))


@jax.jit
def exact_coefs(params: LQGParams, mean: jax.Array, std: jax.Array) -> tuple[QCoefs, VCoefs]:
    """Exact Q_t and V_t of the policy a_t ~ N(mean_t, diag(std_t^2)) (module docstring);
    mean, std `[T, m]`."""
    _check_policy(params, mean, std)
    n = params.state_dim
    AB = jnp.concatenate([params.A, params.B], axis=1)
    cost = jax.scipy.linalg.block_diag(params.Q, params.R)
    g = params.gamma

    def body(v, xs):
        P, p, c = v
        mu, sd = xs
        H = cost + g * AB.T @ P @ AB
        h = g * AB.T @ p
        k = g * (c + jnp.trace(P @ params.noise_cov))
        Hss, Hsa, Haa = H[:n, :n], H[:n, n:], H[n:, n:]
        P_new = Hss
        p_new = h[:n] + 2.0 * Hsa @ mu
        c_new = mu @ Haa @ mu + jnp.sum(jnp.diag(Haa) * sd**2) + h[n:] @ mu + k
        return (P_new, p_new, c_new), (H, h, k, P_new, p_new, c_new)

    zero = (jnp.zeros((n, n)), jnp.zeros(n), jnp.zeros(()))
    _, (H, h, k, P, p, c) = jax.lax.scan(body, zero, (mean, std), reverse=True)
    vc = VCoefs(P=jnp.concatenate([P, zero[0][None]]), p=jnp.concatenate([p, zero[1][None]]),
                c=jnp.concatenate([c, zero[2][None]]))
    return QCoefs(H=H, h=h, k=k), vc


def q_value(qc: QCoefs, t: jax.Array | int, s: jax.Array, a: jax.Array) -> jax.Array:
    """Q_t(s, a) (exact); s `[n]`, a `[m]` (vmap for batches)."""
    z = jnp.concatenate([s, a])
    return -(z @ qc.H[t] @ z + qc.h[t] @ z + qc.k[t])


def state_value(vc: VCoefs, t: jax.Array | int, s: jax.Array) -> jax.Array:
    """V_t(s) (exact; V_T = 0); s `[n]`."""
    return -(s @ vc.P[t] @ s + vc.p[t] @ s + vc.c[t])


def factorised_baseline(qc: QCoefs, t: jax.Array | int, s: jax.Array, a: jax.Array,
                        mean_t: jax.Array, std_t: jax.Array) -> jax.Array:
    """b_i(s, a_-i) = E_{a_i ~ N(mean_i, std_i^2)}[Q_t(s, a) | a_-i] for every i, `[m]`:
    Q_t with a_i replaced by mean_i, minus H_{a_i a_i} std_i^2 (Q is quadratic in a_i)."""
    n = s.shape[0]
    m = a.shape[0]
    a_sub = jnp.where(jnp.eye(m, dtype=bool), mean_t[None, :], a[None, :])  # row i: a_i -> mean_i
    q = jax.vmap(lambda ai: q_value(qc, t, s, ai))(a_sub)
    return q - jnp.diag(qc.H[t])[n:] * std_t**2


@jax.jit
def state_marginals(params: LQGParams, mean: jax.Array, std: jax.Array
                    ) -> tuple[jax.Array, jax.Array]:
    """Mean `[T, n]` and covariance `[T, n, n]` of s_t under the policy (Gaussian, exact):
    mu_{t+1} = A mu_t + B mean_t, S_{t+1} = A S_t A^T + B diag(std_t^2) B^T + W."""
    _check_policy(params, mean, std)

    def body(carry, xs):
        mu, S = carry
        ma, sa = xs
        nxt = (params.A @ mu + params.B @ ma,
               params.A @ S @ params.A.T + params.B @ jnp.diag(sa**2) @ params.B.T
               + params.noise_cov)
        return nxt, carry

    _, (mus, covs) = jax.lax.scan(body, (params.mu_s0, params.cov_s0), (mean, std))
    return mus, covs


@jax.jit
def expected_return(params: LQGParams, mean: jax.Array, std: jax.Array) -> jax.Array:
    """J = E[sum_t gamma^t r_t] = E_{s_0}[V_0(s_0)] = -(mu^T P_0 mu + tr(P_0 Sigma_0) + p_0 . mu
    + c_0); differentiable, so `jax.grad` gives the exact policy gradient."""
    _, vc = exact_coefs(params, mean, std)
    mu = params.mu_s0
    return -(mu @ vc.P[0] @ mu + jnp.trace(vc.P[0] @ params.cov_s0) + vc.p[0] @ mu + vc.c[0])


def continuation_return(params: LQGParams, mean: jax.Array, std: jax.Array, key: jax.Array,
                        t: jax.Array | int, s: jax.Array, a: jax.Array) -> jax.Array:
    """One sample of G_t = sum_{k=t}^{T-1} gamma^{k-t} r_k from s_t = s, a_t = a, then the
    policy (E[G_t] = Q_t(s, a)); `t` may be traced."""
    _check_policy(params, mean, std)
    T = params.horizon
    w_sqrt = _psd_sqrt(params.noise_cov)

    def body(carry, xs):
        s_k, G, disc = carry
        k, key_k = xs
        k_a, k_w = jax.random.split(key_k)
        a_k = jnp.where(k == t, a, mean[k] + std[k] * jax.random.normal(k_a, a.shape))
        active = k >= t
        G = G + jnp.where(active, disc * reward(params, s_k, a_k), 0.0)
        s_next = transition_mean(params, s_k, a_k) + _gauss(k_w, jnp.zeros_like(s), w_sqrt)
        disc = jnp.where(active, disc * params.gamma, disc)
        return (jnp.where(active, s_next, s_k), G, disc), None

    (_, G, _), _ = jax.lax.scan(body, (s, jnp.zeros(()), jnp.ones(())),
                                (jnp.arange(T), jax.random.split(key, T)))
    return G


# ---------------------------------------------------------------------------------------------
# Tucker et al.'s decomposition at one time step


def decomposition_fns(params: LQGParams, mean: jax.Array, std: jax.Array, t: int
                      ) -> dict[str, Callable[..., jax.Array]]:
    """The samplers `rlx.losses.baselines.variance_decomposition` takes, for the gradient
    w.r.t. mean_t (P = m parameters) at time step t:

        s ~ N(mu_s[t], Sigma_s[t]) (exact marginal),  a ~ N(mean_t, diag(std_t^2)),
        G ~ continuation from (s, a),  score_{i,j} = d log pi_i / d mean_{t,j}
                                                    = delta_ij (a_i - mean_{t,i}) / std_{t,i}^2,
        and "q_value": the exact Q_t(s, a) (`variance_decomposition`'s optional argument).
    """
    if not 0 <= t < params.horizon:
        raise ValueError(f"time step t={t} outside [0, {params.horizon})")
    mus, covs = state_marginals(params, mean, std)
    qc, _ = exact_coefs(params, mean, std)
    mu_t, sd_t, s_sqrt = mean[t], std[t], _psd_sqrt(covs[t])
    return {
        "sample_state": lambda k: _gauss(k, mus[t], s_sqrt),
        "sample_action": lambda k, s: mu_t + sd_t * jax.random.normal(k, mu_t.shape),
        "sample_return": lambda k, s, a: continuation_return(params, mean, std, k, t, s, a),
        "score_per_dim": lambda s, a: jnp.diag((a - mu_t) / sd_t**2),
        "q_value": lambda s, a: q_value(qc, t, s, a),
    }


def state_term(params: LQGParams, mean: jax.Array, std: jax.Array, t: int
               ) -> tuple[jax.Array, jax.Array]:
    """The exact mean and Sigma_s (diagonal) of the step-t gradient estimator w.r.t. mean_t.

    For any unbiased baseline, E_{a, tau}[g | s] = grad_{mean_t} E_a Q_t(s, a)
    = -(2 H_as s + 2 H_aa mean_t + h_a), linear in s ~ N(mu_s[t], S_t), so

        E[g] = -(2 H_as mu_s[t] + 2 H_aa mean_t + h_a),   Sigma_s = 4 H_as S_t H_sa

    (H, h of `exact_coefs` at step t). Returns (E[g] `[m]`, diag Sigma_s `[m]`).
    """
    if not 0 <= t < params.horizon:
        raise ValueError(f"time step t={t} outside [0, {params.horizon})")
    qc, _ = exact_coefs(params, mean, std)
    mus, covs = state_marginals(params, mean, std)
    n = params.state_dim
    H_as, H_aa, h_a = qc.H[t][n:, :n], qc.H[t][n:, n:], qc.h[t][n:]
    g = -(2.0 * H_as @ mus[t] + 2.0 * H_aa @ mean[t] + h_a)
    return g, jnp.diag(4.0 * H_as @ covs[t] @ H_as.T)


def exact_baselines(params: LQGParams, mean: jax.Array, std: jax.Array, t: int
                    ) -> dict[str, Callable[[jax.Array, jax.Array], jax.Array]]:
    """Exact baselines b(s, a) -> `[m]` at time step t:

        "none": 0;  "state": V_t(s);  "factorised": E[Q_t(s, a) | a_-i] (`factorised_baseline`);
        "biased": Q_t(s, a) for every i (sees a_i itself, so its estimator is biased: mean 0).
    """
    qc, vc = exact_coefs(params, mean, std)
    m = params.action_dim
    rep = lambda x: jnp.broadcast_to(x, (m,))  # noqa: E731
    return {
        "none": lambda s, a: jnp.zeros(m),
        "state": lambda s, a: rep(state_value(vc, t, s)),
        "factorised": lambda s, a: factorised_baseline(qc, t, s, a, mean[t], std[t]),
        "biased": lambda s, a: rep(q_value(qc, t, s, a)),
    }


# ---------------------------------------------------------------------------------------------
# As an environment


class LQGEnv(Env):
    """The LQG as an `rlx.envs.Env`. The observation is s (and t / T with `observe_time`, for
    time-indexed policies); the action is used as given (no clipping: Gaussian heads'
    `to_env` clips to [-1, 1], so act with the raw sample if that matters). The episode
    *terminates* after T steps: the objective is finite-horizon (V_T = 0)."""

    name = "lqg"

    def __init__(self, params: LQGParams, observe_time: bool = False):
        self.params = params
        self.observe_time = observe_time
        self.obs_shape = (params.state_dim + int(observe_time),)
        self._w_sqrt, self._s0_sqrt = _psd_sqrt(params.noise_cov), _psd_sqrt(params.cov_s0)
        self.action_spec = ActionSpec(discrete=False, size=params.action_dim)
        self.max_episode_steps = params.horizon

    def _obs(self, s: jax.Array, time: jax.Array) -> jax.Array:
        if not self.observe_time:
            return s
        return jnp.concatenate([s, (time / self.params.horizon)[None].astype(s.dtype)])

    def _reset(self, key: jax.Array) -> tuple[Any, jax.Array]:
        s = _gauss(key, self.params.mu_s0, self._s0_sqrt)
        return s, self._obs(s, jnp.zeros((), jnp.int32))

    def _step(self, key, s, action, time):
        p = self.params
        k_w, k_reset = jax.random.split(key)
        r = reward(p, s, action)
        s_next = transition_mean(p, s, action) + _gauss(k_w, jnp.zeros_like(s), self._w_sqrt)
        terminated = time >= p.horizon
        s0 = _gauss(k_reset, p.mu_s0, self._s0_sqrt)
        s_new = jnp.where(terminated, s0, s_next)
        obs_new = jnp.where(terminated, self._obs(s0, jnp.zeros_like(time)),
                            self._obs(s_next, time))
        return s_new, obs_new, r, terminated, self._obs(s_next, time), jnp.zeros((), bool)


__all__ = ["LQGParams", "point_mass", "tucker_policy", "reward", "transition_mean", "QCoefs",
           "VCoefs",
           "exact_coefs", "q_value", "state_value", "factorised_baseline", "state_marginals",
           "expected_return", "continuation_return", "decomposition_fns", "state_term",
           "exact_baselines", "LQGEnv"]
