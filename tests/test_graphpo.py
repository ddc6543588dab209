"""GraphPO against chain and tree rollouts (issue 13): the structured GRPO trainer, the experiment
and its notebook. The DAG advantages and the rollout structures are tested in
test_dag_advantages.py, test_structures.py and test_structures_lm.py."""

import dataclasses
import json

import jax
import numpy as np
import pytest

from rlx.algos import grpo

TINY = dict(task="countdown", layers=1, width=16, heads=2, prompts_per_update=2, minibatches=1,
            updates=2, num_evals=2, eval_prompts=4, eval_samples=1)


@pytest.mark.parametrize("kind, shape", [("chain", {}), ("tree", dict(chains=2, forks=1,
                                                                      branches=2)),
                                         ("graph", dict(widths=(3, 4), frontier=(1, 3)))])
def test_structured_trainer_spends_its_budget_and_trains_own_tokens_once(kind, shape):
    cfg = grpo.GRPOConfig(**TINY, group_size=6, context=11 + 2 * 17,
                          structure=grpo.StructureConfig(kind=kind, budget=40, **shape))
    trainer = grpo.make_train(cfg)
    state = trainer.init(jax.random.PRNGKey(0), trainer.default_hparams)
    new, m = jax.jit(trainer.update)(state)
    # a random policy: chains and trees (long random completions) are over-provisioned for 40
    # tokens; a graph expands only valid Countdown states, which a random policy rarely reaches
    if kind == "graph":
        assert 0 < float(m["tokens"]) <= 40.0
    else:
        assert float(m["tokens"]) == 40.0
    assert 0 < float(m["trained_tokens"]) <= 40.0
    assert np.isfinite(float(m["loss"]))
    assert trainer.steps_per_update == 2 * 40  # one env step = one generated token
    assert int(new.update) == 1 and np.isfinite(float(m["grad_norm"]))


@pytest.mark.parametrize("structure, match", [
    (dict(kind="dag"), "unknown 'dag'"),
    (dict(kind="tree", budget=0), "budget must be >= 1"),
    (dict(kind="graph", budget=10, widths=(2,), frontier=(1,)), "2 levels"),
    (dict(kind="graph", budget=10, widths=(2, 2), frontier=(2, 2)), "frontier"),
])
def test_structure_config_errors_name_the_value(structure, match):
    cfg = grpo.GRPOConfig(**TINY, context=45, structure=grpo.StructureConfig(**structure))
    with pytest.raises(ValueError, match=match):
        cfg.validate()


def test_graph_needs_countdown_and_tree_needs_room_for_a_prefix():
    s = grpo.StructureConfig(kind="graph", budget=10)
    with pytest.raises(ValueError, match="needs the countdown task"):
        grpo.GRPOConfig(**{**TINY, "task": "addition"}, structure=s).validate()
    with pytest.raises(ValueError, match="continuations need prompt"):
        grpo.GRPOConfig(**TINY, context=30, structure=dataclasses.replace(s, kind="tree")
                        ).validate()


def test_experiment_quick_and_resume(tmp_path):
    from experiments import graphpo as exp

    s = exp.main(["--out", str(tmp_path), "--quick", "--no-progress"])
    for name in ("summary.json", "metrics.csv", "accuracy_vs_tokens.png",
                 "advantage_variance.png"):
        assert (tmp_path / name).exists(), name
    assert list((tmp_path / "tb").iterdir())
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    for key in ("env", "env_steps", "wall_s", "final_return", "params_digest"):
        assert on_disk[key] is not None, key
    assert set(on_disk["structures"]) == {"chain", "tree", "graph"}
    for name, v in on_disk["structures"].items():
        assert {"accuracy", "tokens", "budget", "advantage_variance"} <= set(v), name
        # every structure spent its budget (the generator stops there) to within 1%
        assert abs(v["tokens"] / v["budget"] - 1) <= 0.01, (name, v["tokens"], v["budget"])
    again = exp.main(["--out", str(tmp_path), "--quick", "--no-progress"])
    assert again["params_digest"] == s["params_digest"]


@pytest.mark.parametrize("flags, match", [
    (["--tasks", "sudoku"], "--tasks: unknown 'sudoku'"),
    (["--structures", "forest"], "--structures: unknown 'forest'"),
    (["--budget-scale", "0"], "--budget-scale must be > 0"),
    (["--resamples", "1"], "--resamples must be >= 2"),
])
def test_experiment_bad_flags_are_one_line_errors(tmp_path, capsys, flags, match):
    from experiments import graphpo as exp

    with pytest.raises(SystemExit) as e:
        exp.main(["--out", str(tmp_path), "--quick", *flags])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert match in err and len(err.splitlines()) == 1, err


def test_notebook_executes_in_quick_mode():
    from nbrun import execute

    text = execute("graphpo.ipynb")
    assert "merge" in text and "variance" in text
