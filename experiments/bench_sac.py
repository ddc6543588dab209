"""SAC training throughput and returns against Brax's own SAC, at the anchor's configuration.

    python experiments/bench_sac.py                  # rlx only, one JSON line
    python experiments/bench_sac.py --with-anchor    # rlx, then ../shared/anchors/brax_sac.sh
    python experiments/bench_sac.py --quick          # a tiny run (tests, smoke)

The config is the anchor's (Brax's SAC notebook settings for inverted_pendulum,
`rlx.algos.sac.SACConfig`'s defaults): positional backend, 300k env steps, 64 envs, batch
64, 32 gradient updates per env step of all envs, replay 512 to 16,384, discount 0.97,
reward scaling 10, lr 3e-4 (actor, critic, temperature), Polyak 0.005, target entropy
-0.5 x action dimension, 256-256 relu networks, tanh-Gaussian actor, observation
normalisation, Brax's cached-start auto-reset, 6 evaluations of 32 episodes; the anchor
is given the same values.

`train_steps_per_s` is measured as the anchor measures it: env steps between the first
and the last evaluation over the time between them. For the anchor that includes
compiling its training step and filling its replay buffer (it does both after its first
evaluation); rlx compiles every program before its first evaluation (its warm-up steps
fall inside the window), so its updates compile time is added back
(`updates_compile_s`; the rate without it is `train_steps_per_s_after_compile`). rlx
compiles cold (no persistent cache) unless RLX_COMPILATION_CACHE is set.
`best_return` / `final_return`: best and last evaluation return. rlx evaluates its
deterministic policy tanh(mean); Brax's SAC (deterministic_eval=False) samples.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ANCHOR = ROOT.parent / "shared" / "anchors" / "brax_sac.sh"


@dataclasses.dataclass
class Args:
    """bench_sac's own flags (--env, --backend, --total-steps are SACConfig's)."""

    seed: int = 1
    quick: bool = False  # a tiny config (seconds of training; the tests run it)
    with_anchor: bool = False  # also run Brax's SAC, same config, after rlx
    no_progress: bool = False  # no progress bar


def bench_config(overrides: dict, quick: bool = False):
    """The anchor's configuration (SACConfig's defaults), `sac.QUICK` sizes if `quick`, then
    the flags given."""
    from rlx.algos import sac

    return sac.SACConfig(**{**(sac.QUICK if quick else {}), **overrides})


def run_rlx(config, seed: int, progress: bool) -> dict:
    import jax

    from rlx import runner
    from rlx.algos import sac

    trainer = sac.make_train(config)
    res = runner.run(trainer, jax.random.PRNGKey(seed)[None], None, progress=progress)
    steps, times = res.eval_steps, res.eval_times
    window = times[-1] - times[0]
    updates_compile_s = res.compile_times.get("updates", 0.0)
    returns = [float(r) for r in res.eval["eval_return"][:, 0]]
    return {"bench": "sac", "impl": "rlx", "env": config.env, "backend": config.backend,
            "env_steps": steps[-1], "wall_s": round(res.wall_s, 1),
            "train_steps_per_s": round((steps[-1] - steps[0]) / (window + updates_compile_s), 1),
            "train_steps_per_s_after_compile": round((steps[-1] - steps[0]) / window, 1),
            "updates_compile_s": round(updates_compile_s, 1),
            "compile_s": round(res.compile_s or float("nan"), 1),
            "final_return": round(returns[-1], 2), "best_return": round(max(returns), 2),
            "eval_returns": [round(r, 2) for r in returns],
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "params_digest": runner.params_digest(res.state.params)}


def anchor_flags(config, seed: int) -> list[str]:
    """brax_sac.py's flags for `config` (every value it takes)."""
    values = {"env": config.env, "backend": config.backend, "total-steps": config.total_steps,
              "num-envs": config.num_envs, "batch-size": config.batch_size,
              "grad-updates-per-step": config.grad_updates_per_step,
              "min-replay-size": config.min_replay_size, "max-replay-size": config.max_replay_size,
              "episode-length": config.episode_length or 1000, "discount": config.gamma,
              "reward-scaling": config.reward_scaling, "lr": config.lr,
              "num-evals": config.num_evals, "seed": seed}
    return [x for k, v in values.items() for x in (f"--{k}", str(v))]


def check_anchor_comparable(config) -> None:
    """The anchor has no flag for these; refuse a config that differs from its fixed values."""
    fixed = dict(n_step=1, tau=0.005, alpha_lr=config.lr, init_alpha=1.0,
                 target_entropy_per_dim=-0.5, normalize_observations=True, fresh_reset=False,
                 actor_layers=(256, 256), critic_layers=(256, 256), activation="relu",
                 num_critics=2, actor_loss="sac", eval_envs=32)
    differ = [f"{k} = {getattr(config, k)!r} (Brax's SAC: {v!r})" for k, v in fixed.items()
              if getattr(config, k) != v]
    if differ:
        raise ValueError("--with-anchor compares like with like; the anchor cannot be given "
                         + "; ".join(differ))


def run_anchor(config, seed: int) -> dict:
    out = subprocess.run(["bash", str(ANCHOR), *anchor_flags(config, seed)], check=True,
                         capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")][-1]


def main(argv: list[str] | None = None) -> dict:
    sys.path.insert(0, str(ROOT))
    from experiments import common
    from rlx.algos.sac import SACConfig

    args, overrides = common.cli(__doc__.split("\n")[0], argv, Args, SACConfig, run=(),
                                 only=("env", "backend", "total_steps"))
    config = common.exit_on_value_error(lambda: bench_config(overrides, args.quick))
    common.exit_on_value_error(config.validate)
    if args.with_anchor:
        common.exit_on_value_error(lambda: check_anchor_comparable(config))
    common.setup(multi_process=False)
    out = run_rlx(config, args.seed, progress=not args.no_progress)
    if args.with_anchor:
        anchor = run_anchor(config, args.seed)
        out["anchor"] = anchor
        out["speedup_vs_anchor"] = round(out["train_steps_per_s"] / anchor["train_steps_per_s"], 2)
        out["best_return_minus_anchor"] = round(out["best_return"] - anchor["best_return"], 2)
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    os.environ.setdefault("RLX_COMPILATION_CACHE", "0")  # compile cold, as the anchor does
    main()
