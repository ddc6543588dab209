"""MPO's pure functions (`rlx.losses.mpo`): the E-step weights and the temperature dual on
hand-worked cases, the M-step's weighted maximum-likelihood fit, and its registration as the
engine's "mpo" actor loss (the engine runs are tests/test_mpo_engine.py)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlx.algos import sac
from rlx.losses import mpo


def test_e_step_weights_hand_worked():
    # eta = 2: exp(0/2) : exp(2 ln 3 / 2) = 1 : 3; equal Q-values give equal weights
    q = jnp.array([[0.0, 2 * math.log(3.0)], [5.0, 5.0]])
    w = mpo.e_step_weights(q, jnp.array([2.0]))
    np.testing.assert_allclose(w, [[0.25, 0.75], [0.5, 0.5]], rtol=1e-6)
    np.testing.assert_allclose(mpo.e_step_weights(q + 7.0, jnp.array([2.0])), w, rtol=1e-6)
    kl = mpo.nonparametric_kl(w)  # sum_n w log(N w)
    np.testing.assert_allclose(kl, [0.25 * math.log(0.5) + 0.75 * math.log(1.5), 0.0], atol=1e-7)
    # a cold temperature puts (almost) all weight on the best action: KL -> log N
    w_cold = mpo.e_step_weights(jnp.array([[0.0, 1.0, 3.0]]), jnp.array([0.01]))
    np.testing.assert_allclose(w_cold, [[0.0, 0.0, 1.0]], atol=1e-6)
    np.testing.assert_allclose(mpo.nonparametric_kl(w_cold), [math.log(3.0)], rtol=1e-5)


@pytest.mark.parametrize("eta, sign", [(0.05, -1.0), (50.0, 1.0)])
def test_temperature_dual_gradient_is_epsilon_minus_kl(eta, sign):
    """dL_eta/deta = epsilon - mean_b KL(w_b || uniform): negative (descent raises eta) when
    the weights are sharper than epsilon allows, positive when they are flatter."""
    q = jax.random.normal(jax.random.PRNGKey(0), (8, 10))
    eps = 0.1
    temp = jnp.array([eta])
    grad = jax.grad(mpo.temperature_dual_loss, argnums=1)(q, temp, eps)
    kl = jnp.mean(mpo.nonparametric_kl(mpo.e_step_weights(q, temp)))
    np.testing.assert_allclose(grad, [eps - kl], rtol=1e-4, atol=1e-6)
    assert np.sign(float(grad[0])) == sign
    # the same sign through the softplus parametrisation the duals use
    duals = mpo.MPODuals(jnp.log(jnp.expm1(temp)), jnp.zeros(1), jnp.zeros(1))
    zero_kl = jnp.zeros((1, 1))
    g = jax.grad(mpo.dual_loss)(duals, q, zero_kl + 1e-3, zero_kl, mpo.MPOConfig(epsilon=eps))
    assert np.sign(float(g.log_temperature[0])) == sign


def test_m_step_fits_the_weighted_mean_and_std():
    """L_mu is stationary at mu = sum_n w_n a_n and L_sigma at sigma^2 = sum_n w_n (a_n - mu_t)^2
    (per state and dimension), and not elsewhere."""
    k1, k2 = jax.random.split(jax.random.PRNGKey(1))
    a = jax.random.normal(k1, (3, 6, 2))
    w = jax.nn.softmax(jax.random.normal(k2, (3, 6)), axis=1)
    t_mean, t_std = jnp.full((3, 2), 0.3), jnp.full((3, 2), 0.7)
    mu_star = jnp.einsum("bn,bna->ba", w, a)
    sigma_star = jnp.sqrt(jnp.einsum("bn,bna->ba", w, (a - t_mean[:, None]) ** 2))
    g_mu = jax.grad(lambda m: mpo.m_step_losses(m, t_std, t_mean, t_std, a, w)[0])
    g_sigma = jax.grad(lambda s: mpo.m_step_losses(t_mean, s, t_mean, t_std, a, w)[1])
    np.testing.assert_allclose(g_mu(mu_star), 0.0, atol=1e-6)
    np.testing.assert_allclose(g_sigma(sigma_star), 0.0, atol=1e-6)
    assert np.all(np.abs(g_mu(mu_star + 0.2)) > 1e-3)
    assert np.all(np.abs(g_sigma(sigma_star * 1.5)) > 1e-3)


def test_mpo_is_registered_and_bad_settings_are_refused():
    assert "mpo" in sac.ACTOR_LOSSES and not sac.ACTOR_EXTRAS["mpo"].soft
    with pytest.raises(ValueError, match="target_update_period"):
        sac.register_mpo("mpo_bad", target_update_period=0)
    assert "mpo_bad" not in sac.ACTOR_LOSSES
    with pytest.raises(ValueError, match="epsilon must be > 0"):
        mpo.MPOConfig(epsilon=0.0)
