"""Factorised baselines (Wu et al. 2018) and the variance decomposition (Tucker et al. 2018):
hand-worked estimator values, the exact LQG pieces, unbiasedness, and the decomposition's sum."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlx import distributions
from rlx.envs import lqg
from rlx.losses import advantages as adv_lib
from rlx.losses import baselines as bl
from rlx.rollout import reset, rollout


# --------------------------------------------------------------------------- hand-worked cases

def test_factorised_advantages_by_hand():
    # T = 2, one env, A = 2, gamma 0.5, lambda 1; the episode terminates at t = 1.
    r = jnp.array([[1.0], [2.0]])
    b = jnp.array([[[0.5, 1.0]], [[0.2, 0.0]]])
    b_next = jnp.array([[[0.2, 0.0]], [[9.0, 9.0]]])  # t = 1 terminated: ignored
    term = done = jnp.array([[0.0], [1.0]])
    adv, targets = bl.factorised_advantages(r, b, b_next, term, done, 0.5, 1.0)
    # delta_1 = 2 - [0.2, 0]                    = [1.8, 2.0] = A_1
    # delta_0 = 1 + 0.5 [0.2, 0] - [0.5, 1.0]   = [0.6, 0.0]
    # A_0 = delta_0 + 0.5 A_1 = [1.5, 1.0]      (= G_0 - b(s_0) = 1 + 0.5 * 2 - [0.5, 1.0])
    np.testing.assert_allclose(adv[:, 0], [[1.5, 1.0], [1.8, 2.0]], rtol=1e-6)
    np.testing.assert_allclose(targets, adv + b, rtol=1e-6)
    # equal baselines in every dimension = the state baseline's GAE, broadcast
    v = jnp.array([[0.5], [0.2]])
    adv_s, _ = bl.state_baseline_advantages(r, v, jnp.array([[0.2], [9.0]]), term, done, 0.5, 0.7)
    adv_f, _ = bl.factorised_advantages(r, jnp.repeat(v[..., None], 3, -1),
                                        jnp.repeat(jnp.array([[[0.2]], [[9.0]]]), 3, -1),
                                        term, done, 0.5, 0.7)
    np.testing.assert_allclose(adv_f, jnp.repeat(adv_s[..., None], 3, -1), rtol=1e-6)
    ref, _ = adv_lib.gae(r, v, jnp.array([[0.2], [9.0]]), term, done, 0.5, 0.7)
    np.testing.assert_array_equal(adv_s, ref)


def test_next_step_actions_by_hand():
    a = jnp.array([1.0, 2.0, 3.0]).reshape(3, 1, 1)
    final = jnp.array([10.0, 20.0, 30.0]).reshape(3, 1, 1)
    done = jnp.array([[0.0], [1.0], [0.0]])
    # t=0: a_1 = 2; t=1 done: final_1 = 20; t=2 last step of the rollout: final_2 = 30
    np.testing.assert_array_equal(bl.next_step_actions(a, final, done).ravel(), [2.0, 20.0, 30.0])


def test_pg_loss_and_surrogate_by_hand():
    lp = jnp.array([[-1.0, -2.0]])
    a = jnp.array([[3.0, 4.0]])
    # -(-1 * 3 + -2 * 4) = 11; a state baseline's advantage 2 multiplies both: -(-3 * 2) = 6
    assert float(bl.pg_loss(lp, a)) == pytest.approx(11.0)
    assert float(bl.pg_loss(lp, jnp.array([2.0]))) == pytest.approx(6.0)
    np.testing.assert_allclose(jax.grad(bl.pg_loss)(lp, a), -a)  # -grad L = sum_i A_i grad lp_i
    # at pi = pi_old: ratios 1, loss -sum_i A_i = -7, gradient = pg_loss's
    assert float(bl.factorised_surrogate(lp, lp, a)) == pytest.approx(-7.0)
    np.testing.assert_allclose(jax.grad(bl.factorised_surrogate)(lp, lp, a), -a, rtol=1e-6)
    # ratio [2, 1], eps 0.2: min(2 * 3, 1.2 * 3) + 4 = 7.6
    lp2 = lp + jnp.array([[jnp.log(2.0), 0.0]])
    assert float(bl.factorised_surrogate(lp2, lp, a, clip_eps=0.2)) == pytest.approx(-7.6, rel=1e-6)
    mask = jnp.array([0.0])
    assert float(bl.pg_loss(lp, a, mask)) == 0.0


def test_others_features_and_fit_by_hand():
    np.testing.assert_array_equal(bl.others(jnp.array([1.0, 2.0, 3.0])),
                                  [[0, 2, 3], [1, 0, 3], [1, 2, 0]])
    phi = bl.linear_baseline_features(jnp.array([2.0]), jnp.array([1.0, 3.0]), jnp.array(50))
    # [o, o^2, a_-i, a_-i^2, t/100, (t/100)^2, (t/100)^3, 1]
    np.testing.assert_allclose(phi, [[2, 4, 0, 3, 0, 9, .5, .25, .125, 1],
                                     [2, 4, 1, 0, 1, 0, .5, .25, .125, 1]], rtol=1e-6)
    assert bl.linear_baseline_features(jnp.zeros((7, 5, 3)), jnp.zeros((7, 5, 4)),
                                       jnp.zeros((7, 5), jnp.int32)).shape == (7, 5, 4, 18)
    # one feature x = [1, 2], y = [2, 4]: w = sum xy / (sum x^2 + reg) = 10 / 5 (reg 0),
    # 10 / 6 (reg 1)
    x = jnp.array([[[1.0]], [[2.0]]])
    y = jnp.array([[2.0], [4.0]])
    assert float(bl.fit_linear_baseline(x, y, reg=0.0)[0, 0]) == pytest.approx(2.0, rel=1e-5)
    assert float(bl.fit_linear_baseline(x, y, reg=1.0)[0, 0]) == pytest.approx(10 / 6, rel=1e-5)
    assert float(bl.fit_linear_baseline(x, y, reg=0.0, mask=jnp.array([1.0, 0.0]))[0, 0]) == \
        pytest.approx(2.0, rel=1e-5)
    # exact recovery per dimension, and prediction
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    feats = jax.random.normal(k1, (64, 3, 5))
    w = jax.random.normal(k2, (3, 5))
    w_hat = bl.fit_linear_baseline(feats, bl.linear_baseline(w, feats), reg=1e-8)
    np.testing.assert_allclose(w_hat, w, atol=1e-3)


# --------------------------------------------------------------------------- LQG closed form

def _policy(T: int, m: int = 2, std: float = 0.5):
    mean = 0.5 * jax.random.normal(jax.random.PRNGKey(1), (T, m))
    return mean, jnp.full((T, m), std)


def test_point_mass_constants():
    p = lqg.point_mass()
    assert p.horizon == 100 and p.gamma == 0.99
    np.testing.assert_allclose(p.A, np.eye(4) + 0.05 * np.eye(4, k=2))
    np.testing.assert_allclose(p.B, np.vstack([np.zeros((2, 2)), 0.05 * np.eye(2)]))
    np.testing.assert_allclose(p.R, 0.01 * np.eye(2))
    np.testing.assert_allclose(p.mu_s0, [3, 4, .5, -.5])
    with pytest.raises(ValueError, match="mu_s0"):
        lqg.point_mass(dim=3)
    mean, std = lqg.tucker_policy(jax.random.PRNGKey(0), p)
    assert mean.shape == std.shape == (100, 2) and float(std[0, 0]) == pytest.approx(0.01)


def test_lqg_exact_values_match_monte_carlo():
    T = 5
    p = lqg.point_mass(horizon=T, noise_var=1e-2)
    mean, std = _policy(T)
    qc, vc = lqg.exact_coefs(p, mean, std)
    t, s, a = 1, jnp.array([1.0, -2.0, 0.3, 0.1]), jnp.array([0.4, -0.7])
    env = lqg.LQGEnv(p, observe_time=True)

    def policy(obs, k):  # the time-indexed policy through the env's t / T feature
        t_ = jnp.round(obs[:, -1] * T).astype(jnp.int32)
        a_ = mean[t_] + std[t_] * jax.random.normal(k, (obs.shape[0], 2))
        return a_, a_, {}

    @jax.jit
    def samples(key):
        k1, k2, k3, k4 = jax.random.split(key, 4)
        G = jax.vmap(lambda k: lqg.continuation_return(p, mean, std, k, t, s, a))(
            jax.random.split(k1, 4000))
        acts = mean[t] + std[t] * jax.random.normal(k2, (200_000, 2))
        qs = jax.vmap(lambda x: lqg.q_value(qc, t, s, x))(acts)
        q0 = jax.vmap(lambda x: lqg.q_value(qc, t, s, x))(acts.at[:, 1].set(a[1]))
        _, tr = rollout(env, policy, reset(env, k3, 4000), k4, T)
        return G, qs, q0, tr

    G, qs, q0, tr = samples(jax.random.PRNGKey(2))

    def close(exact, draws, k=4.0):
        se = float(draws.std()) / np.sqrt(draws.shape[0])
        assert abs(float(exact) - float(draws.mean())) < k * se + 1e-5, (exact, draws.mean(), se)

    close(lqg.q_value(qc, t, s, a), G)                      # Q_t(s, a) = E[G_t | s, a]
    close(lqg.state_value(vc, t, s), qs)                    # V_t(s) = E_a Q_t(s, a)
    close(lqg.factorised_baseline(qc, t, s, a, mean[t], std[t])[0], q0)  # E_{a_0}[Q | a_1]
    # the env: aligned episodes that terminate at T, state marginals, and J
    assert bool(tr.terminated[-1].all()) and not bool(tr.done[:-1].any())
    mus, covs = lqg.state_marginals(p, mean, std)
    for i in range(4):
        close(mus[3, i], tr.obs[3, :, i])
    np.testing.assert_allclose(jnp.cov(tr.obs[3, :, :4].T), covs[3], atol=3e-3)
    close(lqg.expected_return(p, mean, std),
          jnp.sum(p.gamma ** jnp.arange(T)[:, None] * tr.reward, axis=0))


# --------------------------------------------------------------------------- unbiasedness

T_U, N_U, BATCHES = 3, 32, 400
LQG_U = dict(horizon=T_U, dt=0.5, r=1.0, noise_var=1e-2)  # coarse steps: a gradient far from 0


KINDS = {"state": 0.5, "factorised": 0.5, "linear": 1.0, "biased": 1.0}  # kind: GAE lambda


@functools.lru_cache(maxsize=1)
def _grads_per_batch():
    """Per-batch gradient estimates of dJ/dmean `[BATCHES, T, m]` per kind of baseline, through
    the env, rollout, per-dimension log-probabilities, the advantage estimators and `pg_loss`
    (all kinds in one program on the same batches), and the exact gradient."""
    p = lqg.point_mass(**LQG_U)
    mean, std = _policy(T_U)
    qc, vc = lqg.exact_coefs(p, mean, std)
    env = lqg.LQGEnv(p, observe_time=True)

    def t_of(obs):
        return jnp.round(obs[..., -1] * T_U).astype(jnp.int32)

    def dist(mu, obs):
        t = t_of(obs)
        return distributions.make("gaussian", jnp.concatenate([mu[t], jnp.log(std[t])], -1))

    def policy(obs, k):
        a = dist(mean, obs).sample(k)
        return a, a, {}

    def one(key):
        k0, k1 = jax.random.split(key)
        _, tr = rollout(env, policy, reset(env, k0, N_U), k1, T_U)  # one aligned episode
        t, s, a = t_of(tr.obs), tr.obs[..., :-1], tr.action
        t1, s1 = jnp.minimum(t + 1, T_U - 1), tr.final_obs[..., :-1]
        a1 = bl.next_step_actions(a, a, tr.done)  # final actions unused: episodes terminate
        vm = lambda f: jax.vmap(jax.vmap(f))  # noqa: E731

        def factorised(b_fn, lam):  # b_fn(t, s, a) -> [m]
            return bl.factorised_advantages(tr.reward, vm(b_fn)(t, s, a), vm(b_fn)(t1, s1, a1),
                                            tr.terminated, tr.done, p.gamma, lam)[0]

        adv = {}
        v = lambda ti, si: lqg.state_value(vc, ti, si)  # noqa: E731
        adv["state"] = bl.state_baseline_advantages(tr.reward, vm(v)(t, s), vm(v)(t1, s1),
                                                    tr.terminated, tr.done, p.gamma,
                                                    KINDS["state"])[0]
        adv["factorised"] = factorised(
            lambda ti, si, ai: lqg.factorised_baseline(qc, ti, si, ai, mean[ti], std[ti]),
            KINDS["factorised"])
        # "biased": b_i = Q(s, a) sees its own dimension a_i
        adv["biased"] = factorised(lambda ti, si, ai: jnp.full(2, lqg.q_value(qc, ti, si, ai)),
                                   KINDS["biased"])
        # Wu's linear-feature b_i(s, a_-i, t), fitted to the returns of another batch
        _, tr2 = rollout(env, policy, reset(env, jax.random.fold_in(k0, 1), N_U),
                         jax.random.fold_in(k1, 1), T_U)
        G2, _ = adv_lib.gae(tr2.reward, jnp.zeros_like(tr2.reward), jnp.zeros_like(tr2.reward),
                            tr2.terminated, tr2.done, p.gamma, 1.0)  # discounted returns
        phi2 = bl.linear_baseline_features(tr2.obs[..., :-1], tr2.action, t_of(tr2.obs))
        w_fit = bl.fit_linear_baseline(phi2.reshape((-1,) + phi2.shape[2:]),
                                       jnp.repeat(G2.reshape(-1, 1), 2, axis=1))
        adv["linear"] = bl.factorised_advantages(
            tr.reward, bl.linear_baseline(w_fit, bl.linear_baseline_features(s, a, t)),
            bl.linear_baseline(w_fit, bl.linear_baseline_features(s1, a1, t + 1)),
            tr.terminated, tr.done, p.gamma, KINDS["linear"])[0]
        # weights T gamma^t turn mean_{t,n} into the unbiased sum_t gamma^t E_n
        w = (T_U * p.gamma ** t.astype(jnp.float32))[..., None]
        return {k: -jax.grad(lambda mu: bl.pg_loss(w * dist(mu, tr.obs).log_prob_per_dim(a), A))(
            mean) for k, A in adv.items()}

    grads = jax.jit(jax.vmap(one))(jax.random.split(jax.random.PRNGKey(7), BATCHES))
    exact = jax.grad(lqg.expected_return, argnums=1)(p, mean, std)
    return grads, exact


def _z(grads, exact):
    se = grads.std(axis=0, ddof=1) / np.sqrt(grads.shape[0])
    return np.abs(np.asarray((grads.mean(axis=0) - exact) / se))


@pytest.mark.parametrize("kind", ["state", "factorised", "linear"])
def test_estimators_are_unbiased(kind):
    # with exact baselines GAE is unbiased for every lambda; lambda = 0.5 also exercises the
    # next-step baselines b_i(s', a'_-i) (lambda = 1 telescopes them away). The linear
    # baseline is fitted on an independent batch and used with lambda = 1.
    grads, exact = _grads_per_batch()
    assert np.abs(np.asarray(exact)).max() > 0.1
    z = _z(grads[kind], exact)
    assert z.max() < 4.5, (kind, z, grads[kind].mean(0), exact)


def test_baseline_that_sees_its_own_dimension_is_biased():
    grads, exact = _grads_per_batch()
    assert _z(grads["biased"], exact).max() > 10.0


# --------------------------------------------------------------------------- decomposition

def test_variance_decomposition_sums_to_total_variance():
    p = lqg.point_mass(**{**LQG_U, "horizon": 4})
    mean, std = _policy(4)
    t = 1
    fns = lqg.decomposition_fns(p, mean, std, t)
    bases = lqg.exact_baselines(p, mean, std, t)

    def decomp(key, name):  # "<baseline>" (nested MC) or "<baseline>+q" (with the exact Q)
        base, _, q = name.partition("+")
        return bl.variance_decomposition(key, fns["sample_state"], fns["sample_action"],
                                         fns["sample_return"], fns["score_per_dim"], bases[base],
                                         num_states=32, num_actions=8, num_returns=8,
                                         q_value=fns["q_value"] if q else None)

    names = ("none", "state", "factorised")
    keys = jax.random.split(jax.random.PRNGKey(11), 12)
    # one program for all baselines: the shared samples (same keys) are computed once
    out = jax.jit(jax.vmap(lambda k: {n: decomp(k, n) for n in names + ("state+q",
                                                                        "factorised+q")}))(keys)
    # Sigma_tau does not depend on the baseline (with common random numbers: identical)
    np.testing.assert_allclose(out["state"]["sigma_tau"], out["factorised"]["sigma_tau"], rtol=1e-5)

    @jax.jit
    def total_iid(key, n=8192):
        """Var[g] from n independent (s, a, tau) draws: trace and its standard error."""
        ks, ka, kr = jax.random.split(key, 3)
        s = jax.vmap(fns["sample_state"])(jax.random.split(ks, n))
        a = jax.vmap(fns["sample_action"])(jax.random.split(ka, n), s)
        G = jax.vmap(fns["sample_return"])(jax.random.split(kr, n), s, a)
        res = {}
        for name in names:
            g = jax.vmap(lambda s_, a_, G_: bl.estimator_sample(
                fns["score_per_dim"](s_, a_), G_, bases[name](s_, a_)))(s, a, G)
            d = jnp.sum((g - g.mean(0)) ** 2, axis=-1)
            res[name] = (d.mean() * n / (n - 1), d.std() / np.sqrt(n))
        return res

    totals = total_iid(jax.random.PRNGKey(12))
    for name, o in out.items():
        parts = np.asarray(o["total"].sum(-1))            # trace, per repetition
        tot, tot_se = totals[name.partition("+")[0]]
        se = np.sqrt(parts.var(ddof=1) / len(parts) + float(tot_se) ** 2)
        assert abs(parts.mean() - float(tot)) < 4 * se, (name, parts.mean(), float(tot), se)
        for part in ("sigma_tau", "sigma_s"):
            assert np.asarray(o[part].sum(-1)).mean() > -4 * np.asarray(o[part].sum(-1)).std()
    # Sigma_s and the mean in closed form (unbiased baselines)
    g_mean, sigma_s = lqg.state_term(p, mean, std, t)
    for name in ("state", "factorised", "state+q", "factorised+q"):
        for est, exact in ((out[name]["sigma_s"], sigma_s), (out[name]["mean"], g_mean)):
            se = np.asarray(est.std(0, ddof=1)) / np.sqrt(est.shape[0])
            np.testing.assert_array_less(np.abs(np.asarray(est.mean(0) - exact)), 4 * se + 1e-6)
    # the baselines only change Sigma_a: the state and factorised ones shrink it vs none
    sa = {n: np.asarray(o["sigma_a"].sum(-1)) for n, o in out.items()}
    assert sa["state"].mean() < sa["none"].mean() and sa["factorised"].mean() < sa["none"].mean()
    # the factorised baseline removes the other dimension's action noise: smaller Sigma_a
    # (same samples for both, so the paired difference is tight)
    for q in ("", "+q"):
        d = sa["state" + q] - sa["factorised" + q]
        assert d.mean() > 3 * d.std(ddof=1) / np.sqrt(len(d)), (sa, d)
    # the exact Q removes the trajectory noise from Sigma_s's estimate
    assert out["state+q"]["sigma_s"].std(0).sum() < out["state"]["sigma_s"].std(0).sum()
    with pytest.raises(ValueError, match="at least 2"):
        bl.variance_decomposition(keys[0], *[fns[k] for k in ("sample_state", "sample_action",
                                                             "sample_return", "score_per_dim")],
                                  bases["none"], 1, 2, 2)
