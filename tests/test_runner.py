"""Checkpoint/resume, NaN handling and the streaming progress hook."""

import dataclasses

import jax
import numpy as np
import pytest

from helpers import run_killed_and_resumed
from rlx import runner
from rlx.algos import ppo

CFG = ppo.PPOConfig(env="CartPole-v1", total_steps=4 * 256, num_envs=4, unroll_length=64,
                    num_minibatches=2, update_epochs=2, policy_layers=(16,), value_layers=(16,),
                    num_evals=5, eval_envs=2, normalize_observations=True)


def test_resume_after_kill_gives_same_params(tmp_path):
    trainer = ppo.make_train(CFG, on_update=runner.on_update)
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    full, resumed = run_killed_and_resumed(trainer, keys, tmp_path)
    np.testing.assert_array_equal(resumed.eval["eval_return"], full.eval["eval_return"])
    assert resumed.train["policy_loss"].shape == full.train["policy_loss"].shape == (4, 2)


def test_nan_stops_naming_update_and_keeps_checkpoint(tmp_path):
    # lr = inf drives the parameters to NaN on the first update after the checkpoint.
    trainer = ppo.make_train(CFG)
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    runner.run(trainer, keys, tmp_path, progress=False, stop_after_chunks=1)
    with pytest.raises(runner.TrainingDiverged, match=r"NaN at update 2 .*kept checkpoint 1"):
        _diverge_after_resume(trainer, keys, tmp_path)
    # the good checkpoint is still there and resumes
    again = runner.run(trainer, keys, tmp_path, progress=False, stop_after_chunks=0)
    assert again.resumed_from == 1


def _diverge_after_resume(trainer, keys, out):
    """Resume the saved run with hyper-parameters swapped for diverging ones."""
    import jax.numpy as jnp

    def update(state):
        state = state.replace(hparams=state.hparams.replace(lr=jnp.float32(jnp.inf)))
        return trainer.update(state)

    diverging = dataclasses.replace(trainer, update=update)
    return runner.run(diverging, keys, out, progress=False)


def test_progress_hook_sees_every_update():
    seen = []
    trainer = ppo.make_train(CFG, on_update=lambda u, r: seen.append(int(np.max(u))))
    jax.block_until_ready(jax.jit(trainer)(jax.random.PRNGKey(0)))
    jax.effects_barrier()
    assert sorted(set(seen)) == list(range(1, trainer.num_updates + 1))


def test_progress_hook_waits_for_the_new_state():
    """`report` fires only once the state it reports on is computed (not when its
    own arguments happen to be ready, e.g. after the rollout but before SGD)."""
    import time

    import jax.numpy as jnp
    from jax.experimental import io_callback

    from rlx.training import report

    order = []

    def slow(x):
        time.sleep(0.2)
        order.append("work")
        return x

    def update(s):
        new = io_callback(slow, jax.ShapeDtypeStruct((), jnp.float32), s + 1.0)
        report(lambda i, v: order.append("report"), jnp.int32(1), s, after=new)
        return new

    jax.block_until_ready(jax.jit(update)(jnp.float32(0.0)))
    jax.effects_barrier()
    assert order == ["work", "report"]


def test_run_reports_compile_times_and_start():
    trainer = ppo.make_train(CFG)
    res = runner.run(trainer, jax.random.split(jax.random.PRNGKey(0), 2), None, progress=False,
                     stop_after_chunks=1)
    assert set(res.compile_times) == {"init", "evaluate", "updates"}
    assert all(t > 0 for t in res.compile_times.values())
    assert res.started_at > 0 and res.eval_times[1] > res.eval_times[0]
