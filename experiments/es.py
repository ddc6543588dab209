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

# Per-env defaults that learn on a CPU budget (flags override them).
PRESETS = {
    "brax": dict(population_size=256, sigma=0.02, lr=0.01, weight_decay=0.005,
                 hidden_layers=(32, 32), num_evals=11, eval_episodes=32),
    "classic": dict(population_size=64, sigma=0.05, lr=0.05, weight_decay=0.005,
                    hidden_layers=(16,), num_evals=11, eval_episodes=16),
}
QUICK = dict(population_size=16, hidden_layers=(8,), num_evals=3, eval_episodes=2,
             members_per_chunk=None)
QUICK_BRAX_EPISODE = 50


def add_flags(p) -> None:
    p.add_argument("--strategy", default="openai_es",
                   help="openai_es (rlx) or an evosax algorithm: Open_ES, CMA_ES, SNES, xNES, ...")
    p.add_argument("--population", type=int, default=None, help="population size")
    p.add_argument("--sigma", type=float, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--episodes-per-member", type=int, default=None)
    p.add_argument("--episode-length", type=int, default=None)
    p.add_argument("--backend", default=None, help="Brax backend (default spring)")
    p.add_argument("--hidden", default=None,
                   help="hidden layer widths, e.g. 32,32, or 'linear' for a linear policy")
    p.add_argument("--members-per-chunk", type=int, default=None,
                   help="members evaluated at once per device (bounds memory)")
    p.add_argument("--num-evals", type=int, default=None)
    p.add_argument("--shared-starts", action="store_true",
                   help="every member meets the same episode starts (default: one set per pair)")
    p.add_argument("--seed", type=int, default=0, help="first seed")


def parse_layers(text: str | None) -> tuple[int, ...] | None:
    """'32,32' -> (32, 32); 'linear' -> () (a linear policy); None -> None."""
    if text is None:
        return None
    if text.strip().lower() in ("linear", "none", ""):
        return ()
    return tuple(int(h) for h in text.split(","))


def build_config(args, **overrides):
    from rlx.envs import BRAX_ENVS
    from rlx.es import ESConfig

    brax = args.env in BRAX_ENVS
    kw = dict(PRESETS["brax" if brax else "classic"])
    if args.quick:
        kw.update(QUICK)
        if brax:
            kw["episode_length"] = QUICK_BRAX_EPISODE
    flags = dict(population_size=args.population, sigma=args.sigma, lr=args.lr,
                 weight_decay=args.weight_decay, episodes_per_member=args.episodes_per_member,
                 episode_length=args.episode_length, backend=args.backend,
                 members_per_chunk=args.members_per_chunk, num_evals=args.num_evals,
                 hidden_layers=parse_layers(args.hidden))
    kw.update({k: v for k, v in flags.items() if v is not None})
    kw.update(env=args.env, strategy=args.strategy, total_steps=args.total_steps,
              devices=args.devices, shared_starts=getattr(args, "shared_starts", False), **overrides)
    return ESConfig(**kw)


def main(argv: list[str] | None = None) -> dict:
    p = common.parser(__doc__.split("\n")[0], env="reacher", total_steps=50_000_000, seeds=1)
    add_flags(p)
    args = p.parse_args(argv)
    multi = common.setup(args)
    if args.quick:
        args.total_steps = min(args.total_steps, 4 * 16 * 500)

    import jax
    import numpy as np

    from rlx import distributed, logging, runner
    from rlx.es import make_train, mean_vector

    config = common.exit_on_value_error(lambda: build_config(args))
    trainer = common.exit_on_value_error(lambda: make_train(config, on_update=runner.on_update))
    keys = jax.random.split(jax.random.PRNGKey(args.seed), args.seeds)
    primary = distributed.is_primary()
    t0 = time.time()
    result = common.exit_on_value_error(lambda: runner.run(
        trainer, keys, args.out, progress=primary and not args.no_progress))
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
        logging.write_metrics(args.out, rows)
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
