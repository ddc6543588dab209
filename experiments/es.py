"""Train a policy with Evolution Strategies, the population sharded over every device.

    python -m experiments.es --out runs/es                        # Brax reacher, OpenAI-ES
    python -m experiments.es --out runs/es_q --quick              # tiny (tests, smoke runs)
    python -m experiments.es --out runs/es_cp --env CartPole-v1
    python -m experiments.es --out runs/cma --env CartPole-v1 --strategy CMA_ES
    # two processes (hosts), one population over both processes' devices:
    python -m experiments.es --out runs/mh --coordinator 127.0.0.1:12355 --num-processes 2 --process-id 0
    python -m experiments.es --out runs/mh --coordinator 127.0.0.1:12355 --num-processes 2 --process-id 1

Writes summary.json, metrics.csv, learning_curve_generations.png and
learning_curve_steps.png to --out (process 0 only); rerunning with the same
--out resumes from the last checkpoint. The coordinator/process flags may also
come from RLX_* or JAX_* COORDINATOR_ADDRESS / NUM_PROCESSES / PROCESS_ID.
"""

from __future__ import annotations

import dataclasses
import time

from experiments import common


@dataclasses.dataclass
class Args:
    """experiments.es's own flags (the ESConfig fields are flags too; `--population` and
    `--hidden` are the old spellings of `--population-size` and `--hidden-layers`)."""

    seed: int = 0  # first seed


def build_config(args, overrides: dict):
    """ESConfig: the env family's preset (rlx.es.PRESETS), the quick sizes, then the flags."""
    from rlx.es import ESConfig, preset

    kw = preset(args.env, args.quick)
    kw.update(overrides, total_steps=args.total_steps)
    return ESConfig(**kw)


def main(argv: list[str] | None = None) -> dict:
    from rlx.es import ESConfig

    args, overrides = common.cli(
        __doc__.split("\n")[0], argv, Args, ESConfig,
        defaults=dict(env="reacher", total_steps=50_000_000, seeds=1),
        aliases={"population_size": ("--population",), "hidden_layers": ("--hidden",)})
    multi = common.setup(args)
    if args.quick:
        args.total_steps = min(args.total_steps, 4 * 16 * 500)

    import jax
    import numpy as np

    from rlx import distributed, logging, runner
    from rlx.es import make_train, mean_vector

    config = common.exit_on_value_error(lambda: build_config(args, overrides))
    trainer = common.exit_on_value_error(lambda: make_train(config, on_update=runner.on_update))
    keys = jax.random.split(jax.random.PRNGKey(args.seed), args.seeds)
    primary = distributed.is_primary()
    t0 = time.time()
    result = common.exit_on_value_error(lambda: runner.run(
        trainer, keys, args.out, devices=args.devices, progress=primary and not args.no_progress))
    wall = time.time() - t0

    ret = result.eval["eval_return"]  # [evals, seeds]
    steps = logging.cumulative_env_steps(result)
    gens = np.arange(len(result.eval_steps)) * trainer.updates_per_eval
    summary = {
        "experiment": "es", "env": config.env, "strategy": config.strategy,
        "population": config.population_size, "seeds": args.seeds, "devices": result.devices,
        "processes": jax.process_count(), "multi_process": multi,
        "generations": trainer.num_updates, "env_steps": float(steps[-1]),
        "env_steps_nominal": trainer.total_env_steps,
        "wall_s": round(wall, 2), "compile_s": result.compile_s,
        "final_return": float(ret[-1].mean()), "final_return_per_seed": ret[-1].tolist(),
        "initial_return": float(ret[0].mean()), "best_eval_return": float(ret.mean(1).max()),
        "final_train_return_mean": float(result.train["return_mean"][-1].mean()),
        "nonfinite_members_total": float(result.train["nonfinite_members"].sum()),
        "params_digest": runner.params_digest(mean_vector(trainer, result.state)),
        "resumed_from_chunk": result.resumed_from,
        "config": dataclasses.asdict(config),
    }
    if primary:
        rows = logging.curve_rows(result)
        for r in rows:
            if r["kind"] == "eval":
                r["env_steps_actual"] = float(steps[result.eval_steps.index(r["env_step"])])
                r["generation"] = int(gens[result.eval_steps.index(r["env_step"])])
        logging.write_json(f"{args.out}/summary.json", summary)
        logging.write_metrics(args.out, rows, wandb=args.wandb)
        label = {f"{config.strategy} (pop {config.population_size})": ret}
        logging.plot_curves(f"{args.out}/learning_curve_generations.png", gens, label,
                            "generation", "eval return (mean policy)", config.env)
        logging.plot_curves(f"{args.out}/learning_curve_steps.png", steps, label,
                            "env steps per seed", "eval return (mean policy)", config.env)
        print(f"{config.env}: return {summary['initial_return']:.1f} -> {summary['final_return']:.1f}"
              f" after {trainer.num_updates} generations ({steps[-1]:.3g} env steps) on "
              f"{result.devices} devices in {wall:.0f}s; outputs in {args.out}")
    return summary


if __name__ == "__main__":
    main()
