"""Sequence (LLM-RL) losses: hand-worked values per preset, gradients against each paper's closed form."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlx.losses import sequence as S

NAN = float("nan")

# The hand-worked batch: 2 completions x 3 tokens; completion 1 has 2 tokens (its last is padding,
# filled with garbage that must not matter). Probabilities mu (rollout), pi (current), pi_ref:
#   completion 0, A = +1:   mu = .5 .4 .1   pi = .55 .6 .15   r = 1.1 1.5 1.5   pi-mu = .05 .2 .05
#   completion 1, A = -.5:  mu = .5 .2      pi = .3  .25      r = 0.6 1.25      pi-mu = -.2 .05
#   pi_ref: .55 .3 .15 | .3 .5  ->  k3 = pi_ref/pi - log(pi_ref/pi) - 1 = 0, .1931472, 0 | 0, .3068528
MU = np.array([[0.5, 0.4, 0.1], [0.5, 0.2, 1.0]])
PI = np.array([[0.55, 0.6, 0.15], [0.3, 0.25, 1.0]])
PREF = np.array([[0.55, 0.3, 0.15], [0.3, 0.5, 1.0]])
ADV = jnp.array([1.0, -0.5])
MASK = jnp.array([[True, True, True], [True, True, False]])
K3_01, K3_11 = 0.5 + np.log(2.0) - 1.0, 1.0 - np.log(2.0)  # 0.1931472, 0.3068528 (sum 0.5)


def _logs(x, pad=NAN):
    out = np.log(x).astype(np.float32)
    out[1, 2] = pad
    return jnp.asarray(out)


LP, BLP, REF = _logs(PI), _logs(MU, -np.inf), _logs(PREF)

# Per-token values. PPO surrogate s = -min(r A, clip(r, .8, 1.2) A):
#   c0: -min(1.1, 1.1) = -1.1; -min(1.5, 1.2) = -1.2; -min(1.5, 1.2) = -1.2          (sum -3.5)
#   c1: -min(-.3, -.4) = .4;   -min(-.625, -.6) = .625                              (sum 1.025)
# Importance-weighted surrogate -A r: -1.1 -1.5 -1.5 | .3 .625                     (sum -3.175)
# DRPO penalty |A| mu (r-1)^2 / (2 * 12.5): .0002 .004 .001 | .0016 .00025         (sum .00705)
#   with weight 1 instead of |A|:           .0002 .004 .001 | .0032 .0005          (sum .0089)
EXPECTED = {
    "ppo_clip": -2.475 / 5,                                              # token-mean of s: -0.495
    # GRPO: per-completion mean then mean, + .04 k3 the same way:
    #   (-3.5/3 + 1.025/2)/2 = -0.3270833;  .04 (K3_01/3 + K3_11/2)/2 = 0.0043562
    "grpo": (-3.5 / 3 + 1.025 / 2) / 2 + 0.04 * (K3_01 / 3 + K3_11 / 2) / 2,   # -0.3227272
    # Dr.GRPO: token sums / (B * max_length = 2 * 3): -2.475/6 + .04 * .5/6
    "dr_grpo": -2.475 / 6 + 0.04 * 0.5 / 6,                              # -0.4091667
    "dppo_tv": -3.175 / 5,                                               # -0.635 (r < C = 10)
    "dppo_kl": -3.175 / 5,                                               # -0.635
    "drpo": -3.175 / 5 + 0.00705 / 5,                                    # -0.63359
    "pg_is": -3.175 / 5,                                                 # -0.635
}
# Tokens whose gradient is cut: PPO clip (eps .2): r = 1.5 with A > 0 (twice), r = .6 with A < 0.
# TV (.15): pi-mu = .2 with A > 0, -.2 with A < 0.  Binary KL (.05): D = .0050 .0811 .0109 | .0872 .0070,
# so the same two tokens (.0811 going up with A > 0, .0872 going down with A < 0).
INACTIVE = {
    "ppo_clip": [[0, 1, 1], [1, 0, 0]], "grpo": [[0, 1, 1], [1, 0, 0]], "dr_grpo": [[0, 1, 1], [1, 0, 0]],
    "dppo_tv": [[0, 1, 0], [1, 0, 0]], "dppo_kl": [[0, 1, 0], [1, 0, 0]],
    "drpo": [[0, 0, 0], [0, 0, 0]], "pg_is": [[0, 0, 0], [0, 0, 0]],
}
R = np.array([[1.1, 1.5, 1.5], [0.6, 1.25, 0.0]])
A_TOK = np.array([[1.0, 1.0, 1.0], [-0.5, -0.5, 0.0]])


def _loss(params, lp=LP, blp=BLP, adv=ADV, mask=MASK, ref=REF, max_length=None):
    return S.sequence_loss(lp, blp, adv, mask, params, ref, max_length)


def _grad(params, lp=LP, **kw):
    return np.asarray(jax.grad(lambda x: _loss(params, lp=x, **kw)[0])(lp))


@pytest.mark.parametrize("name", list(S.LOSSES))
def test_preset_values_hand_worked(name):
    loss, m = _loss(S.LOSSES[name])
    assert float(loss) == pytest.approx(EXPECTED[name], rel=1e-5)
    np.testing.assert_array_equal(m["inactive"], INACTIVE[name])
    assert float(m["inactive_frac"]) == pytest.approx(np.sum(INACTIVE[name]) / 5)
    assert float(m["kl_ref"]) == pytest.approx(0.5 / 5, rel=1e-5)  # token-mean k3, whatever beta
    assert float(m["ratio_mean"]) == pytest.approx(R.sum() / 5, rel=1e-5)
    assert float(m["ratio_max"]) == pytest.approx(1.5, rel=1e-5)
    assert all(bool(jnp.all(jnp.isfinite(v))) for v in m.values())


def test_surrogate_metric_and_drpo_ablation_value():
    _, m = _loss(S.LOSSES["drpo"])
    assert float(m["surrogate"]) == pytest.approx(-0.635, rel=1e-5)
    assert float(m["penalty"]) == pytest.approx(0.00705 / 5, rel=1e-4)
    loss, m = _loss(S.loss_params("drpo", drpo_abs_adv=0.0))  # penalty weight 1 instead of |A|
    assert float(m["penalty"]) == pytest.approx(0.0089 / 5, rel=1e-4)
    assert float(loss) == pytest.approx(-0.635 + 0.0089 / 5, rel=1e-5)
    _, m = _loss(S.LOSSES["grpo"])
    assert float(m["surrogate"]) == pytest.approx((-3.5 / 3 + 1.025 / 2) / 2, rel=1e-5)


def _ppo_reference(lp, eps_low, eps_high, weights, beta=0.0):
    """Autodiff target: TRL's per-token -min(r A, clip(r) A) + beta k3, aggregated by `weights`."""
    r = jnp.exp(lp - BLP)
    a = jnp.asarray(A_TOK)
    s = -jnp.minimum(r * a, jnp.clip(r, 1 - eps_low, 1 + eps_high) * a)
    d = REF - lp
    k3 = jnp.exp(d) - d - 1
    return jnp.sum(jnp.where(MASK, weights * (s + beta * k3), 0.0))


@pytest.mark.parametrize("name,agg", [("ppo_clip", 0), ("grpo", 1), ("dr_grpo", 2)])
def test_ppo_family_gradient_is_autodiff_of_clipped_surrogate(name, agg):
    p = S.LOSSES[name]
    w = S.aggregation_weights(MASK, agg)
    expected = jax.grad(_ppo_reference)(LP, 0.2, 0.2, w, float(p.beta))
    np.testing.assert_allclose(_grad(p), np.where(MASK, expected, 0.0), rtol=1e-5, atol=1e-7)
    # and that gradient is -A r M_clip w^agg + beta (1 - pi_ref/pi) w^agg
    keep = 1.0 - np.array(INACTIVE[name])
    closed = (-A_TOK * R * keep + float(p.beta) * (1 - PREF / PI)) * np.asarray(w)
    np.testing.assert_allclose(_grad(p), np.where(MASK, closed, 0.0), rtol=1e-5, atol=1e-7)


def test_ppo_clip_matches_rlax_and_rlx_ppo_surrogate():
    from rlx.losses import ppo_surrogate

    full = jnp.ones((2, 3), bool)
    lp, blp = jnp.log(jnp.array(PI, jnp.float32)), jnp.log(jnp.array(MU, jnp.float32))
    adv = jnp.array([[1.0, 1.0, 1.0], [-0.5, -0.5, 0.7]])
    ours = lambda x: _loss(S.LOSSES["ppo_clip"], x, blp, adv, full, None)[0]  # noqa: E731
    rlx_ref = lambda x: ppo_surrogate(x, blp, adv, 0.2)  # noqa: E731
    assert float(ours(lp)) == pytest.approx(float(rlx_ref(lp)), rel=1e-6)
    np.testing.assert_allclose(jax.grad(ours)(lp), jax.grad(rlx_ref)(lp), rtol=1e-5, atol=1e-7)
    rlax = pytest.importorskip("rlax")
    rl = lambda x: rlax.clipped_surrogate_pg_loss(  # noqa: E731
        jnp.exp(x - blp).ravel(), adv.ravel(), 0.2)
    assert float(ours(lp)) == pytest.approx(float(rl(lp)), rel=1e-6)
    np.testing.assert_allclose(jax.grad(ours)(lp), jax.grad(rl)(lp), rtol=1e-5, atol=1e-7)


# DPPO mask cases, one token each (token-mean over 8 valid tokens), delta_TV = 0.15:
#   A    mu    pi     pi-mu   TV cut?                   binary KL D   KL (.05) cut?
#   +1   .4    .6     +.2     yes (A>0, above)          .0811         yes (up, A>0)
#   +1   .4    .5     +.1     no  (A>0, below)          .0201         no
#   +1   .6    .3     -.3     no  (A>0, moving down)    .1920         no  (down, A>0)
#   -1   .5    .3     -.2     yes (A<0, above)          .0872         yes (down, A<0)
#   -1   .5    .4     -.1     no  (A<0, below)          .0204         no
#   -1   .2    .5     +.3     no  (A<0, moving up)      .1927         no  (up, A<0)
#    0   .4    .9     +.5     no  (A = 0: never cut)    .7507         no
#   +1   .02   .6     +.58    yes; r = 30 > C = 10      .8101         yes; masks off: weight min(r,C)=10
CASE_MU = [0.4, 0.4, 0.6, 0.5, 0.5, 0.2, 0.4, 0.02]
CASE_PI = [0.6, 0.5, 0.3, 0.3, 0.4, 0.5, 0.9, 0.6]
CASE_A = [1.0, 1.0, 1.0, -1.0, -1.0, -1.0, 0.0, 1.0]
CASE_TV_CUT = [1, 0, 0, 1, 0, 0, 0, 1]
CASE_KL_CUT = [1, 0, 0, 1, 0, 0, 0, 1]


def _case_arrays():
    lp = jnp.log(jnp.array([CASE_PI], jnp.float32))
    blp = jnp.log(jnp.array([CASE_MU], jnp.float32))
    return lp, blp, jnp.array([CASE_A]), jnp.ones((1, 8), bool)


@pytest.mark.parametrize("name,cut", [("dppo_tv", CASE_TV_CUT), ("dppo_kl", CASE_KL_CUT)])
def test_dppo_gradient_closed_form_per_mask_case(name, cut):
    lp, blp, adv, mask = _case_arrays()
    p = S.LOSSES[name]
    g = jax.grad(lambda x: _loss(p, lp=x, blp=blp, adv=adv, mask=mask, ref=None)[0])(lp)
    r = np.exp(np.asarray(lp - blp))
    expected = -np.array([CASE_A]) * np.minimum(r, 10.0) * (1 - np.array([cut])) / 8
    np.testing.assert_allclose(g, expected, rtol=1e-5, atol=1e-8)
    _, m = _loss(p, lp=lp, blp=blp, adv=adv, mask=mask, ref=None)
    np.testing.assert_array_equal(m["inactive"], [cut])
    assert float(m["capped_frac"]) == pytest.approx(1 / 8)
    # the IS cap: with the masks off (pg_is + C = 10) the r = 30 token's weight is capped at 10
    capped = S.loss_params("pg_is", is_cap=10.0)
    g = jax.grad(lambda x: _loss(capped, lp=x, blp=blp, adv=adv, mask=mask, ref=None)[0])(lp)
    np.testing.assert_allclose(g[0, 7], -10.0 / 8, rtol=1e-5)
    np.testing.assert_allclose(g[0, 0], -r[0, 0] / 8, rtol=1e-5)


def test_masks_at_exact_threshold_keep_the_gradient():
    lp, blp = jnp.log(jnp.array([0.6, 0.3], jnp.float32)), jnp.log(jnp.array([0.4, 0.5], jnp.float32))
    adv = jnp.array([1.0, -1.0])
    diff = jnp.exp(lp) - jnp.exp(blp)  # the same float32 ops the mask uses
    at_hi, at_lo = diff[0], -diff[1]
    np.testing.assert_array_equal(S.tv_mask(adv, lp, blp, at_lo, at_hi), [1.0, 1.0])  # strict >
    below = lambda x: jnp.nextafter(x, -jnp.inf)  # noqa: E731
    np.testing.assert_array_equal(S.tv_mask(adv, lp, blp, below(at_lo), below(at_hi)), [0.0, 0.0])
    d = S.binary_kl(lp, blp)
    np.testing.assert_array_equal(S.kl_mask(adv, lp, blp, d.max()), [1.0, 1.0])
    np.testing.assert_array_equal(S.kl_mask(adv, lp, blp, below(d.min())), [0.0, 0.0])
    # PPO clip boundary, r exactly 1 + eps_high: kept (r > 1 + eps cuts)
    r = jnp.array([1.25, 0.75], jnp.float32)
    np.testing.assert_array_equal(S.clip_mask(adv, r, 0.25, 0.25), [1.0, 1.0])
    np.testing.assert_array_equal(S.clip_mask(adv, r, 0.2, 0.2), [0.0, 0.0])
    # through the loss: the TV token exactly at delta_high keeps its gradient
    p = S.loss_params("dppo_tv", tv_delta_high=float(at_hi), tv_delta_low=float(at_lo))
    g = jax.grad(lambda x: S.sequence_loss(x[None], blp[None], adv[None], jnp.ones((1, 2), bool),
                                           p)[0])(lp)
    np.testing.assert_allclose(g, -np.asarray(adv) * np.exp(np.asarray(lp - blp)) / 2, rtol=1e-6)


def test_binary_kl_hand_worked():
    lp, blp = jnp.log(jnp.array([0.6, 0.3, 0.25])), jnp.log(jnp.array([0.4, 0.5, 0.2]))
    # .4 ln(.4/.6) + .6 ln(.6/.4) = .2 ln 1.5;  .5 ln(.5/.3) + .5 ln(.5/.7);  .2 ln .8 + .8 ln(.8/.75)
    expected = [0.2 * np.log(1.5), 0.5 * np.log(5 / 3) + 0.5 * np.log(5 / 7),
                0.2 * np.log(0.8) + 0.8 * np.log(0.8 / 0.75)]
    np.testing.assert_allclose(S.binary_kl(lp, blp), expected, rtol=1e-5)
    assert float(S.binary_kl(jnp.array(0.0), jnp.array(0.0))) == 0.0  # mu = pi = 1: 0 log 0 = 0


def test_drpo_gradient_is_minus_a_r_w():
    p = S.LOSSES["drpo"]
    w = S.drpo_weight(jnp.asarray(A_TOK), LP, BLP, 12.5)
    # w = 1 - sign(A (r - 1)) |pi - mu| / 12.5: .996 .984 .996 | .984 1.004
    np.testing.assert_allclose(np.where(MASK, w, 0), [[0.996, 0.984, 0.996], [0.984, 1.004, 0]],
                               rtol=1e-5)
    expected = np.where(MASK, -A_TOK * R * np.asarray(w) / 5, 0.0)
    np.testing.assert_allclose(_grad(p), expected, rtol=1e-5, atol=1e-8)

    # the UniRL loss -A r + |A| mu (r - 1)^2 / (2 eps), token-mean, differentiated directly
    def unirl(lp):
        r = jnp.exp(lp - BLP)
        mu = jnp.exp(BLP)
        a = jnp.asarray(A_TOK)
        per = -a * r + jnp.abs(a) * mu * (r - 1) ** 2 / (2 * 12.5)
        return jnp.sum(jnp.where(MASK, per, 0.0)) / 5

    np.testing.assert_allclose(_grad(p), np.where(MASK, jax.grad(unirl)(LP), 0), rtol=1e-5, atol=1e-8)
    # removing |A|: penalty weight 1, gradient -A r + mu (r - 1) r / eps (no longer -A r w)
    ablate = S.loss_params("drpo", drpo_abs_adv=0.0)
    closed = (-A_TOK * R + MU * (R - 1) * R / 12.5) / 5
    np.testing.assert_allclose(_grad(ablate), np.where(MASK, closed, 0.0), rtol=1e-5, atol=1e-8)
    assert not np.allclose(_grad(ablate), _grad(p))


def test_group_advantages_hand_worked():
    rewards = jnp.array([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])
    # group 1: mean .5, unbiased std sqrt(4 * .25 / 3) = .57735 -> +-.8660254; group 2: all equal -> 0
    a = S.group_advantages(rewards, 4, 1.0)
    np.testing.assert_allclose(a, [0.8660254, -0.8660254, -0.8660254, 0.8660254, 0, 0, 0, 0], rtol=1e-5)
    np.testing.assert_array_equal(S.group_advantages(rewards, 4, 0.0), [0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0])
    assert bool(jnp.all(jnp.isfinite(a)))
    np.testing.assert_array_equal(S.group_advantages(rewards, 1, 1.0), jnp.zeros(8))  # G = 1
    # the preset's std_scale selects, traced
    f = jax.jit(lambda s: S.group_advantages(rewards, 4, s))
    np.testing.assert_allclose(f(S.LOSSES["dr_grpo"].std_scale)[:2], [0.5, -0.5])
    np.testing.assert_allclose(f(S.LOSSES["grpo"].std_scale)[:2], [0.8660254, -0.8660254], rtol=1e-5)
    with pytest.raises(ValueError, match="group_size"):
        S.group_advantages(rewards, 3)


def test_aggregation_modes_on_ragged_mask():
    # pg_is with pi = mu (r = 1): the per-token loss is -A_t. Lengths 3 and 1 (T = 4).
    adv = jnp.array([[1.0, 2.0, 3.0, 9.0], [4.0, 9.0, 9.0, 9.0]])
    mask = jnp.array([[1, 1, 1, 0], [1, 0, 0, 0]], bool)
    lp = jnp.full((2, 4), -1.0)
    expected = {0: -(1 + 2 + 3 + 4) / 4,            # token-mean: -2.5
                1: -((1 + 2 + 3) / 3 + 4 / 1) / 2,  # per-sequence mean: -3.0
                2: -((1 + 2 + 3) + 4) / (2 * 4)}    # token-sum / (B T): -1.25
    for agg, value in expected.items():
        p = S.loss_params("pg_is", aggregation=agg)
        loss, m = S.sequence_loss(lp, lp, adv, mask, p)
        assert float(loss) == pytest.approx(value), agg
        w = S.aggregation_weights(mask, agg)
        g = jax.grad(lambda x: S.sequence_loss(x, lp, adv, mask, p)[0])(lp)
        np.testing.assert_allclose(g, -adv * w, rtol=1e-6)  # d/d log pi = -A r w^agg, r = 1
    p = S.loss_params("pg_is", aggregation=2)
    assert float(S.sequence_loss(lp, lp, adv, mask, p, max_length=5)[0]) == pytest.approx(-10 / 10)
    with pytest.raises(ValueError, match="aggregation"):
        S.loss_params("pg_is", aggregation=3)
    with pytest.raises(ValueError, match="max_length"):
        S.sequence_loss(lp, lp, adv, mask, p, max_length=0)


def test_k3_nonnegative_and_zero_at_equality():
    k = jax.random.split(jax.random.PRNGKey(0), 2)
    a, b = jax.random.normal(k[0], (1000,)) * 3, jax.random.normal(k[1], (1000,)) * 3
    assert float(S.k3_kl(a, b).min()) >= 0.0
    np.testing.assert_array_equal(S.k3_kl(a, a), jnp.zeros(1000))
    assert float(S.k3_kl(jnp.log(0.25), jnp.log(0.5))) == pytest.approx(K3_11, rel=1e-6)


def test_vmap_over_stacked_presets_matches_per_preset_calls():
    names = list(S.LOSSES)
    stacked = S.stack_loss_params(names)
    assert stacked.clip_low.shape == (len(names),) and stacked.clip_low.dtype == np.float32

    def f(p):
        return jax.value_and_grad(lambda lp: _loss(p, lp=lp)[0])(LP)

    losses, grads = jax.jit(jax.vmap(f))(stacked)
    for i, n in enumerate(names):
        lo, gr = f(S.LOSSES[n])
        assert float(losses[i]) == pytest.approx(float(lo), rel=1e-6, abs=1e-7), n
        np.testing.assert_allclose(grads[i], gr, rtol=1e-5, atol=1e-7, err_msg=n)
        assert float(losses[i]) == pytest.approx(EXPECTED[n], rel=1e-5), n


def test_infinities_and_extreme_ratios_give_no_nan():
    inf = float("inf")
    everything_off = S.loss_params("pg_is", clip_low=inf, clip_high=inf, is_cap=inf, kl_delta=inf,
                                   drpo_eps=inf, tv_delta_low=inf, tv_delta_high=inf)
    on = S.loss_params("drpo", clip_low=0.2, clip_high=0.2, is_cap=10.0, tv_delta_low=0.15,
                       tv_delta_high=0.15, kl_delta=0.05, beta=0.04)
    # extreme rollout/current gaps (|log r| = 60, pi = 1 exactly) and garbage on the padding
    lp = jnp.array([[0.0, -60.0, -1e-3], [-70.0, 0.0, NAN]])
    blp = jnp.array([[-60.0, 0.0, 0.0], [0.0, -80.0, -jnp.inf]])
    for p in (everything_off, on, *S.LOSSES.values()):
        for ref in (None, jnp.array([[-90.0, 0.0, -1.0], [0.0, -90.0, jnp.inf]])):
            loss, m = S.sequence_loss(lp, blp, ADV, MASK, p, ref)
            g = jax.grad(lambda x: S.sequence_loss(x, blp, ADV, MASK, p, ref)[0])(lp)
            assert bool(jnp.isfinite(loss)) and bool(jnp.all(jnp.isfinite(g)))
            assert all(bool(jnp.all(jnp.isfinite(v))) for v in m.values())
            assert float(g[1, 2]) == 0.0


def test_per_token_advantages_and_shapes():
    a_tok = jnp.asarray(A_TOK, jnp.float32)
    for n in S.LOSSES:
        l1, _ = _loss(S.LOSSES[n])
        l2, _ = _loss(S.LOSSES[n], adv=a_tok)
        assert float(l1) == pytest.approx(float(l2), rel=1e-6)
    with pytest.raises(AssertionError):
        _loss(S.LOSSES["grpo"], adv=jnp.ones(3))


def test_unknown_preset_and_field_raise():
    with pytest.raises(ValueError, match="unknown sequence loss 'ppo'.*grpo"):
        S.loss_params("ppo")
    with pytest.raises(ValueError, match="clip"):
        S.loss_params("grpo", clip=0.1)
    with pytest.raises(ValueError, match="beta"):
        S.loss_params("grpo", beta=-1.0)
    with pytest.raises(ValueError, match="unknown sequence loss"):
        S.stack_loss_params(["grpo", "nope"])
