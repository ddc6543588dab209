"""Throughput of a population of PPO agents: one seed, many seeds, many devices.

    python experiments/bench_population.py            # prints one JSON line

PureJaxRL's CartPole config (4 envs, 128-step unroll, 64-unit networks). Each
case is one compiled program (`jit(vmap(train))`, the members sharded over the
devices with `NamedSharding`); it is timed on a second call, so compile is
excluded (`compile_s` reports the first call). Cases: 1 seed on 1 device,
`--seeds` seeds on 1 device, and the same seeds over all devices. Each case runs
in its own process, as the device count is fixed when JAX starts.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(seeds: int, devices: int, total_steps: int) -> dict:
    import jax

    from rlx import population, runner
    from rlx.algos import ppo

    cfg = ppo.PPOConfig(env="CartPole-v1", total_steps=total_steps, num_envs=4, unroll_length=128,
                        num_minibatches=4, update_epochs=4, lr=2.5e-4, anneal_lr=True,
                        ent_coef=0.01, normalize_observations=False, num_evals=2, eval_envs=4)
    trainer = ppo.make_train(cfg)
    train = population.pmap_population(trainer, population.make_mesh(devices))
    hp = runner.broadcast_hparams(trainer.default_hparams, seeds)
    keys = jax.random.split(jax.random.PRNGKey(0), seeds)
    t = time.time()
    jax.block_until_ready(train(keys, hp))
    compile_s = time.time() - t
    t = time.time()
    jax.block_until_ready(train(jax.random.split(jax.random.PRNGKey(1), seeds), hp))
    dt = time.time() - t
    return {"seeds": seeds, "devices": devices, "env_steps": trainer.total_env_steps * seeds,
            "env_steps_per_s": round(trainer.total_env_steps * seeds / dt, 1),
            "compile_s": round(compile_s, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


@dataclasses.dataclass
class Args:
    """bench_population's own flags (--total-steps is PPOConfig's)."""

    seeds: int = 16
    devices: int = os.cpu_count() or 1
    case: str | None = None  # internal: "seeds,devices" of one case, in its own process


def main(argv: list[str] | None = None) -> dict:
    sys.path.insert(0, str(ROOT))
    from experiments import common
    from rlx.algos.ppo import PPOConfig

    args, _ = common.cli(__doc__.split("\n")[0], argv, Args, PPOConfig, run=(),
                         only=("total_steps",), defaults=dict(total_steps=200_000))
    if args.case:
        seeds, devices = (int(x) for x in args.case.split(","))
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   f" --xla_force_host_platform_device_count={devices}")
        print(json.dumps(measure(seeds, devices, args.total_steps)))
        return {}
    cases = {}
    for name, (s, d) in {"one_seed": (1, 1), "seeds_1_device": (args.seeds, 1),
                         "seeds_all_devices": (args.seeds, args.devices)}.items():
        out = subprocess.run([sys.executable, __file__, "--case", f"{s},{d}", "--total-steps",
                              str(args.total_steps)], check=True, capture_output=True, text=True,
                             cwd=ROOT).stdout
        cases[name] = json.loads(out.strip().splitlines()[-1])
    one = cases["one_seed"]["env_steps_per_s"]
    result = {"bench": "population", "env": "CartPole-v1", **cases,
              "env_steps_per_s": cases["seeds_all_devices"]["env_steps_per_s"],
              "compile_s": cases["seeds_all_devices"]["compile_s"],
              "peak_rss_mb": cases["seeds_all_devices"]["peak_rss_mb"],
              "population_vs_one_seed": round(cases["seeds_all_devices"]["env_steps_per_s"] / one, 2),
              "vmap_only_vs_one_seed": round(cases["seeds_1_device"]["env_steps_per_s"] / one, 2),
              "devices_speedup": round(cases["seeds_all_devices"]["env_steps_per_s"] /
                                       cases["seeds_1_device"]["env_steps_per_s"], 2)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
