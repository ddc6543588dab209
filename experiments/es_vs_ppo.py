"""Data efficiency of ES against rlx PPO: env steps ES needs to reach PPO's return.

    python -m experiments.es_vs_ppo --out runs/es_vs_ppo                     # reacher
    python -m experiments.es_vs_ppo --out runs/q --quick                     # tiny (tests)
    python -m experiments.es_vs_ppo --out runs/cp --env CartPole-v1 --ppo-steps 200000 --total-steps 5000000

PPO is rlx's own (`rlx.algos.ppo.make_train` + `rlx.runner.run`, the
experiments.ppo presets) trained for --ppo-steps; ES (experiments.es presets)
for --total-steps. As in Salimans et al. Table 1, progress is measured from the
starting score: for p in 25/50/75/100 % the target is
start + p (PPO final - start), and the table gives each method's env steps to
reach it (linear interpolation between evaluations of the deterministic
policy) and the ratio ES / PPO. Writes summary.json, metrics.csv, es_vs_ppo.png.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from experiments import common

FRACTIONS = (0.25, 0.5, 0.75, 1.0)


def steps_to_reach(steps: np.ndarray, returns: np.ndarray, target: float) -> float | None:
    """First env step at which the curve reaches `target` (interpolated), None if never."""
    steps, returns = np.asarray(steps, float), np.asarray(returns, float)
    hit = np.nonzero(returns >= target)[0]
    if not len(hit):
        return None
    i = int(hit[0])
    if i == 0:
        return float(steps[0])
    r0, r1 = returns[i - 1], returns[i]
    frac = (target - r0) / (r1 - r0) if r1 != r0 else 1.0
    return float(steps[i - 1] + frac * (steps[i] - steps[i - 1]))


def run_ppo(a):
    import jax

    from experiments import ppo as ppo_exp
    from rlx import runner
    from rlx.algos import ppo

    ns = argparse.Namespace(preset=None, quick=a.quick, env=a.env, total_steps=a.ppo_steps,
                            objective="clip", backend=None, episode_length=None)
    config, preset = ppo_exp.build_config(ns)
    trainer = ppo.make_train(config, on_update=runner.on_update)
    keys = jax.random.split(jax.random.PRNGKey(a.seed), a.seeds)
    result = runner.run(trainer, keys, f"{a.out}/ppo", progress=not a.no_progress)
    return config, trainer, result


def run_es(a):
    import jax

    from experiments import es as es_exp
    from rlx import runner
    from rlx.es import make_train

    ns = argparse.Namespace(**{**vars(a), "population": a.population, "sigma": None, "lr": None,
                               "weight_decay": None, "episodes_per_member": None,
                               "episode_length": None, "backend": None, "hidden": None,
                               "members_per_chunk": None, "num_evals": a.es_evals,
                               "strategy": "openai_es", "devices": None})
    config = es_exp.build_config(ns)
    trainer = make_train(config, on_update=runner.on_update)
    keys = jax.random.split(jax.random.PRNGKey(a.seed), a.seeds)
    result = runner.run(trainer, keys, f"{a.out}/es", progress=not a.no_progress)
    return config, trainer, result, es_exp.cumulative_steps(result)


def main(argv: list[str] | None = None) -> dict:
    p = common.parser(__doc__.split("\n")[0], env="reacher", total_steps=100_000_000, seeds=1)
    p.add_argument("--ppo-steps", type=int, default=2_000_000, help="PPO env steps per seed")
    p.add_argument("--population", type=int, default=None, help="ES population")
    p.add_argument("--es-evals", type=int, default=21, help="ES evaluations (curve resolution)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    common.setup(a)
    if a.quick:
        a.env = "CartPole-v1" if a.env == "reacher" else a.env
        a.ppo_steps, a.total_steps, a.es_evals = min(a.ppo_steps, 2 * 8 * 32), min(
            a.total_steps, 4 * 16 * 500), 3

    from rlx import distributed, logging, runner
    from rlx.es.trainer import search_mean

    t0 = time.time()
    ppo_config, ppo_trainer, ppo_res = common.exit_on_value_error(lambda: run_ppo(a))
    es_config, es_trainer, es_res, es_steps = common.exit_on_value_error(lambda: run_es(a))
    wall = time.time() - t0

    ppo_steps = np.asarray(ppo_res.eval_steps, float)
    ppo_ret = ppo_res.eval["eval_return"].mean(1)
    es_ret = es_res.eval["eval_return"].mean(1)
    start = float(ppo_ret[0])
    ppo_final = float(ppo_ret[-1])
    table = []
    for f in FRACTIONS:
        target = start + f * (ppo_final - start)
        s_ppo = steps_to_reach(ppo_steps, ppo_ret, target)
        s_es = steps_to_reach(es_steps, es_ret, target)
        table.append({"fraction": f, "target_return": target, "ppo_steps": s_ppo, "es_steps": s_es,
                      "es_over_ppo": (s_es / s_ppo if s_es is not None and s_ppo
                                      else None)})
    summary = {
        "experiment": "es_vs_ppo", "env": a.env, "seeds": a.seeds,
        "env_steps": float(es_steps[-1]), "wall_s": round(wall, 2),
        "final_return": float(es_ret[-1]), "params_digest": runner.params_digest(search_mean(es_res.state)),
        "ppo_env_steps": float(ppo_steps[-1]), "ppo_final_return": ppo_final,
        "ppo_params_digest": runner.params_digest(ppo_res.state.params),
        "es_steps_to_ppo_return": table[-1]["es_steps"],
        "es_over_ppo_steps_to_ppo_return": table[-1]["es_over_ppo"],
        "progress_table": table, "es_population": es_config.population_size,
        "ppo_wall_s": ppo_res.wall_s, "es_wall_s": es_res.wall_s,
    }
    rows = [{"method": "ppo", "env_steps": s, "eval_return": r} for s, r in zip(ppo_steps, ppo_ret)]
    rows += [{"method": "es", "env_steps": s, "eval_return": r} for s, r in zip(es_steps, es_ret)]
    if not distributed.is_primary():  # multi-process: process 0 writes the files
        return summary
    logging.write_json(f"{a.out}/summary.json", summary)
    logging.write_csv(f"{a.out}/metrics.csv", rows)
    plot(f"{a.out}/es_vs_ppo.png", ppo_steps, ppo_ret, es_steps, es_ret, ppo_final, a.env)
    for row in table:
        print(f"{row['fraction']:.0%} of PPO's progress (return {row['target_return']:.1f}): "
              f"PPO {row['ppo_steps']} steps, ES {row['es_steps']} steps, ratio {row['es_over_ppo']}")
    return summary


def plot(path, ppo_steps, ppo_ret, es_steps, es_ret, ppo_final, env) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(ppo_steps, ppo_ret, "o-", label="rlx PPO")
    ax.plot(es_steps, es_ret, "s-", label="rlx OpenAI-ES")
    ax.axhline(ppo_final, color="k", ls=":", label="PPO final return")
    ax.set_xscale("symlog", linthresh=max(float(ppo_steps[1]) if len(ppo_steps) > 1 else 1.0, 1.0))
    ax.set_xlabel("env steps per seed")
    ax.set_ylabel("eval return (deterministic policy)")
    ax.set_title(f"{env}: data efficiency")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
