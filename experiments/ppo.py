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

# Presets: a small config that learns quickly on CPU, and Brax's PPO defaults
# (bench_ppo.py and ../shared/anchors/brax_ppo.py use the latter).
PRESETS = {
    "default": dict(num_envs=64, unroll_length=128, num_minibatches=8, update_epochs=4, lr=3e-4,
                    gamma=0.95, reward_scaling=5.0, ent_coef=0.0, num_evals=11, eval_envs=32),
    "brax": dict(num_envs=256, unroll_length=1600, num_minibatches=32, update_epochs=8, lr=3e-4,
                 gamma=0.95, gae_lambda=0.95, clip_eps=0.3, ent_coef=1e-3, reward_scaling=5.0,
                 max_grad_norm=float("inf"), head="tanh_gaussian", policy_layers=(32,) * 4,
                 value_layers=(256,) * 5, activation="swish", num_evals=5, eval_envs=128,
                 fresh_reset=False),
    "classic": dict(num_envs=4, unroll_length=128, num_minibatches=4, update_epochs=4, lr=2.5e-4,
                    anneal_lr=True, gamma=0.99, ent_coef=0.01, normalize_observations=False,
                    num_evals=11, eval_envs=32),
}
QUICK = dict(num_envs=8, unroll_length=32, num_minibatches=2, update_epochs=2, num_evals=3,
             eval_envs=4, policy_layers=(16, 16), value_layers=(16, 16), episode_length=100)


def build_config(args):
    from rlx.algos.ppo import PPOConfig
    from rlx.envs import BRAX_ENVS

    preset = args.preset or ("default" if args.env in BRAX_ENVS else "classic")
    kw = dict(PRESETS[preset])
    if args.quick:
        kw.update(QUICK)
    kw.update(env=args.env, total_steps=args.total_steps, objective=args.objective)
    if args.backend:
        kw["backend"] = args.backend
    if args.episode_length:
        kw["episode_length"] = args.episode_length
    return PPOConfig(**kw), preset


def main(argv: list[str] | None = None) -> dict:
    p = common.parser(__doc__.split("\n")[0], env="reacher", total_steps=1_000_000, seeds=2)
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="hyper-parameter preset (default: 'default' for Brax, 'classic' for gymnax)")
    p.add_argument("--objective", default="clip", help="clip | none | kl_fixed | kl_adaptive")
    p.add_argument("--backend", default=None, help="Brax backend (default spring)")
    p.add_argument("--episode-length", type=int, default=None)
    p.add_argument("--seed", type=int, default=0, help="first seed")
    args = p.parse_args(argv)
    common.setup(args)
    if args.quick:
        args.total_steps = min(args.total_steps, 2 * 8 * 32)

    import jax
    import numpy as np

    from rlx import distributed, logging, runner
    from rlx.algos import ppo

    config, preset = common.exit_on_value_error(lambda: build_config(args))
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
    if not distributed.is_primary():  # multi-process: process 0 writes the files
        return summary
    logging.write_json(f"{args.out}/summary.json", summary)
    logging.write_metrics(args.out, logging.curve_rows(result))
    logging.plot_curves(f"{args.out}/learning_curve.png", np.asarray(result.eval_steps),
                        {f"PPO ({config.objective})": ret}, "env steps per seed",
                        "eval return (deterministic)", f"{config.env}: {args.seeds} seeds")
    print(f"{config.env}: return {summary['initial_return']:.1f} -> {summary['final_return']:.1f} "
          f"after {trainer.total_env_steps} steps x {args.seeds} seeds in {wall:.0f}s; outputs in {args.out}")
    return summary


if __name__ == "__main__":
    main()
