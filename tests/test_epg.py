"""EPG: learned loss network, inner loop, sharded ES outer loop, tasks, save/load, experiments."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from rlx import population, runner
from rlx.epg import (EPGConfig, EPGLossNet, Inner, TaskFamily, load_loss, loss_params, make_train,
                     ppo_weight, save_loss, train_ppo, train_with_loss)
from rlx.es import mean_vector
from rlx.epg.loss_net import conv_output_length, reduce_loss
from rlx.envs.tasks import PointGoalEnv

ROOT = Path(__file__).resolve().parents[1]
TINY = EPGConfig(buffer_size=32, rollout_length=8, inner_updates=4, num_envs=2,
                 conv=((4, 2, 4), (3, 2, 4)), dense=(8,), policy_layers=(8,),
                 population_size=4, tasks_per_member=2, generations=2, num_evals=2, eval_tasks=2,
                 eval_envs=2)


# ---- loss network ---------------------------------------------------------------------------

def test_loss_net_shapes_and_reduction():
    assert conv_output_length(512, ((6, 5, 16), (4, 2, 32))) == 50  # openai/EPG sizes: 512 -> 102 -> 50
    net = EPGLossNet(((6, 5, 16), (4, 2, 32)), (32, 16))
    x = jax.random.normal(jax.random.PRNGKey(0), (512, 14))
    params = net.init(jax.random.PRNGKey(1), x)
    assert net.apply(params, x).shape == (512,)
    assert params["params"]["conv0"]["kernel"].shape == (6, 14, 16)
    lp = jax.random.normal(jax.random.PRNGKey(2), (512,))
    for form in ("free", "pg"):
        assert reduce_loss(net, params, x, lp, form).shape == ()
    # pg form: d L / d log_prob = f_t / T (the learned weights), x is stop-gradient'ed
    g = jax.grad(lambda l: reduce_loss(net, params, x, l, "pg"))(lp)
    np.testing.assert_allclose(g, net.apply(params, x) / 512, rtol=1e-5, atol=1e-8)
    mask = jnp.zeros(512).at[:10].set(1.0)
    np.testing.assert_allclose(reduce_loss(net, params, x, lp, "free", mask),
                               net.apply(params, x)[:10].mean(), rtol=1e-5)


def test_policy_gradient_flows_through_the_learned_loss():
    inner = Inner(TINY)
    env = inner.family.make_env(jnp.array([1.0, 0.0]))
    state = inner.init(env, jax.random.PRNGKey(0))
    phi = inner.init_loss_params(jax.random.PRNGKey(1))
    g = jax.grad(inner.learned_loss, argnums=1)(phi, state.params, state.extra.buffer)
    norms = [float(jnp.linalg.norm(x)) for x in jax.tree.leaves(g)]
    assert all(np.isfinite(norms)) and max(norms) > 0
    assert state.extra.buffer.obs.shape == (2, 32, 4) and state.extra.buffer.action.shape == (2, 32, 2)


@pytest.mark.parametrize("kernel,stride,length", [(6, 5, 50), (4, 2, 9), (3, 4, 14), (5, 1, 12),
                                                  (7, 3, 7)])
def test_strided_conv_equals_flax_conv(kernel, stride, length):
    import flax.linen as nn

    from rlx.epg.loss_net import Conv1D

    x = jax.random.normal(jax.random.PRNGKey(0), (3, length, 7))
    m = Conv1D(5, kernel, stride)
    p = m.init(jax.random.PRNGKey(1), x)
    ref_net = nn.Conv(5, (kernel,), strides=(stride,), padding="VALID")
    np.testing.assert_allclose(m.apply(p, x), ref_net.apply(p, x), atol=1e-5)
    gx = jax.grad(lambda z: jnp.sin(m.apply(p, z)).sum())(x)
    gr = jax.grad(lambda z: jnp.sin(ref_net.apply(p, z)).sum())(x)
    np.testing.assert_allclose(gx, gr, atol=1e-5)


# ---- inner loop -----------------------------------------------------------------------------

def test_rtg_feature_is_the_normalised_discounted_return_to_go():
    from rlx.epg.inner import Buffer

    inner = Inner(EPGConfig(**{**TINY.__dict__, "rtg_feature": True, "gamma": 0.5}))
    one = jnp.ones((1, 4))
    ends = jnp.array([[False, True, False, False]])  # an episode ends at step 1
    buf = Buffer(obs=jnp.zeros((1, 4, inner.obs_size)), action=jnp.zeros((1, 4, 2)), reward=one,
                 terminated=ends, done=ends, log_prob=jnp.zeros((1, 4)))
    # returns-to-go 1 + 0.5, 1, 1 + 0.5, 1 (no bootstrap past the buffer): mean 1.25, std 0.25
    np.testing.assert_allclose(inner.normalized_returns(buf), [[1.0, -1.0, 1.0, -1.0]], atol=1e-5)
    x, _ = inner.features(inner.init_policy_params(jax.random.PRNGKey(0)), buf)
    assert x.shape[-1] == inner.feature_size == Inner(TINY).feature_size + 1
    np.testing.assert_allclose(x[..., -1], [[1.0, -1.0, 1.0, -1.0]], atol=1e-5)


@pytest.mark.parametrize("mix, alpha", [("add", 0.3), ("convex", 0.3), ("convex", 1.0)])
def test_total_loss_mixes_the_ppo_term(mix, alpha):
    config = EPGConfig(**{**TINY.__dict__, "ppo_mix": mix})
    inner = Inner(config)
    env = inner.family.make_env(jnp.array([1.0, 0.0]))
    state = inner.init(env, jax.random.PRNGKey(0))
    phi = inner.init_loss_params(jax.random.PRNGKey(1))
    learned = inner.learned_loss(phi, state.params, state.extra.buffer)
    ppo = inner.ppo_loss(state.params, state.extra.buffer)
    weight = 1.0 - alpha if mix == "convex" else 1.0
    total = inner.total_loss(state.params, phi, state.extra.buffer, jnp.float32(alpha))
    np.testing.assert_allclose(total, weight * learned + alpha * ppo, rtol=1e-5, atol=1e-6)
    if mix == "convex" and alpha == 1.0:  # openai/EPG at generation 0: PPO alone drives the agent
        g = jax.grad(inner.total_loss)(state.params, phi, state.extra.buffer, jnp.float32(alpha))
        g_ppo = jax.grad(inner.ppo_loss)(state.params, state.extra.buffer)
        for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ppo)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_inner_adam_steps_decrease_the_learned_loss():
    config = EPGConfig(**{**TINY.__dict__, "sgd_steps": 20, "inner_lr": 1e-2, "ppo_coef": 0.0})
    inner = Inner(config)
    env = inner.family.make_env(jnp.array([1.0, 0.0]))
    state = inner.init(env, jax.random.PRNGKey(0))
    phi = inner.init_loss_params(jax.random.PRNGKey(1))
    _, m = jax.jit(lambda s: inner.update(env, s, phi, 0.0))(state)
    assert float(m["loss_after"]) < float(m["loss"])


def test_lifetime_is_jittable_and_vmappable_over_tasks_and_losses():
    inner = Inner(TINY)
    tasks = inner.family.sample(jax.random.PRNGKey(0), 2, "right")
    phis = jax.vmap(inner.init_loss_params)(jax.random.split(jax.random.PRNGKey(1), 2))
    keys = jax.random.split(jax.random.PRNGKey(2), 2)
    f = jax.jit(jax.vmap(lambda p, t, k: inner.lifetime(p, t, k, 0.5)))
    ret, m = f(phis, tasks, keys)
    assert ret.shape == (2,) and m["loss"].shape == (2, TINY.inner_updates)
    assert np.all(np.isfinite(np.asarray(ret)))
    assert not np.allclose(ret[0], ret[1])  # different losses and tasks, different agents


# ---- tasks ----------------------------------------------------------------------------------

def test_task_regions_and_point_goal_dynamics():
    fam = TaskFamily()
    right = np.asarray(fam.sample(jax.random.PRNGKey(0), 256, "right"))
    left = np.asarray(fam.sample(jax.random.PRNGKey(0), 256, "left"))
    assert right[:, 0].min() >= -1e-6 and left[:, 0].max() <= 1e-6
    r = np.linalg.norm(right, axis=1)
    assert r.min() >= 0.5 - 1e-6 and r.max() <= 1.5 + 1e-6
    env = PointGoalEnv(jnp.array([1.0, 0.0]), episode_length=3, start_noise=0.0)
    s = env.reset(jax.random.PRNGKey(0))
    s, out = env.step(s, jnp.array([1.0, 0.0]))
    # vel = 1, pos = 0.1: reward = -|0.1 - 1| - 0.01 * 1
    np.testing.assert_allclose(out.reward, -0.9 - 0.01, rtol=1e-6)
    s, out = env.step(s, jnp.array([0.0, 0.0]))
    s, out = env.step(s, jnp.array([0.0, 0.0]))
    assert bool(out.truncated) and int(s.time) == 0 and float(jnp.abs(s.obs).sum()) == 0.0
    with pytest.raises(ValueError, match="region"):
        fam.sample(jax.random.PRNGKey(0), 2, "up")


def test_interleaved_octant_regions_cover_their_sectors_only():
    fam = TaskFamily()
    counts = {}
    for region in ("even_octants", "odd_octants"):
        g = np.asarray(fam.sample(jax.random.PRNGKey(1), 4000, region))
        angle = np.mod(np.arctan2(g[:, 1], g[:, 0]), 2 * np.pi)
        counts[region] = np.bincount((angle // (np.pi / 4)).astype(int) % 8, minlength=8)
        r = np.linalg.norm(g, axis=1)
        assert r.min() >= 0.5 - 1e-6 and r.max() <= 1.5 + 1e-6
    assert counts["even_octants"][1::2].sum() == 0 and counts["odd_octants"][0::2].sum() == 0
    for c in (counts["even_octants"][0::2], counts["odd_octants"][1::2]):  # ~1000 per sector
        assert c.min() > 850 and c.max() < 1150


# ---- outer loop -----------------------------------------------------------------------------

def test_ppo_weight_anneals_to_zero():
    c = EPGConfig(generations=80, ppo_anneal_frac=0.125, ppo_coef=1.0)
    w = [float(ppo_weight(c, jnp.asarray(g))) for g in (0, 5, 10, 40)]
    assert w == pytest.approx([1.0, 0.5, 0.0, 0.0])
    assert float(ppo_weight(EPGConfig(ppo_coef=0.0), jnp.asarray(0))) == 0.0


def test_es_generation_sharded_on_two_devices_equals_one_device():
    assert len(jax.devices()) >= 2
    results = []
    config = EPGConfig(**{**TINY.__dict__, "inner_updates": 2})
    for n in (1, 2):
        trainer = make_train(config, mesh=population.make_mesh(n))
        state = jax.jit(trainer.init)(jax.random.PRNGKey(0), trainer.default_hparams)
        state, m = jax.jit(trainer.update)(state)
        results.append((np.asarray(mean_vector(trainer, state)), float(m["return_mean"])))
        assert m["env_steps"] == 4 * 2 * config.inner_env_steps
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-5, atol=1e-6)
    assert results[0][1] == pytest.approx(results[1][1], rel=1e-5)


@pytest.mark.parametrize("strategy", ["SNES", "Open_ES"])
def test_evosax_strategy_drives_the_sharded_outer_loop(strategy):
    config = EPGConfig(**{**TINY.__dict__, "inner_updates": 2, "strategy": strategy})
    trainer = make_train(config, mesh=population.make_mesh(2))
    state = jax.jit(trainer.init)(jax.random.PRNGKey(0), trainer.default_hparams)
    update = jax.jit(trainer.update)
    for _ in range(2):
        state, m = update(state)
        assert np.isfinite(float(m["return_mean"])) and float(m["nonfinite_members"]) == 0
    assert int(state.generation) == 2
    phi = loss_params(config, state)  # the strategy's mean, as the loss's parameter pytree
    template = Inner(config).init_loss_params(jax.random.PRNGKey(0))
    assert jax.tree.structure(phi) == jax.tree.structure(template)
    np.testing.assert_array_equal(ravel_pytree(phi)[0], mean_vector(trainer, state))


@pytest.mark.parametrize("kw, match", [
    (dict(population_size=5), "even"),
    (dict(family="hopper"), "family"),
    (dict(train_region="north"), "train_region"),
    (dict(buffer_size=8, rollout_length=4), "receptive field"),
    (dict(rollout_length=128), "rollout_length"),
    (dict(loss_form="magic"), "loss_form"),
    (dict(sigma=0.0), "sigma"),
    (dict(conv=((3, 0, 4),)), "kernel, stride"),
    (dict(r_min=2.0, r_max=1.0), "r_min"),
    (dict(num_evals=1), "num_evals"),
    (dict(ppo_mix="blend"), "ppo_mix"),
    (dict(ppo_mix="convex", ppo_coef=2.0), "ppo_coef <= 1"),
    (dict(strategy="nope"), "unknown ES strategy"),
    (dict(strategy="SNES", strategy_kwargs=(("bogus", 1),)), "no argument 'bogus'"),
    (dict(strategy="openai_es", strategy_kwargs=(("optimizer", None),)), "takes no strategy_kwargs"),
    (dict(strategy="Open_ES", population_size=5), "even"),
])
def test_validation_errors_before_compile(kw, match):
    with pytest.raises(ValueError, match=match):
        make_train(EPGConfig(**kw))


def test_more_devices_than_exist_is_a_value_error():
    with pytest.raises(ValueError, match="devices"):
        runner.place(make_train(EPGConfig()), 1, len(jax.devices()) + 1)


# ---- save / load, experiments, notebook ---------------------------------------------------------

def test_save_load_round_trip(tmp_path):
    inner = Inner(TINY)
    phi = inner.init_loss_params(jax.random.PRNGKey(3))
    save_loss(tmp_path / "loss", phi, TINY)
    phi2, config = load_loss(tmp_path / "loss")
    assert config == TINY
    for a, b in zip(jax.tree.leaves(phi), jax.tree.leaves(phi2)):
        np.testing.assert_array_equal(a, b)


def test_experiments_quick_and_notebook(tmp_path):
    """experiments.epg --quick -> its saved loss -> epg_generalization --quick -> the notebook."""
    from experiments import epg, epg_generalization

    s = epg.main(["--out", str(tmp_path / "epg"), "--quick", "--no-progress"])
    for f in ("summary.json", "metrics.csv", "fitness.png", "eval_returns.png", "loss/config.json"):
        assert (tmp_path / "epg" / f).exists(), f
    assert np.isfinite(s["final_return"]) and s["generations"] >= 1 and s["env_steps"] > 0
    assert {"env", "env_steps", "wall_s", "final_return", "params_digest"} <= set(s)
    assert (tmp_path / "epg" / "checkpoints").is_dir()  # rlx.runner checkpoints (resumable)

    g = epg_generalization.main(["--out", str(tmp_path / "gen"), "--quick",
                                 "--loss", str(tmp_path / "epg" / "loss")])
    saved = json.loads((tmp_path / "gen" / "summary.json").read_text())
    assert saved["params_digest"] == s["params_digest"]
    for region in ("in_distribution", "out_of_distribution"):
        r = g["regions"][region]
        assert np.isfinite(r["epg_final_return"]) and np.isfinite(r["ppo_final_return"])
        assert (tmp_path / "gen" / f"{region}.png").exists()
    assert (tmp_path / "gen" / "metrics.csv").read_text().count("\n") > 4

    from nbrun import execute

    text = execute("epg.ipynb", {"RLX_EPG_LOSS": str(tmp_path / "epg" / "loss")}, timeout=600)
    assert "loaded" in text and "EPG final" in text
