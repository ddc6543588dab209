"""The ES paper's scaling figure: time per generation and time to a target return vs devices.

    python -m experiments.es_scaling --out runs/es_scaling                 # reacher, 1 and 2 CPU devices
    python -m experiments.es_scaling --out runs/s_q --quick                # tiny (tests)
    python -m experiments.es_scaling --out runs/s --device-counts 1,2,4,8  # on a GPU/TPU host

Each device count runs in its own subprocess with its own
XLA_FLAGS=--xla_force_host_platform_device_count=D, pinned to D cores on CPU
(one device = one core; --no-pin-cores lets a 1-device worker's XLA thread pool
use every core). A worker times `--timing-generations` generations, then trains
from the same seed until the population's mean return reaches `--target` (or
`--max-generations`), measuring wall time after compilation. Members are
evaluated in the same chunks on every device count (`auto_chunk` of
population / max(device counts) members) and every sum has a fixed order. On
gymnax CartPole every device count follows the bit-identical trajectory (a test); on
Brax physics XLA fuses the differently partitioned programs differently and
the observation statistics can differ in the last bit after the first
generation, so trajectories (and generations to the target) drift apart:
time per generation is the clean scaling figure (Salimans
et al. Fig. 1 measure wall-clock to a score against cores). Writes
summary.json, metrics.csv and scaling.png (with the ideal linear line).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time

from experiments import common


@dataclasses.dataclass
class Args:
    """experiments.es_scaling's own flags (the ESConfig fields are flags too; `--population`
    and `--hidden` are the old spellings of `--population-size` and `--hidden-layers`;
    `--members-per-chunk` is the same for every device count, by default `auto_chunk` of
    population / max(device counts))."""

    device_counts: str | None = None  # comma-separated device counts (default: 1, 2, 4, ... up to the cores)
    target: float | None = None  # population mean return to reach (default: per env)
    max_generations: int = 150
    timing_generations: int = 5
    seed: int = 0
    pin_cores: bool = True  # CPU: run the D-device worker on D cores only (one device = one core)
    worker: int | None = None  # internal: run as the worker with this many devices


def parse(argv: list[str] | None):
    """(flags, ESConfig overrides); the worker's config is ESConfig's defaults, the quick
    sizes (rlx.es.QUICK) if --quick, then the flags."""
    from rlx.es import ESConfig

    # set per worker, or not used by a worker's generations
    fixed = ("generations", "num_evals", "eval_episodes", "total_steps")
    return common.cli(__doc__.split("\n")[0], argv, Args, ESConfig, exclude=fixed,
                      run=("out", "quick", "devices", "no_progress", "wandb",
                           "coordinator_address", "num_processes", "process_id"),
                      defaults=dict(env="reacher"),
                      aliases={"population_size": ("--population",), "hidden_layers": ("--hidden",)})


DEFAULT_TARGET = {"reacher": -120.0, "CartPole-v1": 100.0}
QUICK = dict(max_generations=4, timing_generations=1)  # + rlx.es.QUICK's population and policy


def worker(a, overrides: dict) -> dict:
    """Runs inside a subprocess with `a.worker` XLA devices; returns its measurements."""
    import jax
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P

    from rlx import runner
    from rlx.es import make_train, mean_vector
    from rlx.es.evaluate import auto_chunk

    counts = [int(c) for c in a.device_counts.split(",")]
    config = build_config(a, overrides)
    config = dataclasses.replace(config, members_per_chunk=config.members_per_chunk
                                 or auto_chunk(config.population_size // max(counts)),
                                 generations=1, num_evals=2)
    trainer, _, _ = runner.place(make_train(config), 1, a.worker)
    rep = NamedSharding(trainer.mesh, P())
    update = jax.jit(trainer.update, out_shardings=rep, donate_argnums=0)

    def fresh():
        return jax.jit(trainer.init, out_shardings=rep)(jax.random.PRNGKey(a.seed),
                                                        trainer.default_hparams)

    state = fresh()
    t0 = time.perf_counter()
    state, m = update(state)
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t0
    timed_steps = []
    t0 = time.perf_counter()
    for _ in range(a.timing_generations):
        state, m = update(state)
        timed_steps.append(m["env_steps"])
    jax.block_until_ready(m)
    sec_per_gen = (time.perf_counter() - t0) / a.timing_generations
    steps_per_gen = float(np.mean([float(s) for s in timed_steps]))

    state = fresh()
    curve, steps, reached = [], 0.0, None
    t0 = time.perf_counter()
    for g in range(a.max_generations):
        state, m = update(state)
        r = float(m["return_mean"])  # syncs: a host-side stopping rule, as in the paper's master
        steps += float(m["env_steps"])
        curve.append((g + 1, time.perf_counter() - t0, steps, r))
        if r >= a.target:
            reached = g + 1
            break
    wall = time.perf_counter() - t0
    return {"devices": len(trainer.mesh.devices.flat), "compile_s": compile_s,
            "sec_per_generation": sec_per_gen,
            "env_steps_per_s": steps_per_gen / sec_per_gen,
            "generations_to_target": reached, "time_to_target_s": wall if reached else None,
            "env_steps_to_target": steps if reached else None, "final_return": curve[-1][3],
            "params_digest": runner.params_digest(mean_vector(trainer, state)), "curve": curve,
            "platform": jax.default_backend()}


def build_config(a, overrides: dict):
    """The workers' ESConfig (before its per-worker mesh and chunking)."""
    from rlx.es import QUICK, ESConfig

    return ESConfig(**{**(QUICK if a.quick else {}), **overrides, "env": a.env})


def run_worker(a, argv: list[str], devices: int) -> dict:
    env = dict(os.environ)
    flags = env.get("XLA_FLAGS", "")
    flags = " ".join(f for f in flags.split() if "xla_force_host_platform_device_count" not in f)
    env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices}".strip()
    env["RLX_CPU_DEVICES"] = str(devices)
    # the same flags (so the same config), with what the parent resolved
    args = [sys.executable, "-m", "experiments.es_scaling", *argv, "--env", a.env,
            "--device-counts", a.device_counts, "--target", str(a.target),
            "--max-generations", str(a.max_generations),
            "--timing-generations", str(a.timing_generations), "--worker", str(devices)]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    pin = None
    if a.pin_cores and hasattr(os, "sched_setaffinity"):
        cores = sorted(os.sched_getaffinity(0))[:devices]
        pin = lambda: os.sched_setaffinity(0, cores)  # noqa: E731  (D devices on D cores)
    out = subprocess.run(args, env=env, capture_output=True, text=True, cwd=root, preexec_fn=pin)
    if out.returncode:
        raise RuntimeError(f"worker with {devices} devices failed:\n{out.stderr[-3000:]}")
    return json.loads([ln for ln in out.stdout.splitlines() if ln.startswith("{")][-1])


def plot(path, results) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    d = np.array([r["devices"] for r in results], float)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    panels = [("sec_per_generation", "seconds per generation"),
              ("time_to_target_s", "seconds to target return")]
    for ax, (key, label) in zip(axes, panels):
        y = np.array([r[key] if r[key] is not None else np.nan for r in results], float)
        ax.plot(d, y, "o-", label="rlx ES")
        if np.isfinite(y[0]):
            ax.plot(d, y[0] * d[0] / d, "k--", label="ideal linear")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(d, [str(int(x)) for x in d])
        ax.set_xlabel("devices")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle(f"ES scaling on {results[0]['platform']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    a, overrides = parse(argv)
    common.setup(a, multi_process=False)  # one host: it times its own worker processes
    if a.quick:
        a.env = "CartPole-v1" if a.env == "reacher" else a.env
        for k, v in QUICK.items():
            setattr(a, k, v)
    if a.target is None:
        a.target = DEFAULT_TARGET.get(a.env, 0.0)
    if a.device_counts is None:
        n = os.cpu_count() or 1
        a.device_counts = ",".join(str(1 << i) for i in range(n.bit_length()) if 1 << i <= n)
    if a.worker is not None:
        res = worker(a, overrides)
        print(json.dumps(res))
        return res

    from rlx import logging

    counts = [int(c) for c in a.device_counts.split(",")]
    config = common.exit_on_value_error(lambda: build_config(a, overrides))
    common.exit_on_value_error(config.validate)
    if config.population_size % (2 * max(counts)):
        print(f"error: population {config.population_size} must be a multiple of 2 x "
              f"{max(counts)} devices", file=sys.stderr)
        raise SystemExit(2)
    t0 = time.time()
    results = [run_worker(a, argv, d) for d in counts]
    base = results[0]
    rows = []
    for r in results:
        r["speedup_per_generation"] = base["sec_per_generation"] / r["sec_per_generation"]
        r["ideal_speedup"] = r["devices"] / base["devices"]
        r["speedup_to_target"] = (base["time_to_target_s"] / r["time_to_target_s"]
                                  if base["time_to_target_s"] and r["time_to_target_s"] else None)
        for g, t, s, ret in r.pop("curve"):
            rows.append({"devices": r["devices"], "generation": g, "time_s": t, "env_steps": s,
                         "return_mean": ret})
    last = results[-1]
    summary = {"experiment": "es_scaling", "env": a.env, "population": config.population_size,
               "pinned_cores": bool(a.pin_cores),
               "target_return": a.target, "env_steps": last["env_steps_to_target"] or 0.0,
               "wall_s": round(time.time() - t0, 2), "final_return": last["final_return"],
               "params_digest": last["params_digest"],
               "same_trajectory_on_every_device_count":
                   len({r["params_digest"] for r in results}) == 1,
               "scaling": results}
    logging.write_json(f"{a.out}/summary.json", summary)
    logging.write_metrics(a.out, rows, wandb=a.wandb)
    plot(f"{a.out}/scaling.png", results)
    for r in results:
        print(f"{r['devices']} devices: {r['sec_per_generation']:.3f} s/generation "
              f"(x{r['speedup_per_generation']:.2f}, ideal x{r['ideal_speedup']:.0f}); "
              f"target {a.target} after {r['generations_to_target']} generations, "
              f"{r['time_to_target_s']} s")
    return summary


if __name__ == "__main__":
    main()
