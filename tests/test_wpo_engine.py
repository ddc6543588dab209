"""WPO as the off-policy engine's actor update (`SACConfig(actor_loss="wpo")`): it learns
Pendulum-v1 where lr 0 does not, keeps no entropy temperature, and resumes bit-exactly with its
target actor and learned duals."""

import dataclasses

import jax
import numpy as np
import pytest

from helpers import disk_compile_cache, pendulum_lr_and_lr0  # noqa: F401  (fixture)
from rlx import runner
from rlx.algos import sac
from rlx.losses import wpo


pytestmark = pytest.mark.usefixtures("disk_compile_cache")


TINY = sac.SACConfig(env="Pendulum-v1", total_steps=4 * 8 * 8, num_envs=8, batch_size=16,
                     grad_updates_per_step=2, min_replay_size=32, max_replay_size=256, n_step=3,
                     actor_layers=(16,), critic_layers=(16,), num_evals=5, eval_envs=2,
                     episode_length=50, actor_loss="wpo_resume_test")


def test_wpo_resume_is_bit_exact_with_target_actor_and_duals(tmp_path):
    # a target copy every 8 gradient steps and learned duals, so both cross the checkpoint
    sac.register_wpo("wpo_resume_test", wpo.WPOConfig(num_samples=4, dual_loss_scale=1.0),
                     target_update_period=8)
    try:
        trainer = sac.make_train(TINY)
        keys = jax.random.split(jax.random.PRNGKey(0), 2)
        full = runner.run(trainer, keys, tmp_path / "full", progress=False)
        runner.run(trainer, keys, tmp_path / "killed", progress=False, stop_after_chunks=2)
        resumed = runner.run(trainer, keys, tmp_path / "killed", progress=False)
    finally:
        sac.ACTOR_LOSSES.pop("wpo_resume_test")
        sac.ACTOR_EXTRAS.pop("wpo_resume_test")
    assert resumed.resumed_from == 2
    assert runner.params_digest(resumed.state.params) == runner.params_digest(full.state.params)
    assert runner.params_digest(resumed.state.extra) == runner.params_digest(full.state.extra)
    np.testing.assert_array_equal(resumed.eval["eval_return"], full.eval["eval_return"])
    init = trainer.init(keys[0], trainer.default_hparams)
    extra = jax.tree.map(lambda x: x[0], full.state.extra)
    steps = int(full.state.grad_steps[0])
    assert steps % 8 != 0  # the target is the actor of the last copy, not the final actor
    for name in ("target_actor", "duals"):  # both moved away from their initial values
        assert runner.params_digest(extra[name]) != runner.params_digest(init.extra[name])
    assert runner.params_digest(extra["target_actor"]) != runner.params_digest(
        jax.tree.map(lambda x: x[0], full.state.params["actor"]))
    # no entropy temperature: log_alpha never moves and alpha reads 0
    np.testing.assert_array_equal(full.state.params["log_alpha"], init.params["log_alpha"])
    assert np.all(full.train["alpha"] == 0)


def test_wpo_learns_pendulum_and_lr_zero_does_not():
    """WPO (8 action samples, Acme's KL settings) on Pendulum-v1 (random policy about -1200):
    two members in one program, the second with lr 0, must end far apart (here about -140 and
    -1200)."""
    res = pendulum_lr_and_lr0(sac.register_wpo, "wpo_learn_test", wpo.WPOConfig(num_samples=8), 8_000)
    final = res.eval["eval_return"][-1]
    assert final[0] > -600, final
    assert final[1] < -900, final
    assert np.all(np.isfinite(res.train["actor_loss_policy"]))


def test_wpo_is_registered_and_bad_period_is_refused():
    sac.make_train(dataclasses.replace(TINY, actor_loss="wpo"))  # validates, builds
    with pytest.raises(ValueError, match="target_update_period"):
        sac.register_wpo("wpo_bad", target_update_period=0)
    assert "wpo_bad" not in sac.ACTOR_LOSSES
