"""Evolution Strategies: estimator pieces, sharding, robustness, learning, experiments."""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlx import population, runner
from rlx.envs import normalize as obs_norm
from rlx.envs.base import ActionSpec, Env
from rlx.es import (ESConfig, Evaluator, OpenAIES, antithetic_members, centered_ranks, make_train,
                    mean_vector, noise, weighted_noise_sum)

CARTPOLE = ESConfig(env="CartPole-v1", population_size=32, sigma=0.05, lr=0.05, hidden_layers=(16,),
                    generations=4, num_evals=3, eval_episodes=2)


def run(config: ESConfig, out=None, **kw) -> runner.RunResult:
    trainer = make_train(config)
    return runner.run(trainer, jax.random.PRNGKey(0)[None], out, progress=False, **kw)


def search_mean(config: ESConfig, result: runner.RunResult) -> np.ndarray:
    """The flat mean parameters [seeds, D] of a run of `config` (read through its strategy)."""
    return np.asarray(mean_vector(make_train(config), result.state))


# ---- estimator pieces ----------------------------------------------------------------------

def test_centered_ranks_hand_worked():
    np.testing.assert_allclose(centered_ranks(jnp.array([3.0, 1.0, 2.0])), [0.5, -0.5, 0.0])
    # ties share their average rank: ranks (0, 1.5, 1.5, 3) / 3 - 0.5
    np.testing.assert_allclose(centered_ranks(jnp.array([0.0, 5.0, 5.0, 9.0])),
                               [-0.5, 0.0, 0.0, 0.5], atol=1e-7)
    u = centered_ranks(jnp.array([1.0, 2.0, 3.0, 4.0]))
    assert float(u.sum()) == pytest.approx(0.0, abs=1e-6) and float(u.max()) == 0.5


def test_nonfinite_fitness_ranks_last():
    x = jnp.array([1.0, jnp.nan, 3.0, jnp.inf, -jnp.inf, 2.0])
    u = np.asarray(centered_ranks(x))
    bad, good = u[[1, 3, 4]], u[[0, 2, 5]]
    assert np.all(np.isfinite(u)) and bad.max() < good.min()
    # bad ones share ranks 0, 1, 2 -> 1/5 - 0.5; good ones get ranks 3, 5, 4
    np.testing.assert_allclose(bad, [-0.3] * 3, atol=1e-6)
    np.testing.assert_allclose(good, [0.1, 0.5, 0.3], atol=1e-6)


def test_antithetic_noise_pairs_mirror_each_other():
    m = antithetic_members(jax.random.PRNGKey(0), 6)
    np.testing.assert_array_equal(m.sign, [1, -1, 1, -1, 1, -1])
    k = np.asarray(jax.random.key_data(m.key) if jnp.issubdtype(m.key.dtype, jax.dtypes.prng_key)
                   else m.key)
    np.testing.assert_array_equal(k[0::2], k[1::2])
    assert len({tuple(r) for r in k[0::2]}) == 3
    es = OpenAIES(6, jnp.zeros(5))
    state = es.init(None, jnp.arange(5.0), es.default_params)
    theta = es.population_matrix(m, state, es.default_params)
    np.testing.assert_allclose(theta[0::2] + theta[1::2], 2 * np.arange(5.0)[None].repeat(3, 0),
                               atol=1e-6)
    # decode regenerates the same rows without the matrix
    rows = jax.vmap(es.decode, in_axes=(None, 0))(es.context(state, es.default_params), m)
    np.testing.assert_allclose(rows, theta, atol=1e-6)
    with pytest.raises(ValueError, match="even"):
        antithetic_members(jax.random.PRNGKey(0), 5)


def test_gradient_estimate_hand_worked_on_a_quadratic():
    """f(theta) = |theta|^2 minimised; g = 1/(N sigma) sum_i u_i s_i eps_i, u = ranks of -f."""
    d, n, sigma = 3, 4, 0.1
    mu = jnp.array([1.0, -2.0, 0.5])
    es = OpenAIES(n, jnp.zeros(d), sigma=sigma, weight_decay=0.0)
    hp = es.default_params
    state = es.init(None, mu, hp)
    members = es.ask(jax.random.PRNGKey(3), state, hp)[0]
    eps = np.stack([np.asarray(noise(k, d)) for k in members.key])
    theta = np.asarray(mu) + sigma * np.asarray(members.sign)[:, None] * eps
    f = (theta**2).sum(1)
    order = np.argsort(-f)  # utility: lowest f gets rank N-1
    ranks = np.empty(n)
    ranks[order] = np.arange(n)
    u = ranks / (n - 1) - 0.5
    g_hand = (u * np.asarray(members.sign)) @ eps / (n * sigma)
    g = es.gradient(members, jnp.asarray(f), state, hp)
    np.testing.assert_allclose(g, g_hand, rtol=1e-5, atol=1e-6)
    # with many members the estimate points down the true gradient 2 mu
    big = OpenAIES(2000, jnp.zeros(d), sigma=sigma, chunk_size=500)
    st = big.init(None, mu, hp)
    mem = big.ask(jax.random.PRNGKey(0), st, hp)[0]
    fit = (big.population_matrix(mem, st, hp) ** 2).sum(1)
    g = np.asarray(big.gradient(mem, fit, st, hp))
    cos = g @ (-2 * np.asarray(mu)) / np.linalg.norm(g) / np.linalg.norm(2 * mu)
    assert cos > 0.95
    # chunked regeneration equals one big sum
    w = jnp.linspace(-1, 1, 2000)
    np.testing.assert_allclose(weighted_noise_sum(w, mem, d, 250), weighted_noise_sum(w, mem, d),
                               rtol=1e-4, atol=1e-4)


def test_tell_descends_the_quadratic_with_weight_decay():
    es = OpenAIES(64, jnp.zeros(4), sigma=0.1, weight_decay=0.01)
    hp = es.default_params
    state = es.init(None, jnp.full(4, 3.0), hp)

    def generation(state, key):
        pop, state = es.ask(key, state, hp)
        fit = (es.population_matrix(pop, state, hp) ** 2).sum(1)
        return es.tell(None, pop, fit, state, hp)[0], None

    state, _ = jax.lax.scan(generation, state, jax.random.split(jax.random.PRNGKey(0), 60))
    assert float(jnp.abs(state.mean).max()) < 2.6


# ---- sharding -------------------------------------------------------------------------------

def test_same_result_on_one_and_two_devices():
    assert len(jax.devices()) >= 2
    cfg = dataclasses.replace(CARTPOLE, generations=3, members_per_chunk=8)
    one = run(cfg, devices=1)
    two = run(cfg, devices=2)
    assert one.devices == 1 and two.devices == 2
    np.testing.assert_array_equal(search_mean(cfg, one), search_mean(cfg, two))
    np.testing.assert_array_equal(one.state.obs_stats.m2, two.state.obs_stats.m2)
    np.testing.assert_array_equal(one.train["return_mean"], two.train["return_mean"])


def test_evaluator_keeps_no_trajectories():
    """Compiled temp memory does not grow with the episode length (returns, not trajectories)."""
    from rlx.es.trainer import build

    def temp_bytes(length):
        cfg = dataclasses.replace(CARTPOLE, population_size=64, episode_length=length)
        env, net, strategy, ev, mesh = build(cfg, population.make_mesh(2))
        hp = cfg.hparams()
        ss = strategy.init(jax.random.PRNGKey(0), net.init(jax.random.PRNGKey(0), jnp.zeros((1, 4))), hp)

        def gen(ss, key):
            pop = strategy.ask(key, ss, hp)
            out = ev(strategy.decode, strategy.context(ss, hp), pop, obs_norm.init((4,)), key)
            return strategy.tell(key, pop, out.returns, ss, hp)[0]

        mem = jax.jit(gen).lower(ss, jax.random.PRNGKey(1)).compile().memory_analysis()
        return mem.temp_size_in_bytes

    assert temp_bytes(2000) <= temp_bytes(20) * 1.05 + 1024


def test_evosax_strategies_drive_the_same_evaluator():
    for name in ("Open_ES", "CMA_ES", "SNES"):
        res = run(dataclasses.replace(CARTPOLE, strategy=name, generations=2, num_evals=2))
        assert np.isfinite(res.train["return_mean"]).all(), name
        assert np.isfinite(res.eval["eval_return"]).all(), name


# ---- robustness -----------------------------------------------------------------------------

class PoisonEnv(Env):
    """1-D toy: reward = action; actions above 0.5 give a NaN reward and observation."""

    name = "poison"
    obs_shape = (2,)
    action_spec = ActionSpec(discrete=False, size=1)
    max_episode_steps = 5

    def _reset(self, key):
        return jnp.zeros(()), jnp.zeros(2, jnp.float32)

    def _step(self, key, inner, action, time):
        a = action[0]
        bad = a > 0.0
        r = jnp.where(bad, jnp.nan, a)
        obs = jnp.where(bad, jnp.nan, jnp.stack([a, 1.0]))
        return inner, obs, r, jnp.zeros((), bool), obs, time >= self.max_episode_steps


def test_nan_members_rank_last_and_are_reported():
    cfg = ESConfig(env="CartPole-v1", population_size=16, sigma=1.0, hidden_layers=(4,),
                   generations=2, num_evals=2, eval_episodes=1)
    trainer = make_train(cfg, env=PoisonEnv())
    res = runner.run(trainer, jax.random.PRNGKey(0)[None], None, progress=False)
    assert res.train["nonfinite_members"].sum() > 0
    assert np.isfinite(res.train["return_mean"]).all()
    assert np.isfinite(np.asarray(mean_vector(trainer, res.state))).all()
    stats = res.state.obs_stats
    assert np.isfinite(np.asarray(stats.mean)).all() and np.isfinite(np.asarray(stats.m2)).all()
    assert 0 < float(stats.count[0]) < 2 * 16 * 5  # poisoned members left out


@pytest.mark.parametrize("change, match", [
    (dict(population_size=7), "even"),
    (dict(sigma=0.0), "sigma"),
    (dict(strategy="nope"), "unknown ES strategy"),
    (dict(env="nope"), "unknown environment"),
    (dict(members_per_chunk=5), "members_per_chunk=5"),
    (dict(strategy="CMA_ES", population_size=7), "not divisible by the 2 devices"),
])
def test_bad_config_raises_before_compile(change, match):
    """Bad values fail in make_train or, for the mesh, where the runner places the trainer on
    2 devices (`runner.place`), both before anything compiles."""
    with pytest.raises(ValueError, match=match):
        runner.place(make_train(dataclasses.replace(CARTPOLE, **change)), 1, 2)


def test_checkpoint_resume_gives_same_params(tmp_path):
    cfg = dataclasses.replace(CARTPOLE, generations=4, num_evals=5)
    full = run(cfg, tmp_path / "full")
    part = run(cfg, tmp_path / "killed", stop_after_chunks=2)
    assert part.resumed_from is None
    resumed = run(cfg, tmp_path / "killed")
    assert resumed.resumed_from == 2
    assert runner.params_digest(search_mean(cfg, resumed)) == runner.params_digest(search_mean(cfg, full))


# ---- learning -------------------------------------------------------------------------------

def test_openai_es_solves_cartpole():
    cfg = dataclasses.replace(CARTPOLE, population_size=64, generations=30, num_evals=4,
                              eval_episodes=8)
    res = run(cfg)
    assert float(res.eval["eval_return"][-1].mean()) >= 475.0


# ---- experiments and notebook ---------------------------------------------------------------

def _summary(out):
    with open(os.path.join(out, "summary.json")) as f:
        s = json.load(f)
    for key in ("env", "env_steps", "wall_s", "final_return", "params_digest"):
        assert key in s, key
    assert os.path.exists(os.path.join(out, "metrics.csv"))
    return s


def test_experiment_es_quick(tmp_path):
    from experiments import es

    es.main(["--out", str(tmp_path), "--quick", "--no-progress"])
    s = _summary(tmp_path)
    assert s["env"] == "reacher" and s["devices"] == len(jax.devices())
    assert (tmp_path / "learning_curve_steps.png").exists()
    assert (tmp_path / "learning_curve_generations.png").exists()


def test_experiment_es_scaling_quick(tmp_path):
    from experiments import es_scaling

    es_scaling.main(["--out", str(tmp_path), "--quick"])
    s = _summary(tmp_path)
    assert [r["devices"] for r in s["scaling"]] == [1, 2]
    assert (tmp_path / "scaling.png").exists()


def test_experiment_es_vs_ppo_quick(tmp_path):
    from experiments import es_vs_ppo

    es_vs_ppo.main(["--out", str(tmp_path), "--quick", "--no-progress"])
    s = _summary(tmp_path)
    assert "ppo_final_return" in s and "es_steps_to_ppo_return" in s
    assert (tmp_path / "es_vs_ppo.png").exists()


def test_bench_es_prints_one_json_line(capsys):
    from experiments import bench_es

    bench_es.main(["--env", "CartPole-v1", "--population", "16", "--episode-length", "50",
                   "--generations", "1", "--hidden", "8"])
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("{")]
    assert len(lines) == 1
    res = json.loads(lines[0])
    for key in ("env_steps_per_s", "generations_per_s", "compile_s", "peak_rss_mb",
                "env_only_steps_per_s"):
        assert res[key] > 0, key


def test_notebook_runs_in_quick_mode():
    pytest.importorskip("nbclient")
    from nbrun import execute

    text = execute("es_quickstart.ipynb", timeout=300)
    assert "return" in text.lower()
