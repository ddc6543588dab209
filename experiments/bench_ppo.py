"""PPO training throughput against Brax's own PPO, on Brax's defaults.

    python experiments/bench_ppo.py                      # rlx only, one JSON line
    python experiments/bench_ppo.py --with-anchor        # rlx, then ../shared/anchors/brax_ppo.sh

The config is the anchor's (Brax's PPO defaults on reacher/spring): policy MLP
4x32 and value MLP 5x256 (swish), tanh-squashed Gaussian, clip 0.3, GAE lambda
0.95, normalised advantages, 256 envs, 32 minibatches of 256 unrolls of 50 steps
(409,600 env steps per update, collected as 1,600 steps of 256 envs), 8 epochs,
discount 0.95, reward scaling 5, entropy 1e-3, observation normalisation, Brax's
cached-start auto-reset, 1M requested steps (rounded up to 4 updates = 1.64M),
5 evaluations of 128 deterministic episodes.

`env_steps_per_s` is measured as the anchor measures it: env steps between the
first and the last evaluation over the time between them, which for the anchor
includes compiling its training step (it compiles after its first evaluation);
rlx compiles every program before its first evaluation, so that compile time is
added back (`updates_compile_s`; the rate without it is
`env_steps_per_s_after_compile`). `first_update_s` is
measured as the anchor's is: from the start of the process (imports included)
to the evaluation after the first update; `compile_s` from the start of the run
(after imports and env construction) to the end of the first update.
`first_update_s_cold` / `first_update_s_warm`: the same, for a first process on a fresh
JAX compilation cache and a second one on the cache the first filled (every other number is
the cold run's; `anchor_first_update_s` is Brax's, which compiles without a cache).
`breakdown_s`: imports, making the trainer (env construction), lowering and compiling the
three programs, init and the first evaluation, the first update and its evaluation.
`xla_compile_s`: seconds in XLA's compiler (JAX's backend-compile events; on a warm cache,
loading the programs), `trace_lower_s`: tracing and lowering to MLIR, which no cache saves;
`warm_compile_ratio` = the warm run's `xla_compile_s` over the cold run's (the bar: < 0.1).
`--quick`: tiny sizes (rlx.algos.ppo.QUICK) to check the JSON keys, not a measurement.
`peak_rss_mb` is taken when training ends, before the env-only measurement. One
agent's envs are split over the devices (data parallel, gradients averaged): on
CPU one device per core.
"""

from __future__ import annotations

import time

_PROCESS_START = time.time()

import dataclasses
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ANCHOR = ROOT.parent / "shared" / "anchors" / "brax_ppo.sh"


@dataclasses.dataclass
class Args:
    """bench_ppo's own flags (--env, --backend, --total-steps are PPOConfig's)."""

    seed: int = 1
    devices: int | None = None  # default: all (one per core on CPU)
    with_anchor: bool = False  # also run Brax's PPO, same config
    rlx_only: bool = False  # internal: the rlx half of --with-anchor, in its own process
    quick: bool = False  # tiny sizes: checks the output, measures nothing


def bench_config(overrides: dict, quick: bool = False):
    """Brax's PPO defaults (rlx.algos.ppo.PRESETS["brax"]; `quick`: with ppo.QUICK's sizes)
    with the flags given."""
    from rlx.algos import ppo

    quick_kw = {**ppo.QUICK, "total_steps": 4 * 256} if quick else {}
    return ppo.PPOConfig(**{**ppo.PRESETS["brax"], **quick_kw, **overrides})


def compile_seconds() -> dict[str, float]:
    """A dict that JAX's compile events add their seconds to from now on: `xla_compile_s`
    (the XLA compiler, or loading from the persistent cache) and `trace_lower_s` (tracing
    and lowering to MLIR)."""
    import jax

    events = {"/jax/core/compile/backend_compile_duration": "xla_compile_s",
              "/jax/core/compile/jaxpr_trace_duration": "trace_lower_s",
              "/jax/core/compile/jaxpr_to_mlir_module_duration": "trace_lower_s"}
    seconds = {"xla_compile_s": 0.0, "trace_lower_s": 0.0}

    def listen(event: str, duration: float, **_) -> None:
        if event in events:
            seconds[events[event]] += duration

    jax.monitoring.register_event_duration_secs_listener(listen)
    return seconds


def run_rlx(args, base) -> dict:
    import jax

    from rlx import envs, runner
    from rlx.algos import ppo
    from rlx.rollout import random_policy, reset, rollout

    ndev = args.devices or len(jax.devices())
    imports_s = time.time() - _PROCESS_START
    # one agent, data parallel: each device runs 1/ndev of its envs (and of the steps)
    t = time.time()
    trainer = ppo.make_train(dataclasses.replace(base, data_parallel=ndev),
                             on_update=runner.on_update)
    make_train_s = time.time() - t
    key = jax.random.PRNGKey(args.seed)
    keys = key[None]
    compiling = compile_seconds()
    res = runner.run(trainer, keys, None, devices=ndev, progress=False)
    compiled = {k: round(v, 2) for k, v in compiling.items()}
    steps = [s * ndev for s in res.eval_steps]
    sps = (steps[-1] - steps[0]) / (res.eval_times[-1] - res.eval_times[0])
    first_update_s = res.started_at + res.eval_times[1] - _PROCESS_START
    # the anchor compiles its training step after its first evaluation, so its rate
    # includes that compile; rlx compiles before it: add it back for a like-for-like rate
    updates_compile_s = res.compile_times.get("updates", 0.0)
    programs_s = sum(res.compile_times.values())  # lowering and compiling all three
    sps_with_compile = (steps[-1] - steps[0]) / (res.eval_times[-1] - res.eval_times[0]
                                                 + updates_compile_s)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    # env-only throughput: the same envs, random actions, no policy
    env = envs.make(base.env, backend=base.backend, fresh_reset=False)
    roll = jax.jit(lambda s, k: rollout(env, random_policy(env), s, k, 1000))
    s = reset(env, key, base.num_envs)
    jax.block_until_ready(roll(s, key))
    t = time.time()
    jax.block_until_ready(roll(s, jax.random.fold_in(key, 1)))
    env_only = base.num_envs * 1000 / (time.time() - t)

    return {"bench": "ppo", "impl": "rlx", "env": base.env, "backend": base.backend,
            "devices": ndev, "env_steps": steps[-1], "wall_s": round(res.wall_s, 1),
            "env_steps_per_s": round(sps_with_compile, 1),
            "env_steps_per_s_after_compile": round(sps, 1),
            "updates_compile_s": round(updates_compile_s, 1),
            "compile_s": round(res.compile_s or float("nan"), 1), **compiled,
            "first_update_s": round(first_update_s, 1),
            # where the time to the first finished update goes
            "breakdown_s": {"imports": round(imports_s, 1), "make_train": round(make_train_s, 1),
                            "lower_and_compile": round(programs_s, 1),
                            "init_and_first_eval": round(res.eval_times[0] - programs_s, 1),
                            "first_update_and_eval": round(res.eval_times[1] - res.eval_times[0], 1)},
            "peak_rss_mb": round(peak_rss, 1),
            "env_only_steps_per_s": round(env_only, 1),
            "eval_returns": [round(float(r), 2) for r in res.eval["eval_return"].mean(1)],
            "params_digest": runner.params_digest(res.state.params)}


# Runs the anchor file in its own venv and reports when its first update finished.
_ANCHOR_DRIVER = r"""
import json, resource, sys, time
t_start = time.time()
path = sys.argv[1]
sys.argv = [path] + sys.argv[2:]
ns = {"__name__": "__main__"}
exec(compile(open(path).read(), path, "exec"), ns)
stamps = ns["stamps"]
print(json.dumps({"first_update_s": round(stamps[1][1] - t_start, 1) if len(stamps) > 1 else None,
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))
"""


def run_anchor(args, base) -> dict:
    venv = os.environ.get("BRAX_ANCHOR_VENV", "/tmp/brax-anchor-venv")
    subprocess.run(["bash", str(ANCHOR), "--help"], check=True, capture_output=True)  # builds the venv
    flags = ["--env", base.env, "--backend", base.backend, "--total-steps", str(base.total_steps),
             "--seed", str(args.seed)]
    out = subprocess.run([f"{venv}/bin/python", "-c", _ANCHOR_DRIVER, str(ANCHOR.with_suffix(".py")),
                          *flags], check=True, capture_output=True, text=True).stdout
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    result = lines[0]
    result.update(lines[1])
    return result


def main(argv: list[str] | None = None) -> dict:
    sys.path.insert(0, str(ROOT))
    from experiments import common
    from rlx.algos.ppo import PPOConfig

    args, overrides = common.cli(__doc__.split("\n")[0], argv, Args, PPOConfig, run=(),
                                 only=("env", "backend", "total_steps"))
    if args.rlx_only:
        common.setup()  # before anything starts JAX's backend: one CPU device per core
    base = common.exit_on_value_error(lambda: bench_config(overrides, args.quick))

    if args.rlx_only:
        out = run_rlx(args, base)
        print(json.dumps(out), flush=True)
        return out

    def check_env() -> None:  # the config against its env (e.g. the head), before any run
        from rlx.algos import ppo

        ppo.head_for(base, ppo.make_env(base.env, backend=base.backend))

    common.exit_on_value_error(check_env)
    # rlx in its own process (clean peak memory), twice on one fresh compilation cache (cold,
    # then warm: its programs come from the cache), then the anchor, back to back
    cmd = [sys.executable, __file__, "--rlx-only", "--env", base.env, "--backend", base.backend,
           "--total-steps", str(base.total_steps), "--seed", str(args.seed)]
    if args.devices:
        cmd += ["--devices", str(args.devices)]
    if args.quick:
        cmd += ["--quick"]
    import tempfile

    with tempfile.TemporaryDirectory(prefix="rlx-bench-cache-") as cache:
        env = {**os.environ, "RLX_COMPILATION_CACHE": cache}
        env.pop("JAX_COMPILATION_CACHE_DIR", None)
        cold, warm = (json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True,
                                                cwd=ROOT, env=env).stdout.strip().splitlines()[-1])
                      for _ in range(2))
    rlx_out = dict(cold, first_update_s_cold=cold["first_update_s"],
                   first_update_s_warm=warm["first_update_s"], compile_s_warm=warm["compile_s"],
                   xla_compile_s_warm=warm["xla_compile_s"], breakdown_s_warm=warm["breakdown_s"],
                   trace_lower_s_warm=warm["trace_lower_s"],
                   warm_compile_ratio=round(warm["xla_compile_s"] / cold["xla_compile_s"], 3)
                   if cold["xla_compile_s"] else None)
    if not args.with_anchor:
        print(json.dumps(rlx_out), flush=True)
        return rlx_out
    anchor = run_anchor(args, base)
    out = dict(rlx_out)
    out["anchor"] = anchor
    out["speedup_vs_anchor"] = round(rlx_out["env_steps_per_s"] / anchor["train_steps_per_s"], 2)
    out["anchor_first_update_s"] = anchor.get("first_update_s")
    out["first_update_ratio_vs_anchor"] = (
        round(rlx_out["first_update_s"] / anchor["first_update_s"], 2)
        if anchor.get("first_update_s") else None)
    out["first_update_warm_ratio_vs_anchor"] = (
        round(rlx_out["first_update_s_warm"] / anchor["first_update_s"], 2)
        if anchor.get("first_update_s") else None)
    out["memory_ratio_vs_anchor"] = round(rlx_out["peak_rss_mb"] / anchor["peak_rss_mb"], 2)
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()
