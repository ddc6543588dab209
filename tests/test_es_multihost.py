"""Two processes on 127.0.0.1 (gloo CPU collectives) run one ES population.

Each process has one CPU device; together they must end with the same
parameters as one process with two devices.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..")
ARGS = ["--env", "CartPole-v1", "--quick", "--no-progress", "--population", "16",
        "--total-steps", "8000"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one_process_with_two_devices(tmp_path):
    port = free_port()
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1",
               JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    out = tmp_path / "multi"
    procs = []
    for pid in range(2):
        # process 1 takes its settings from the environment, process 0 from flags
        flags = ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", "0"]
        penv = dict(env)
        if pid == 1:
            flags = []
            penv.update(RLX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", RLX_NUM_PROCESSES="2",
                        RLX_PROCESS_ID="1")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "experiments.es", "--out", str(out), *ARGS, *flags],
            cwd=ROOT, env=penv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=240)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    multi = json.loads((out / "summary.json").read_text())
    assert multi["processes"] == 2 and multi["devices"] == 2 and multi["multi_process"]

    from experiments import es

    single = es.main(["--out", str(tmp_path / "single"), *ARGS])
    assert single["processes"] == 1 and single["devices"] == 2
    assert multi["params_digest"] == single["params_digest"]
    assert multi["final_return"] == single["final_return"]
