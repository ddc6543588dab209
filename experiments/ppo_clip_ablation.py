"""The PPO paper's Table 1: no clipping vs clipping vs KL penalties, normalised scores.

    python -m experiments.ppo_clip_ablation --out runs/ablation           # CPU default
    python -m experiments.ppo_clip_ablation --out runs/q --quick          # tiny (tests)
    python -m experiments.ppo_clip_ablation --out runs/ablation --full    # paper size (GPU)

Every setting x seed of one env is one vmapped program (the variants are
hyper-parameter values, not code paths), sharded over the devices. A run's
score is its mean return over the last 100 training episodes; per env, scores
are shifted and scaled so a uniformly random policy is 0 and the best setting
1, then averaged over envs and seeds, as in Schulman et al. (2017).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from experiments import common

# (label, objective, value) rows of the paper's Table 1, in its order.
SETTINGS = [("no clipping or penalty", "none", None),
            ("clip eps=0.1", "clip", 0.1), ("clip eps=0.2", "clip", 0.2), ("clip eps=0.3", "clip", 0.3),
            ("adaptive KL d_targ=0.003", "kl_adaptive", 0.003),
            ("adaptive KL d_targ=0.01", "kl_adaptive", 0.01),
            ("adaptive KL d_targ=0.03", "kl_adaptive", 0.03),
            ("fixed KL beta=0.3", "kl_fixed", 0.3), ("fixed KL beta=1", "kl_fixed", 1.0),
            ("fixed KL beta=3", "kl_fixed", 3.0), ("fixed KL beta=10", "kl_fixed", 10.0)]
PAPER_SCORES = {"no clipping or penalty": -0.39, "clip eps=0.1": 0.76, "clip eps=0.2": 0.82,
                "clip eps=0.3": 0.70, "adaptive KL d_targ=0.003": 0.68,
                "adaptive KL d_targ=0.01": 0.74, "adaptive KL d_targ=0.03": 0.71,
                "fixed KL beta=0.3": 0.62, "fixed KL beta=1": 0.71, "fixed KL beta=3": 0.72,
                "fixed KL beta=10": 0.69}
PAPER_ENVS = ["halfcheetah", "hopper", "inverted_double_pendulum", "inverted_pendulum", "reacher",
              "swimmer", "walker2d"]
CPU_ENVS = ["inverted_pendulum", "reacher"]

# The paper's MuJoCo settings: horizon 2048, Adam 3e-4, 10 epochs, minibatch 64,
# gamma 0.99, lambda 0.95, 2 x 64 tanh MLPs, Gaussian with state-independent std.
# The horizon is spread over `num_envs` parallel envs (8 x 256 = 2048).
PAPER_PPO = dict(num_envs=8, unroll_length=256, num_minibatches=32, update_epochs=10, lr=3e-4,
                 gamma=0.99, gae_lambda=0.95, ent_coef=0.0, max_grad_norm=float("inf"),
                 policy_layers=(64, 64), value_layers=(64, 64), activation="tanh", head="gaussian",
                 normalize_observations=True, num_evals=5, eval_envs=8)
QUICK = dict(num_envs=4, unroll_length=32, num_minibatches=2, update_epochs=2, num_evals=2,
             eval_envs=2, policy_layers=(16,), value_layers=(16,), episode_length=50)


def setting_hparams(config, settings):
    """Stack the PPOHParams of every (objective, value) setting: `[len(settings)]`."""
    import jax
    import jax.numpy as jnp

    from rlx.algos.ppo import objective_hparams

    base = config.hparams()
    rows = []
    for _, objective, value in settings:
        kw = {"clip": dict(clip_eps=value), "kl_adaptive": dict(kl_beta=1.0, kl_target=value),
              "kl_fixed": dict(kl_beta=value), "none": {}}[objective]
        obj = objective_hparams(objective, **kw)
        rows.append(base.replace(**{k: jnp.float32(v) for k, v in obj.items()}))
    return jax.tree.map(lambda *x: jnp.stack(x), *rows)


def random_policy_return(env_name: str, episode_length: int | None, key) -> float:
    """Mean return of a uniformly random policy (the score's 0)."""
    import jax

    from rlx import envs
    from rlx.rollout import random_return

    env = envs.make(env_name, episode_length=episode_length)
    return float(jax.jit(lambda k: random_return(env, k))(key))


@dataclasses.dataclass
class Args:
    """experiments.ppo_clip_ablation's own flags (PPOConfig's fields other than the env and
    the swept objective are flags too, over PAPER_PPO)."""

    envs: tuple[str, ...] | None = None  # default: inverted_pendulum reacher (--full: the paper's 7)
    full: bool = False  # the paper's size: 7 envs, 1M steps, 3 seeds (a GPU job)


def main(argv: list[str] | None = None) -> dict:
    from rlx.algos.ppo import PPOConfig

    swept = ("objective", "clip_eps", "kl_beta", "kl_target")
    args, overrides = common.cli(__doc__.split("\n")[0], argv, Args, PPOConfig,
                                 exclude=("env", "axis_name", *swept),
                                 defaults=dict(total_steps=300_000, seeds=2))
    common.setup(args)
    env_names = args.envs or (PAPER_ENVS if args.full else CPU_ENVS)
    if args.full:
        args.total_steps, args.seeds = 1_000_000, max(args.seeds, 3)
    if args.quick:
        env_names, args.total_steps = env_names[:1], 256

    import jax

    from rlx import distributed, logging, runner
    from rlx.algos import ppo

    settings = SETTINGS
    members = len(settings) * args.seeds
    t0 = time.time()
    base_kw = {**PAPER_PPO, **(QUICK if args.quick else {}), **overrides,
               "total_steps": args.total_steps}
    configs = {e: ppo.PPOConfig(**{**base_kw, "env": e}) for e in env_names}
    for cfg in configs.values():
        common.exit_on_value_error(cfg.validate)
    common.exit_on_value_error(lambda: runner.choose_mesh(members, args.devices))

    rows, per_env, curves, digests, env_steps = [], {}, {}, {}, 0
    for i, (env_name, cfg) in enumerate(configs.items()):
        trainer = ppo.make_train(cfg, on_update=runner.on_update)
        hp = setting_hparams(cfg, settings)
        hp = jax.tree.map(lambda x: x.repeat(args.seeds), hp)  # [settings x seeds], setting-major
        keys = jax.random.split(jax.random.PRNGKey(i), members)
        print(f"[{env_name}] {len(settings)} settings x {args.seeds} seeds = {members} agents, "
              f"{trainer.total_env_steps} steps each")
        res = common.exit_on_value_error(lambda: runner.run(
            trainer, keys, f"{args.out}/{env_name}", hparams=hp, devices=args.devices,
            progress=not args.no_progress))
        score = logging.last_episodes_mean(res.train["episode_return_sum"], res.train["episode_count"])
        rand = random_policy_return(env_name, cfg.episode_length, jax.random.PRNGKey(100 + i))
        by_setting = score.reshape(len(settings), args.seeds)
        best = np.nanmax(np.nanmean(by_setting, 1))
        norm = (by_setting - rand) / (best - rand)
        per_env[env_name] = {"random_return": rand, "best_return": float(best),
                             "raw": by_setting.tolist(), "normalised": norm.tolist()}
        curves[env_name] = res
        digests[env_name] = runner.params_digest(res.state.params)
        env_steps = trainer.total_env_steps
        labels = [f"{s[0]}|seed{j}" for s in settings for j in range(args.seeds)]
        rows += logging.curve_rows(res, labels, extra={"env": env_name})

    table = {label: float(np.mean([per_env[e]["normalised"][k] for e in env_names]))
             for k, (label, _, _) in enumerate(settings)}
    wall = time.time() - t0
    final = float(np.mean([curves[e].eval["eval_return"][-1].mean() for e in env_names]))
    summary = {"experiment": "ppo_clip_ablation", "env": ",".join(env_names), "envs": env_names,
               "seeds": args.seeds, "env_steps": env_steps, "wall_s": round(wall, 1),
               "final_return": final, "params_digest": ",".join(digests.values()),
               "normalised_score": table, "paper_normalised_score": PAPER_SCORES,
               "per_env": per_env, "config": dataclasses.asdict(next(iter(configs.values())))}
    if not distributed.is_primary():  # multi-process: process 0 writes the files
        return summary
    logging.write_json(f"{args.out}/summary.json", summary)
    logging.write_metrics(args.out, rows, wandb=args.wandb)
    _plots(args.out, settings, table, curves, args.seeds)
    print(_markdown_table(table))
    return summary


def _markdown_table(table: dict) -> str:
    lines = ["| setting | rlx score | paper |", "|---|---|---|"]
    lines += [f"| {k} | {v:.2f} | {PAPER_SCORES[k]:.2f} |" for k, v in table.items()]
    return "\n".join(lines)


def _plots(out, settings, table, curves, seeds):
    from rlx import logging

    logging.plot_bars(f"{out}/scores.png", {"rlx (this run)": table, "paper Table 1": PAPER_SCORES},
                      "normalised score (random = 0, best setting = 1)")
    for env_name, res in curves.items():
        ret = res.eval["eval_return"].reshape(len(res.eval_steps), len(settings), seeds)
        logging.plot_curves(f"{out}/curves_{env_name}.png", np.asarray(res.eval_steps),
                            {s[0]: ret[:, k] for k, s in enumerate(settings)}, "env steps per agent",
                            "eval return", env_name)


if __name__ == "__main__":
    main()
