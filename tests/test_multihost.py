"""Two processes on 127.0.0.1 (gloo CPU collectives) run one experiment together.

Each process has one CPU device; together they must end with the same
parameters as one process with two devices (ES: one population sharded over
both processes; PPO: the seeds, one per process; EPG: the loss population).
Process 0 takes its settings from flags, process 1 from RLX_* variables
(tests/multiproc.py).
"""

from __future__ import annotations

import json

import pytest
from multiproc import launch

ES_ARGS = ["--env", "CartPole-v1", "--quick", "--no-progress", "--population", "16",
           "--total-steps", "8000"]
PPO_ARGS = ["--env", "CartPole-v1", "--seeds", "2", "--quick", "--no-progress"]
EPG_ARGS = ["--quick", "--no-progress"]


def two_processes_vs_one(tmp_path, name: str, args: list[str]) -> tuple[dict, dict]:
    """(summary of `experiments.<name>` over two 1-device processes, of one 2-device process)."""
    import importlib

    launch(f"experiments.{name}", ["--out", str(tmp_path / "multi"), *args])
    multi = json.loads((tmp_path / "multi" / "summary.json").read_text())
    single = importlib.import_module(f"experiments.{name}").main(
        ["--out", str(tmp_path / "single"), *args])
    assert multi["devices"] == single["devices"] == 2
    assert multi["params_digest"] == single["params_digest"]
    assert multi["final_return"] == single["final_return"]
    return multi, single


@pytest.mark.slow
def test_es_two_processes_match_one_process_with_two_devices(tmp_path):
    multi, single = two_processes_vs_one(tmp_path, "es", ES_ARGS)
    assert multi["processes"] == 2 and multi["multi_process"]
    assert single["processes"] == 1 and not single["multi_process"]


@pytest.mark.slow
def test_ppo_seeds_over_two_processes_match_one_process(tmp_path):
    two_processes_vs_one(tmp_path, "ppo", PPO_ARGS)
    # process 0 wrote the outputs, both wrote their shards of the checkpoints
    assert {"metrics.csv", "learning_curve.png", "checkpoints"} <= {
        p.name for p in (tmp_path / "multi").iterdir()}


@pytest.mark.slow
def test_epg_over_two_processes_matches_one_process(tmp_path):
    two_processes_vs_one(tmp_path, "epg", EPG_ARGS)


def test_a_partial_multi_process_setting_is_refused(capsys):
    from experiments import ppo

    with pytest.raises(SystemExit) as e:
        ppo.main(["--out", "unused", "--env", "CartPole-v1", "--process-id", "0"])
    assert e.value.code == 2
    assert "coordinator address, process count and process id" in capsys.readouterr().err


def test_es_scaling_refuses_a_multi_process_setting(capsys):
    """It times its own worker processes on one host."""
    from experiments import es_scaling

    with pytest.raises(SystemExit) as e:
        es_scaling.main(["--out", "unused", "--coordinator", "127.0.0.1:1", "--num-processes", "2",
                         "--process-id", "0"])
    assert e.value.code == 2 and "runs on one process" in capsys.readouterr().err
