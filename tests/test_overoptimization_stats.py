"""Reward-model over-optimisation statistics (issue 12): the Bradley-Terry loss, the unbiased
best-of-n estimator and its KL (formula vs exact), and the scaling-law fits."""

import dataclasses
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlx import losses, scaling_laws
from rlx.losses import best_of_n as bon


# ----------------------------------------------------------------------------- Bradley-Terry


def test_bradley_terry_hand_worked():
    c = jnp.array([1.0, 0.0, -2.0])
    r = jnp.array([0.0, 0.0, 1.0])
    want = np.mean([math.log1p(math.exp(-1.0)), math.log(2.0), math.log1p(math.exp(3.0))])
    assert float(losses.bradley_terry_loss(c, r)) == pytest.approx(want, rel=1e-6)
    # masked: only the first and third comparison count
    m = jnp.array([1.0, 0.0, 1.0])
    want_m = (math.log1p(math.exp(-1.0)) + math.log1p(math.exp(3.0))) / 2
    assert float(losses.bradley_terry_loss(c, r, m)) == pytest.approx(want_m, rel=1e-6)
    # stable for huge gaps: log sigmoid(-200) = -200 (a naive log(sigmoid) gives inf)
    big = losses.bradley_terry_loss(jnp.array([-100.0, 100.0]), jnp.array([100.0, -100.0]))
    assert float(big) == pytest.approx(100.0, rel=1e-6)


def test_bradley_terry_gradient():
    c = jnp.array([1.0, 0.0, -2.0, 0.5])
    r = jnp.array([0.0, 0.0, 1.0, 3.0])
    gc, gr = jax.grad(losses.bradley_terry_loss, argnums=(0, 1))(c, r)
    want = -jax.nn.sigmoid(r - c) / c.size
    np.testing.assert_allclose(gc, want, rtol=1e-6)
    np.testing.assert_allclose(gr, -want, rtol=1e-6)


def test_preference_accuracy_counts_ties_half():
    c = jnp.array([1.0, 0.0, -2.0, 3.0])
    r = jnp.array([0.0, 0.0, 1.0, 3.5])
    assert float(losses.preference_accuracy(c, r)) == pytest.approx(1.5 / 4)
    assert float(losses.preference_accuracy(c, r, jnp.array([1, 1, 0, 0]))) == pytest.approx(0.75)


def test_recentre_and_normalise():
    ref = jnp.array([[1.0, 3.0], [0.0, 4.0]])  # per-RM mean 2, 2; std 1, 2
    s = jnp.array([[2.0, 5.0, 0.0], [2.0, 6.0, 0.0]])
    np.testing.assert_allclose(losses.recentre_and_normalise(s, ref),
                               [[0.0, 3.0, -2.0], [0.0, 2.0, -1.0]], rtol=1e-6)
    np.testing.assert_allclose(losses.recentre_and_normalise(s, ref, unit_variance=False),
                               [[0.0, 3.0, -2.0], [0.0, 4.0, -2.0]], rtol=1e-6)
    x = jax.random.normal(jax.random.PRNGKey(0), (1000,)) * 3 + 5
    z = losses.recentre_and_normalise(x, x)
    assert abs(float(z.mean())) < 1e-5 and float(z.std()) == pytest.approx(1.0, rel=1e-5)


# ----------------------------------------------------------------------------- best-of-n weights


def test_bon_weights_exact_small():
    N = 30
    for n in (1, 2, 7, 29, 30):
        want = [math.comb(i - 1, n - 1) / math.comb(N, n) for i in range(1, N + 1)]
        np.testing.assert_allclose(bon.bon_weights(N, n), want, rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("n", [1, 2, 100, 10_000, 99_999, 100_000])
def test_bon_weights_large_N(n):
    N = 100_000
    w = bon.bon_weights(N, n)
    assert w.shape == (N,) and np.all(np.isfinite(w)) and np.all(w >= 0)
    assert abs(w.sum() - 1) < 1e-12
    assert np.all(w[: n - 1] == 0) and w[-1] > 0  # w[n - 1] = 1 / C(N, n) may underflow
    assert np.all(np.diff(w[n - 1:]) >= 0)  # nondecreasing in rank: w_{i+1} / w_i = i / (i-n+1)
    # the ratio w_{i+1} / w_i = i / (i - n + 1) holds across the support (log-space accuracy)
    i = np.arange(n, N)
    ok = (w[i - 1] > 1e-250) & (w[i] > 1e-250)
    i = i[ok]
    np.testing.assert_allclose(w[i] / w[i - 1], i / (i - n + 1.0), rtol=1e-7)
    if n == 1:
        np.testing.assert_allclose(w, 1 / N, rtol=1e-9)


def test_bon_weights_bad_input():
    for N, n in [(10, 0), (10, 11), (0, 1), (10, 2.5)]:
        with pytest.raises(ValueError, match="n"):
            bon.bon_weights(N, n)


# ----------------------------------------------------------------------------- best-of-n estimator


def _brute_force(proxy, gold, n):
    """Exact E[gold, proxy of the best-of-n sample] over every n-subset, ties broken uniformly."""
    g_tot, p_tot, count = 0.0, 0.0, 0
    for sub in itertools.combinations(range(len(proxy)), n):
        sub = np.array(sub)
        top = sub[proxy[sub] == proxy[sub].max()]
        g_tot += gold[top].mean()
        p_tot += proxy[sub].max()
        count += 1
    return g_tot / count, p_tot / count


@pytest.mark.parametrize("ties", [False, True])
def test_best_of_n_matches_enumeration_of_subsets(ties):
    rng = np.random.default_rng(0)
    N = 10
    proxy = rng.integers(0, 4, N).astype(np.float32) if ties else rng.normal(size=N).astype(
        np.float32)
    gold = rng.normal(size=N).astype(np.float32)
    ns = np.arange(1, N + 1)
    g, p = bon.best_of_n(jnp.asarray(proxy), jnp.asarray(gold), ns)
    want = np.array([_brute_force(proxy, gold, n) for n in ns])
    np.testing.assert_allclose(g, want[:, 0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p, want[:, 1], rtol=1e-5, atol=1e-6)


def test_best_of_n_matches_monte_carlo():
    rng = np.random.default_rng(1)
    N, n, draws = 60, 6, 20_000
    proxy = rng.normal(size=N)
    gold = proxy + rng.normal(size=N)
    subs = np.argsort(rng.random((draws, N)), axis=1)[:, :n]  # n of N without replacement
    best = subs[np.arange(draws), np.argmax(proxy[subs], axis=1)]
    mc, se = gold[best].mean(), gold[best].std() / np.sqrt(draws)
    g, _ = bon.best_of_n(jnp.asarray(proxy, jnp.float32), jnp.asarray(gold, jnp.float32), [n])
    assert abs(float(g[0]) - mc) < 4 * se, (float(g[0]), mc, se)


def test_best_of_n_closed_forms_n1_mean_nN_max():
    rng = np.random.default_rng(2)
    N = 1000
    proxy = jnp.asarray(rng.normal(size=N), jnp.float32)
    gold = jnp.asarray(rng.normal(size=N), jnp.float32)
    g, p = bon.best_of_n(proxy, gold, [1, N])
    assert float(g[0]) == pytest.approx(float(gold.mean()), abs=1e-5)
    assert float(p[0]) == pytest.approx(float(proxy.mean()), abs=1e-5)
    assert float(g[1]) == pytest.approx(float(gold[jnp.argmax(proxy)]), rel=1e-6)
    assert float(p[1]) == pytest.approx(float(proxy.max()), rel=1e-6)


def test_best_of_n_large_N_float32_matches_float64():
    rng = np.random.default_rng(7)
    N = 100_000
    gold = rng.normal(size=N)
    proxy = gold + rng.normal(size=N)
    ns = np.array([1, 10, 100, 1000, 10_000])
    g, p = bon.best_of_n(jnp.asarray(proxy, jnp.float32), jnp.asarray(gold, jnp.float32), ns)
    order = np.argsort(proxy, kind="stable")
    w = np.stack([bon.bon_weights(N, n) for n in ns])
    np.testing.assert_allclose(g, w @ gold[order], atol=1e-5)
    np.testing.assert_allclose(p, w @ proxy[order], atol=1e-5)
    assert np.all(np.diff(np.asarray(g)) > 0)  # gold still rises with n for this proxy


def test_best_of_n_batched_over_rms_jit_and_vmap():
    k1, k2 = jax.random.split(jax.random.PRNGKey(3))
    R, N = 3, 2000
    ns = np.array([1, 2, 10, 100, 1000, 2000])
    gold = jax.random.normal(k1, (N,))
    proxy = gold[None] + jax.random.normal(k2, (R, N)) * jnp.array([[0.3], [1.0], [3.0]])
    g, p = jax.jit(lambda pr, go: bon.best_of_n(pr, go, ns))(proxy, gold)
    gv, pv = jax.vmap(lambda pr: bon.best_of_n(pr, gold, ns))(proxy)
    assert g.shape == p.shape == (R, len(ns))
    for r in range(R):
        gr, pr = bon.best_of_n(proxy[r], gold, ns)
        np.testing.assert_allclose(g[r], gr, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(gv[r], gr, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(p[r], pr, rtol=1e-5, atol=1e-6)
        assert np.all(np.diff(np.asarray(pr)) > 0)  # proxy score rises with n
    # a better proxy (less noise) buys more gold at large n
    assert float(g[0, -2]) > float(g[1, -2]) > float(g[2, -2])


def test_best_of_n_bad_ns():
    x = jnp.zeros(5)
    with pytest.raises(ValueError, match="n"):
        bon.best_of_n(x, x, [0, 2])
    with pytest.raises(ValueError, match="n"):
        bon.best_of_n(x, x, [6])
    with pytest.raises(ValueError, match="concrete"):
        jax.jit(bon.best_of_n)(x, x, jnp.array([1, 2]))


# ----------------------------------------------------------------------------- KL of best-of-n


def test_kl_bon_formula():
    assert bon.kl_bon(1) == 0.0
    assert bon.kl_bon(2) == pytest.approx(math.log(2) - 0.5)
    np.testing.assert_allclose(bon.kl_bon(np.array([10, 10_000])),
                               [math.log(10) - 0.9, math.log(1e4) - 0.9999])
    assert float(bon.kl_bon(jnp.array(4.0))) == pytest.approx(math.log(4) - 0.75, rel=1e-6)
    with pytest.raises(ValueError, match="n >= 1"):
        bon.kl_bon(0.5)


def _enumerated_bon_probs(p, s, n):
    """p_bon by enumerating all K^n draws; ties among the top draws broken uniformly."""
    K = len(p)
    out = np.zeros(K)
    for draw in itertools.product(range(K), repeat=n):
        draw = np.array(draw)
        prob = np.prod(p[draw])
        top = draw[s[draw] == s[draw].max()]
        for k in top:
            out[k] += prob / len(top)
    return out


@pytest.mark.parametrize("scores", [[0.3, -1.0, 2.0, 0.5], [1.0, 1.0, 0.0, 1.0]],
                         ids=["distinct", "tied"])
def test_exact_bon_probs_match_enumeration(scores):
    p = np.array([0.1, 0.4, 0.2, 0.3])
    s = np.array(scores)
    for n in (1, 2, 3, 4):
        want = _enumerated_bon_probs(p, s, n)
        np.testing.assert_allclose(bon.exact_bon_probs(p, s, n), want, rtol=1e-12, atol=1e-15)
        kl = np.sum(want * np.log(want / p), where=want > 0)
        assert bon.exact_kl_bon(p, s, n) == pytest.approx(kl, rel=1e-10, abs=1e-14)


def test_exact_kl_bon_ties_merge_into_levels():
    # outcomes with equal scores act as one outcome of their summed probability
    p, s = np.array([0.1, 0.4, 0.2, 0.3]), np.array([1.0, 1.0, 0.0, 1.0])
    merged = bon.exact_kl_bon([0.2, 0.8], [0.0, 1.0], np.arange(1, 50))
    np.testing.assert_allclose(bon.exact_kl_bon(p, s, np.arange(1, 50)), merged, rtol=1e-12)
    assert merged[-1] == pytest.approx(math.log(1 / 0.8), rel=1e-4)  # -> log 1/p_top


def _distributions():
    rng = np.random.default_rng(4)
    for K in (5, 20, 50):
        yield f"uniform-K{K}", np.full(K, 1 / K), rng.permutation(K).astype(float)
        yield f"dirichlet-K{K}", rng.dirichlet(np.full(K, 0.5)), rng.normal(size=K)
        zipf = 1 / np.arange(1, K + 1)
        yield f"zipf-K{K}", zipf / zipf.sum(), rng.normal(size=K)


@pytest.mark.parametrize("name,p,s", list(_distributions()), ids=lambda x: x
                         if isinstance(x, str) else "")
def test_exact_kl_bon_below_formula_n_1_to_1000(name, p, s):
    ns = np.arange(1, 1001)
    exact = bon.exact_kl_bon(p, s, ns)
    formula = bon.kl_bon(ns)
    gap = formula - exact
    assert exact[0] == pytest.approx(0.0, abs=1e-12) and formula[0] == 0.0
    assert np.all(gap >= -1e-12), f"{name}: exact > formula, min gap {gap.min():.3g}"
    # the exact KL is capped by log(1/p_top) (p_bon -> a point mass on the top outcome), so the
    # gap grows like log n for large n
    cap = math.log(1 / p[np.argmax(s)])
    assert np.all(exact <= cap + 1e-9), f"{name}: exact KL above log 1/p_top = {cap:.3f}"
    assert gap[-1] > formula[-1] - cap - 1e-9, f"{name}: gap at n=1000 {gap[-1]:.3f}"


# gap = KL_bon(n) - exact KL for the uniform distribution over K outcomes (measured). For n >= 10
# it depends on n/K only: ~ (n/K)^2 / 24 while n << K, 0.0407 at n = K, 1.31 at n = 10 K.
UNIFORM_GAPS = {  # (K, n): gap
    (10, 2): 3.83e-3, (100, 2): 5.75e-5, (10_000, 2): 9.59e-9,
    (10, 10): 4.15e-2, (100, 10): 4.22e-4, (10_000, 10): 4.22e-8,
    (10, 100): 1.31, (100, 100): 4.07e-2, (10_000, 100): 4.17e-6, (1_000_000, 100): 4.17e-10,
    (1000, 1000): 4.07e-2, (1_000_000, 10_000): 4.17e-6,
}


@pytest.mark.parametrize("K,n", list(UNIFORM_GAPS), ids=lambda x: str(x))
def test_exact_kl_bon_uniform_gap_vanishes_as_K_grows(K, n):
    gap = bon.kl_bon(n) - bon.exact_kl_bon(np.full(K, 1 / K), np.arange(K), n)
    assert gap == pytest.approx(UNIFORM_GAPS[K, n], rel=0.02), f"K={K} n={n}: gap {gap:.3g}"
    if 10 <= n <= K / 10:
        assert gap == pytest.approx((n / K) ** 2 / 24, rel=0.03), f"K={K} n={n}: gap {gap:.3g}"


def test_exact_kl_bon_uniform_gap_decreases_in_K():
    for n in (2, 10, 100, 1000):
        gaps = [bon.kl_bon(n) - bon.exact_kl_bon(np.full(K, 1 / K), np.arange(K), n)
                for K in (10, 100, 1000, 10_000, 100_000)]
        assert np.all(np.diff(gaps) < 0), f"n={n}: gaps {np.round(gaps, 8)}"
        assert gaps[-1] < 1e-3 * bon.kl_bon(n)


# ----------------------------------------------------------------------------- scaling-law fits


def test_fit_bon_recovers_noiseless_and_noisy():
    d = np.sqrt(bon.kl_bon(np.unique(np.geomspace(1, 10_000, 40).astype(int))))
    r = scaling_laws.bon_curve(d, 1.2, 0.25)
    fit = scaling_laws.fit_bon(d, r)
    assert fit.form == "bon"
    assert fit.alpha == pytest.approx(1.2, rel=1e-9) and fit.beta == pytest.approx(0.25, rel=1e-9)
    assert fit.r2 == pytest.approx(1.0, abs=1e-12)
    assert fit.peak_d == pytest.approx(1.2 / 0.5) and fit.peak_r == pytest.approx(1.44 / 1.0)
    noisy = r + np.random.default_rng(5).normal(scale=0.05, size=d.size)
    fit = scaling_laws.fit_bon(d, noisy)
    assert fit.r2 > 0.9
    assert fit.alpha == pytest.approx(1.2, rel=0.1) and fit.beta == pytest.approx(0.25, rel=0.1)
    np.testing.assert_allclose(fit.predict(d), scaling_laws.bon_curve(d, fit.alpha, fit.beta))


def test_fit_rl_recovers_noiseless_and_noisy():
    d = np.concatenate([[0.0], np.linspace(0.1, 12, 50)])
    r = scaling_laws.rl_curve(d, 1.0, 0.4)
    assert r[0] == 0.0
    fit = scaling_laws.fit_rl(d, r)
    assert fit.alpha == pytest.approx(1.0, rel=1e-9) and fit.beta == pytest.approx(0.4, rel=1e-9)
    assert fit.r2 == pytest.approx(1.0, abs=1e-12)
    d_star = math.exp(1.0 / 0.4 - 1)
    assert fit.peak_d == pytest.approx(d_star)
    assert fit.peak_r == pytest.approx(d_star * (1.0 - 0.4 * math.log(d_star)))
    noisy = r + np.random.default_rng(6).normal(scale=0.05, size=d.size)
    fit = scaling_laws.fit_rl(d, noisy)
    assert fit.r2 > 0.9
    assert fit.alpha == pytest.approx(1.0, rel=0.1) and fit.beta == pytest.approx(0.4, rel=0.1)


def test_fit_peaks_by_hand_and_no_peak():
    # R = 3d - d^2: alpha 3, beta 1, peak 1.5 with R 2.25; RL R = 2d - d log d: peak e^1 with R e
    d = np.array([0.5, 1.0, 2.0, 3.0])
    f = scaling_laws.fit_bon(d, 3 * d - d * d)
    assert (f.peak_d, f.peak_r) == (pytest.approx(1.5), pytest.approx(2.25))
    f = scaling_laws.fit_rl(d, 2 * d - d * np.log(d))
    assert (f.peak_d, f.peak_r) == (pytest.approx(math.e), pytest.approx(math.e))
    # beta <= 0: no turnover, the curve rises without bound
    f = scaling_laws.fit_bon(d, d + 0.1 * d * d)
    assert f.beta < 0 and f.peak_d == math.inf and f.peak_r == math.inf
    d_ = f.as_dict()
    assert set(d_) == {"alpha", "beta", "r2", "peak_d", "peak_r", "form"}
    assert d_["form"] == "bon" and isinstance(d_["alpha"], float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.alpha = 0.0


@pytest.mark.parametrize("fit", [scaling_laws.fit_bon, scaling_laws.fit_rl], ids=["bon", "rl"])
def test_fit_degenerate_input_raises(fit):
    for d, r, match in [
        (np.array([1.0, 2.0, 3.0]), np.zeros(3), "constant"),
        (np.array([1.0]), np.array([0.5]), "at least 2"),
        (np.array([]), np.array([]), "at least 2"),
        (np.array([1.0, 2.0]), np.array([1.0]), "equal-length"),
        (np.array([2.0, 2.0, 2.0]), np.array([1.0, 2.0, 3.0]), "collinear"),
        (np.array([-1.0, 2.0]), np.array([1.0, 2.0]), ">= 0"),
        (np.array([1.0, np.nan]), np.array([1.0, 2.0]), "finite"),
    ]:
        with pytest.raises(ValueError, match=match) as e:
            fit(d, r)
        assert "\n" not in str(e.value)


def test_trend_against_log_size():
    sizes = np.array([3e6, 1e7, 3e7, 1e8, 3e8])
    values = 0.5 * np.log10(sizes) - 2.0
    slope, intercept, r2 = scaling_laws.trend(sizes, values)
    assert (slope, intercept, r2) == (pytest.approx(0.5), pytest.approx(-2.0), pytest.approx(1.0))
    assert math.isnan(scaling_laws.trend(sizes, np.ones(5))[2])
    for s, v in [([1e6, 1e6], [1.0, 2.0]), ([0.0, 1e6], [1.0, 2.0]), ([1e6], [1.0])]:
        with pytest.raises(ValueError, match="size"):
            scaling_laws.trend(s, v)
