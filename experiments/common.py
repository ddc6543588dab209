"""What every experiment entry point shares: CPU devices, multi-process start-up, CLI flags, outputs.

Every experiment takes `--coordinator-address HOST:PORT --num-processes N --process-id I`
(or RLX_* / JAX_* COORDINATOR_ADDRESS / NUM_PROCESSES / PROCESS_ID): run the same
command once per process and they train one population over all processes' devices;
process 0 writes the files.
"""

from __future__ import annotations

import argparse
import sys

from rlx import distributed
from rlx.population import configure_compilation_cache, configure_cpu_devices


def setup(args: argparse.Namespace | None = None, *, multi_process: bool = True) -> bool:
    """Call in `main` right after parsing, before JAX touches a device: one XLA host device
    per core unless XLA_FLAGS says otherwise, JAX's persistent compilation cache (on unless
    RLX_COMPILATION_CACHE=0; `rlx.population.configure_compilation_cache`), then join the
    multi-process run that `args` (or the environment) configures. Sets `args.multi_process`, and `args.no_progress` on
    processes other than 0; returns whether this is a multi-process run.

    `multi_process=False` (an experiment that runs its own worker processes) refuses a
    multi-process setting with a one-line error.
    """
    configure_cpu_devices()
    configure_compilation_cache()
    flags = ((args.coordinator_address, args.num_processes, args.process_id)
             if args is not None else (None, None, None))
    if multi_process:
        multi = exit_on_value_error(lambda: distributed.initialize(*flags))
    elif exit_on_value_error(lambda: distributed.resolve(*flags)) is not None:
        print("error: this experiment runs on one process (it starts its own workers); drop "
              "--coordinator-address/--num-processes/--process-id and the RLX_*/JAX_* "
              "COORDINATOR_ADDRESS/NUM_PROCESSES/PROCESS_ID variables", file=sys.stderr)
        raise SystemExit(2)
    else:
        multi = False
    if args is not None:
        args.multi_process = multi
        if multi and not distributed.is_primary():
            args.no_progress = True
    return multi


def parser(description: str, *, env: str | None = "reacher", total_steps: int | None = None,
           seeds: int | None = 2) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True, help="output directory (rerun with the same one to resume)")
    p.add_argument("--quick", action="store_true", help="tiny config for tests and smoke runs")
    if env is not None:
        p.add_argument("--env", default=env, help="environment name (rlx.envs.list_envs())")
    if total_steps is not None:
        p.add_argument("--total-steps", type=int, default=total_steps,
                       help="env steps per seed (rounded up to whole evaluation chunks)")
    if seeds is not None:
        p.add_argument("--seeds", type=int, default=seeds, help="seeds, trained as one program")
    p.add_argument("--devices", type=int, default=None,
                   help="devices to shard the population over (default: as many as divide it)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = p.add_argument_group("multi-process (one run over several processes or hosts; "
                             "default: RLX_*/JAX_* COORDINATOR_ADDRESS, NUM_PROCESSES, PROCESS_ID)")
    g.add_argument("--coordinator-address", "--coordinator", dest="coordinator_address",
                   default=None, help="host:port of process 0")
    g.add_argument("--num-processes", type=int, default=None, help="processes in the run")
    g.add_argument("--process-id", type=int, default=None, help="this process, in [0, N)")
    return p


def exit_on_value_error(fn):
    """Run `fn()`; print a `ValueError` (bad input) as one line and exit 2."""
    try:
        return fn()
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


__all__ = ["setup", "parser", "exit_on_value_error"]
