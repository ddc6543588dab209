"""rlx.wpg_flow: the single-state closed forms, the fit, and the entropy-regularised LQR."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlx import wpg_flow as W
from rlx.losses import wpo

PROBLEM = W.Quadratic()


def test_ula_law_matches_particles_and_its_stationary_variance():
    """The particles' fitted mean/variance follow the exact ULA law within sampling error, and
    the law's variance converges to tau / (kappa (1 - eta kappa / 2)), not to v* = tau/kappa."""
    eta = 0.3 / PROBLEM.kappa
    with jax.enable_x64(True):
        law = W.ula_law(PROBLEM, eta, 60, jnp.float64)
        th = W.theory(PROBLEM, eta)
        np.testing.assert_allclose(law["var"][-1], th["var_inf"], rtol=1e-10)
        assert abs(th["var_inf"] / PROBLEM.v_star - 1 / 0.85) < 1e-12
        np.testing.assert_allclose(law["kl"][-1], th["floor_kl"], rtol=1e-8)
        law = {k: np.asarray(v) for k, v in law.items()}
    p = 20_000
    parts = jax.jit(lambda k: W.run_particles(PROBLEM, eta, 60, p, k))(jax.random.PRNGKey(0))
    var_se = np.sqrt(2 / (PROBLEM.dim * p)) * np.asarray(law["var"])
    assert np.all(np.abs(np.asarray(parts["var"]) - law["var"]) < 5 * var_se)
    mean_se = np.sqrt(PROBLEM.dim * np.asarray(law["var"]) / p)
    assert np.all(np.abs(np.asarray(parts["mean_err"]) - law["mean_err"]) < 5 * mean_se)


def test_gaussian_flow_is_the_wpo_step_plus_entropy_and_has_no_bias():
    """The Gaussian flow's drift (-kappa (mu - m*), -kappa sigma + tau/sigma) is the WPO exact
    Gaussian step on Q plus the entropy gradient tau/sigma (Monte Carlo, within 5 standard
    errors); its Euler fixed point is exact (sigma^2 = tau/kappa) at every step size."""
    mu, sigma, n = 0.7, 0.9, 400_000
    a = (mu + sigma * jax.random.normal(jax.random.PRNGKey(1), (1, n, 1)))
    g = PROBLEM.grad_q(a)
    d_mu, d_sigma = wpo.gaussian_wpo_direction(jnp.array([[mu]]), jnp.array([[sigma]]), a, g)
    k, tau = PROBLEM.kappa, PROBLEM.tau
    se = float(jnp.std(g)) / np.sqrt(n)
    assert abs(float(d_mu[0, 0]) + k * (mu - PROBLEM.m_star)) < 5 * se
    assert abs(float(d_sigma[0, 0]) + tau / sigma - (-k * sigma + tau / sigma)) < 5 * k * sigma * 2 / np.sqrt(n)
    with jax.enable_x64(True):
        for ek in (0.1, 0.4, 0.6):
            flow = W.gaussian_flow(PROBLEM, ek / k, 400, jnp.float64)
            np.testing.assert_allclose(flow["var"][-1], PROBLEM.v_star, rtol=1e-12)
            assert float(flow["kl"][-1]) < 1e-20


def test_fit_contraction_recovers_rate_and_floor():
    """On A rho^k + F it returns rho and F; on the ULA law (float64), (1 - eta kappa)^2 and the
    predicted bias; a curve contracting at another rate is told apart."""
    k = np.arange(300)
    fit = W.fit_contraction(50 * 0.83 ** k + 0.01)
    assert abs(fit["rate"] - 0.83) < 1e-6 and abs(fit["floor"] - 0.01) < 1e-9
    with jax.enable_x64(True):
        for ek in (0.1, 0.4):
            eta = ek / PROBLEM.kappa
            th = W.theory(PROBLEM, eta)
            fit = W.fit_contraction(np.asarray(W.ula_law(PROBLEM, eta, int(40 / ek), jnp.float64)["kl"]))
            assert abs(fit["rate"] / th["rate_kl"] - 1) < 1e-3, (fit, th)
            assert abs(fit["floor"] / th["floor_kl"] - 1) < 1e-6
            mean = W.fit_contraction(np.asarray(W.gaussian_flow(PROBLEM, eta, int(40 / ek), jnp.float64)["mean_err"]))
            assert abs(mean["rate"] / th["rate_mean"] - 1) < 1e-4
            assert abs(mean["rate"] / th["rate_kl"] - 1) > 0.05
    with pytest.raises(ValueError, match="eta"):
        W.theory(PROBLEM, 1.0 / PROBLEM.kappa)


def test_lqr_soft_optimum_and_the_flow_converge():
    """The Riccati policy is a stationary point and a maximum of the soft objective (its own
    Lyapunov value equals the Riccati P; the gradient vanishes; perturbations lower J), and the
    WPG flow from K = 0, Sigma = I reaches it."""
    lqr = W.LQR()
    with jax.enable_x64(True):
        opt = W.soft_riccati(lqr, dtype=jnp.float64)
        P, _ = W.policy_value(lqr, opt["K"], opt["Sigma"])
        np.testing.assert_allclose(P, opt["P"], atol=1e-10)
        J = lambda K, S: W.soft_objective(lqr, K, S)  # noqa: E731
        grads = jax.grad(J, argnums=(0, 1))(opt["K"], opt["Sigma"])
        assert max(float(jnp.max(jnp.abs(x))) for x in grads) < 1e-9
        j_star = float(J(opt["K"], opt["Sigma"]))
        keys = jax.random.split(jax.random.PRNGKey(2), 10)
        for key in keys:
            dk, ds = jax.random.normal(key, (2, 2, 2), jnp.float64) * 0.05
            assert float(J(opt["K"] + dk, opt["Sigma"] + ds @ ds.T)) < j_star
        assert float(J(opt["K"], 1.2 * opt["Sigma"])) < j_star
        flow = W.lqr_wpg_flow(lqr, 0.5, 300, jnp.zeros((2, 2), jnp.float64), jnp.eye(2, dtype=jnp.float64))
        np.testing.assert_allclose(flow["K"][-1], opt["K"], atol=1e-10)
        np.testing.assert_allclose(flow["Sigma"][-1], opt["Sigma"], atol=1e-10)
        assert j_star - float(flow["J"][-1]) < 1e-10 and j_star - float(flow["J"][0]) > 1
