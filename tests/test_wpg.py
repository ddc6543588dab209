"""experiments.wpg end to end (quick): the contraction figure's done-bar and the LQR check."""

from __future__ import annotations

import json

import pytest

from experiments import wpg


def test_quick_meets_the_done_bar(tmp_path):
    """For every step size shown and every scheme, the fitted per-iteration factor is within 5%
    of (1 - eta kappa)^2 and the floor within 10% of the predicted bias (0 for the Gaussian flow:
    below 1e-12 KL_0); the LQR flow reaches the Riccati policy; part (b) trained WPO, MPO, SAC
    and PPO and wrote their curves; --dims trained WPO and MPO on Pendulum-v1_x1 and _x4."""
    wpg.main(["--out", str(tmp_path), "--quick", "--no-progress", "--dims"])
    s = json.loads((tmp_path / "summary.json").read_text())
    assert len(s["contraction"]) >= 3
    for key, e in s["contraction"].items():
        assert abs(e["eta"] - float(key)) < 1e-12
        for f in (e, e["ula_law"], e["gaussian_flow"]):
            assert abs(f["rate_fit"] / f["rate_theory"] - 1) <= 0.05, (key, f)
            tol = 0.10 * f["floor_theory"] if f["floor_theory"] > 0 else 1e-9
            assert abs(f["floor_fit"] - f["floor_theory"]) <= tol, (key, f)
            assert abs(f["rate_theory"] - (1 - e["eta_kappa"]) ** 2) < 1e-12
        assert e["floor_theory"] > 0 and e["gaussian_flow"]["floor_theory"] == 0
    assert s["done"]["contraction"] and s["done"]["lqr"]
    assert s["lqr"]["final_gain_error"] < 1e-8
    for algo in ("wpo", "mpo", "sac", "ppo"):
        e = s["learning"][algo]
        assert e["env_steps"] > 0 and e["wall_s"] > 0, (algo, e)
        assert e["best_return"] >= e["final_return"] and len(e["eval_returns"]) >= 2, (algo, e)
        assert e == s["learning"][s["learning"]["envs"][0]][algo]
    assert s["learning"]["wpo"]["config"]["actor_loss"].startswith("wpo")
    assert s["learning"]["mpo"]["config"]["actor_loss"].startswith("mpo")
    assert s["learning"]["sac"]["config"]["actor_loss"] == "sac"
    runs = s["dims"]["runs"]
    assert {e: r["action_dims"] for e, r in runs.items()} == {"Pendulum-v1_x1": 1, "Pendulum-v1_x4": 4}
    for r in runs.values():
        assert r["wpo"]["config"]["actor_loss"].startswith("wpo")
        assert r["mpo"]["config"]["actor_loss"].startswith("mpo")
        assert r["wpo_minus_mpo_final"] == r["wpo"]["final_return"] - r["mpo"]["final_return"]
    rows = (tmp_path / "metrics.csv").read_text()
    assert rows.count("\nlearning,") == sum(len(s["learning"][a]["eval_returns"]) for a in
                                             ("wpo", "mpo", "sac", "ppo")) + sum(
        len(r[a]["eval_returns"]) for r in runs.values() for a in ("wpo", "mpo"))
    for name in ("contraction.png", "lqr.png", "learning.png", "metrics.csv"):
        assert (tmp_path / name).exists()


def test_bad_learning_env_is_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        wpg.main(["--out", str(tmp_path), "--quick", "--env", "CartPole-v1"])
    assert e.value.code == 2
    assert "CartPole-v1" in capsys.readouterr().err


def test_bad_step_size_is_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        wpg.main(["--out", str(tmp_path), "--quick", "--eta-kappa", "0.1", "1.5"])
    assert e.value.code == 2
    assert "--eta-kappa values must be in (0, 1), got 1.5" in capsys.readouterr().err


def test_notebook_executes_in_quick_mode():
    from nbrun import execute

    text = execute("wpg.ipynb")
    assert "contraction within 5% (rate) and 10% (floor) of theory: True" in text
    assert "loss gradient = -N x direction: True" in text
