"""PPO end to end: validation, learning, populations, sharding."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlx import population, runner
from rlx.algos import ppo

# PureJaxRL's CartPole config (purejaxrl/ppo.py): 4 envs x 128 steps, lr 2.5e-4 annealed, 500k steps.
CARTPOLE = ppo.PPOConfig(env="CartPole-v1", **{**ppo.PRESETS["purejaxrl"], "num_evals": 3})
TINY = dataclasses.replace(CARTPOLE, total_steps=2048, num_envs=4, unroll_length=64,
                           num_minibatches=2, update_epochs=1, policy_layers=(8,),
                           value_layers=(8,), eval_envs=2)


@pytest.mark.parametrize("change, match", [
    (dict(num_minibatches=3), "not divisible by num_minibatches"),
    (dict(env="CartPol-v1"), "unknown environment"),
    (dict(objective="trpo"), "unknown PPO objective"),
    (dict(gamma=1.5), "gamma"),
    (dict(num_evals=1), "num_evals"),
    (dict(lr=0.0), "lr"),
    (dict(head="tanh_gaussian"), "needs continuous actions"),
])
def test_config_validation_fails_before_compile(change, match):
    with pytest.raises(ValueError, match=match):
        ppo.make_train(dataclasses.replace(TINY, **change))


def test_population_not_divisible_by_devices():
    with pytest.raises(ValueError, match="not divisible by the 2 devices"):
        runner.choose_mesh(3, devices=2)


def test_objective_variants_are_values():
    hp = ppo.objective_hparams("none")
    assert hp["clip_eps"] == float("inf") and hp["kl_beta"] == 0.0
    hp = ppo.objective_hparams("kl_adaptive", kl_beta=1.0, kl_target=0.003)
    assert hp == dict(clip_eps=float("inf"), kl_beta=1.0, kl_target=0.003)


def test_presets_valid_and_chosen_by_env():
    assert ppo.preset_for("CartPole-v1") == "purejaxrl" and ppo.preset_for("Acrobot-v1") == "purejaxrl"
    assert ppo.preset_for("Breakout-MinAtar") == "minatar" and ppo.preset_for("reacher") == "default"
    assert ppo.preset_for("Catch-bsuite") == "classic"
    for name, kw in ppo.PRESETS.items():
        env = {"minatar": "Breakout-MinAtar", "purejaxrl": "CartPole-v1"}.get(name, "reacher")
        ppo.PPOConfig(env=env, **kw).validate()


def cartpole_finals(config: ppo.PPOConfig, seeds: int = 8) -> np.ndarray:
    """Final deterministic eval return of each of `seeds` agents (one program over 2 devices)."""
    trainer = ppo.make_train(config)
    keys = jax.random.split(jax.random.PRNGKey(42), seeds)
    hp = runner.broadcast_hparams(trainer.default_hparams, seeds)
    _, metrics = population.pmap_population(trainer, population.make_mesh(2))(keys, hp)
    return np.asarray(metrics["eval"]["eval_return"][:, -1])


def solves_cartpole(final: np.ndarray) -> bool:
    """At least 7 of 8 seeds reach CartPole's 475 and the median seed balances all 500 steps.

    Statistical on purpose: the bits differ across CPUs and XLA builds, so one seed may
    land elsewhere; a learner that only sometimes learns, or learns slowly, fails.
    """
    return bool((final >= 475).sum() >= 7 * len(final) // 8 and np.median(final) == 500)


def test_cartpole_solves():
    """PureJaxRL's config, 500k steps, 8 seeds: every seed reaches 500 by 250k steps here
    (`experiments.ppo --env CartPole-v1 --seeds 16`: 16 of 16), so one stray seed is margin."""
    final = cartpole_finals(CARTPOLE)
    assert solves_cartpole(final), final


def test_vmap_over_seeds_and_hparams_matches_single_runs():
    trainer = ppo.make_train(TINY)
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    hp = trainer.default_hparams
    hps = jax.tree.map(lambda a, b: jnp.stack([a, b]), hp, hp.replace(lr=jnp.float32(1e-3)))
    states, _ = jax.jit(jax.vmap(trainer))(keys, hps)
    single, _ = jax.jit(trainer)(keys[1], hp.replace(lr=jnp.float32(1e-3)))
    a = jax.tree.leaves(jax.tree.map(lambda x: x[1], states.params))
    b = jax.tree.leaves(single.params)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)
    # different learning rates give different agents
    p0 = jax.tree.leaves(jax.tree.map(lambda x: x[0], states.params))
    assert any(not np.allclose(x, y) for x, y in zip(p0, a))


def test_population_sharded_over_two_devices_matches_one():
    assert len(jax.devices()) >= 2
    trainer = ppo.make_train(TINY)
    keys = jax.random.split(jax.random.PRNGKey(1), 4)
    hp = runner.broadcast_hparams(trainer.default_hparams, 4)
    one = population.pmap_population(trainer, population.make_mesh(1))(keys, hp)
    two = population.pmap_population(trainer, population.make_mesh(2))(keys, hp)
    assert len(two[0].params["params"]["value"]["Dense_0"]["kernel"].sharding.device_set) == 2
    for x, y in zip(jax.tree.leaves(one[0].params), jax.tree.leaves(two[0].params)):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)


def test_data_parallel_agent_equals_itself_across_members():
    """One agent's envs split over a named axis: the members stay identical."""
    cfg = dataclasses.replace(TINY, axis_name="dp", num_envs=2)
    trainer = ppo.make_train(cfg)
    key = jax.random.PRNGKey(3)
    states, m = jax.jit(jax.vmap(trainer, axis_name="dp"))(jnp.stack([key, key]))
    for leaf in jax.tree.leaves(states.params):
        np.testing.assert_allclose(leaf[0], leaf[1], rtol=1e-6)
    assert not np.allclose(states.env_state.obs[0], states.env_state.obs[1])


def test_continuous_heads_run():
    for head in ("gaussian", "tanh_gaussian"):
        cfg = dataclasses.replace(TINY, env="Pendulum-v1", head=head, normalize_observations=True)
        state, m = jax.jit(ppo.make_train(cfg))(jax.random.PRNGKey(0))
        assert np.isfinite(np.asarray(m["train"]["policy_loss"])).all()
