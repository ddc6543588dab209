"""Multi-process (multi-host) start-up: one population over every process's devices.

Every process runs the same program; after `initialize`, `jax.devices()` lists
all processes' devices and `rlx.population.make_mesh()` spans them. A seed
population (`rlx.runner.run`) then shards its members over every process, and
the ES/EPG trainers' `shard_map` places each process's members on its own
devices (only fitness scalars and the gradient cross processes). Process 0
(`is_primary`) writes the files.
"""

from __future__ import annotations

import os

ENV_VARS = {
    "coordinator_address": ("RLX_COORDINATOR_ADDRESS", "JAX_COORDINATOR_ADDRESS"),
    "num_processes": ("RLX_NUM_PROCESSES", "JAX_NUM_PROCESSES"),
    "process_id": ("RLX_PROCESS_ID", "JAX_PROCESS_ID"),
}


def _from_env(name: str) -> str | None:
    for var in ENV_VARS[name]:
        if os.environ.get(var):
            return os.environ[var]
    return None


def resolve(coordinator_address: str | None = None, num_processes: int | None = None,
            process_id: int | None = None) -> tuple[str, int, int] | None:
    """(address, process count, process id) from the arguments or the environment
    (RLX_* or JAX_* COORDINATOR_ADDRESS / NUM_PROCESSES / PROCESS_ID); None when
    this is a single-process run. Raises `ValueError` for a partial or bad setting."""
    addr = coordinator_address or _from_env("coordinator_address")
    n = num_processes if num_processes is not None else _from_env("num_processes")
    pid = process_id if process_id is not None else _from_env("process_id")
    if addr is None and n is None and pid is None:
        return None
    if addr is None or n is None or pid is None:
        raise ValueError("a multi-process run needs all of coordinator address, process count and "
                         f"process id; got {addr!r}, {n!r}, {pid!r}")
    n, pid = int(n), int(pid)
    if n < 1 or not 0 <= pid < n:
        raise ValueError(f"process id {pid} is not in [0, {n})")
    return addr, n, pid


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, cpu_collectives: str = "gloo") -> bool:
    """Call `jax.distributed.initialize` when a multi-process run is configured.

    Must run before JAX touches a device. On CPU, cross-process collectives use
    `cpu_collectives` (gloo). Returns True when this process joined a
    multi-process run, False for a single-process run.
    """
    setting = resolve(coordinator_address, num_processes, process_id)
    if setting is None:
        return False
    import jax

    addr, n, pid = setting
    jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    jax.distributed.initialize(coordinator_address=addr, num_processes=n, process_id=pid)
    return True


def is_primary() -> bool:
    """True on the process that writes files (process 0)."""
    import jax

    return jax.process_index() == 0


__all__ = ["initialize", "resolve", "is_primary", "ENV_VARS"]
