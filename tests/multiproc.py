"""Launch one experiment as N local processes of one multi-process JAX run (tests only).

Each process gets one CPU device and gloo collectives; process 0 takes its
settings from the flags, the others from the RLX_* environment variables, so
both ways in are exercised.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(module: str, args: list[str], num_processes: int = 2, timeout: float = 480) -> list[str]:
    """Run `python -m module *args` as `num_processes` processes of one run; wait for all.

    Returns each process's output; fails (with the output's tail) if any exits non-zero.
    """
    address = f"127.0.0.1:{free_port()}"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1",
               JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    procs = []
    for pid in range(num_processes):
        penv, flags = dict(env), []
        if pid == 0:
            flags = ["--coordinator", address, "--num-processes", str(num_processes),
                     "--process-id", "0"]
        else:
            penv.update(RLX_COORDINATOR_ADDRESS=address, RLX_NUM_PROCESSES=str(num_processes),
                        RLX_PROCESS_ID=str(pid))
        procs.append(subprocess.Popen([sys.executable, "-m", module, *args, *flags], cwd=ROOT,
                                      env=penv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    logs, timed_out = [], False
    for p in procs:
        try:
            logs.append(p.communicate(timeout=None if timed_out else timeout)[0])
        except subprocess.TimeoutExpired:
            timed_out = True
            for q in procs:
                q.kill()
            logs.append(p.communicate()[0])
    for pid, (p, log) in enumerate(zip(procs, logs)):
        status = f"timed out after {timeout} s" if timed_out else f"exited {p.returncode}"
        assert p.returncode == 0 and not timed_out, f"process {pid} of {module} {status}:\n{log[-3000:]}"
    return logs
