"""Data efficiency of ES against rlx PPO: env steps ES needs to reach PPO's return.

    python -m experiments.es_vs_ppo --out runs/es_vs_ppo                     # reacher
    python -m experiments.es_vs_ppo --out runs/q --quick                     # tiny (tests)
    python -m experiments.es_vs_ppo --out runs/cp --env CartPole-v1 --ppo-steps 200000 --total-steps 5000000

PPO is rlx's own (`rlx.algos.ppo.make_train` + `rlx.runner.run`, with
experiments.ppo's presets) trained for --ppo-steps; OpenAI-ES (`rlx.es.make_train`,
experiments.es's presets) for --total-steps. As in Salimans et al. Table 1,
progress is measured from the starting score: for p in 25/50/75/100 % the target
is start + p (PPO final - start), and the table gives each method's env steps to
reach it (linear interpolation between evaluations of the deterministic
policy) and the ratio ES / PPO. Writes summary.json, metrics.csv, es_vs_ppo.png.
"""

from __future__ import annotations

import time

import numpy as np

from experiments import common

FRACTIONS = (0.25, 0.5, 0.75, 1.0)

# PPO (rlx.algos.ppo.PPOConfig fields): the "default" (Brax) and "classic" (gymnax) presets of
# experiments.ppo, with its --quick sizes; the clip objective.
PPO = {
    "brax": dict(num_envs=64, unroll_length=128, num_minibatches=8, update_epochs=4, lr=3e-4,
                 gamma=0.95, reward_scaling=5.0, ent_coef=0.0, num_evals=11, eval_envs=32),
    "classic": dict(num_envs=4, unroll_length=128, num_minibatches=4, update_epochs=4, lr=2.5e-4,
                    anneal_lr=True, gamma=0.99, ent_coef=0.01, normalize_observations=False,
                    num_evals=11, eval_envs=32),
}
PPO_QUICK = dict(num_envs=8, unroll_length=32, num_minibatches=2, update_epochs=2, num_evals=3,
                 eval_envs=4, policy_layers=(16, 16), value_layers=(16, 16), episode_length=100)
# OpenAI-ES (rlx.es.ESConfig fields): experiments.es's per-env presets and --quick sizes.
ES = {
    "brax": dict(population_size=256, sigma=0.02, lr=0.01, weight_decay=0.005,
                 hidden_layers=(32, 32), num_evals=11, eval_episodes=32),
    "classic": dict(population_size=64, sigma=0.05, lr=0.05, weight_decay=0.005,
                    hidden_layers=(16,), num_evals=11, eval_episodes=16),
}
ES_QUICK = dict(population_size=16, hidden_layers=(8,), num_evals=3, eval_episodes=2)
ES_QUICK_BRAX_EPISODE = 50


def ppo_config(env: str, total_steps: int, quick: bool):
    """PPOConfig of the PPO side: the env family's preset (+ quick sizes)."""
    from rlx.algos.ppo import PPOConfig
    from rlx.envs import BRAX_ENVS

    kw = dict(PPO["brax" if env in BRAX_ENVS else "classic"], **(PPO_QUICK if quick else {}))
    return PPOConfig(**kw, env=env, total_steps=total_steps, objective="clip")


def es_config(env: str, total_steps: int, quick: bool, population: int | None, num_evals: int,
              devices: int | None):
    """ESConfig of the ES side: OpenAI-ES with the env family's preset (+ quick sizes)."""
    from rlx.envs import BRAX_ENVS
    from rlx.es import ESConfig

    brax = env in BRAX_ENVS
    kw = dict(ES["brax" if brax else "classic"])
    if quick:
        kw.update(ES_QUICK, **({"episode_length": ES_QUICK_BRAX_EPISODE} if brax else {}))
    if population is not None:
        kw["population_size"] = population
    kw.update(num_evals=num_evals, env=env, strategy="openai_es", total_steps=total_steps,
              devices=devices)
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
    from rlx.algos import ppo
    from rlx.es import make_train as es_make_train
    from rlx.es import mean_vector

    ppo_cfg = common.exit_on_value_error(lambda: ppo_config(a.env, a.ppo_steps, a.quick))
    es_cfg = common.exit_on_value_error(lambda: es_config(a.env, a.total_steps, a.quick,
                                                          a.population, a.es_evals, a.devices))
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
    logging.write_metrics(a.out, rows)
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
