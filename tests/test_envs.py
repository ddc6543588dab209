import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlx import envs
from rlx.envs import normalize as obs_norm
from rlx.rollout import evaluate, reset, rollout


def test_unknown_env_lists_valid_names():
    with pytest.raises(ValueError, match="unknown environment 'reachr'.*reacher.*CartPole-v1"):
        envs.make("reachr")
    with pytest.raises(ValueError, match="unknown Brax backend"):
        envs.make("reacher", backend="nope")


def test_gymnax_cartpole_auto_reset_and_episode_stats():
    env = envs.make("CartPole-v1")
    assert env.action_spec.discrete and env.action_spec.size == 2
    s = env.reset(jax.random.PRNGKey(0))
    step = jax.jit(env.step)
    total, ended = 0.0, None
    for t in range(200):
        s, out = step(s, jnp.int32(0))  # always push left: terminates quickly
        total += float(out.reward)
        if bool(out.done):
            ended = t + 1
            break
    assert ended is not None and bool(out.terminated) and not bool(out.truncated)
    assert float(out.episode_return) == pytest.approx(total)
    assert int(out.episode_length) == ended
    assert int(s.time) == 0 and float(s.episode_return) == 0.0
    # the final observation is past the threshold; the new one is a fresh start
    assert abs(float(out.final_obs[2])) > 0.2 or abs(float(out.final_obs[0])) > 2.4
    assert np.all(np.abs(np.asarray(s.obs)) < 0.06)


def test_brax_truncation_bootstraps_and_resets():
    env = envs.make("inverted_pendulum", episode_length=5)
    assert not env.action_spec.discrete
    s = reset(env, jax.random.PRNGKey(0), 3)
    pol = lambda obs, k: (jnp.zeros((3, 1)), jnp.zeros((3, 1)), {})
    s, tr = jax.jit(lambda s, k: rollout(env, pol, s, k, 12))(s, jax.random.PRNGKey(1))
    done = np.asarray(tr.done)
    assert done.shape == (12, 3)
    # zero force keeps the pole up for 5 steps: every episode is truncated at 5
    assert np.array_equal(np.where(done[:, 0])[0], [4, 9])
    assert not np.asarray(tr.terminated).any()
    np.testing.assert_array_equal(np.asarray(tr.episode_length)[done], 5)


@pytest.mark.parametrize("fresh", [True, False])
def test_brax_reset_modes(fresh):
    env = envs.make("reacher", episode_length=3, fresh_reset=fresh)
    s = env.reset(jax.random.PRNGKey(0))
    first = np.asarray(s.obs)
    step = jax.jit(env.step)
    for _ in range(3):
        s, out = step(s, jnp.zeros(2))
    assert bool(out.truncated)
    same = np.allclose(np.asarray(s.obs), first)
    assert same == (not fresh)


def test_evaluate_counts_first_episode_only():
    env = envs.make("CartPole-v1")
    res = jax.jit(lambda k: evaluate(env, lambda o: jnp.zeros(o.shape[0], jnp.int32), k, 4, 100))(
        jax.random.PRNGKey(0))
    # pushing left ends each episode in ~10 steps; its return equals its length
    assert 5 < float(res["eval_length"]) < 20
    assert float(res["eval_return"]) == pytest.approx(float(res["eval_length"]))


def test_running_stats_match_numpy_and_merge():
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(1000, 4)).astype(np.float32)
    s = obs_norm.init((4,))
    for chunk in np.split(x, [10, 300, 301]):
        s = obs_norm.update(s, jnp.asarray(chunk))
    np.testing.assert_allclose(s.mean, x.mean(0), rtol=1e-4)
    np.testing.assert_allclose(s.var, x.var(0), rtol=1e-3)
    # the same statistics when the batch is split across a vmapped axis
    shards = jnp.asarray(x.reshape(4, 250, 4))
    sv = jax.vmap(lambda b: obs_norm.update(obs_norm.init((4,)), b, axis_name="i"), axis_name="i")(shards)
    np.testing.assert_allclose(sv.mean[0], x.mean(0), rtol=1e-4)
    np.testing.assert_allclose(sv.var[3], x.var(0), rtol=1e-3)
    y = obs_norm.normalize(s, jnp.asarray(x))
    assert float(jnp.abs(y.mean(0)).max()) < 1e-3


def test_minatar_obs_shape():
    env = envs.make("Breakout-MinAtar")
    assert env.obs_shape == (10, 10, 4) and env.action_spec.discrete
