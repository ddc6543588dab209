"""Smoke test of experiments/bench_llm_rl.py: a tiny config, rlx only, the JSON line's keys."""

from __future__ import annotations

import json

from experiments import bench_llm_rl
from rlx.lm.model import grpo_step_flops

TINY = ["--layers", "1", "--width", "32", "--heads", "2", "--prompts-per-update", "2",
        "--group-size", "2", "--max-new-tokens", "5", "--updates-per-call", "2", "--repeats", "1"]


def test_bench_llm_rl_json_keys(capsys):
    res = bench_llm_rl.main(TINY)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(line) == res
    for key in ("bench", "model", "params", "vocab_size", "prompts_per_step", "num_generations",
                "max_completion_length", "threads", "members", "grpo_steps_per_s",
                "sampling_tokens_per_s", "first_update_s", "achieved_gflops",
                "matmul_peak_gflops", "peak_fraction", "flops_per_step",
                "mean_completion_tokens", "update_s", "sample_s", "versions"):
        assert key in res, key
    assert res["grpo_steps_per_s"] > 0 and res["max_completion_length"] == 5
    assert res["flops_per_step"] == grpo_step_flops(32, 1, res["vocab_size"], 4, 7, 5)
    assert 0 < res["mean_completion_tokens"] <= 5
    assert "anchor_grpo_steps_per_s" not in res


def test_bench_llm_rl_bad_flag():
    import pytest

    with pytest.raises(SystemExit):
        bench_llm_rl.main(["--members", "3", "--threads", "2"])
    with pytest.raises(SystemExit):
        bench_llm_rl.main(["--max-new-tokens", "3"])  # below the task's 5
