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


def _run(env, key, actions):
    """(states, outs) of `env` from reset(key) under `actions` [T, A], every step stacked."""
    def body(s, a):
        s, out = env.step(s, a)
        return s, (s, out)

    return jax.jit(lambda k, acts: jax.lax.scan(body, env.reset(k), acts)[1])(key, actions)


@pytest.mark.parametrize("name", ["Pendulum-v1", "inverted_pendulum"])
def test_replica_x1_is_the_base_env_bit_exactly(name):
    # episodes of 5 steps: the 12-step rollout crosses two auto-resets
    base, rep = envs.make(name, episode_length=5), envs.make(f"{name}_x1", episode_length=5)
    assert rep.name == f"{base.name}_x1" and rep.obs_shape == base.obs_shape
    assert rep.action_spec == base.action_spec and rep.max_episode_steps == 5
    key = jax.random.PRNGKey(3)
    acts = jax.random.uniform(jax.random.PRNGKey(4), (12, base.action_spec.size), minval=-1, maxval=1)
    (s_b, o_b), (s_r, o_r) = _run(base, key, acts), _run(rep, key, acts)
    assert np.asarray(o_b.done).sum() == 2
    for a, b in [(o_b, o_r), (s_b.obs, s_r.obs), (s_b.time, s_r.time),
                 (s_b.episode_return, s_r.episode_return),
                 (s_b.inner, jax.tree.map(lambda x: x[:, 0], s_r.inner.inner))]:
        jax.tree.map(np.testing.assert_array_equal, a, b)


def test_replica_copies_evolve_independently():
    """K = 2 on Pendulum-v1 (time limit only): copy i is the base env run alone from
    copy_keys(key)[i] with action chunk i, through the (joint) time-limit resets; the reward is
    the copies' mean and observations are concatenated."""
    base, rep = envs.make("Pendulum-v1", episode_length=5), envs.make("Pendulum-v1_x2", episode_length=5)
    assert rep.obs_shape == (6,) and rep.action_spec.size == 2
    key = jax.random.PRNGKey(0)
    acts = jax.random.uniform(jax.random.PRNGKey(1), (12, 2), minval=-1, maxval=1)
    s_r, o_r = _run(rep, key, acts)
    keys = rep.copy_keys(key)
    assert not np.array_equal(keys[0], keys[1])
    runs = [_run(base, keys[i], acts[:, i:i + 1]) for i in range(2)]
    np.testing.assert_array_equal(s_r.obs, np.concatenate([s.obs for s, _ in runs], axis=1))
    np.testing.assert_array_equal(o_r.final_obs, np.concatenate([o.final_obs for _, o in runs], 1))
    np.testing.assert_allclose(o_r.reward, (runs[0][1].reward + runs[1][1].reward) / 2, rtol=1e-6)
    np.testing.assert_array_equal(o_r.truncated, runs[0][1].truncated)
    assert np.asarray(o_r.truncated).sum() == 2
    assert not np.array_equal(runs[0][0].obs, runs[1][0].obs)  # the copies really differ


def test_replica_ends_every_copy_when_one_terminates():
    """inverted_pendulum_x2: copy 0 pushed hard falls (terminates) while copy 1 (no force)
    stands; the joint episode terminates and copy 1 restarts from a fresh reset of its key."""
    rep = envs.make("inverted_pendulum_x2", episode_length=1000)
    acts = jnp.tile(jnp.array([[1.0, 0.0]]), (60, 1))
    s, o = _run(rep, jax.random.PRNGKey(0), acts)
    t = int(np.argmax(np.asarray(o.terminated)))
    assert bool(o.terminated[t]) and t > 0 and not np.asarray(o.done[:t]).any()
    assert int(o.episode_length[t]) == t + 1 and int(s.time[t]) == 0
    np.testing.assert_array_equal(s.inner.time[t], [0, 0])  # both copies' clocks restart
    # copy 1 did not end its own episode: it restarts from reset(its key after the step), not
    # from where the step left it (its final_obs)
    stepped_key = jax.random.split(s.inner.key[t - 1, 1])[0]
    np.testing.assert_allclose(s.obs[t, 4:], rep.base.reset(stepped_key).obs, rtol=1e-6, atol=1e-7)
    assert not np.allclose(s.obs[t, 4:], o.final_obs[t, 4:])
    np.testing.assert_array_equal(o.final_obs[t - 1], s.obs[t - 1])  # no restart before t


@pytest.mark.parametrize("name, match", [
    ("Pendulum-v1_x0", "must be an integer >= 1, got '0'"),
    ("humanoid_x", "must be an integer >= 1, got ''"),
    ("humanoid_xa", "must be an integer >= 1, got 'a'"),
    ("pendulm_x3", "unknown environment 'pendulm'"),
    ("CartPole-v1_x2", "replicas need continuous actions"),
])
def test_bad_replica_names_are_refused(name, match):
    with pytest.raises(ValueError, match=match):
        envs.make(name)
