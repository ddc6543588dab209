"""The progress bar shows only returns that finished episodes produced, labelled (stochastic
training policy vs deterministic evaluation), and env steps/s; streaming it changes nothing."""

import jax
import numpy as np

from rlx import runner
from rlx.algos import ppo

# Pendulum's episodes last 200 steps: none ends in 4 updates of 16 steps.
CFG = ppo.PPOConfig(env="Pendulum-v1", total_steps=4 * 32, num_envs=2, unroll_length=16,
                    num_minibatches=2, update_epochs=1, policy_layers=(8,), value_layers=(8,),
                    num_evals=3, eval_envs=2)


def test_no_training_return_without_finished_episodes(monkeypatch, capsys):
    shown = []
    postfix = runner._Progress.postfix
    monkeypatch.setattr(runner._Progress, "postfix",
                        lambda self: shown.append(postfix(self)) or shown[-1])
    trainer = ppo.make_train(CFG, on_update=runner.on_update)
    assert trainer.updates_per_eval == 2
    res = runner.run(trainer, jax.random.split(jax.random.PRNGKey(0), 2), None, progress=True,
                     per_call=1)
    assert res.train["episode_count"].sum() == 0 and (res.train["episode_return"] == 0).all()
    assert shown and not any(k.startswith("train_return") for p in shown for k in p)
    assert all("eval_return(det)" in p for p in shown)
    assert any("env_steps/s" in p for p in shown)
    bar = capsys.readouterr().err
    assert "train_return" not in bar and "eval_return(det)=" in bar and "4/4" in bar


def test_running_mean_over_finished_episodes():
    p = runner._Progress(window=3)
    p.reset(None, 0)
    none = {"episode_return_sum": np.zeros((2, 1)), "episode_count": np.zeros((2, 1))}
    p.record(1, none, 64.0)
    assert "train_return(stoch)" not in p.postfix() and p.first_update_time is not None
    # update 2: member 0 finished 2 episodes (sum -10), member 1 one (-5); update 3: one (-1)
    p.record(2, {"episode_return_sum": np.array([[-10.0], [-5.0]]),
                 "episode_count": np.array([[2.0], [1.0]])}, 64.0)
    assert p.postfix()["train_return(stoch)"] == "-5.00 [3 ep]"
    p.record(3, {"episode_return_sum": np.array([[-1.0], [0.0]]),
                 "episode_count": np.array([[1.0], [0.0]])}, 64.0)
    assert p.postfix()["train_return(stoch)"] == "-4.00 [4 ep]"  # whole updates, >= 3 episodes
    p.record(4, {"episode_return_sum": np.array([[-6.0], [0.0]]),
                 "episode_count": np.array([[3.0], [0.0]])}, 64.0)
    assert p.postfix()["train_return(stoch)"] == "-2.00 [3 ep]"  # older updates leave the window
    p.record_eval(np.array([[3.0, 5.0]]))
    assert p.postfix()["eval_return(det)"] == "4.00" and p.last == 4


def test_streaming_in_calls_gives_identical_results():
    trainer = ppo.make_train(CFG)
    keys = jax.random.split(jax.random.PRNGKey(1), 2)
    one = runner.run(trainer, keys, None, progress=False, per_call=1)
    two = runner.run(trainer, keys, None, progress=False, per_call=2)
    assert runner.params_digest(one.state.params) == runner.params_digest(two.state.params)
    for k in one.train:
        np.testing.assert_array_equal(one.train[k], two.train[k])
    np.testing.assert_array_equal(one.eval["eval_return"], two.eval["eval_return"])
