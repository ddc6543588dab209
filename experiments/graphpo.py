"""GraphPO: one prompt's rollouts as a DAG of equivalent Countdown states, against chains
(GRPO) and trees (TreeRL) at equal token budgets.

    python -m experiments.graphpo --out runs/graphpo            # CPU default
    python -m experiments.graphpo --out runs/q --quick          # tiny (tests)
    python -m experiments.graphpo --out runs/graphpo --full     # larger model, longer (a GPU job)

Per task (Countdown with 3 numbers, where paths often reach the same multiset, and with 4
numbers, where states are many and merge less often):

1. pi_init: supervised warm start on noisy solution traces (`rlx.algos.sft`, cached under
   `--out`), the model's context holding prompt + 2 completions (a continuation's prompt
   carries its prefix).
2. The advantage-variance table: for pi_init held fixed, `--resamples` independent rollouts of
   each structure on the same `--variance-prompts` prompts at the same budget; the advantage
   each row gives its first step (raw: no std division, so all three are in reward units),
   grouped by (prompt, state reached after the first step); the pooled variance across
   resamples (`rlx.losses.dag.first_step_advantage_variance`) — GraphPO's variance claim made
   measurable. Also the tokens spent per prompt and, for the graph, the share of tokens that
   merging saved.
3. Training: `rlx.algos.grpo` with each structure (`StructureConfig`: chain = GRPO's group,
   tree = TreeRL's EPTree, graph = GraphPO's frontier of unique states), the same budget of
   generated tokens per prompt, the same loss (GRPO's clipped surrogate and KL on per-token
   advantages, token-mean aggregation: `loss_params`), seeds as one vmapped program per
   structure. Held-out accuracy (sampled
   completions, as `experiments.llm_rl` measures it) against generated tokens.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from experiments import common

STRUCTURES = ("chain", "tree", "graph")
PAPER_CLAIMS = {
    "accuracy": "GraphPO beats chain (GRPO) and tree (TreeRL) baselines in accuracy at equal token "
                "or response budgets on three LLMs (Zhan et al. 2026, arXiv 2606.18954)",
    "variance": "merging equivalent states lowers the variance of the advantage estimate (a "
                "theorem in the paper)",
    "budget": "merging moves budget from re-exploring the same state to exploring new ones",
}

# Per task: the Countdown size, the budget of generated tokens per prompt and each structure's
# shape, over-provisioned so that every structure spends its whole budget (the generator stops
# there; `rlx.lm.structures`). Chain: `group_size` completions.
TASKS = {
    "countdown3": dict(numbers=3, budget=96, group_size=12,
                       tree=dict(chains=4, forks=2, branches=2),
                       graph=dict(widths=(6, 10), frontier=(1, 6), fill=8)),
    "countdown4": dict(numbers=4, budget=160, group_size=12,
                       tree=dict(chains=4, forks=2, branches=2),
                       graph=dict(widths=(6, 10, 10), frontier=(1, 6, 8), fill=8)),
}
DEFAULT = dict(layers=2, width=64, heads=4, prompts_per_update=16, epochs=1, minibatches=4,
               lr=1e-4, updates=160, num_evals=9, eval_prompts=256, eval_samples=4)
SFT_STEPS = {"countdown3": 3000, "countdown4": 3000}
SFT_LR = 2e-3
SFT_NOISE = 0.5
QUICK = dict(layers=1, width=32, heads=2, prompts_per_update=4, minibatches=2, updates=4,
             num_evals=3, eval_prompts=16, eval_samples=1)
QUICK_SFT_STEPS = 300
FULL = dict(layers=4, width=256, heads=8, prompts_per_update=64, minibatches=8, lr=5e-5,
            updates=1000, num_evals=11, eval_prompts=1024, eval_samples=8)
FULL_SFT_STEPS = {"countdown3": 5000, "countdown4": 8000}


@dataclasses.dataclass
class Args:
    """experiments.graphpo's own flags."""

    tasks: tuple[str, ...] = ("countdown3", "countdown4")
    structures: tuple[str, ...] = STRUCTURES
    budget_scale: float = 1.0  # multiplies every task's token budget
    resamples: int = 16  # independent rollouts per structure for the variance table
    variance_prompts: int = 32
    sft_steps: int | None = None  # default: per task
    full: bool = False  # larger model and batch, longer runs (a GPU job)
    seed: int = 0


def loss_params():
    """GRPO's clipped surrogate, std-scaled advantages and k3 KL (0.04), with every trained token
    weighted alike (token mean over the batch, `aggregation` 0): rows of a tree or a graph are
    segments of unequal length, so GRPO's per-sequence mean would weight a structure's tokens by
    how it cuts them into rows."""
    from rlx.losses import sequence as seq

    return seq.loss_params("grpo", aggregation=0.0)


def check_args(args) -> None:
    bad = [t for t in args.tasks if t not in TASKS]
    if bad or not args.tasks:
        raise ValueError(f"--tasks: unknown {bad[0] if bad else '(none)'!r}; valid: "
                         f"{', '.join(TASKS)}")
    bad = [s for s in args.structures if s not in STRUCTURES]
    if bad or not args.structures:
        raise ValueError(f"--structures: unknown {bad[0] if bad else '(none)'!r}; valid: "
                         f"{', '.join(STRUCTURES)}")
    if not args.budget_scale > 0:
        raise ValueError(f"--budget-scale must be > 0, got {args.budget_scale}")
    for name in ("resamples", "variance_prompts"):
        if getattr(args, name) < 2:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 2, got {getattr(args, name)}")
    if args.sft_steps is not None and args.sft_steps < 1:
        raise ValueError(f"--sft-steps must be >= 1, got {args.sft_steps}")


def task_configs(args, name: str, preset: dict):
    """{structure: GRPOConfig} for one task: the same model, schedule and budget."""
    from rlx.algos.grpo import GRPOConfig, StructureConfig

    t = TASKS[name]
    budget = max(1, int(round(t["budget"] * args.budget_scale)))
    base = GRPOConfig(task="countdown", numbers=t["numbers"], group_size=t["group_size"],
                      **preset)
    task = base.make_task()
    context = task.prompt_length + 2 * base.completion_length(task)
    out = {}
    for s in args.structures:
        shape = {"chain": {}, "tree": t["tree"], "graph": t["graph"]}[s]
        out[s] = dataclasses.replace(base, context=context, structure=StructureConfig(
            kind=s, budget=budget, **shape))
    return out


def variance_table(configs: dict, params, args, key) -> dict:
    """Per structure, pi_init fixed: tokens spent, merge savings and the first-step advantage
    variance over `args.resamples` independent rollouts of the same prompts (raw advantages)."""
    import jax
    import jax.numpy as jnp

    from rlx.algos import grpo
    from rlx.lm import model as lm
    from rlx.lm import structures as st
    from rlx.lm.tasks import countdown_states
    from rlx.losses import dag
    from rlx.losses import sequence as seq

    out = {}
    any_cfg = next(iter(configs.values()))
    task = any_cfg.make_task()
    k_prompt, k_roll = jax.random.split(key)
    prompts = task.prompts(k_prompt, args.variance_prompts, "train")
    state_fn = lambda problem, comp, cmask: countdown_states(task, problem, comp, cmask)  # noqa: E731
    for s, cfg in configs.items():
        lm_cfg = cfg.lm_config(task)
        T = cfg.completion_length(task)
        eos, pad = task.vocab.id("<eos>"), task.vocab.id("<pad>")

        def draw(p, k, toks, tmask, hp, lm_cfg=lm_cfg, T=T, eos=eos, pad=pad, cfg=cfg):
            return lm.sample(p, lm_cfg, k, toks, tmask, max_new_tokens=T, eos_id=eos,
                             pad_id=pad, temperature=cfg.temperature)

        fn = grpo.make_structured_rollout(cfg, draw)
        hp = cfg.hparams(seq.loss_params("grpo", std_scale=0.0))

        @jax.jit
        def many(keys, fn=fn, hp=hp):
            return jax.vmap(lambda k: fn(params, k, prompts, hp))(keys)

        ro, adv, train = many(jax.random.split(k_roll, args.resamples))
        first = jax.vmap(lambda r: st.first_step_states(r, prompts.problem, state_fn))(ro)
        var, se, total = dag.first_step_advantage_variance(adv, ro, first, fn.stop_ids,
                                                           mask=train, with_total=True)
        rm = jax.vmap(lambda r, fn=fn: st.rollout_metrics(fn.spec, r))(ro)
        row = {"advantage_variance": float(var), "advantage_variance_se": float(se),
               "advantage_noise_share": float(var / total),
               "tokens_per_prompt": float(jnp.mean(ro.spent)),
               "tokens_min": int(jnp.min(ro.spent)), "budget": cfg.structure.budget,
               "trained_tokens_per_prompt": float(jnp.mean(train.sum((-2, -1)))),
               "states_per_prompt": float(jnp.mean(rm["states"])),
               "merge_saved_frac": float(jnp.mean(rm["merge_saved_frac"])),
               "reward": float(jnp.sum(ro.row_reward * ro.row_valid)
                               / jnp.maximum(jnp.sum(ro.row_valid), 1))}
        out[s] = row
    return out


def main(argv: list[str] | None = None) -> dict:
    from rlx.algos.grpo import GRPOConfig

    args, overrides = common.cli(
        __doc__.split("\n")[0], argv, Args, GRPOConfig,
        only=("layers", "width", "heads", "prompts_per_update", "epochs", "minibatches", "lr",
              "updates", "num_evals", "eval_prompts", "eval_samples", "temperature"),
        defaults=dict(seeds=3))
    common.setup(args)
    if args.quick:
        args.tasks, args.seeds = args.tasks[:1], min(args.seeds, 1)
        args.resamples, args.variance_prompts = min(args.resamples, 3), min(args.variance_prompts, 4)
    common.exit_on_value_error(lambda: check_args(args))

    import jax

    from rlx import distributed, logging, runner
    from rlx.algos import grpo, sft
    from rlx.lm import model as lm

    preset = {**DEFAULT, **(FULL if args.full else {}), **(QUICK if args.quick else {}),
              **overrides}
    configs, sft_cfgs = {}, {}
    for t in args.tasks:
        configs[t] = common.exit_on_value_error(lambda t=t: task_configs(args, t, preset))
        for cfg in configs[t].values():
            common.exit_on_value_error(cfg.validate)
        steps = args.sft_steps or (QUICK_SFT_STEPS if args.quick else
                                   (FULL_SFT_STEPS if args.full else SFT_STEPS)[t])
        sft_cfgs[t] = sft.SFTConfig(steps=steps, lr=SFT_LR, noise=SFT_NOISE)
        common.exit_on_value_error(sft_cfgs[t].validate)
    common.exit_on_value_error(lambda: runner.choose_mesh(args.seeds, args.devices))

    out = Path(args.out)
    t0 = time.time()
    tasks, rows, digests, curves = {}, [], [], {}
    env_steps = 0
    for ti, t in enumerate(args.tasks):
        first = next(iter(configs[t].values()))
        task = first.make_task()
        lm_cfg = first.lm_config(task)
        like = jax.eval_shape(lambda lm_cfg=lm_cfg: lm.init_params(lm_cfg, jax.random.PRNGKey(0)))
        spec = {"task": repr(task), "model": dataclasses.asdict(lm_cfg),
                "sft": dataclasses.asdict(sft_cfgs[t]), "seed": args.seed}
        params, sft_s, hit = common.cached(
            common.spec_path(out / t, "sft", spec), like,
            lambda task=task, lm_cfg=lm_cfg, sc=sft_cfgs[t]: jax.jit(sft.make_sft(task, lm_cfg, sc))(
                jax.random.PRNGKey(1000 + args.seed))[0])
        init = runner.params_digest(params)
        print(f"[{t}] SFT {'restored' if hit else f'{sft_s:.0f}s'} ({sft_cfgs[t].steps} steps); "
              f"{lm.num_params(lm_cfg)} params, prompt {task.prompt_length} + completion "
              f"{task.completion_length} tokens, budget {first.structure.budget} tokens/prompt")
        result = {"numbers": task.numbers, "sft_steps": sft_cfgs[t].steps, "sft_s": round(sft_s, 1),
                  "params": int(lm.num_params(lm_cfg)), "budget": first.structure.budget}
        tv = time.time()
        result["variance"] = variance_table(configs[t], params, args,
                                            jax.random.PRNGKey(2000 + args.seed))
        result["variance_s"] = round(time.time() - tv, 1)
        keys = jax.random.split(jax.random.PRNGKey(args.seed), args.seeds)
        structures = {}
        for s, cfg in configs[t].items():
            cfg = dataclasses.replace(cfg, init=init)
            trainer = grpo.make_train(cfg, params)
            print(f"[{t}/{s}] {args.seeds} seeds x {cfg.updates} updates of "
                  f"{cfg.prompts_per_update} prompts x {cfg.structure.budget} tokens")
            res = common.exit_on_value_error(lambda trainer=trainer, s=s, cfg=cfg: runner.run(
                trainer, keys, out / t / s, hparams=cfg.hparams(loss_params()),
                devices=args.devices, progress=not args.no_progress))
            acc = np.asarray(res.eval["accuracy"])  # [evals, seeds]
            tokens = np.asarray(res.train["tokens"])  # [updates, seeds], per prompt
            spent = float(tokens.sum(0).mean() * cfg.prompts_per_update)
            structures[s] = {
                "accuracy": float(acc[-1].mean()), "accuracy_std": float(acc[-1].std()),
                "accuracy_per_seed": acc[-1].tolist(), "initial_accuracy": float(acc[0].mean()),
                "greedy_accuracy": float(np.asarray(res.eval["greedy_accuracy"])[-1].mean()),
                "tokens": spent, "budget": cfg.structure.budget * cfg.prompts_per_update
                * cfg.updates, "budget_per_prompt": cfg.structure.budget,
                "tokens_per_prompt": float(tokens.mean()),
                "advantage_variance": result["variance"][s]["advantage_variance"],
                "advantage_variance_se": result["variance"][s]["advantage_variance_se"],
                "advantage_noise_share": result["variance"][s]["advantage_noise_share"],
            }
            if s == "graph":
                structures[s]["merge_saved_frac"] = float(
                    np.asarray(res.train["merge_saved_frac"]).mean())
            digests.append(runner.params_digest(res.state.params))
            env_steps = trainer.total_env_steps
            rows += logging.curve_rows(res, [f"{s}|seed{i}" for i in range(args.seeds)],
                                       extra={"task": t, "structure": s})
            curves[(t, s)] = (res, cfg)
        result["structures"] = structures
        tasks[t] = result

    wall = time.time() - t0
    main_task = tasks[args.tasks[0]]
    summary = {
        "experiment": "graphpo", "env": ",".join(args.tasks), "env_steps": env_steps,
        "env_steps_unit": "generated tokens per run", "wall_s": round(wall, 1),
        "final_return": main_task["structures"].get("graph", next(iter(
            main_task["structures"].values())))["accuracy"],
        "final_return_is": f"final held-out accuracy of the graph structure on {args.tasks[0]}",
        "params_digest": ",".join(digests), "seeds": args.seeds,
        "structures": main_task["structures"], "tasks": tasks, "paper_claims": PAPER_CLAIMS,
        "config": {t: {s: dataclasses.asdict(c) for s, c in cs.items()}
                   for t, cs in configs.items()},
        "sft": {t: dataclasses.asdict(c) for t, c in sft_cfgs.items()},
    }
    if not distributed.is_primary():
        return summary
    logging.write_json(out / "summary.json", summary)
    logging.write_metrics(out, rows, wandb=args.wandb)
    _plots(out, curves, tasks, args)
    print(_table(tasks))
    print(f"done in {wall:.0f}s; outputs in {out}")
    return summary


def _table(tasks: dict) -> str:
    lines = ["| task | structure | held-out accuracy: SFT -> final (± seed std) | tokens / budget "
             "| first-step advantage variance (± se) | merge saved |", "|---|---|---|---|---|---|"]
    for t, r in tasks.items():
        for s, v in r["structures"].items():
            saved = v.get("merge_saved_frac")
            lines.append(f"| {t} | {s} | {v['initial_accuracy']:.3f} -> {v['accuracy']:.3f} ± "
                         f"{v['accuracy_std']:.3f} | {v['tokens'] / v['budget']:.4f} | "
                         f"{v['advantage_variance']:.4f} ± {v['advantage_variance_se']:.4f} | "
                         f"{'' if saved is None else f'{saved:.1%}'} |")
    return "\n".join(lines)


def _plots(out: Path, curves: dict, tasks: dict, args) -> None:
    from rlx import logging

    panels = {}
    for (t, s), (res, cfg) in curves.items():
        acc = np.asarray(res.eval["accuracy"])
        x = np.asarray(res.eval_steps, float)  # generated tokens (the budget)
        panels.setdefault(t, {})[s] = (x, acc)
    logging.plot_panels(out / "accuracy_vs_tokens.png", panels, "generated tokens (budget)",
                        "held-out accuracy")
    logging.plot_bars(out / "advantage_variance.png",
                      {t: {s: v["advantage_variance"] for s, v in r["variance"].items()}
                       for t, r in tasks.items()},
                      "first-step advantage variance across resamples (pi_init)")


if __name__ == "__main__":
    main()
