"""Meta-train a loss with EPG (ES over a temporal-conv loss network) on a task family.

    python -m experiments.epg --out runs/epg                      # CPU default: point_goal
    python -m experiments.epg --out runs/epg_q --quick            # < 90 s smoke run
    python -m experiments.epg --out runs/epg_pg --loss-form pg    # learned-advantage variant
    # GPU (documented, not run here): openai/EPG sizes on GoalAnt, right-half goals
    python -m experiments.epg --out runs/epg_ant --env ant_goal --full --population 256

Writes summary.json, metrics.csv, fitness.png (outer fitness vs generation),
eval_returns.png (fresh agents trained by the ES mean loss on new training-region
tasks and on out-of-distribution tasks) and the learned loss (DIR/loss, loaded
by `rlx.epg.load_loss`). Rerunning with the same --out resumes from the last
checkpoint (rlx.runner).
"""

from __future__ import annotations

import dataclasses
import math
import time

from experiments import common


@dataclasses.dataclass
class Args:
    """experiments.epg's own flags (the EPGConfig fields are flags too; `--env` and
    `--population` are the old spellings of `--family` and `--population-size`)."""

    total_steps: int = 6_000_000  # env steps of all inner loops; --generations overrides it
    full: bool = False  # openai/EPG sizes (GPU)
    seed: int = 0


def build_config(args, overrides: dict):
    """EPGConfig: the quick sizes (rlx.epg.QUICK) if --quick, the flags, openai/EPG's sizes
    under them if --full; generations from --total-steps unless given."""
    from rlx.epg import QUICK, EPGConfig, openai_epg

    kw = dict(QUICK) if args.quick else {}
    overrides = dict(overrides)
    generations = overrides.pop("generations", None)
    kw.update(overrides)
    config = openai_epg(**kw) if args.full else EPGConfig(**kw)
    if generations is not None:
        gens = generations
    else:
        per_gen = config.population_size * config.tasks_per_member * config.inner_env_steps
        gens = max(1, math.ceil(args.total_steps / per_gen))
    config = dataclasses.replace(config, generations=gens)
    config.validate()
    return config


def main(argv: list[str] | None = None) -> dict:
    from rlx.epg import EPGConfig

    args, overrides = common.cli(
        __doc__.split("\n")[0], argv, Args, EPGConfig, defaults=dict(family="point_goal", seeds=1),
        aliases={"family": ("--env",), "population_size": ("--population",)})
    common.setup(args)
    if args.quick:
        args.total_steps = min(args.total_steps, 2 * 4 * 2 * 2 * (32 + 8 * 8))

    import jax
    import numpy as np

    from rlx import distributed, logging, runner
    from rlx.epg import loss_params, make_train, save_loss

    config = common.exit_on_value_error(lambda: build_config(args, overrides))
    trainer = common.exit_on_value_error(lambda: make_train(config, on_update=runner.on_update))
    keys = jax.random.split(jax.random.PRNGKey(args.seed), args.seeds)
    t0 = time.time()
    result = common.exit_on_value_error(lambda: runner.run(
        trainer, keys, args.out, devices=args.devices, progress=not args.no_progress))
    wall = time.time() - t0

    state0 = jax.tree.map(lambda x: x[0], result.state)
    phi = loss_params(config, state0)
    save_loss(f"{args.out}/loss", phi, config)
    ret, ood = result.eval["eval_return"], result.eval["ood_return"]  # [evals, seeds]
    fit = result.train["return_mean"]  # [generations, seeds]
    gens = np.arange(len(result.eval_steps)) * trainer.updates_per_eval
    summary = {
        "experiment": "epg", "env": config.family, "seeds": args.seeds, "devices": result.devices,
        "generations": trainer.num_updates, "population": config.population_size,
        "tasks_per_member": config.tasks_per_member, "inner_env_steps": config.inner_env_steps,
        "env_steps": float(trainer.total_env_steps), "wall_s": round(wall, 2),
        "compile_s": result.compile_s,
        "final_return": float(ret[-1].mean()), "initial_return": float(ret[0].mean()),
        "final_ood_return": float(ood[-1].mean()), "initial_ood_return": float(ood[0].mean()),
        "first_fitness": float(fit[0].mean()), "last_fitness": float(fit[-1].mean()),
        "best_fitness": float(fit.mean(1).max()),
        "params_digest": runner.params_digest(phi), "loss_dir": f"{args.out}/loss",
        "resumed_from_chunk": result.resumed_from, "config": dataclasses.asdict(config),
    }
    if not distributed.is_primary():  # multi-process: process 0 writes the files
        return summary
    logging.write_json(f"{args.out}/summary.json", summary)
    logging.write_metrics(args.out, logging.curve_rows(result), wandb=args.wandb)
    g = np.arange(1, fit.shape[0] + 1)
    logging.plot_curves(f"{args.out}/fitness.png", g,
                        {"mean fitness": fit, "best member": result.train["return_max"]},
                        "generation", "final return of the inner-loop agent", f"EPG {config.family}")
    logging.plot_curves(f"{args.out}/eval_returns.png", gens,
                        {f"train region ({config.train_region})": ret,
                         f"test region ({config.test_region}, OOD)": ood},
                        "generation", "return after an inner lifetime (ES mean loss)",
                        f"EPG {config.family}")
    print(f"EPG {config.family}: fitness {summary['first_fitness']:.1f} -> "
          f"{summary['last_fitness']:.1f} over {trainer.num_updates} generations; eval "
          f"{summary['initial_return']:.1f} -> {summary['final_return']:.1f}, OOD "
          f"{summary['initial_ood_return']:.1f} -> {summary['final_ood_return']:.1f} "
          f"({wall:.0f}s, {result.devices} devices); outputs in {args.out}")
    return summary


if __name__ == "__main__":
    main()
