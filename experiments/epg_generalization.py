"""Learned loss vs rlx PPO on held-out in-distribution and out-of-distribution tasks.

    python -m experiments.epg --out runs/epg                              # meta-train first
    python -m experiments.epg_generalization --out runs/epg_gen --loss runs/epg/loss
    python -m experiments.epg_generalization --out runs/q --quick         # smoke (< 90 s)
    # GPU (documented): a GoalAnt loss from `experiments.epg --env ant_goal --full`
    python -m experiments.epg_generalization --out runs/ant_gen --loss runs/epg_ant/loss --full

The loss was evolved on goals from its config's `train_region` (right half by
default); here fresh agents are trained by it (alpha = 0: the learned loss
alone) and by rlx PPO (best of --ppo-lrs, chosen on the in-distribution tasks)
on `--tasks` new goals from the training region (held-out, in distribution) and
from `test_region` (the other half: out of distribution), `--seeds` agents per
task, for `--total-steps` env steps (default: the loss's own inner lifetime).
Without --loss an untrained (randomly initialised) loss is used, which only
makes sense as a smoke test; summary.json says so.

Writes summary.json, metrics.csv, in_distribution.png, out_of_distribution.png.
Per region summary.json has both methods' final returns (mean, std over tasks x
seeds, mean per seed), epg_env_steps_to_ppo_final (the first curve point where
the learned loss's mean reaches PPO's final return; null if never) and aim_met
(it does, in fewer env steps than PPO used).
"""

from __future__ import annotations

import dataclasses
import time

from experiments import common


@dataclasses.dataclass
class Args:
    """experiments.epg_generalization's flags (the config is the loss's own)."""

    loss: str | None = None  # directory written by rlx.epg.save_loss
    total_steps: int | None = None  # env steps per agent (default: the loss's inner lifetime)
    tasks: int | None = None  # tasks per region (default 8, quick 2)
    points: int | None = None  # evaluations per curve
    ppo_lrs: str | None = None  # comma-separated PPO learning rates
    full: bool = False  # more tasks, seeds and PPO lrs (GPU)
    seed: int = 0


def main(argv: list[str] | None = None) -> dict:
    args, _ = common.cli(__doc__.split("\n")[0], argv, Args)
    common.setup(args)

    import jax
    import jax.numpy as jnp
    import numpy as np

    from rlx import distributed, logging, runner
    from rlx.epg import QUICK, EPGConfig, Inner, load_loss, train_ppo, train_with_loss

    if args.loss:
        phi, config = common.exit_on_value_error(lambda: load_loss(args.loss))
        source = args.loss
    else:  # an untrained loss of the sizes `experiments.epg --quick` meta-trains
        config = EPGConfig(**QUICK) if args.quick else EPGConfig()
        phi = Inner(config).init_loss_params(jax.random.PRNGKey(args.seed))
        source = "untrained (random init; smoke test only)"
    n_tasks = args.tasks or (2 if args.quick else (32 if args.full else 8))
    points = args.points or (3 if args.quick else 11)
    steps = args.total_steps or config.inner_env_steps
    default_lrs = "3e-3" if args.quick else ("3e-4,1e-3,3e-3,1e-2" if args.full else "1e-3,3e-3,1e-2")
    lrs = [float(x) for x in (args.ppo_lrs or default_lrs).split(",")]
    family = config.task_family()
    seeds = args.seeds

    key = jax.random.PRNGKey(10_000 + args.seed)  # not the meta-training task keys
    k_in, k_out, k_agents = jax.random.split(key, 3)
    regions = {"in_distribution": (config.train_region, family.sample(k_in, n_tasks, config.train_region)),
               "out_of_distribution": (config.test_region, family.sample(k_out, n_tasks, config.test_region))}
    agent_keys = jax.random.split(k_agents, n_tasks * seeds).reshape(n_tasks, seeds, -1)

    def per_task_seed(fn):
        return jax.jit(jax.vmap(lambda t, ks: jax.vmap(lambda k: fn(t, k))(ks)))

    epg_fn = per_task_seed(lambda t, k: train_with_loss(phi, t, k, steps, config, points))
    lr_arr = jnp.asarray(lrs, jnp.float32)
    ppo_fn = per_task_seed(lambda t, k: jax.vmap(
        lambda lr: train_ppo(t, k, steps, config, lr=lr, num_points=points))(lr_arr))

    from pathlib import Path

    Path(args.out).mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    curves = {}
    for name, (region, tasks) in regions.items():
        e = jax.device_get(epg_fn(tasks, agent_keys))  # [tasks, seeds, points]
        q = jax.device_get(ppo_fn(tasks, agent_keys))  # [tasks, seeds, lrs, points]
        curves[name] = (region, e, q)
    wall = time.time() - t0

    # PPO lr chosen on the in-distribution tasks (final return), used for both regions
    q_in = curves["in_distribution"][2]["eval_return"]
    best = int(np.argmax(q_in[..., -1].mean((0, 1))))
    rows, summary_regions = [], {}
    for name, (region, e, q) in curves.items():
        ex, ey = np.asarray(e["env_steps"][0, 0]), np.asarray(e["eval_return"])  # [T, S, P]
        qx, qy = np.asarray(q["env_steps"][0, 0, best]), np.asarray(q["eval_return"])
        for i in range(points):
            rows.append({"region": name, "goals": region, "method": "epg", "point": i,
                         "env_step": int(ex[i]), "return_mean": float(ey[..., i].mean()),
                         "return_std": float(ey[..., i].std())})
            for j, lr in enumerate(lrs):
                rows.append({"region": name, "goals": region, "method": f"ppo_lr{lr:g}", "point": i,
                             "env_step": int(qx[i]), "return_mean": float(qy[:, :, j, i].mean()),
                             "return_std": float(qy[:, :, j, i].std())})
        epg_final, ppo_final = float(ey[..., -1].mean()), float(qy[:, :, best, -1].mean())
        # the aim: the learned loss reaches PPO's final return, in fewer env steps
        reached = np.flatnonzero(ey.mean((0, 1)) >= ppo_final)
        summary_regions[name] = {
            "goals": region, "epg_final_return": epg_final, "ppo_final_return": ppo_final,
            "epg_final_return_std": float(ey[..., -1].std()),
            "ppo_final_return_std": float(qy[:, :, best, -1].std()),
            "epg_final_return_per_seed": [float(v) for v in ey[..., -1].mean(0)],
            "ppo_final_return_per_seed": [float(v) for v in qy[:, :, best, -1].mean(0)],
            "epg_env_steps_to_ppo_final": int(ex[reached[0]]) if reached.size else None,
            "epg_initial_return": float(ey[..., 0].mean()),
            "epg_mean_over_curve": float(ey.mean()), "ppo_mean_over_curve": float(qy[:, :, best].mean()),
            "ppo_final_return_per_lr": {f"{lr:g}": float(qy[:, :, j, -1].mean()) for j, lr in enumerate(lrs)},
            "epg_beats_ppo_final": epg_final > ppo_final,
            "aim_met": bool(reached.size) and int(ex[reached[0]]) < int(qx[-1])}
        title = f"{family.name}: {name} ({region} goals)"
        if distributed.is_primary():
            logging.plot_panels(f"{args.out}/{name}.png",
                                {title: {"EPG learned loss": (ex, ey.reshape(-1, points).T),
                                         f"PPO (lr {lrs[best]:g})": (qx, qy[:, :, best].reshape(-1, points).T)}},
                                "env steps", "eval return (mean +- std over tasks x seeds)", band="std")

    summary = {
        "experiment": "epg_generalization", "env": family.name, "loss": source,
        "tasks_per_region": n_tasks, "seeds": seeds, "env_steps": int(steps),
        "env_steps_per_agent_epg": int(curves["in_distribution"][1]["env_steps"][0, 0, -1]),
        "env_steps_per_agent_ppo": int(curves["in_distribution"][2]["env_steps"][0, 0, best, -1]),
        "wall_s": round(wall, 2), "ppo_lrs": lrs, "ppo_best_lr": lrs[best],
        "final_return": summary_regions["in_distribution"]["epg_final_return"],
        "regions": summary_regions, "params_digest": runner.params_digest(phi),
        "config": dataclasses.asdict(config),
    }
    if not distributed.is_primary():  # multi-process: process 0 writes the files
        return summary
    logging.write_json(f"{args.out}/summary.json", summary)
    logging.write_metrics(args.out, rows, wandb=args.wandb)
    for name, r in summary_regions.items():
        print(f"{name} ({r['goals']} goals): EPG {r['epg_initial_return']:.1f} -> "
              f"{r['epg_final_return']:.1f}, PPO (lr {lrs[best]:g}) -> {r['ppo_final_return']:.1f}")
    print(f"{wall:.0f}s; outputs in {args.out}")
    return summary


if __name__ == "__main__":
    main()
