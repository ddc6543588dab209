"""The Wasserstein policy-gradient flow in closed form (Zhu, Gao & Li 2026, arXiv 2605.26078).

With entropy regularisation tau, the WPG flow of a policy at one state is the Fokker-Planck
equation d pi/dt = -div_a(pi grad_a Q) + tau Laplacian_a pi, whose fixed point is the Gibbs
policy pi* proportional to exp(Q/tau). This module checks its contraction where everything
has a closed form.

**Single state** (`Quadratic`): Q(a) = -(c/2)|a - a*|^2 - (beta/2)|a|^2 in d dimensions, so
grad Q(a) = -kappa (a - m*) with kappa = c + beta, m* = c a*/kappa, and pi* = N(m*, v* I),
v* = tau/kappa. Three time discretisations (eta the step, rho = 1 - eta kappa):

* particles, the unadjusted Langevin algorithm (`run_particles`; every particle moves by the
  same vmapped step, iterations by `lax.scan`):  a <- a + eta grad Q(a) + sqrt(2 eta tau) xi.
  Its law stays Gaussian, N(m_k, v_k I), with (`ula_law`)
      m_{k+1} - m* = rho (m_k - m*)                    -> |m_k - m*| = |rho|^k |m_0 - m*|
      v_{k+1}      = rho^2 v_k + 2 eta tau             -> v_k - v_inf = rho^{2k} (v_0 - v_inf)
      v_inf        = 2 eta tau / (1 - rho^2) = tau / (kappa (1 - eta kappa / 2))   (> v*: the bias)
  For particles the KL below is that of the Gaussian fitted to the cloud (its mean, and one
  pooled variance over particles and dimensions, `fit_gaussian`): the dynamics and pi* are
  isotropic. Finitely many particles add about (d r_inf + 1) / (2P) to it (sampling error of
  the fitted mean and variance; `particle_excess`).
* the Gaussian WPG flow (`gaussian_flow`), the flow restricted to N(mu, sigma^2 I), Euler-stepped:
      mu    <- mu    + eta (-kappa (mu - m*))         = E_pi[grad Q]            (the WPO mean step)
      sigma <- sigma + eta (-kappa sigma + tau/sigma) = E_pi[eps grad Q] + tau d H/d sigma
  Its fixed point sigma^2 = tau/kappa is exact (no bias); sigma's error contracts by
  1 - 2 eta kappa per step, faster than the mean's rho while eta kappa < 2/3.

**KL and its contraction** (`gaussian_kl`): with r = v/v*,
      KL(N(m, vI) || N(m*, v*I)) = (d/2)(r - 1 - log r) + |m - m*|^2 / (2 v*).
The mean part decays exactly as rho^{2k}; the variance part is f(r_k) - f(r_inf) =
f'(r_inf)(r_k - r_inf) + O((r_k - r_inf)^2), again rho^{2k} at leading order. So
      KL_k - KL_floor ~ A rho^{2k}:  per-iteration factor (1 - eta kappa)^2 for KL (a squared
      error), 1 - eta kappa for |m_k - m*|,
      KL_floor = (d/2)(r_inf - 1 - log r_inf),  r_inf = 1 / (1 - eta kappa/2)   (ULA; 0 for the
      Gaussian flow). `theory` returns these; `fit_contraction` measures them from a curve.

**Multi-step check** (`LQR`): an entropy-regularised linear-quadratic regulator, s' = A s +
B a + w, w ~ N(0, W), reward -(s'Qs + a'Ra)/2 + tau H(pi(.|s)), discount gamma. Its soft
Q-function is quadratic, Q(s, a) = -(1/2)[s; a]' M [s; a] + const with M_aa = R + gamma B'PB,
M_as = gamma B'PA, so the soft-optimal policy is Gaussian (`soft_riccati`):
      pi*(a|s) = N(-K* s, Sigma*),  K* = M_aa^-1 M_as,  Sigma* = tau M_aa^-1,
      P = Q + gamma A'PA - gamma^2 A'PB (R + gamma B'PB)^-1 B'PA    (the discounted Riccati
equation; entropy changes only constants). The WPG flow on linear-Gaussian policies
N(-K s, Sigma) moves each state's Gaussian along grad_a Q^pi of the current policy
(`lqr_wpg_flow`, P^pi from a Lyapunov equation, `policy_value`):
      K     <- K + eta (M_as - M_aa K)
      Sigma <- Sigma + eta (2 tau I - M_aa Sigma - Sigma M_aa)
whose fixed point is (K*, Sigma*). Everything runs in the dtype of its inputs (the
experiment uses float64 via `jax.enable_x64`).
"""

from __future__ import annotations

import dataclasses
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np

# ---- single state ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Quadratic:
    """Q(a) = -(c/2)|a - a*|^2 - (beta/2)|a|^2 on R^dim, a* = a_star (1, ..., 1); temperature tau.

    Particles / Gaussians start at mean init_mean (1, ..., 1), std init_std (None: sqrt(v*))."""

    c: float = 1.5
    beta: float = 0.5
    tau: float = 0.5
    dim: int = 4
    a_star: float = 2.0
    init_mean: float = -20.0
    init_std: float | None = None

    def __post_init__(self):
        for name in ("c", "tau"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not self.c + self.beta > 0:
            raise ValueError(f"kappa = c + beta must be > 0, got {self.c + self.beta!r}")
        if self.dim < 1:
            raise ValueError(f"dim must be >= 1, got {self.dim!r}")

    @property
    def kappa(self) -> float:
        return self.c + self.beta

    @property
    def m_star(self) -> float:
        """The optimum's mean, per coordinate: c a* / kappa."""
        return self.c * self.a_star / self.kappa

    @property
    def v_star(self) -> float:
        """The optimum's variance per coordinate: tau / kappa."""
        return self.tau / self.kappa

    @property
    def std0(self) -> float:
        return math.sqrt(self.v_star) if self.init_std is None else self.init_std

    def grad_q(self, a: jax.Array) -> jax.Array:
        """grad Q(a) = -c (a - a*) - beta a = -kappa (a - m*)."""
        return -self.c * (a - self.a_star) - self.beta * a


def check_step(problem: Quadratic, eta: float) -> None:
    """ValueError unless 0 < eta kappa < 1 (the regime the contraction statements cover)."""
    if not 0 < eta * problem.kappa < 1:
        raise ValueError(f"step size eta={eta!r} needs 0 < eta * kappa < 1 (kappa = {problem.kappa})")


def gaussian_kl(mean: jax.Array, var: jax.Array, m_star: float, v_star: float) -> jax.Array:
    """KL(N(mean, var I) || N(m*, v* I)) = (d/2)(r - 1 - log r) + |mean - m*|^2 / (2 v*), r = var/v*.

    mean [..., d], var [...]; (r - 1 - log r) as x - log1p(x), x = r - 1, for precision near r = 1."""
    d = mean.shape[-1]
    x = var / v_star - 1.0
    return 0.5 * d * (x - jnp.log1p(x)) + jnp.sum((mean - m_star) ** 2, -1) / (2.0 * v_star)


def fit_gaussian(particles: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The isotropic Gaussian fitted to particles [P, d]: (mean [d], pooled unbiased variance)."""
    chex.assert_rank(particles, 2)
    mean = jnp.mean(particles, 0)
    p, d = particles.shape
    return mean, jnp.sum((particles - mean) ** 2) / (d * (p - 1))


def langevin_step(problem: Quadratic, eta: float, a: jax.Array, xi: jax.Array) -> jax.Array:
    """One ULA step of one particle a [d]: a + eta grad Q(a) + sqrt(2 eta tau) xi."""
    return a + eta * problem.grad_q(a) + jnp.sqrt(2.0 * eta * problem.tau) * xi


def run_particles(problem: Quadratic, eta: float, iters: int, num_particles: int, key: jax.Array,
                  dtype=jnp.float32, stats_dtype=None) -> dict[str, jax.Array]:
    """ULA from N(init_mean, init_std^2 I) with `num_particles` particles (in `dtype`) for
    `iters` steps; the fitted Gaussian is computed in `stats_dtype` (None: `dtype`).

    Returns {"kl": [iters + 1] KL of the fitted Gaussian, "mean_err": [iters + 1] |mean - m*|,
    "var": [iters + 1] fitted variance}, index 0 the start."""
    check_step(problem, eta)
    k0, k1 = jax.random.split(key)
    d = problem.dim
    a0 = problem.init_mean + problem.std0 * jax.random.normal(k0, (num_particles, d), dtype)
    step = jax.vmap(lambda a, xi: langevin_step(problem, eta, a, xi))

    def stats(a):
        m, v = fit_gaussian(a.astype(stats_dtype or dtype))
        return {"kl": gaussian_kl(m, v, problem.m_star, problem.v_star),
                "mean_err": jnp.linalg.norm(m - problem.m_star), "var": v}

    def body(a, k):
        a = step(a, jax.random.normal(k, a.shape, dtype))
        return a, stats(a)

    _, out = jax.lax.scan(body, a0, jax.random.split(k1, iters))
    first = stats(a0)
    return {n: jnp.concatenate([first[n][None], out[n]]) for n in out}


def ula_law(problem: Quadratic, eta: float, iters: int, dtype=jnp.float32) -> dict[str, jax.Array]:
    """The exact law N(m_k, v_k I) of ULA (infinitely many particles): m <- m + eta grad Q(m),
    v <- (1 - eta kappa)^2 v + 2 eta tau. Same keys as `run_particles`."""
    check_step(problem, eta)
    rho = 1.0 - eta * problem.kappa

    def body(carry, _):
        m, v = carry
        m, v = m + eta * problem.grad_q(m), rho ** 2 * v + 2.0 * eta * problem.tau
        return (m, v), (m, v)

    m0 = jnp.full((problem.dim,), problem.init_mean, dtype)
    v0 = jnp.asarray(problem.std0 ** 2, dtype)
    _, (ms, vs) = jax.lax.scan(body, (m0, v0), None, length=iters)
    ms, vs = jnp.concatenate([m0[None], ms]), jnp.concatenate([v0[None], vs])
    return _curves(problem, ms, vs)


def gaussian_flow(problem: Quadratic, eta: float, iters: int,
                  dtype=jnp.float32) -> dict[str, jax.Array]:
    """The Gaussian WPG flow, Euler-stepped: mu <- mu - eta kappa (mu - m*), sigma <- sigma +
    eta (-kappa sigma + tau / sigma). Same keys as `run_particles`."""
    check_step(problem, eta)
    kappa, tau = problem.kappa, problem.tau

    def body(carry, _):
        mu, sigma = carry
        mu, sigma = mu + eta * problem.grad_q(mu), sigma + eta * (-kappa * sigma + tau / sigma)
        return (mu, sigma), (mu, sigma)

    mu0 = jnp.full((problem.dim,), problem.init_mean, dtype)
    s0 = jnp.asarray(problem.std0, dtype)
    _, (ms, ss) = jax.lax.scan(body, (mu0, s0), None, length=iters)
    ms, ss = jnp.concatenate([mu0[None], ms]), jnp.concatenate([s0[None], ss])
    return _curves(problem, ms, ss ** 2)


def _curves(problem: Quadratic, ms: jax.Array, vs: jax.Array) -> dict[str, jax.Array]:
    return {"kl": gaussian_kl(ms, vs, problem.m_star, problem.v_star),
            "mean_err": jnp.linalg.norm(ms - problem.m_star, axis=-1), "var": vs}


def theory(problem: Quadratic, eta: float, num_particles: int | None = None) -> dict[str, float]:
    """The predicted contraction and floors at step eta (see the module docstring):

    rate_kl = (1 - eta kappa)^2, rate_mean = |1 - eta kappa|, var_inf = tau / (kappa (1 - eta
    kappa/2)), floor_kl = (d/2)(r - 1 - log r) at r = var_inf / v* (ULA's bias; the Gaussian
    flow's is 0), and with `num_particles` the fitted-Gaussian excess of a finite cloud."""
    check_step(problem, eta)
    ek = eta * problem.kappa
    var_inf = problem.tau / (problem.kappa * (1.0 - ek / 2.0))
    r = var_inf / problem.v_star
    out = {"rate_kl": (1.0 - ek) ** 2, "rate_mean": abs(1.0 - ek), "var_inf": var_inf,
           "floor_kl": 0.5 * problem.dim * (r - 1.0 - math.log(r)), "floor_kl_flow": 0.0}
    if num_particles is not None:
        out["particle_excess"] = particle_excess(problem, eta, num_particles)
    return out


def particle_excess(problem: Quadratic, eta: float, num_particles: int) -> float:
    """Expected extra KL of the Gaussian fitted to P stationary ULA particles, to leading order
    in 1/P: E|mean error|^2/(2v*) = d r/(2P) plus (d/2) f''(r) Var(r_hat)/2 = 1/(2(P - 1))."""
    r = 1.0 / (1.0 - eta * problem.kappa / 2.0)
    return problem.dim * r / (2.0 * num_particles) + 1.0 / (2.0 * (num_particles - 1))


def fit_contraction(curve: np.ndarray, tail: float = 1 / 2, above: float = 20.0,
                    rel: float = 1e-12, passes: int = 3) -> dict[str, float]:
    """Measure a curve's floor F and per-iteration contraction factor rho (curve_k ~ A rho^k + F).

    Pass 1: F = mean of the last `tail` of the curve, s = its standard deviation; rho, A from
    the least-squares line through log(curve_k - F) over the iterations k >= 1 before the excess
    first falls below max(above x max(|F|, s), rel x excess_0) (noise at the floor, what is
    left of the transient in the tail, round-off). Later passes: F and s of the tail of
    curve_k - A rho^k (the transient removed), then the line again.
    Returns {"rate", "floor", "points"} (points: iterations in the fit)."""
    y = np.asarray(curve, np.float64)
    idx = np.arange(len(y))
    tail_idx = idx[-max(1, int(len(y) * tail)):]
    resid = y[tail_idx]
    fit = {"rate": float("nan"), "floor": float(np.mean(resid)), "points": 0}
    for _ in range(passes):
        floor, spread = float(np.mean(resid)), float(np.std(resid))
        excess = y - floor
        cut = max(above * max(abs(floor), spread), rel * abs(excess[0]))
        below = np.nonzero(excess[1:] <= cut)[0]
        k = np.arange(1, 1 + (int(below[0]) if below.size else len(y) - 1))
        if k.size < 2:
            return {"rate": float("nan"), "floor": floor, "points": int(k.size)}
        slope, intercept = np.polyfit(k, np.log(excess[k]), 1)
        fit = {"rate": float(np.exp(slope)), "floor": floor, "points": int(k.size)}
        resid = y[tail_idx] - np.exp(intercept + slope * tail_idx)
    return fit


# ---- multi-step: entropy-regularised LQR -------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LQR:
    """s' = A s + B a + w, w ~ N(0, W); reward -(s'Qs + a'Ra)/2 + tau H; discount gamma; start
    states s0 ~ N(0, S0). Matrices as nested tuples (hashable); `arrays()` gives them as arrays."""

    A: tuple = ((1.0, 0.2), (0.0, 0.9))
    B: tuple = ((0.1, 0.0), (0.3, 0.2))
    Q: tuple = ((1.0, 0.0), (0.0, 0.5))
    R: tuple = ((0.5, 0.1), (0.1, 0.3))
    W: tuple = ((0.05, 0.0), (0.0, 0.05))
    S0: tuple = ((1.0, 0.0), (0.0, 1.0))
    gamma: float = 0.9
    tau: float = 0.2

    def arrays(self, dtype=jnp.float32) -> dict[str, jax.Array]:
        return {k: jnp.asarray(getattr(self, k), dtype) for k in ("A", "B", "Q", "R", "W", "S0")}


def soft_riccati(lqr: LQR, iters: int = 2000, dtype=jnp.float32) -> dict[str, jax.Array]:
    """The soft-optimal policy N(-K* s, Sigma*) by iterating the discounted Riccati equation
    `iters` times from P = Q: returns {"P", "K", "Sigma"}."""
    m = lqr.arrays(dtype)
    A, B, Q, R = m["A"], m["B"], m["Q"], m["R"]
    g = lqr.gamma

    def body(_, P):
        maa = R + g * B.T @ P @ B
        return Q + g * A.T @ P @ A - g ** 2 * A.T @ P @ B @ jnp.linalg.solve(maa, B.T @ P @ A)

    P = jax.lax.fori_loop(0, iters, body, Q)
    maa, mas = soft_q_blocks(lqr, P, dtype)
    return {"P": P, "K": jnp.linalg.solve(maa, mas), "Sigma": lqr.tau * jnp.linalg.inv(maa)}


def soft_q_blocks(lqr: LQR, P: jax.Array, dtype=jnp.float32) -> tuple[jax.Array, jax.Array]:
    """(M_aa, M_as) of Q(s, a) = -(1/2)[s; a]'M[s; a] + const when V(s) = -(1/2) s'Ps + const:
    M_aa = R + gamma B'PB, M_as = gamma B'PA (so grad_a Q = -(M_aa a + M_as s))."""
    m = lqr.arrays(dtype)
    return m["R"] + lqr.gamma * m["B"].T @ P @ m["B"], lqr.gamma * m["B"].T @ P @ m["A"]


def policy_value(lqr: LQR, K: jax.Array, Sigma: jax.Array) -> tuple[jax.Array, jax.Array]:
    """V^pi(s) = -(1/2) s'P s + c of the soft objective for pi = N(-K s, Sigma):

        P = Q + K'RK + gamma F'PF,  F = A - BK    (a Lyapunov equation, solved as a linear system)
        c = [-(1/2) tr(R Sigma) - (gamma/2) tr(P (B Sigma B' + W)) + tau H] / (1 - gamma),
        H = (1/2) log det(2 pi e Sigma).  Returns (P, c)."""
    m = lqr.arrays(K.dtype)
    A, B, Q, R, W = m["A"], m["B"], m["Q"], m["R"], m["W"]
    g, n = lqr.gamma, A.shape[0]
    F = A - B @ K
    lhs = jnp.eye(n * n, dtype=K.dtype) - g * jnp.kron(F.T, F.T)
    P = jnp.linalg.solve(lhs, (Q + K.T @ R @ K).reshape(-1)).reshape(n, n)
    P = 0.5 * (P + P.T)
    a = Sigma.shape[0]
    entropy = 0.5 * (jnp.linalg.slogdet(Sigma)[1] + a * jnp.log(2 * jnp.pi * jnp.e))
    c = (-0.5 * jnp.trace(R @ Sigma) - 0.5 * g * jnp.trace(P @ (B @ Sigma @ B.T + W))
         + lqr.tau * entropy) / (1.0 - g)
    return P, c


def soft_objective(lqr: LQR, K: jax.Array, Sigma: jax.Array) -> jax.Array:
    """J(pi) = E_{s0 ~ N(0, S0)} V^pi(s0) = -(1/2) tr(P S0) + c."""
    P, c = policy_value(lqr, K, Sigma)
    return -0.5 * jnp.trace(P @ lqr.arrays(K.dtype)["S0"]) + c


def lqr_wpg_flow(lqr: LQR, eta: float, iters: int, K0: jax.Array,
                 Sigma0: jax.Array) -> dict[str, jax.Array]:
    """The Gaussian WPG flow on linear-Gaussian policies, Euler-stepped (module docstring).

    Returns {"K": [iters + 1, a, n], "Sigma": [iters + 1, a, a], "J": [iters + 1] soft objective}."""
    chex.assert_rank([K0, Sigma0], 2)
    eye = jnp.eye(Sigma0.shape[0], dtype=Sigma0.dtype)

    def body(carry, _):
        K, S = carry
        P, _ = policy_value(lqr, K, S)
        maa, mas = soft_q_blocks(lqr, P, K.dtype)
        K = K + eta * (mas - maa @ K)
        S = S + eta * (2.0 * lqr.tau * eye - maa @ S - S @ maa)
        return (K, S), (K, S)

    _, (Ks, Ss) = jax.lax.scan(body, (K0, Sigma0), None, length=iters)
    Ks, Ss = jnp.concatenate([K0[None], Ks]), jnp.concatenate([Sigma0[None], Ss])
    return {"K": Ks, "Sigma": Ss, "J": jax.vmap(lambda k, s: soft_objective(lqr, k, s))(Ks, Ss)}


__all__ = ["Quadratic", "check_step", "gaussian_kl", "fit_gaussian", "langevin_step",
           "run_particles", "ula_law", "gaussian_flow", "theory", "particle_excess",
           "fit_contraction", "LQR", "soft_riccati", "soft_q_blocks", "policy_value",
           "soft_objective", "lqr_wpg_flow"]
