"""MPO as the off-policy engine's actor update (`SACConfig(actor_loss="mpo")`): one update
changes the policy and the duals and keeps no entropy temperature; MPO learns Pendulum-v1 where
lr 0 does not."""

import jax
import numpy as np
import pytest

from helpers import disk_compile_cache, pendulum_lr_and_lr0  # noqa: F401  (fixture)
from rlx.algos import sac
from rlx.losses import mpo

pytestmark = pytest.mark.usefixtures("disk_compile_cache")


TINY = sac.SACConfig(env="Pendulum-v1", total_steps=4 * 8 * 8, num_envs=8, batch_size=16,
                     grad_updates_per_step=2, min_replay_size=32, max_replay_size=256, n_step=3,
                     actor_layers=(16,), critic_layers=(16,), num_evals=5, eval_envs=2,
                     episode_length=50, actor_loss="mpo")


def test_engine_update_runs_and_changes_the_policy_and_duals():
    trainer = sac.make_train(TINY)
    state = trainer.init(jax.random.PRNGKey(0), trainer.default_hparams)
    init = state
    update = jax.jit(trainer.update)
    for _ in range(TINY.warmup_updates + 1):
        state, metrics = update(state)
    assert int(state.grad_steps) == 2 * 2
    leaves = lambda t: jax.tree.leaves(t)  # noqa: E731
    assert any(not np.array_equal(a, b) for a, b in
               zip(leaves(state.params["actor"]), leaves(init.params["actor"])))
    for name in ("log_temperature", "log_alpha_mean"):  # the duals learn
        assert not np.array_equal(getattr(state.extra["duals"], name),
                                  getattr(init.extra["duals"], name)), name
    # target actor: not yet copied (period 100); no entropy temperature (alpha reads 0)
    jax.tree.map(np.testing.assert_array_equal, state.extra["target_actor"], init.params["actor"])
    np.testing.assert_array_equal(state.params["log_alpha"], init.params["log_alpha"])
    assert float(metrics["alpha"]) == 0.0
    for k in ("actor_loss", "actor_temperature", "actor_kl_q_rel", "actor_loss_policy"):
        assert np.isfinite(float(metrics[k])), k
    assert "actor__q" not in metrics


def test_mpo_learns_pendulum_and_lr_zero_does_not():
    """MPO (8 action samples, Acme's KL settings) on Pendulum-v1 (random policy about -1200):
    two members in one program, the second with lr 0, must end far apart (here about -170 and
    -1370 after 6k steps)."""
    res = pendulum_lr_and_lr0(sac.register_mpo, "mpo_learn_test", mpo.MPOConfig(num_samples=8), 6_000)
    final = res.eval["eval_return"][-1]
    assert final[0] > -600, final
    assert final[1] < -900, final
    # the E-step temperature adapted to its bound: KL(q || pi_t) near epsilon at the end
    assert 0.5 < float(res.train["actor_kl_q_rel"][-1, 0]) < 2.0
