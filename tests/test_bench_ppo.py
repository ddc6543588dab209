"""Smoke test of experiments/bench_ppo.py: tiny sizes, rlx only (cold then warm cache), the
JSON line's keys; a config its env cannot run is one line before anything runs."""

import json

import jax
import pytest

from experiments import bench_ppo


def test_bench_ppo_quick_prints_cold_and_warm(capsys):
    out = bench_ppo.main(["--quick", "--env", "Pendulum-v1"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == out
    for key in ("env_steps_per_s", "first_update_s_cold", "first_update_s_warm", "xla_compile_s",
                "xla_compile_s_warm", "trace_lower_s", "warm_compile_ratio", "peak_rss_mb",
                "params_digest"):
        assert key in out, key
    parts = ("imports", "make_train", "lower_and_compile", "init_and_first_eval",
             "first_update_and_eval")
    assert set(out["breakdown_s"]) == set(parts) == set(out["breakdown_s_warm"])
    assert sum(out["breakdown_s"].values()) <= out["first_update_s_cold"] + 0.5
    assert out["warm_compile_ratio"] < 0.5  # the second process loaded its programs
    assert out["devices"] == len(jax.devices()) == 2  # conftest's two host devices, all used


def test_bench_ppo_refuses_a_head_its_env_cannot_take(capsys):
    with pytest.raises(SystemExit) as e:
        bench_ppo.main(["--quick", "--env", "CartPole-v1"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tanh_gaussian" in err[0] and "CartPole-v1" in err[0]
