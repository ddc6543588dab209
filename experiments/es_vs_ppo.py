"""Data efficiency of ES against rlx PPO: env steps ES needs to reach PPO's return.

    python -m experiments.es_vs_ppo --out runs/es_vs_ppo                     # reacher
    python -m experiments.es_vs_ppo --out runs/q --quick                     # tiny (tests)
    python -m experiments.es_vs_ppo --out runs/cp --env CartPole-v1 --ppo-steps 200000 --total-steps 5000000

PPO is rlx's own (`rlx.algos.ppo.make_train` + `rlx.runner.run`, with
rlx.algos.ppo's presets) trained for --ppo-steps; OpenAI-ES (`rlx.es.make_train`,
rlx.es's presets; every ESConfig field is a flag) for --total-steps. As in Salimans et al. Table 1,
progress is measured from the starting score: for p in 25/50/75/100 % the target
is start + p (PPO final - start), and the table gives each method's env steps to
reach it (linear interpolation between evaluations of the deterministic
policy) and the ratio ES / PPO. Writes summary.json, metrics.csv, es_vs_ppo.png.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from experiments import common

FRACTIONS = (0.25, 0.5, 0.75, 1.0)


@dataclasses.dataclass
class Args:
    """experiments.es_vs_ppo's own flags; the ES side's ESConfig fields are flags too
    (`--population` is the old spelling of `--population-size`, `--es-evals` of
    `--num-evals`, default 21 evaluations for the curve's resolution)."""

    ppo_steps: int = 2_000_000  # PPO env steps per seed
    seed: int = 0


def ppo_config(env: str, total_steps: int, quick: bool):
    """PPOConfig of the PPO side: the env family's preset (rlx.algos.ppo.PRESETS, as
    experiments.ppo picks it) + quick sizes; the clip objective."""
    from rlx.algos.ppo import PRESETS, QUICK, PPOConfig
    from rlx.envs import is_continuous_control

    kw = dict(PRESETS["default" if is_continuous_control(env) else "classic"],
              **(QUICK if quick else {}))
    return PPOConfig(**kw, env=env, total_steps=total_steps, objective="clip")


def es_config(env: str, total_steps: int, quick: bool, overrides: dict):
    """ESConfig of the ES side: OpenAI-ES with the env family's preset (rlx.es.preset)
    (+ quick sizes), 21 evaluations (quick: 3), then the flags."""
    from rlx.es import ESConfig, preset

    kw = preset(env, quick)
    if not quick:
        kw["num_evals"] = 21
    kw.update(overrides)
    kw.update(env=env, strategy="openai_es", total_steps=total_steps)
    return ESConfig(**kw)


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


def train(make_train, config, a, out: str):
    """`config`'s trainer over --seeds seeds as one program (`rlx.runner.run`)."""
    import jax

    from rlx import runner

    trainer = make_train(config, on_update=runner.on_update)
    keys = jax.random.split(jax.random.PRNGKey(a.seed), a.seeds)
    return trainer, runner.run(trainer, keys, out, devices=a.devices, progress=not a.no_progress)


def main(argv: list[str] | None = None) -> dict:
    from rlx.es import ESConfig

    a, overrides = common.cli(
        __doc__.split("\n")[0], argv, Args, ESConfig, exclude=("strategy",),
        defaults=dict(env="reacher", total_steps=100_000_000, seeds=1),
        aliases={"population_size": ("--population",), "num_evals": ("--es-evals",)})
    common.setup(a)
    if a.quick:
        a.env = "CartPole-v1" if a.env == "reacher" else a.env
        a.ppo_steps, a.total_steps = min(a.ppo_steps, 2 * 8 * 32), min(a.total_steps, 4 * 16 * 500)

    from rlx import distributed, logging, runner
    from rlx.algos import ppo
    from rlx.es import make_train as es_make_train
    from rlx.es import mean_vector

    ppo_cfg = common.exit_on_value_error(lambda: ppo_config(a.env, a.ppo_steps, a.quick))
    es_cfg = common.exit_on_value_error(lambda: es_config(a.env, a.total_steps, a.quick,
                                                          overrides))
    for cfg in (ppo_cfg, es_cfg):  # both before compiling either
        common.exit_on_value_error(cfg.validate)
    t0 = time.time()
    _, ppo_res = common.exit_on_value_error(lambda: train(ppo.make_train, ppo_cfg, a, f"{a.out}/ppo"))
    es_trainer, es_res = common.exit_on_value_error(
        lambda: train(es_make_train, es_cfg, a, f"{a.out}/es"))
    es_steps = logging.cumulative_env_steps(es_res)
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
        "final_return": float(es_ret[-1]), "params_digest": runner.params_digest(mean_vector(es_trainer, es_res.state)),
        "ppo_env_steps": float(ppo_steps[-1]), "ppo_final_return": ppo_final,
        "ppo_params_digest": runner.params_digest(ppo_res.state.params),
        "es_steps_to_ppo_return": table[-1]["es_steps"],
        "es_over_ppo_steps_to_ppo_return": table[-1]["es_over_ppo"],
        "progress_table": table, "es_population": es_cfg.population_size,
        "ppo_wall_s": ppo_res.wall_s, "es_wall_s": es_res.wall_s,
    }
    rows = [{"method": "ppo", "env_steps": s, "eval_return": r} for s, r in zip(ppo_steps, ppo_ret)]
    rows += [{"method": "es", "env_steps": s, "eval_return": r} for s, r in zip(es_steps, es_ret)]
    if not distributed.is_primary():  # multi-process: process 0 writes the files
        return summary
    logging.write_json(f"{a.out}/summary.json", summary)
    logging.write_metrics(a.out, rows, wandb=a.wandb)
    title = f"{a.env}: data efficiency"
    logging.plot_panels(f"{a.out}/es_vs_ppo.png",
                        {title: {"rlx PPO": (ppo_steps, ppo_res.eval["eval_return"]),
                                 "rlx OpenAI-ES": (es_steps, es_res.eval["eval_return"])}},
                        "env steps per seed", "eval return (deterministic policy)",
                        hlines={title: {"PPO final return": ppo_final}}, markers=True,
                        xscale="symlog", linthresh=max(float(ppo_steps[1]) if len(ppo_steps) > 1
                                                       else 1.0, 1.0))
    for row in table:
        print(f"{row['fraction']:.0%} of PPO's progress (return {row['target_return']:.1f}): "
              f"PPO {row['ppo_steps']} steps, ES {row['es_steps']} steps, ratio {row['es_over_ppo']}")
    return summary


if __name__ == "__main__":
    main()
