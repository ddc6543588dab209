"""Policy gradients = soft Q-learning (Schulman, Chen & Abbeel 2017): the identity, checked
numerically, and n-step soft Q-learning against entropy-regularised A2C on MinAtar.

    python -m experiments.softq_equivalence --out runs/softq            # CPU default
    python -m experiments.softq_equivalence --out runs/softq --quick    # < 60 s smoke run
    python -m experiments.softq_equivalence --out runs/softq --full     # GPU: 5 games, 10M steps, 8 seeds

Part 1, the gradient check (float64, a random MDP with random networks): for each
case (1-step / n-step / whole-rollout returns; entropy or KL-to-a-reference form),
  per batch:      grad L_softQ  vs  tau * grad L_PG(sampled log-ratio) + grad L_V, exactly;
  in expectation: the same soft-Q gradient vs the standard estimator (KL over all actions
                  in the returns plus its gradient), averaged over many on-policy batches,
                  as z-scores of the mean paired difference;
plus broken parametrisations (Q = V + 0.5 tau log pi; a wrong tau) that must fail both.
The check itself is `rlx.softq_identity` (on `rlx.envs.RandomMDP`); this module configures it.
Part 2: learning curves of both trainers on MinAtar games, several seeds as one
program through `rlx.runner` (the paper's Atari figure, scaled down).

Writes summary.json, metrics.csv (curves), grad_check.csv (the table) and PNGs to --out.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import numpy as np

from experiments import common
from rlx.softq_identity import BROKEN, CASES, Case, check_case, holds

GAMES = ("Breakout-MinAtar", "SpaceInvaders-MinAtar", "Asterix-MinAtar", "Freeway-MinAtar",
         "Seaquest-MinAtar")
ALGOS = ("softq", "a2c")
LABELS = {"softq": "n-step soft Q-learning", "a2c": "A2C (entropy in returns)"}

# Run sizes per preset; the trainer settings both algorithms share (NStepConfig fields, every
# one a flag) are rlx.algos.a2c.PRESETS of the same name.
PRESETS: dict[str, dict[str, Any]] = {
    # CPU: 3 games x 2 algorithms x 4 seeds x 3M steps, about 15-25 minutes on 2 cores.
    "default": dict(games=GAMES[:3], total_steps=3_000_000, seeds=4, check_batches=20_000),
    # GPU: the paper's figure scaled to MinAtar, all five games.
    "full": dict(games=GAMES, total_steps=10_000_000, seeds=8, check_batches=100_000),
    "quick": dict(games=GAMES[:1], total_steps=2 * 8 * 5 * 4, seeds=2, check_batches=2_000,
                  check_only=(3, "kl")),
}


@dataclasses.dataclass
class Args:
    """experiments.softq_equivalence's own flags (the shared NStepConfig fields are flags too)."""

    full: bool = False  # GPU config: 5 games, 10M steps, 8 seeds, 256-wide networks
    env: tuple[str, ...] | None = None  # MinAtar games (default: the preset's)
    check_batches: int | None = None  # batches for the in-expectation check (default: the preset's)
    skip_training: bool = False  # only the gradient check
    seed: int = 0  # first seed


# ---- Part 1: the gradient identity (rlx.softq_identity) -----------------------------------------

def gradient_table(batches: int, cases: tuple[Case, ...] = CASES + BROKEN) -> list[dict]:
    """Both checks (`rlx.softq_identity.check_case`) for every case, with the verdict next to
    what the case should give."""
    rows = []
    for case in cases:
        r = check_case(case, batches=batches)
        rows.append({"case": case.name, "n": case.n or "T", "form": case.form, **r,
                     "batches": batches, "expected": "holds" if case.should_hold else "fails",
                     "verdict": "holds" if holds(r) else "fails"})
    return rows


def print_table(rows: list[dict]) -> None:
    head = (f"{'case':38s} {'max|dg|':>9s} {'rel':>9s} {'E max|z|':>9s} {'E rel':>9s} "
            f"{'expected':>8s} {'verdict':>8s}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['case']:38s} {r['per_batch_max_abs']:9.2e} {r['per_batch_rel']:9.2e} "
              f"{r['expect_max_z']:9.2f} {r['expect_rel']:9.2e} {r['expected']:>8s} {r['verdict']:>8s}")


# ---- Part 2: learning curves -------------------------------------------------------------------

def make_trainer(algo: str, game: str, total_steps: int, trainer_kw: dict, on_update=None):
    from rlx.algos import a2c, softq

    if algo == "softq":
        return softq.make_train(softq.SoftQConfig(env=game, total_steps=total_steps, **trainer_kw),
                                on_update=on_update)
    return a2c.make_train(a2c.A2CConfig(env=game, total_steps=total_steps, **trainer_kw),
                          on_update=on_update)


def main(argv: list[str] | None = None) -> dict:
    from rlx.algos.a2c import PRESETS as TRAINER_PRESETS
    from rlx.algos.a2c import NStepConfig

    args, overrides = common.cli(__doc__.split("\n")[0], argv, Args, NStepConfig,
                                 defaults=dict(seeds=None))
    common.setup(args)
    preset = "quick" if args.quick else "full" if args.full else "default"
    cfg = dict(PRESETS[preset], trainer=dict(TRAINER_PRESETS[preset]))
    overrides.pop("total_steps", None)
    cfg["trainer"].update(overrides)
    games = tuple(args.env or cfg["games"])
    total_steps = args.total_steps or cfg["total_steps"]
    seeds = args.seeds or cfg["seeds"]
    check_batches = args.check_batches or cfg["check_batches"]

    import jax

    from rlx import distributed, logging, runner
    from rlx.envs import make as make_env
    from rlx.rollout import random_return

    for algo in ALGOS:  # validate every config before compiling anything
        for game in games:
            common.exit_on_value_error(lambda: make_trainer(algo, game, total_steps, cfg["trainer"]))
    common.exit_on_value_error(lambda: runner.choose_mesh(seeds, args.devices))
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()

    only = cfg.get("check_only")  # quick: one (n, form)
    cases = tuple(c for c in CASES + BROKEN if only is None or (c.n, c.form) == only)
    rows = common.exit_on_value_error(lambda: gradient_table(check_batches, cases))
    print_table(rows)
    if distributed.is_primary():
        logging.write_csv(f"{args.out}/grad_check.csv", rows)
    max_rel = max(r["per_batch_rel"] for r in rows if r["expected"] == "holds")
    check_s = time.time() - t0

    results: dict[str, dict] = {}
    csv_rows: list[dict] = []
    eval_curves: dict[str, dict] = {}
    train_curves: dict[str, dict] = {}
    keys = jax.random.split(jax.random.PRNGKey(args.seed), seeds)
    for game in ([] if args.skip_training else games):
        results[game], eval_curves[game], train_curves[game] = {}, {}, {}
        # a random policy's return, the curves' zero (skipped in --quick: one more compile)
        random_ret = (None if args.quick else
                      float(random_return(make_env(game), jax.random.PRNGKey(args.seed))))
        for algo in ALGOS:
            trainer = make_trainer(algo, game, total_steps, cfg["trainer"], runner.on_update)
            res = common.exit_on_value_error(lambda: runner.run(
                trainer, keys, f"{args.out}/runs/{game}/{algo}", devices=args.devices,
                checkpoint=not args.quick, progress=not args.no_progress))
            ret = res.eval["eval_return"]
            x = np.asarray(res.eval_steps)
            points = len(x) - 1
            eval_curves[game][algo] = (x, ret)
            train_curves[game][algo] = (x[1:], logging.chunk_episode_means(
                res.train["episode_return_sum"], res.train["episode_count"], points))
            results[game][algo] = {
                "final_return": float(ret[-1].mean()), "final_return_per_seed": ret[-1].tolist(),
                "initial_return": float(ret[0].mean()),
                "final_train_return_per_seed": logging.last_episodes_mean(
                    res.train["episode_return_sum"], res.train["episode_count"]).tolist(),
                "params_digest": runner.params_digest(res.state.params),
                "random_return": random_ret, "wall_s": round(res.wall_s, 2),
                "compile_s": res.compile_s, "env_steps": trainer.total_env_steps}
            csv_rows += logging.curve_rows(res, extra={"env": game, "algo": algo})
            rnd = "-" if random_ret is None else f"{random_ret:.2f}"
            print(f"{game} {algo}: random {rnd}; eval return "
                  f"{results[game][algo]['initial_return']:.2f} -> "
                  f"{results[game][algo]['final_return']:.2f} (per seed {np.round(ret[-1], 2).tolist()}), "
                  f"{res.wall_s:.0f}s")
        if distributed.is_primary():
            logging.plot_curves(f"{args.out}/{game}.png", eval_curves[game]["softq"][0],
                                {LABELS[a]: eval_curves[game][a][1] for a in ALGOS},
                                "env steps per seed", "eval return (greedy)", f"{game}: {seeds} seeds")
    if results and distributed.is_primary():
        randoms = {g: r["softq"]["random_return"] for g, r in results.items()
                   if r["softq"]["random_return"] is not None}
        baselines = {g: {"random policy": v} for g, v in randoms.items()}
        for name, curves, ylabel in (("eval", eval_curves, "eval return (greedy)"),
                                     ("train", train_curves, "training episode return")):
            logging.plot_panels(f"{args.out}/curves_{name}.png",
                                {g: {LABELS[a]: xy for a, xy in c.items()} for g, c in curves.items()},
                                "env steps per seed", ylabel, hlines=baselines, panel_size=(4.5, 3.4))
    wall = time.time() - t0

    summary = {
        "experiment": "softq_equivalence", "preset": preset, "env": list(games), "seeds": seeds,
        "env_steps": total_steps if not results else results[games[0]]["softq"]["env_steps"],
        "wall_s": round(wall, 2), "check_s": round(check_s, 2),
        "max_rel_grad_error": max_rel,
        "identity_holds_all": all(r["verdict"] == r["expected"] for r in rows),
        "final_return": {g: {a: r[a]["final_return"] for a in ALGOS} for g, r in results.items()},
        "params_digest": {g: {a: r[a]["params_digest"] for a in ALGOS} for g, r in results.items()},
        "results": results, "grad_check": rows, "trainer": cfg["trainer"],
        "devices": len(jax.devices()),
    }
    if not distributed.is_primary():  # multi-process: process 0 writes the files
        return summary
    logging.write_json(f"{args.out}/summary.json", summary)
    logging.write_metrics(args.out, csv_rows, wandb=args.wandb)
    print(f"max relative gradient error {max_rel:.2e}; all checks as expected: "
          f"{summary['identity_holds_all']}; {wall:.0f}s; outputs in {args.out}")
    return summary


if __name__ == "__main__":
    main()
