"""PPO end to end: validation, learning, populations, sharding."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlx import population, runner
from rlx.algos import ppo

# PureJaxRL's CartPole config with 32 envs (4 in PureJaxRL), 8 minibatches and lr 1e-3.
CARTPOLE = ppo.PPOConfig(env="CartPole-v1", total_steps=1_000_000, num_envs=32, unroll_length=128,
                         num_minibatches=8, update_epochs=4, lr=1e-3, anneal_lr=True,
                         ent_coef=0.01, gamma=0.99, normalize_observations=False, num_evals=3,
                         eval_envs=32)
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


def test_cartpole_solves():
    """Mean deterministic return over 8 seeds >= 475 on CartPole-v1 (one vmapped program)."""
    trainer = ppo.make_train(CARTPOLE)
    keys = jax.random.split(jax.random.PRNGKey(42), 8)
    _, metrics = jax.jit(jax.vmap(trainer))(keys)
    final = np.asarray(metrics["eval"]["eval_return"][:, -1])
    assert final.mean() >= 475, final


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
