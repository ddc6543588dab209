"""rlx.losses.wpo: the WPO actor update against closed forms and the policy gradient."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from rlx.losses import wpo


def _linear_policy(params, obs):
    return obs @ params["w"] + params["b"], obs @ params["v"] + params["c"]


def _params(key, obs_dim, act_dim, dtype=jnp.float32):
    k = jax.random.split(key, 4)
    return {"w": 0.5 * jax.random.normal(k[0], (obs_dim, act_dim), dtype),
            "b": 0.3 * jax.random.normal(k[1], (act_dim,), dtype),
            "v": 0.2 * jax.random.normal(k[2], (obs_dim, act_dim), dtype),
            "c": 0.2 * jax.random.normal(k[3], (act_dim,), dtype)}


def _sample(key, mean, std, n):
    eps = jax.random.normal(key, (mean.shape[0], n, mean.shape[1]), mean.dtype)
    return mean[:, None] + std[:, None] * eps


def test_quadratic_q_from_unit_gaussian():
    """Q = -a^2/2 from mu = sigma = 1: d mu = -mu, d sigma = -sigma (in expectation, within
    4 standard errors); other (mu, sigma) likewise."""
    mean = jnp.array([[1.0, 0.5, -2.0]])
    std = jnp.array([[1.0, 0.3, 2.0]])
    a = _sample(jax.random.PRNGKey(0), mean, std, 200_000)
    g = -a  # grad_a Q for Q = -a^2/2
    d_mean, d_std = wpo.gaussian_wpo_direction(mean, std, a, g)
    eps = (a - mean[:, None]) / std[:, None]
    se_mean = jnp.std(g, axis=1) / np.sqrt(a.shape[1])
    se_std = jnp.std(eps * g, axis=1) / np.sqrt(a.shape[1])
    assert np.all(np.abs(d_mean + mean) < 4 * se_mean)
    assert np.all(np.abs(d_std + std) < 4 * se_std)
    assert abs(float(d_mean[0, 0]) + 1) < 0.02 and abs(float(d_std[0, 0]) + 1) < 0.02


def test_practical_loss_is_the_exact_step_times_minus_n():
    """grad_theta of the sigma^2-rescaled loss = -N x the exact-form step pulled back to theta
    (per batch, to round-off); without the rescaling it is not; the closed-form Gaussian
    surrogate equals the generic one (grad_a log pi by autodiff)."""
    b, n, o, a_dim = 8, 5, 3, 2
    keys = jax.random.split(jax.random.PRNGKey(1), 4)
    params = _params(keys[0], o, a_dim)
    obs = jax.random.normal(keys[1], (b, o))
    mean, log_std = _linear_policy(params, obs)
    a = _sample(keys[2], mean, jnp.exp(log_std), n)
    g = jax.random.normal(keys[3], a.shape)

    def loss(p, natural):
        m, ls = _linear_policy(p, obs)
        return wpo.gaussian_wpo_surrogate(m, jnp.exp(ls), a, g, natural=natural)

    exact = wpo.wpo_exact_direction(params, _linear_policy, obs, a, g)
    grad = jax.grad(loss)(params, True)
    for k in params:
        np.testing.assert_allclose(grad[k], -n * exact[k], rtol=1e-4, atol=1e-5)
    plain = jax.grad(loss)(params, False)
    assert not np.allclose(plain["b"], -n * exact["b"], rtol=1e-2)

    def log_prob(p, o1, a1):
        m, ls = _linear_policy(p, o1[None])
        return jnp.sum(-0.5 * ((a1 - m[0]) / jnp.exp(ls[0])) ** 2 - ls[0])

    generic = jax.grad(lambda p: wpo.wpo_surrogate(log_prob, p, obs, a, g))(params)
    for k in params:
        np.testing.assert_allclose(generic[k], plain[k], rtol=1e-4, atol=1e-5)


def test_mean_update_has_zero_variance_when_q_is_linear():
    """Q = c . a: every sample gives d mu = c exactly; the score-function estimate of the
    same gradient, (1/N) sum_n Q(a_n) (a_n - mu) / sigma^2, does not."""
    c = jnp.array([0.7, -1.3])
    mean, std = jnp.array([[0.4, -0.2]]), jnp.array([[0.8, 1.5]])
    a = _sample(jax.random.PRNGKey(2), mean, std, 4096).reshape(256, 16, 2)  # 256 batches of 16
    means = jnp.broadcast_to(mean, (256, 2))
    stds = jnp.broadcast_to(std, (256, 2))
    d_mean, _ = wpo.gaussian_wpo_direction(means, stds, a, jnp.broadcast_to(c, a.shape))
    assert float(jnp.max(jnp.ptp(d_mean, axis=0))) == 0.0  # identical in every batch
    np.testing.assert_allclose(d_mean[0], c, rtol=1e-6)
    q = a @ c
    sf = jnp.mean(q[..., None] * (a - means[:, None]) / stds[:, None] ** 2, axis=1)
    assert float(jnp.min(jnp.var(sf, axis=0))) > 1e-2
    assert np.all(np.abs(jnp.mean(sf, 0) - c) < 5 * jnp.std(sf, 0) / 16)  # unbiased, noisy


def _q_grad_and_value(obs, a, wq):
    """Q(s, a) = sum_d sin(a_d + (s W)_d) - a_d^2 / 2 and its gradient in a."""
    shift = (obs @ wq)[:, None]
    return jnp.cos(a + shift) - a, jnp.sum(jnp.sin(a + shift) - 0.5 * a ** 2, -1)


def _objective(params, obs, wq):
    """J(theta) = mean_s E_{a ~ pi}[Q(s, a)] in closed form: E sin(mu + sigma eps + c) =
    sin(mu + c) exp(-sigma^2 / 2), E a^2 = mu^2 + sigma^2."""
    mean, log_std = _linear_policy(params, obs)
    var = jnp.exp(2 * log_std)
    return jnp.mean(jnp.sum(jnp.sin(mean + obs @ wq) * jnp.exp(-var / 2) - 0.5 * (mean ** 2 + var), -1))


@pytest.mark.parametrize("broken", [False, True])
def test_equals_the_policy_gradient_in_expectation(broken):
    """Over many batches the exact-form WPO step matches the finite-difference gradient of
    J(theta) (closed form, float64) within 4.5 standard errors for every parameter, as does the
    score-function estimate E[Q grad log pi]; WPO's estimate has the smaller variance. A broken
    step (the std part doubled: the Fisher's 1/2 missing) must fail."""
    with jax.enable_x64(True):
        b, n, o, a_dim, reps = 4, 16, 2, 2, 2000
        keys = jax.random.split(jax.random.PRNGKey(3), 4)
        params = _params(keys[0], o, a_dim, jnp.float64)
        obs = jax.random.normal(keys[1], (b, o), jnp.float64)
        wq = jax.random.normal(keys[2], (o, a_dim), jnp.float64)
        flat, unravel = ravel_pytree(params)
        h = 1e-5
        fd = np.array([(_objective(unravel(flat + h * e), obs, wq)
                        - _objective(unravel(flat - h * e), obs, wq)) / (2 * h)
                       for e in np.eye(flat.size)])

        def one(key):
            mean, log_std = _linear_policy(params, obs)
            std = jnp.exp(log_std)
            a = _sample(key, mean, std, n)
            g, q = _q_grad_and_value(obs, a, wq)
            if broken:
                def dist(p):
                    m, ls = _linear_policy(p, obs)
                    return m, jnp.exp(ls)
                _, vjp = jax.vjp(dist, params)
                d_m, d_s = wpo.gaussian_wpo_direction(mean, std, a, g)
                step = vjp((d_m / b, 2 * d_s / b))[0]
            else:
                step = wpo.wpo_exact_direction(params, _linear_policy, obs, a, g)

            def logp(p):
                m, ls = _linear_policy(p, obs)
                return jnp.sum(-0.5 * ((a - m[:, None]) / jnp.exp(ls[:, None])) ** 2 - ls[:, None], -1)

            _, vjp_lp = jax.vjp(logp, params)
            sf = vjp_lp(q / (b * n))[0]
            return ravel_pytree(step)[0], ravel_pytree(sf)[0]

        steps, sfs = jax.jit(jax.vmap(one))(jax.random.split(keys[3], reps))
        z = (steps.mean(0) - fd) / (steps.std(0) / np.sqrt(reps))
        if broken:
            assert float(jnp.max(jnp.abs(z))) > 10
            return
        assert float(jnp.max(jnp.abs(z))) < 4.5, np.asarray(z)
        z_sf = (sfs.mean(0) - fd) / (sfs.std(0) / np.sqrt(reps))
        assert float(jnp.max(jnp.abs(z_sf))) < 4.5
        assert float(jnp.sum(steps.var(0))) < float(jnp.sum(sfs.var(0)))


def test_decoupled_kl_parts_and_duals():
    """Each KL part is the full Gaussian KL when only its parameter moved; the dual loss
    raises alpha when the KL exceeds its bound and lowers it otherwise."""
    mt, st = jnp.array([[0.2, -1.0]]), jnp.array([[0.5, 2.0]])
    m, s = jnp.array([[0.7, 0.3]]), jnp.array([[0.9, 1.1]])

    def full(m1, s1, m2, s2):  # KL[N(m1, s1) || N(m2, s2)]
        return jnp.log(s2 / s1) + (s1 ** 2 + (m1 - m2) ** 2) / (2 * s2 ** 2) - 0.5

    kl_m, _ = wpo.decoupled_kl(m, st, mt, st)
    _, kl_s = wpo.decoupled_kl(mt, s, mt, st)
    np.testing.assert_allclose(kl_m, full(mt, st, m, st), rtol=1e-6)
    np.testing.assert_allclose(kl_s, full(mt, st, mt, s), rtol=1e-5)
    kl_m0, kl_s0 = wpo.decoupled_kl(mt, st, mt, st)
    assert float(jnp.max(jnp.abs(kl_m0))) == 0 and float(jnp.max(jnp.abs(kl_s0))) < 1e-7
    alpha = jnp.array([1.0, 1.0])
    kl = jnp.array([[0.1, 1e-4]])
    d_alpha = jax.grad(lambda al: wpo.kl_penalty_and_dual_loss(kl, al, 1e-2)[1])(alpha)
    assert d_alpha[0] < 0 < d_alpha[1]  # descent: alpha_0 up (kl > eps), alpha_1 down


def test_wpo_loss_hook():
    """The engine's hook: gradients in (params, duals) are finite; at params = target params
    the KL terms contribute no gradient, so the policy gradient is the surrogate's alone."""
    cfg = wpo.WPOConfig(dual_loss_scale=1.0)
    b, n, o, a_dim = 6, cfg.num_samples, 3, 2
    keys = jax.random.split(jax.random.PRNGKey(4), 4)
    params = _params(keys[0], o, a_dim)
    obs = jax.random.normal(keys[1], (b, o))
    mean, log_std = _linear_policy(params, obs)
    a = wpo.sample_actions(keys[2], mean, log_std, n)
    np.testing.assert_allclose(wpo.action_gradients(lambda s, x: -0.5 * jnp.sum(x ** 2) + s[0], obs, a),
                               -a, rtol=1e-6)
    g = jax.random.normal(keys[3], a.shape)
    duals = wpo.init_duals(a_dim, cfg)
    (loss, stats), (gp, gd) = jax.value_and_grad(wpo.wpo_loss, argnums=(0, 1), has_aux=True)(
        params, duals, params, _linear_policy, obs, a, g, cfg)
    assert np.isfinite(float(loss)) and all(np.all(np.isfinite(x)) for x in jax.tree.leaves(gd))
    exact = wpo.wpo_exact_direction(params, _linear_policy, obs, a, g)
    for k in params:
        np.testing.assert_allclose(gp[k], -n * exact[k], rtol=1e-4, atol=1e-5)
    assert float(stats["kl_mean_rel"]) == 0.0
    assert wpo.clip_duals(wpo.Duals(jnp.array([-50.0]), jnp.array([3.0]))).log_alpha_mean[0] == -18.0
    with pytest.raises(ValueError, match="cube"):
        wpo.WPOConfig(squash="cube")
