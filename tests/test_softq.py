"""Policy gradients = soft Q-learning (Schulman, Chen & Abbeel 2017): losses against
hand-worked cases, the gradient identity per batch (float64, exact) and in expectation
(Monte Carlo, within standard errors), broken parametrisations that must fail both,
the two trainers, the experiment's --quick run and the notebook."""

import math
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlx import losses
from rlx import softq_identity as sqi
from rlx.algos import a2c, softq

ROOT = Path(__file__).resolve().parents[1]
LN = math.log


# ---- n-step returns ---------------------------------------------------------------------------

def test_n_step_returns_hand_worked():
    r = jnp.array([1.0, 2.0, 3.0, 4.0])
    v_next = jnp.array([10.0, 20.0, 30.0, 40.0])
    zeros = jnp.zeros(4)
    # no episode ends, gamma 0.5
    np.testing.assert_allclose(losses.n_step_returns(r, v_next, zeros, zeros, 0.5, 1),
                               [6.0, 12.0, 18.0, 24.0])
    # n = 2: 1 + .5*2 + .25*20 = 7;  2 + .5*3 + .25*30 = 11;  3 + .5*4 + .25*40 = 15;
    # the last step can only look one step ahead: 4 + .5*40 = 24
    np.testing.assert_allclose(losses.n_step_returns(r, v_next, zeros, zeros, 0.5, 2),
                               [7.0, 11.0, 15.0, 24.0])
    # t = 1 terminates (no bootstrap), t = 2 is truncated (bootstraps from V(final_obs))
    term = jnp.array([0, 1, 0, 0])
    done = jnp.array([0, 1, 1, 0])
    for n in (2, 3, None):
        np.testing.assert_allclose(losses.n_step_returns(r, v_next, term, done, 0.5, n),
                                   [1.0 + 0.5 * 2.0, 2.0, 3.0 + 0.5 * 30.0, 4.0 + 0.5 * 40.0])


def test_n_step_returns_whole_rollout_equals_gae_lambda_one():
    k = jax.random.split(jax.random.PRNGKey(0), 5)
    T, N = 9, 3
    r, v, v_next = (jax.random.normal(kk, (T, N)) for kk in k[:3])
    term = jax.random.bernoulli(k[3], 0.2, (T, N))
    done = term | jax.random.bernoulli(k[4], 0.2, (T, N))
    v = v.at[1:].set(jnp.where(done[:-1], v[1:], v_next[:-1]))  # V(s_{t+1}) = V(final_obs_t)
    _, targets = losses.gae(r, v, v_next, term, done, 0.9, 1.0)
    np.testing.assert_allclose(losses.n_step_returns(r, v_next, term, done, 0.9), targets,
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="n >= 1"):
        losses.n_step_returns(r, v_next, term, done, 0.9, 0)
    # n may be traced (a vmapped hyper-parameter): same returns as the static n
    traced = jax.jit(lambda n: losses.n_step_returns(r, v_next, term, done, 0.9, n))
    for n in (1, 3, T):
        np.testing.assert_allclose(traced(n), losses.n_step_returns(r, v_next, term, done, 0.9, n),
                                   rtol=1e-6, atol=1e-6)


# ---- Boltzmann policy and the parametrisation --------------------------------------------------

@pytest.mark.parametrize("with_ref", [False, True])
def test_policy_parametrised_q_has_pi_as_boltzmann_policy_and_v_as_soft_value(with_ref):
    k = jax.random.split(jax.random.PRNGKey(1), 3)
    logits = 2.0 * jax.random.normal(k[0], (5, 4))
    values = jax.random.normal(k[1], (5,))
    ref = jax.nn.log_softmax(jax.random.normal(k[2], (5, 4))) if with_ref else None
    q = losses.q_from_policy(logits, values, 0.3, ref)
    v, log_pi = losses.boltzmann(q, 0.3, ref)
    np.testing.assert_allclose(v, values, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(log_pi, jax.nn.log_softmax(logits), rtol=1e-5, atol=1e-5)


def test_boltzmann_hand_worked():
    v, log_pi = losses.boltzmann(jnp.array([0.0, 0.5 * LN(3.0)]), 0.5)
    assert float(v) == pytest.approx(0.5 * LN(4.0), rel=1e-6)  # 0.5 log(e^0 + e^{ln 3})
    np.testing.assert_allclose(jnp.exp(log_pi), [0.25, 0.75], rtol=1e-6)
    # with pibar = (1/4, 3/4) and Q = (ln 2, 0), tau = 1: V = log(2/4 + 3/4) = log 1.25
    v, log_pi = losses.boltzmann(jnp.array([LN(2.0), 0.0]), 1.0, jnp.log(jnp.array([0.25, 0.75])))
    assert float(v) == pytest.approx(LN(1.25), rel=1e-6)
    np.testing.assert_allclose(jnp.exp(log_pi), [0.4, 0.6], rtol=1e-6)
    # entropy form: KL to the counting measure is minus the entropy
    assert float(losses.kl_to_reference(jnp.log(jnp.array([0.25, 0.75])))) == pytest.approx(
        0.25 * LN(0.25) + 0.75 * LN(0.75), rel=1e-6)


# ---- soft Q-learning and entropy-regularised PG losses, hand-worked ----------------------------

def _two_steps():
    """T = 2 of one env, no episode end, gamma 0.5: a_0 = 1, a_1 = 0, r = (1, 2)."""
    return dict(actions=jnp.array([[1], [0]]), rewards=jnp.array([[1.0], [2.0]]),
                terminated=jnp.zeros((2, 1)), done=jnp.zeros((2, 1)), gamma=0.5)


def test_soft_q_loss_hand_worked_entropy_form():
    tau = 0.5
    q = jnp.array([[[0.0, 0.5 * LN(3.0)]], [[0.5 * LN(2.0), 0.0]]])
    next_q = jnp.stack([q[1], jnp.zeros((1, 2))])  # Q(s_1), then Q(s_2) = 0: V(s_2) = 0.5 ln 2
    b = _two_steps()
    args = (q, next_q, b["actions"], b["rewards"], b["terminated"], b["done"], tau, b["gamma"])
    # log pi(a_1 = 0 | s_1) = (Q - V)/tau = (0.5 ln 2 - 0.5 ln 3)/0.5 = ln 2 - ln 3
    y0 = 1.0 + 0.5 * (2.0 - tau * (LN(2.0) - LN(3.0))) + 0.25 * 0.5 * LN(2.0)  # 2-step
    y1 = 2.0 + 0.5 * 0.5 * LN(2.0)
    expected = 0.5 * np.mean([(0.5 * LN(3.0) - y0) ** 2, (0.5 * LN(2.0) - y1) ** 2])
    loss, aux = losses.soft_q_loss(*args, n=2)
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    # 1-step: y_t = r_t + gamma V(s_{t+1}), V(s_1) = 0.5 ln 3, no penalty at all
    y0_1 = 1.0 + 0.5 * 0.5 * LN(3.0)
    expected1 = 0.5 * np.mean([(0.5 * LN(3.0) - y0_1) ** 2, (0.5 * LN(2.0) - y1) ** 2])
    assert float(losses.soft_q_loss(*args, n=1)[0]) == pytest.approx(expected1, rel=1e-6)
    # a termination at t = 0 cuts the return: y_0 = r_0
    term = jnp.array([[1.0], [0.0]])
    cut = losses.soft_q_loss(q, next_q, b["actions"], b["rewards"], term, term, tau, 0.5, n=2)[0]
    assert float(cut) == pytest.approx(0.5 * np.mean([(0.5 * LN(3.0) - 1.0) ** 2,
                                                     (0.5 * LN(2.0) - y1) ** 2]), rel=1e-6)


def test_soft_q_loss_hand_worked_kl_form():
    ref = jnp.log(jnp.array([0.25, 0.75]))
    q = jnp.array([[[0.0, 0.0]], [[LN(2.0), 0.0]]])
    next_q = jnp.stack([q[1], jnp.array([[LN(2.0), 0.0]])])
    b = _two_steps()
    # tau = 1; at s_1: V = ln 1.25, log(pi/pibar)(a=0) = ln 2 - ln 1.25 = ln 1.6; V(s_2) = ln 1.25
    y0 = 1.0 + 0.5 * (2.0 - LN(1.6)) + 0.25 * LN(1.25)
    y1 = 2.0 + 0.5 * LN(1.25)
    expected = 0.5 * np.mean([(0.0 - y0) ** 2, (LN(2.0) - y1) ** 2])
    loss, _ = losses.soft_q_loss(q, next_q, b["actions"], b["rewards"], b["terminated"], b["done"],
                                 1.0, b["gamma"], n=2, ref_log_probs=ref, next_ref_log_probs=ref)
    assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_entropy_pg_loss_hand_worked():
    # pi = (1/4, 3/4), V(s) = 0.5, V(s') = 2, r = 1, gamma 0.5, tau 0.1, a = 1, one step
    logits = jnp.array([[0.0, LN(3.0)]])
    args = (logits, jnp.array([0.5]), jnp.array([2.0]), jnp.array([1]), jnp.array([1.0]),
            jnp.array([0.0]), jnp.array([0.0]), 0.1, 0.5, 1)
    neg_h = 0.25 * LN(0.25) + 0.75 * LN(0.75)  # KL to pibar = 1
    g = 1.0 - 0.1 * neg_h + 0.5 * 2.0
    pg, v_loss, _ = losses.entropy_pg_loss(*args, kl_estimate="exact")
    assert float(pg) == pytest.approx(-LN(0.75) * (g - 0.5) + 0.1 * neg_h, rel=1e-6)
    assert float(v_loss) == pytest.approx(0.5 * (0.5 - g) ** 2, rel=1e-6)
    g_s = 1.0 - 0.1 * LN(0.75) + 0.5 * 2.0
    pg, v_loss, _ = losses.entropy_pg_loss(*args, kl_estimate="sample")
    assert float(pg) == pytest.approx(-LN(0.75) * (g_s - 0.5), rel=1e-6)
    assert float(v_loss) == pytest.approx(0.5 * (0.5 - g_s) ** 2, rel=1e-6)
    # uniform reference: KL = log 2 - H
    pg_u, _, _ = losses.entropy_pg_loss(*args[:-1], n=1, ref_log_probs=jnp.log(jnp.array([0.5, 0.5])))
    g_u = 1.0 - 0.1 * (neg_h + LN(2.0)) + 1.0
    assert float(pg_u) == pytest.approx(-LN(0.75) * (g_u - 0.5) + 0.1 * (neg_h + LN(2.0)), rel=1e-6)
    with pytest.raises(ValueError, match="kl_estimate"):
        losses.entropy_pg_loss(*args, kl_estimate="bogus")


def test_exact_estimator_gradient_is_score_term_plus_kl_gradient():
    """grad L_PG(exact) = -A_t grad log pi(a_t|s_t) + tau grad KL_t, A_t held fixed."""
    logits = jnp.array([[0.3, -0.2, 0.9]])
    zeros = jnp.zeros(1)

    def pg(lg):  # r = 0, V = 0, V' = 0, one step: A_t = -tau KL_t
        return losses.entropy_pg_loss(lg, zeros, zeros, jnp.array([0]), zeros, zeros, zeros,
                                      0.7, 0.9, 1, kl_estimate="exact")[0]

    g_exact = jax.grad(pg)(logits)
    kl_grad = jax.grad(lambda lg: 0.7 * losses.kl_to_reference(lg).sum())(logits)
    adv = -0.7 * float(losses.kl_to_reference(logits)[0])
    score = jax.grad(lambda lg: -jax.nn.log_softmax(lg)[0, 0] * adv)(logits)
    np.testing.assert_allclose(g_exact, score + kl_grad, rtol=1e-5, atol=1e-6)


# ---- the random MDP the check samples ----------------------------------------------------------

def test_random_mdp_rollouts_hold_terminations_and_truncations():
    from rlx.envs import RandomMDP, random_mdp_arrays
    from rlx.rollout import random_policy, reset, rollout

    mdp = random_mdp_arrays(jax.random.PRNGKey(0), num_states=5, num_actions=3, obs_dim=4)
    env = RandomMDP(mdp, term_prob=0.15, max_episode_steps=4)
    assert env.obs_shape == (4,) and env.action_spec.size == 3
    _, tr = rollout(env, random_policy(env), reset(env, jax.random.PRNGKey(1), 8),
                    jax.random.PRNGKey(2), 20)
    assert tr.obs.shape == (20, 8, 4)
    assert bool(tr.terminated.any()) and bool((tr.done & ~tr.terminated).any())
    # every observation is one of the states' features
    dist = jnp.abs(tr.obs[..., None, :] - mdp.features).sum(-1).min(-1)
    assert float(dist.max()) == 0.0
    assert env.reference_log_probs(tr.obs).shape == (20, 8, 3)
    with pytest.raises(ValueError, match="num_states"):
        random_mdp_arrays(jax.random.PRNGKey(0), num_states=0)
    with pytest.raises(ValueError, match="term_prob"):
        RandomMDP(mdp, term_prob=1.5)


def test_identity_check_rejects_bad_input():
    with pytest.raises(ValueError, match="bogus"):
        sqi.Case("x", 1, "bogus")
    with pytest.raises(ValueError, match="batches"):
        sqi.check_case(sqi.CASES[0], batches=1)


# ---- the equivalence: per batch (exact) and in expectation -------------------------------------

@pytest.fixture(scope="module")
def identity_results():
    """Both checks for every case, once (one compile per form); 4,000 batches each."""
    return {c.name: sqi.check_case(c, batches=4_000) for c in sqi.CASES + sqi.BROKEN}


@pytest.mark.parametrize("case", sqi.CASES, ids=lambda c: c.name)
def test_identity_per_batch_float64(identity_results, case):
    r = identity_results[case.name]
    assert r["per_batch_rel"] <= sqi.PER_BATCH_REL_TOL, r
    assert r["per_batch_rel"] < 1e-12, r  # float64 round-off, in fact


@pytest.mark.parametrize("case", sqi.CASES, ids=lambda c: c.name)
def test_identity_in_expectation(identity_results, case):
    r = identity_results[case.name]
    assert r["expect_max_z"] <= sqi.MAX_Z, r
    assert sqi.holds(r)


@pytest.mark.parametrize("case", sqi.BROKEN, ids=lambda c: c.name)
def test_broken_parametrisation_fails_both_checks(identity_results, case):
    r = identity_results[case.name]
    assert r["per_batch_rel"] > 1e-2, r
    assert r["expect_max_z"] > 4 * sqi.MAX_Z, r
    assert not sqi.holds(r)


@pytest.mark.parametrize("case", sqi.CASES, ids=lambda c: c.name)
def test_standard_estimator_differs_per_sample(identity_results, case):
    """Per sample the standard estimator is not the soft-Q gradient (else (b) would be vacuous)."""
    assert identity_results[case.name]["sample_rel"] > 1e-2


# ---- trainers -----------------------------------------------------------------------------------

@pytest.mark.parametrize("config_cls, field, value", [
    (a2c.A2CConfig, "num_envs", 0), (a2c.A2CConfig, "tau", -0.1), (a2c.A2CConfig, "n_step", 0),
    (a2c.A2CConfig, "gamma", 1.5), (a2c.A2CConfig, "kl_estimate", "bogus"),
    (a2c.A2CConfig, "env", "NoSuchEnv-v0"), (softq.SoftQConfig, "parametrisation", "bogus"),
    (softq.SoftQConfig, "loss_scale", 0.0), (softq.SoftQConfig, "activation", "nope"),
    (softq.SoftQConfig, "num_evals", 1)])
def test_config_validation_names_the_bad_value(config_cls, field, value):
    with pytest.raises(ValueError, match=str(value) if field != "env" else "NoSuchEnv"):
        config_cls(**{field: value}).validate()


def test_continuous_env_rejected_before_compile():
    with pytest.raises(ValueError, match="discrete"):
        a2c.make_train(a2c.A2CConfig(env="Pendulum-v1"))


TINY = dict(env="CartPole-v1", total_steps=2 * 4 * 5 * 2, num_envs=4, unroll_length=5,
            policy_layers=(8,), value_layers=(8,), num_evals=3, eval_envs=2)


@pytest.mark.parametrize("make, config", [
    (a2c.make_train, a2c.A2CConfig(**TINY, n_step=3)),
    (softq.make_train, softq.SoftQConfig(**TINY, parametrisation="direct"))],
    ids=["a2c", "softq-direct"])
def test_trainer_vmaps_over_seeds(make, config):
    """Seeds as a vmapped axis (the "policy" soft-Q trainer runs vmapped in test_experiment_quick)."""
    trainer = make(config)
    state, out = jax.jit(jax.vmap(trainer))(jax.random.split(jax.random.PRNGKey(0), 2))
    assert out["eval"]["eval_return"].shape == (2, config.num_evals)
    assert out["train"]["loss"].shape == (2, trainer.num_updates)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(out))
    assert state.update.tolist() == [trainer.num_updates] * 2


def test_softq_policy_is_the_actor_critic_softmax():
    """With Q = V + tau log pi the Boltzmann policy the soft-Q trainer acts with is softmax(logits)."""
    config = softq.SoftQConfig(**TINY)
    env = config.make_env()
    net, q_fn = softq.make_q_fn(config, env)
    params = net.init(jax.random.PRNGKey(0), jnp.zeros((1,) + env.obs_shape))
    obs = jax.random.normal(jax.random.PRNGKey(1), (7,) + env.obs_shape)
    hp = config.hparams()
    _, log_pi = losses.boltzmann(q_fn(params, obs, hp), hp.tau)
    np.testing.assert_allclose(log_pi, jax.nn.log_softmax(net.apply(params, obs)[0]), atol=1e-4)


# ---- experiment and notebook --------------------------------------------------------------------

def test_experiment_quick(tmp_path):
    import json

    from experiments import softq_equivalence

    summary = softq_equivalence.main(["--out", str(tmp_path), "--quick", "--no-progress"])
    assert summary["max_rel_grad_error"] <= sqi.PER_BATCH_REL_TOL
    assert summary["identity_holds_all"]
    saved = json.loads((tmp_path / "summary.json").read_text())
    for key in ("env", "env_steps", "wall_s", "final_return", "params_digest", "max_rel_grad_error"):
        assert key in saved
    game = saved["env"][0]
    assert set(saved["final_return"][game]) == {"softq", "a2c"}
    for name in ("metrics.csv", "grad_check.csv", f"{game}.png", "curves_eval.png", "curves_train.png"):
        assert (tmp_path / name).exists(), name


def test_notebook_executes_in_quick_mode():
    from nbrun import execute

    text = execute("softq_equivalence.ipynb", timeout=300)
    assert "identity holds" in text
