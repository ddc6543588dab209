"""Every PPO experiment's --quick mode and the PPO notebook run end to end."""

import json

import pytest


def test_ppo_quickstart_notebook():
    from nbrun import execute

    assert "episode return:" in execute("ppo_quickstart.ipynb")


@pytest.mark.parametrize("module", ["ppo", "ppo_clip_ablation"])
def test_experiment_quick(module, tmp_path):
    import importlib

    mod = importlib.import_module(f"experiments.{module}")
    mod.main(["--out", str(tmp_path), "--quick", "--no-progress"])
    summary = json.loads((tmp_path / "summary.json").read_text())
    for key in ("env", "env_steps", "wall_s", "final_return", "params_digest"):
        assert key in summary, key
    assert (tmp_path / "metrics.csv").stat().st_size > 0
    assert list(tmp_path.glob("*.png"))


def test_ppo_cli_rejects_bad_input(tmp_path, capsys):
    from experiments import ppo

    for bad in (["--total-steps", "abc"], ["--clip-eps"], ["--no-such-flag"], []):
        with pytest.raises(SystemExit) as e:  # a flag tyro rejects: one line, exit 2
            ppo.main(([] if bad == [] else ["--out", str(tmp_path)]) + bad)
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and err.startswith("error: ") and "\n" not in err, err
    with pytest.raises(SystemExit) as e:
        ppo.main(["--out", str(tmp_path), "--env", "nope", "--no-progress"])
    assert e.value.code == 2
    assert "unknown environment 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ppo.main(["--out", str(tmp_path), "--env", "CartPole-v1", "--seeds", "3", "--devices", "2",
                  "--no-progress"])
    assert "not divisible" in capsys.readouterr().err


def test_ppo_cli_resumes(tmp_path):
    from experiments import ppo

    args = ["--out", str(tmp_path), "--quick", "--no-progress", "--env", "CartPole-v1"]
    first = ppo.main(args)
    again = ppo.main(args)
    assert again["resumed_from_chunk"] == 2  # the finished run is found, nothing is redone
    assert again["params_digest"] == first["params_digest"]
