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

    assert ppo.preset_for("CheetahRun") == ppo.preset_for("reacher") == "default"
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
