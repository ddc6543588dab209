"""What every experiment entry point shares: CPU devices, CLI flags, outputs."""

from __future__ import annotations

import argparse
import sys

from rlx.population import configure_cpu_devices


def setup(argv: list[str] | None = None) -> None:
    """Call first in `main`: one XLA host device per core unless XLA_FLAGS says otherwise."""
    configure_cpu_devices()


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
    return p


def exit_on_value_error(fn):
    """Run `fn()`; print a `ValueError` (bad input) as one line and exit 2."""
    try:
        return fn()
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


__all__ = ["setup", "parser", "exit_on_value_error"]
