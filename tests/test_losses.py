"""Losses and estimators against hand-worked cases (and rlax where it has one)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlx import losses


def test_gae_hand_worked():
    # T = 3, one env; the episode terminates at t = 1 and a new one starts at t = 2.
    r = jnp.array([1.0, 2.0, 3.0])
    v = jnp.array([0.5, 1.0, 2.0])
    v_next = jnp.array([1.0, 9.0, 4.0])  # V of the state reached (9.0 is terminal: ignored)
    term = jnp.array([0, 1, 0])
    done = term
    g, lam = 0.9, 0.5
    adv, tgt = losses.gae(r, v, v_next, term, done, g, lam)
    d2 = 3.0 + 0.9 * 4.0 - 2.0  # 4.6
    d1 = 2.0 + 0.0 - 1.0  # 1.0 (terminal)
    d0 = 1.0 + 0.9 * 1.0 - 0.5  # 1.4
    a2, a1 = d2, d1  # the recursion is cut after the terminal step
    a0 = d0 + 0.9 * 0.5 * a1
    np.testing.assert_allclose(adv, [a0, a1, a2], rtol=1e-6)
    np.testing.assert_allclose(tgt, np.array([a0, a1, a2]) + np.array(v), rtol=1e-6)


def test_gae_bootstraps_through_truncation_only():
    r = jnp.array([1.0])
    v = jnp.array([0.0])
    v_next = jnp.array([10.0])
    trunc_adv, _ = losses.gae(r, v, v_next, jnp.array([0]), jnp.array([1]), 0.5, 1.0)
    term_adv, _ = losses.gae(r, v, v_next, jnp.array([1]), jnp.array([1]), 0.5, 1.0)
    assert float(trunc_adv[0]) == pytest.approx(6.0)
    assert float(term_adv[0]) == pytest.approx(1.0)


def test_gae_matches_rlax_without_resets():
    rlax = pytest.importorskip("rlax")
    k = jax.random.split(jax.random.PRNGKey(0), 2)
    T = 7
    r = jax.random.normal(k[0], (T,))
    values = jax.random.normal(k[1], (T + 1,))
    zeros = jnp.zeros(T)
    adv, _ = losses.gae(r, values[:-1], values[1:], zeros, zeros, 0.97, 0.9)
    ref = rlax.truncated_generalized_advantage_estimation(r, jnp.full(T, 0.97), 0.9, values)
    np.testing.assert_allclose(adv, ref, rtol=1e-5, atol=1e-6)


def test_ppo_surrogate_hand_worked():
    logp = jnp.log(jnp.array([1.5, 0.5, 1.1]))
    old = jnp.zeros(3)
    adv = jnp.array([1.0, -1.0, 2.0])
    # ratios 1.5, 0.5, 1.1; eps 0.2 -> clipped 1.2, 0.8, 1.1
    # min(r A, clip A): min(1.5, 1.2) = 1.2; min(-0.5, -0.8) = -0.8; min(2.2, 2.2) = 2.2
    expected = -np.mean([1.2, -0.8, 2.2])
    assert float(losses.ppo_surrogate(logp, old, adv, 0.2)) == pytest.approx(expected, rel=1e-6)
    # no clipping: -mean(r A)
    assert float(losses.ppo_surrogate(logp, old, adv, jnp.inf)) == pytest.approx(
        -np.mean([1.5, -0.5, 2.2]), rel=1e-6)
    assert float(losses.clip_fraction(logp, old, 0.2)) == pytest.approx(2 / 3)


def test_kl_penalty_and_adaptive_beta():
    assert float(losses.kl_penalty(jnp.array([0.1, 0.3]), 2.0)) == pytest.approx(0.4)
    d = 0.01
    assert float(losses.adaptive_kl_beta(jnp.float32(1.0), jnp.float32(0.001), d)) == 0.5
    assert float(losses.adaptive_kl_beta(jnp.float32(1.0), jnp.float32(0.1), d)) == 2.0
    assert float(losses.adaptive_kl_beta(jnp.float32(1.0), jnp.float32(0.012), d)) == 1.0
    # kl_target 0: fixed penalty, beta never changes
    assert float(losses.adaptive_kl_beta(jnp.float32(3.0), jnp.float32(0.5), 0.0)) == 3.0


def test_value_and_entropy_losses():
    v = jnp.array([1.0, 2.0])
    g = jnp.array([0.0, 4.0])
    assert float(losses.value_loss(v, g)) == pytest.approx(0.5 * (1 + 4) / 2)
    # clipped: old 1.5, eps 0.1 -> clipped values 1.4, 1.6; errors max(1, 1.96), max(4, 5.76)
    vc = losses.value_loss(v, g, old_values=jnp.array([1.5, 1.5]), clip_eps=0.1)
    assert float(vc) == pytest.approx(0.5 * (1.96 + 5.76) / 2, rel=1e-5)
    assert float(losses.entropy_loss(jnp.array([1.0, 3.0]))) == -2.0


def test_approx_kl_matches_exact_for_small_changes():
    p_old = jnp.array([0.2, 0.3, 0.5])
    p_new = jnp.array([0.21, 0.29, 0.5])
    a = jax.random.categorical(jax.random.PRNGKey(1), jnp.log(p_old), shape=(200_000,))
    est = losses.approx_kl(jnp.log(p_new)[a], jnp.log(p_old)[a])
    exact = jnp.sum(p_old * jnp.log(p_old / p_new))
    assert float(est) == pytest.approx(float(exact), rel=0.1)


def test_normalize_advantages():
    x = jnp.array([1.0, 2.0, 3.0, 6.0])
    y = losses.normalize(x)
    assert float(y.mean()) == pytest.approx(0.0, abs=1e-6)
    assert float(y.std()) == pytest.approx(1.0, rel=1e-5)
