"""SAC, the off-policy engine: replay buffer, n-step targets, losses, Polyak averaging,
resume and vmap through the runner, a learning check, bad input, bench_sac --quick."""

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import disk_compile_cache, run_killed_and_resumed  # noqa: F401  (fixture)
from rlx import losses, replay, runner
from rlx.algos import sac
from rlx.losses import sac as sac_losses


pytestmark = pytest.mark.usefixtures("disk_compile_cache")


# ---- replay buffer ---------------------------------------------------------------------------

def _rows(start, k, envs=2):
    """k time-major rows [k, envs] whose value encodes (time, env) as 10 * t + env."""
    t = jnp.arange(start, start + k, dtype=jnp.float32)[:, None]
    return {"x": 10.0 * t + jnp.arange(envs, dtype=jnp.float32)[None]}


def test_replay_samples_only_held_windows_before_wrapping():
    buf = replay.init({"x": jnp.zeros(())}, num_envs=2, rows=4)
    buf = replay.insert(buf, _rows(0, 3))
    assert int(replay.size(buf)) == 6 and int(replay.rows_held(buf)) == 3
    w = np.asarray(replay.sample(buf, jax.random.PRNGKey(0), 500, length=2)["x"])
    assert w.shape == (500, 2)
    starts = w[:, 0] // 10
    assert set(starts) == {0.0, 1.0}  # row 2 starts no whole window; row 3 is unwritten
    np.testing.assert_array_equal(w[:, 1], w[:, 0] + 10)  # consecutive steps of one env
    assert set(w[:, 0] % 10) == {0.0, 1.0}  # both envs


def test_replay_wraps_around_and_never_crosses_the_write_head():
    buf = replay.init({"x": jnp.zeros(())}, num_envs=2, rows=4)
    buf = replay.insert(buf, _rows(0, 3))
    buf = replay.insert(buf, _rows(3, 3))  # rows 0, 1 overwritten by 4, 5
    assert int(replay.rows_held(buf)) == 4 and int(replay.size(buf)) == 8
    w = np.asarray(replay.sample(buf, jax.random.PRNGKey(1), 2000, length=2)["x"])
    # held times 2..5: windows start at 2, 3 or 4, never at 5 (it would join 5 to the
    # overwritten 2) and never include times 0, 1
    assert set(w[:, 0] // 10) == {2.0, 3.0, 4.0}
    np.testing.assert_array_equal(w[:, 1], w[:, 0] + 10)
    single = np.asarray(replay.sample(buf, jax.random.PRNGKey(2), 2000)["x"])[:, 0]
    assert set(single) == {10.0 * t + e for t in range(2, 6) for e in range(2)}
    counts = np.unique(single, return_counts=True)[1]
    assert counts.min() > 2000 / 8 * 0.7  # uniform over the held transitions


def test_replay_is_jittable_and_refuses_bad_input():
    buf = replay.init({"x": jnp.zeros((3,))}, num_envs=2, rows=4)
    step = jax.jit(lambda b, r: replay.insert(b, r))
    buf = step(buf, {"x": jnp.ones((1, 2, 3))})
    assert int(replay.rows_held(buf)) == 1
    with pytest.raises(ValueError, match="rows"):
        replay.insert(buf, {"x": jnp.ones((5, 2, 3))})
    with pytest.raises(ValueError, match="window length 5"):
        replay.sample(buf, jax.random.PRNGKey(0), 4, length=5)
    with pytest.raises(ValueError, match="num_envs"):
        replay.init({"x": jnp.zeros(())}, num_envs=0, rows=4)


# ---- n-step targets, losses, Polyak ----------------------------------------------------------

def test_n_step_window_hand_worked():
    r = jnp.array([[1.0, 2.0, 3.0]] * 3)
    no = jnp.zeros((3, 3), bool)
    term = no.at[1, 1].set(True)  # row 1: terminates at its 2nd step
    done = term.at[2, 1].set(True)  # row 2: truncated at its 2nd step
    ret, disc, last = losses.n_step_window(r, term, done, 0.5)
    # row 0: 1 + .5*2 + .25*3 = 2.75, bootstrap .5^3 from step 2
    # row 1: 1 + .5*2 = 2, no bootstrap (terminated);  row 2: 2, bootstrap .5^2 from step 1
    np.testing.assert_allclose(ret, [2.75, 2.0, 2.0])
    np.testing.assert_allclose(disc, [0.125, 0.0, 0.25])
    np.testing.assert_array_equal(last, [2, 1, 1])


def test_n_step_window_equals_rollout_n_step_returns():
    key = jax.random.PRNGKey(3)
    k1, k2, k3, k4 = jax.random.split(key, 4)
    T, N, n, gamma = 12, 64, 4, 0.9
    rewards = jax.random.normal(k1, (T, N))
    next_v = jax.random.normal(k2, (T, N))
    term = jax.random.uniform(k3, (T, N)) < 0.1
    done = term | (jax.random.uniform(k4, (T, N)) < 0.1)
    want = losses.n_step_returns(rewards, next_v, term, done, gamma, n)[: T - n + 1]
    win = lambda x: jnp.stack([x[t:t + n] for t in range(T - n + 1)])  # noqa: E731 [t, n, N]
    ret, disc, last = losses.n_step_window(*(jnp.swapaxes(win(x), 1, 2)
                                             for x in (rewards, term, done)), gamma)
    v_last = jnp.take_along_axis(jnp.swapaxes(win(next_v), 1, 2), last[..., None], -1)[..., 0]
    np.testing.assert_allclose(ret + disc * v_last, want, rtol=1e-5, atol=1e-5)


def test_polyak_hand_worked():
    target = {"w": jnp.array([0.0, 10.0])}
    online = {"w": jnp.array([1.0, 0.0])}
    np.testing.assert_allclose(sac.polyak(target, online, 0.1)["w"], [0.1, 9.0], rtol=1e-6)
    np.testing.assert_allclose(sac.polyak(target, online, 1.0)["w"], [1.0, 0.0])


def test_sac_losses_hand_worked():
    y = sac_losses.soft_target(jnp.array([1.0]), jnp.array([0.5]), jnp.array([[2.0], [4.0]]),
                               jnp.array([-1.0]), jnp.asarray(0.1))
    np.testing.assert_allclose(y, [1.0 + 0.5 * (2.0 + 0.1)])  # min of the twins, entropy bonus
    assert float(sac_losses.critic_loss(jnp.array([[1.0], [3.0]]), jnp.array([2.0]))) == 0.5
    # d/dlog_alpha of alpha * (-log pi - H): positive while the entropy is above the target
    g = jax.grad(sac_losses.temperature_loss)(jnp.log(2.0), jnp.array([-1.0]), jnp.asarray(-3.0))
    np.testing.assert_allclose(g, 2.0 * (1.0 + 3.0))


def test_actor_loss_gradient_follows_grad_a_q():
    """With alpha = 0, the actor loss moves the policy's mean towards larger Q."""
    apply_fn = lambda p, obs: jnp.concatenate([p["loc"] + 0 * obs[:, :1], jnp.full_like(obs[:, :1], -5.0)], -1)  # noqa: E731,E501
    q_fn = lambda obs, a: -((a[:, 0] - 0.5) ** 2)  # noqa: E731  (max at a = 0.5)
    ctx = sac_losses.ActorContext(alpha=jnp.asarray(0.0), step=jnp.asarray(0))
    obs = jnp.zeros((16, 3))
    g = jax.grad(lambda p: sac_losses.sac_actor_loss(p, apply_fn, obs, jax.random.PRNGKey(0),
                                                     q_fn, ctx)[0])({"loc": jnp.zeros(1)})
    assert float(g["loc"][0]) < 0  # descending the loss raises loc towards atanh(0.5)


# ---- the engine --------------------------------------------------------------------------------

TINY = sac.SACConfig(env="Pendulum-v1", total_steps=4 * 8 * 8, num_envs=8, batch_size=16,
                     grad_updates_per_step=2, min_replay_size=32, max_replay_size=256, n_step=3,
                     actor_layers=(16,), critic_layers=(16,), num_evals=5, eval_envs=2,
                     episode_length=50)


def test_resume_after_kill_is_bit_exact_and_seeds_are_vmapped(tmp_path):
    trainer = sac.make_train(TINY)
    assert trainer.updates_per_eval == 8 and trainer.steps_per_update == 8
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    full, resumed = run_killed_and_resumed(trainer, keys, tmp_path)
    for name in ("critic_loss", "alpha"):
        np.testing.assert_array_equal(resumed.train[name], full.train[name])
    np.testing.assert_array_equal(resumed.eval["eval_return"], full.eval["eval_return"])
    # two seeds, one program: both trained (gradient steps after the warm-up), and differently
    assert full.train["critic_loss"].shape == (32, 2)
    assert np.all(np.asarray(full.state.grad_steps) == (32 - TINY.warmup_updates + 1) * 2)
    actor = full.state.params["actor"]
    w = jax.tree.leaves(actor)[-1]
    assert not np.allclose(w[0], w[1])
    assert np.all(np.asarray(full.state.buffer.is_full))  # 32 rows of 8 envs, 256 held


def test_learns_pendulum_and_lr_zero_does_not():
    """SAC on Pendulum-v1 (random policy about -1200): two members in one program, the
    second with lr 0 (its actor never moves), must end far apart."""
    cfg = sac.SACConfig(env="Pendulum-v1", total_steps=8_000, num_envs=8, batch_size=128,
                        grad_updates_per_step=8, min_replay_size=1_024, max_replay_size=8_000,
                        gamma=0.99, lr=2e-3, alpha_lr=2e-3, reward_scaling=0.1,
                        target_entropy_per_dim=-1.0, actor_layers=(64, 64),
                        critic_layers=(64, 64), num_evals=3, eval_envs=16)
    trainer = sac.make_train(cfg)
    hp = jax.tree.map(lambda x: jnp.stack([x, x]), cfg.hparams())
    hp = hp.replace(lr=jnp.array([cfg.lr, 0.0]))
    res = runner.run(trainer, jnp.stack([jax.random.PRNGKey(1)] * 2), None, hparams=hp,
                     progress=False)
    final = res.eval["eval_return"][-1]
    assert final[0] > -600, final  # learned (about -150 to -400 here)
    assert final[1] < -900, final  # lr 0: still the initial policy
    assert res.train["critic_loss"][-1, 0] > 0


@pytest.mark.parametrize("change, match", [
    (dict(max_replay_size=1001), "multiple of num_envs"),
    (dict(min_replay_size=10**6), "min_replay_size"),
    (dict(gamma=1.5), "gamma"),
    (dict(tau=0.0), "tau"),
    (dict(n_step=0), "n_step"),
    (dict(batch_size=0), "batch_size"),
    (dict(actor_loss="nope"), "unknown actor loss 'nope'"),
    (dict(activation="cubic"), "activation"),
    (dict(env="NoSuchEnv-v0"), "unknown environment"),
    (dict(env="CartPole-v1"), "continuous actions"),
    (dict(num_evals=1), "num_evals"),
])
def test_bad_input_is_refused_before_compiling(change, match):
    with pytest.raises(ValueError, match=match):
        sac.make_train(dataclasses.replace(TINY, **change))


def test_actor_loss_is_pluggable():
    calls = []

    def my_loss(params, apply_fn, obs, key, q_fn, ctx):
        calls.append(obs.shape)
        return sac_losses.sac_actor_loss(params, apply_fn, obs, key, q_fn, ctx)

    sac.register_actor_loss("mine", my_loss)
    try:
        trainer = sac.make_train(dataclasses.replace(TINY, actor_loss="mine"))
        state = jax.eval_shape(trainer.init, jax.random.PRNGKey(0), trainer.default_hparams)
        jax.eval_shape(trainer.update, state)  # traces the update: the hook is called
    finally:
        sac.ACTOR_LOSSES.pop("mine")
    assert calls and calls[0] == (TINY.batch_size,) + (3,)


def test_bench_sac_quick_prints_one_json_line(capsys):
    from experiments import bench_sac

    out = bench_sac.main(["--quick", "--env", "Pendulum-v1", "--no-progress"])  # gymnax: compiles fast
    line = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("{")][-1]
    assert json.loads(line) == out
    for key in ("train_steps_per_s", "final_return", "best_return", "env_steps"):
        assert math.isfinite(out[key]), key
    assert out["train_steps_per_s"] > 0
