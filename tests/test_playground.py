"""MuJoCo Playground environments behind `rlx.envs.make` (an optional extra: `pip install
'rlx[playground]'`). Naming one without it is a one-line error; with it, a DM Control Suite
task steps, truncates and restarts like any rlx env, and PPO, ES and EPG take its name."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlx import envs
from rlx.envs import registry


def test_playground_name_without_the_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(registry, "playground_installed", lambda: False)
    with pytest.raises(ValueError, match=r"'CartpoleBalance' needs MuJoCo Playground.*pip install"):
        envs.make("CartpoleBalance")
    from rlx.algos.ppo import PPOConfig
    from rlx.epg import EPGConfig

    with pytest.raises(ValueError, match="needs MuJoCo Playground"):
        PPOConfig(env="CheetahRun").validate()
    with pytest.raises(ValueError, match="needs MuJoCo Playground"):
        EPGConfig(family="CheetahRun").validate()
    with pytest.raises(ValueError, match="unknown environment 'Cartpole'.*CartpoleBalance"):
        envs.make("Cartpole")
    assert "CartpoleBalance" not in envs.list_envs()


def test_playground_names_get_the_continuous_control_presets():
    from rlx import es
    from rlx.algos import ppo

    assert ppo.preset_for("reacher") == "default"
    assert ppo.preset_for("CheetahRun") == ppo.preset_for("CartpoleBalance") == "playground"
    # the preset is the flags the CartpoleBalance learning check was measured with
    cfg = ppo.PPOConfig(**ppo.PRESETS["playground"])
    want = ppo.PPOConfig(**{**ppo.PRESETS["brax"], "value_layers": (64, 64), "num_envs": 32,
                            "unroll_length": 1000, "num_minibatches": 32, "update_epochs": 4,
                            "lr": 1e-3, "gamma": 0.995, "ent_coef": 0.01, "reward_scaling": 10.0,
                            "eval_envs": 32})
    assert cfg == want
    assert es.preset("CheetahRun", quick=True) == es.preset("reacher", quick=True)


def test_cartpole_balance_steps_truncates_and_restarts():
    pytest.importorskip("mujoco_playground")  # the optional extra
    env = envs.make("CartpoleBalance", episode_length=3)
    assert env.obs_shape == (5,) and not env.action_spec.discrete and env.action_spec.size == 1
    assert "CartpoleBalance" in envs.list_envs()

    def steps(key):
        s = env.reset(key)
        return jax.lax.scan(lambda s, _: env.step(s, jnp.ones((1,))), s, None, length=4)

    s, out = jax.jit(steps)(jax.random.PRNGKey(0))
    r = np.asarray(out.reward)
    # the same transitions as Playground's own env under the same actions, bit for bit
    raw = env.playground_env
    _, sub = jax.random.split(jax.random.PRNGKey(0))  # the key `Env.reset` gives the backend

    def raw_steps(key):
        return jax.lax.scan(lambda s, _: (raw.step(s, jnp.ones((1,))),) * 2, raw.reset(key), None,
                            length=3)[1]

    ref = jax.jit(raw_steps)(sub)
    np.testing.assert_array_equal(np.asarray(out.final_obs[:3]), np.asarray(ref.obs))
    np.testing.assert_array_equal(r[:3], np.asarray(ref.reward))
    assert np.all((r >= 0) & (r <= 1)) and r[0] > 0.5  # upright start: near-full reward
    np.testing.assert_array_equal(np.asarray(out.truncated), [False, False, True, False])
    assert not np.asarray(out.terminated).any()
    assert float(out.episode_return[2]) == pytest.approx(float(r[:3].sum()), rel=1e-6)
    # the pushed cart moved; the episode after the time limit starts near the centre again
    assert abs(float(out.final_obs[2, 0])) > abs(float(out.final_obs[0, 0]))
    assert int(s.time) == 1
    assert all(x.size for x in jax.tree.leaves(s))  # checkpoints cannot hold zero-size arrays
    # EPG: a Playground name is a one-task family (the goal does not change the env)
    from rlx.envs.tasks import TaskFamily

    family = TaskFamily("CartpoleBalance", episode_length=3)
    assert family.make_env(jnp.ones((2,))) is family.template_env()


# MuJoCo Playground's own PPO settings for the DM Control Suite (its
# config/dm_control_suite_params.py: discount 0.995, reward scaling 10, lr 1e-3, entropy 1e-2,
# Brax's tanh-Gaussian swish networks, clip 0.3, observation normalisation) at CPU size: 32 envs x
# whole 1000-step episodes per update, 32 minibatches x 4 epochs, a 64-64 value net (Playground:
# 2048 envs x 16 unrolls of 30 steps, 16 epochs, 256 x 5). Whole episodes matter: CartpoleBalance never
# terminates, so every env restarts at the same step and a 30-step unroll sees one phase of the
# episode per update (measured: 256 x 30 learns with seed 0, not with seed 1, in 5M steps).
PLAYGROUND_PPO = ["--preset", "brax", "--value-layers", "64,64", "--num-envs", "32",
                  "--unroll-length", "1000", "--num-minibatches", "32", "--update-epochs", "4",
                  "--lr", "1e-3", "--gamma", "0.995", "--ent-coef", "0.01", "--reward-scaling", "10",
                  "--eval-envs", "32"]


@pytest.mark.slow
def test_ppo_learns_cartpole_balance(tmp_path):
    """CPU learning check (~2-3 min on 2 busy cores, half of it compiling MJX): 2M steps take
    the deterministic policy's return from ~620 (the initial, near-zero action; uniform random
    actions get ~420) to the task's ceiling of 1000 (measured: 998, 998, 997 with seeds 0, 1, 2)."""
    pytest.importorskip("mujoco_playground")
    from experiments import ppo

    s = ppo.main(["--out", str(tmp_path), "--env", "CartpoleBalance", "--total-steps", "2000000",
                  "--num-evals", "5", "--seeds", "1", "--no-progress", *PLAYGROUND_PPO])
    assert s["initial_return"] < 700 and s["final_return"] > 900, s
