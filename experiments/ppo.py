"""Train PPO on any rlx environment, any number of seeds as one program.

    python -m experiments.ppo --out runs/ppo                  # reacher, 2 seeds, CPU-sized
    python -m experiments.ppo --out runs/ppo_q --quick        # tiny (tests, smoke runs)
    python -m experiments.ppo --out runs/cp --env CartPole-v1 --seeds 8
    python -m experiments.ppo --out runs/brax --preset brax   # Brax's PPO defaults

Writes summary.json, metrics.csv and learning_curve.png to --out; rerunning
the same command with the same --out resumes from the last checkpoint.
"""

from __future__ import annotations

import dataclasses
import time

from experiments import common


@dataclasses.dataclass
class Args:
    """experiments.ppo's own flags (the PPOConfig fields are flags too)."""

    # rlx.algos.ppo.PRESETS name (default: rlx.algos.ppo.preset_for(env): 'default' for Brax,
    # 'purejaxrl' for gymnax classic control (PureJaxRL's CartPole config, 500k steps),
    # 'minatar' for MinAtar (PureJaxRL's, 10M steps), 'classic' for other gymnax envs)
    preset: str | None = None
    seed: int = 0  # first seed


def build_config(args, overrides: dict):
    """PPOConfig: the preset, the quick sizes if --quick, then the flags given."""
    from rlx.algos.ppo import PRESETS, QUICK, PPOConfig, preset_for

    preset = args.preset or preset_for(args.env)
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid: {', '.join(sorted(PRESETS))}")
    kw = dict(PRESETS[preset])
    if args.quick:
        kw.update(QUICK)
    kw.update(overrides)
    if args.total_steps is not None:  # else the preset's (purejaxrl 500k, minatar 10M), else 1M
        kw["total_steps"] = args.total_steps
    return PPOConfig(**kw), preset


def main(argv: list[str] | None = None) -> dict:
    from rlx.algos.ppo import PPOConfig

    args, overrides = common.cli(__doc__.split("\n")[0], argv, Args, PPOConfig,
                                 exclude=("axis_name",),
                                 defaults=dict(env="reacher", total_steps=None, seeds=2))
    common.setup(args)
    if args.quick:
        args.total_steps = min(args.total_steps or 2 * 8 * 32, 2 * 8 * 32)

    import jax
    import numpy as np

    from rlx import distributed, logging, runner
    from rlx.algos import ppo
    from rlx.envs import SOLVED_RETURN

    config, preset = common.exit_on_value_error(lambda: build_config(args, overrides))
    trainer = common.exit_on_value_error(lambda: ppo.make_train(config, on_update=runner.on_update))
    keys = jax.random.split(jax.random.PRNGKey(args.seed), args.seeds)
    common.exit_on_value_error(lambda: runner.choose_mesh(args.seeds, args.devices))
    t0 = time.time()
    result = common.exit_on_value_error(lambda: runner.run(
        trainer, keys, args.out, devices=args.devices, progress=not args.no_progress))
    wall = time.time() - t0

    ret = result.eval["eval_return"]
    summary = {
        "experiment": "ppo", "env": config.env, "preset": preset, "objective": config.objective,
        "seeds": args.seeds, "devices": result.devices,
        "env_steps": trainer.total_env_steps, "env_steps_total": trainer.total_env_steps * args.seeds,
        "wall_s": round(wall, 2), "compile_s": result.compile_s,
        "final_return": float(ret[-1].mean()), "final_return_per_seed": ret[-1].tolist(),
        "initial_return": float(ret[0].mean()),
        "params_digest": runner.params_digest(result.state.params),
        "resumed_from_chunk": result.resumed_from,
        "config": dataclasses.asdict(config),
    }
    if config.env in SOLVED_RETURN and config.episode_length is None:  # the standard time limit only
        summary["solved_return"] = SOLVED_RETURN[config.env]
        summary["solved_fraction"] = float((ret[-1] >= SOLVED_RETURN[config.env]).mean())
    if not distributed.is_primary():  # multi-process: process 0 writes the files
        return summary
    logging.write_json(f"{args.out}/summary.json", summary)
    logging.write_metrics(args.out, logging.curve_rows(result), wandb=args.wandb)
    logging.plot_curves(f"{args.out}/learning_curve.png", np.asarray(result.eval_steps),
                        {f"PPO ({config.objective})": ret}, "env steps per seed",
                        "eval return (deterministic)", f"{config.env}: {args.seeds} seeds")
    solved = (f" ({summary['solved_fraction']:.0%} of seeds >= {summary['solved_return']:g})"
              if "solved_fraction" in summary else "")
    print(f"{config.env}: return {summary['initial_return']:.1f} -> {summary['final_return']:.1f}{solved} "
          f"after {trainer.total_env_steps} steps x {args.seeds} seeds in {wall:.0f}s; outputs in {args.out}")
    return summary


if __name__ == "__main__":
    main()
