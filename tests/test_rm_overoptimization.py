"""Reward-model over-optimisation (issue 12): the gold's task signal, the regression trainer, the
distinct-sequence scorer, and experiments.rm_overoptimization end to end."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlx.algos import reward_model as rma
from rlx.lm import reward_model as rm
from rlx.lm.tasks import DIGIT0, EOS, PAD, make_task

ADD = make_task("addition", digits=2)


def _seq(text: str, T: int = 5):
    """Completion tokens and mask of `text` ('$' = eos)."""
    ids = [EOS if ch == "$" else DIGIT0 + int(ch) for ch in text]
    return ids + [PAD] * (T - len(ids)), [True] * len(ids) + [False] * (T - len(ids))


@pytest.mark.parametrize("text, want", [
    ("134$", 1.0),        # 72 + 62 = 134: exact
    ("135$", 2 / 3),      # one digit wrong in place
    ("13$", 2 / 3),       # a digit missing: 2 of max(2, 3) right
    ("1345$", 3 / 4),     # a digit too many
    ("431$", 1 / 3),      # reversed: only the middle digit in place
    ("134", 0.0),         # no eos
    ("$", 0.0),           # empty answer
])
def test_graded_reward_hand_worked(text, want):
    toks, mask = _seq(text)
    problem = jnp.array([[72, 62]], jnp.int32)
    g = ADD.graded_reward(problem, jnp.array([toks]), jnp.array([mask]))
    assert float(g[0]) == pytest.approx(want, abs=1e-6)
    assert (float(ADD.reward(problem, jnp.array([toks]), jnp.array([mask]))[0]) == 1.0) == (want == 1.0)


def test_graded_reward_is_one_exactly_when_reward_is_one():
    p = ADD.prompts(jax.random.PRNGKey(0), 3000, "train")
    for comp, mask in (ADD.answer_variants(jax.random.PRNGKey(1), p.problem),
                       ADD.demonstrations(jax.random.PRNGKey(2), p.problem, 0.5)):
        g = np.asarray(ADD.graded_reward(p.problem, comp, mask))
        r = np.asarray(ADD.reward(p.problem, comp, mask))
        assert np.array_equal(g == 1.0, r == 1.0)
        assert np.all((g >= 0) & (g <= 1))


def test_answer_variants_spread_around_the_answer():
    p = ADD.prompts(jax.random.PRNGKey(3), 4000, "train")
    comp, mask = ADD.answer_variants(jax.random.PRNGKey(4), p.problem)
    assert comp.shape == mask.shape == (4000, ADD.completion_length)
    comp, mask = np.asarray(comp), np.asarray(mask)
    assert np.all(mask == (comp != PAD))  # real tokens first, padding after
    assert np.all(np.diff(mask.astype(int), axis=1) <= 0)
    assert np.all((comp == EOS).sum(1) <= 1)
    g = np.asarray(ADD.graded_reward(p.problem, comp, mask))
    # exact answers, near misses and far misses all occur (measured: 15% / 47% / 38%)
    assert 0.08 < np.mean(g == 1) < 0.3
    assert np.mean((g > 0.3) & (g < 1)) > 0.2 and np.mean(g < 0.3) > 0.2
    with pytest.raises(ValueError, match="countdown task has no graded reward"):
        cd = make_task("countdown")
        q = cd.prompts(jax.random.PRNGKey(0), 2, "train")
        cd.graded_reward(q.problem, jnp.zeros((2, 4), jnp.int32), jnp.ones((2, 4), bool))


def test_regression_trainer_fits_a_task_signal_and_lr0_does_not():
    """A 1.4e4-parameter RM fitted to graded correctness on answer variants: its held-out MSE
    falls well below the targets' variance (measured 0.44 of it after 300 steps); lr 0 (the
    broken trainer) keeps the random init's error (measured 38x the variance)."""
    c = rm.rm_config("m", ADD.vocab.size, ADD.prompt_length + ADD.completion_length)
    p = ADD.prompts(jax.random.PRNGKey(5), 512, "train")
    comp, mask = ADD.answer_variants(jax.random.PRNGKey(6), p.problem)
    toks = jnp.concatenate([p.tokens, comp], 1)
    msk = jnp.concatenate([p.mask, mask], 1)
    batches = rma.task_signal_batches(ADD, toks, msk, p.problem, 64)
    x, m, y = batches(jax.random.PRNGKey(7))
    assert x.shape == m.shape == (64, 12) and y.shape == (64,)
    te = ADD.prompts(jax.random.PRNGKey(8), 1024, "train")
    tc, tm = ADD.answer_variants(jax.random.PRNGKey(9), te.problem)
    tx, tmask = jnp.concatenate([te.tokens, tc], 1), jnp.concatenate([te.mask, tm], 1)
    ty = ADD.graded_reward(te.problem, tc, tm)
    errs = []
    for lr in (3e-3, 0.0):
        train = jax.jit(rma.make_regression_train(c, rma.RMTrainConfig(steps=300, lr=lr), batches))
        params, metrics = train(jax.random.PRNGKey(10))
        assert metrics["loss"].shape == (300,)
        errs.append(float(jnp.mean((rm.rm_score(params, c, tx, tmask) - ty) ** 2) / jnp.var(ty)))
    assert errs[0] < 0.6, errs
    assert errs[1] > 0.9, errs
    with pytest.raises(ValueError, match="batch_size must be even"):
        rma.task_signal_batches(ADD, toks, msk, p.problem, 3)


def test_task_signal_batches_targets_are_the_graded_reward():
    p = ADD.prompts(jax.random.PRNGKey(11), 64, "train")
    comp, mask = ADD.demonstrations(jax.random.PRNGKey(12), p.problem, 0.5)
    toks = jnp.concatenate([p.tokens, comp], 1)
    msk = jnp.concatenate([p.mask, mask], 1)
    x, m, y = rma.task_signal_batches(ADD, toks, msk, p.problem, 32)(jax.random.PRNGKey(13))
    # the first half are the given samples: their targets are their graded rewards
    rows = [int(np.where((np.asarray(toks) == np.asarray(x[i])).all(1))[0][0]) for i in range(16)]
    want = ADD.graded_reward(p.problem[np.array(rows)], x[:16, 7:], m[:16, 7:])
    np.testing.assert_allclose(np.asarray(y[:16]), np.asarray(want))


def test_unique_sequences_inverts_and_ignores_padding():
    toks = jnp.array([[1, 2, 0], [1, 2, 9], [1, 3, 0], [1, 2, 0]])
    mask = jnp.array([[1, 1, 0], [1, 1, 0], [1, 1, 0], [1, 1, 1]], bool)
    u, um, inv = rma.unique_sequences(toks, mask)
    assert u.shape[0] == 3  # rows 0 and 1 differ only under padding
    assert inv[0] == inv[1] != inv[2] != inv[3]
    np.testing.assert_array_equal(np.where(mask, np.asarray(u)[inv], 0), np.where(mask, toks, 0))
    with pytest.raises(ValueError, match="must be \\[B, L\\]"):
        rma.unique_sequences(toks[0], mask[0])


def test_experiment_quick_and_resume(tmp_path, capsys):
    from experiments import rm_overoptimization as exp

    s = exp.main(["--out", str(tmp_path), "--quick", "--no-progress"])
    for name in ("summary.json", "metrics.csv", "overoptimization.png", "coefficients.png",
                 "data_size.png"):
        assert (tmp_path / name).exists(), name
    assert list((tmp_path / "tb").iterdir())
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    for key in ("env", "env_steps", "wall_s", "final_return", "params_digest"):
        assert on_disk[key] is not None, key
    for method in ("bon", "rl"):
        assert len(on_disk["fits"][method]) == 2  # one entry per proxy size
        for nparams, fit in on_disk["fits"][method].items():
            assert int(nparams) > 0
            assert {"alpha", "beta", "r2", "peak_d"} <= set(fit), fit
    assert on_disk["bon"]["n"][0] == 1 and on_disk["bon"]["n"][-1] == on_disk["bon"]["samples_per_prompt"]
    # best-of-n curves start at 0 (recentred) and the proxy of the best sample never falls
    for size, proxy in on_disk["bon"]["proxy"].items():
        assert proxy[0] == 0.0 and np.all(np.diff(proxy) >= -1e-6), size
    assert set(on_disk["rl"]) == {"xs", "s", "xs kl=0.1"}
    # a rerun restores every stage and resumes the finished RL runs: the same result
    again = exp.main(["--out", str(tmp_path), "--quick", "--no-progress"])
    assert again["params_digest"] == s["params_digest"]
    assert again["fits"] == s["fits"]


@pytest.mark.parametrize("flags, match", [
    (["--sizes", "xs"], "at least 2 proxy sizes"),
    (["--sizes", "xs", "huge"], "unknown size 'huge'"),
    (["--kl-size", "xl"], "--kl-size 'xl' is not one of --sizes"),
    (["--data-fractions", "0"], "--data-fractions must be in"),
    (["--bon-samples", "1"], "--bon-samples must be >= 2"),
])
def test_experiment_bad_flags_are_one_line_errors(tmp_path, capsys, flags, match):
    from experiments import rm_overoptimization as exp

    with pytest.raises(SystemExit) as e:
        exp.main(["--out", str(tmp_path), "--quick", *flags])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert match in err and len(err.splitlines()) == 1, err


def test_notebook_executes_in_quick_mode():
    from nbrun import execute

    text = execute("rm_overoptimization.ipynb")
    assert "best-of-n" in text and "fit" in text
