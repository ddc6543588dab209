"""LLM-style RL on a tiny transformer: GRPO, Dr.GRPO, DPPO (TV / KL), DRPO, PPO-clip and
importance-weighted PG from one SFT start, with and without a rollout/training mismatch.

    python -m experiments.llm_rl --out runs/llm_rl            # CPU default (addition, Countdown)
    python -m experiments.llm_rl --out runs/q --quick         # tiny (tests)
    python -m experiments.llm_rl --out runs/llm_rl --full     # larger model, longer (a GPU job)

Per task: a supervised warm start on noisy solution traces (`rlx.algos.sft`, saved by
`rlx.checkpoint` under `--out`, reused on a rerun), then two programs, each every variant x seed as
one vmapped, sharded run (`rlx.runner.run`; the variants are hyper-parameter values):

* clean: every loss of `--losses` (plus, on the first task, DRPO's eps sweep and the
  "no |A|" ablation), rollouts in float32, the trust region anchored at the rollout
  log-probs;
* mismatch: `--mismatch-losses` with rollouts in bfloat16 plus N(0, noise^2) logit noise
  while training stays float32 (the papers' precision setting).

Accuracy is the mean exact-match reward of `eval_samples` sampled completions (temperature
1) per held-out prompt; greedy accuracy is reported beside it. A run "collapsed" when its
final accuracy is more than 10 points below its SFT start.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path

import numpy as np

from experiments import common

LOSSES = ("ppo_clip", "grpo", "dr_grpo", "dppo_tv", "dppo_kl", "drpo", "pg_is")
MISMATCH_LOSSES = ("grpo", "dppo_tv", "drpo", "pg_is")
TRUST_REGION = ("ppo_clip", "grpo", "dr_grpo", "dppo_tv", "dppo_kl", "drpo")
COLLAPSE_DROP = 0.10

# CPU default: a 2-layer, 64-wide model; lr and schedule chosen on a pilot (see README).
DEFAULT = dict(layers=2, width=64, heads=4, prompts_per_update=16, group_size=8, epochs=1,
               minibatches=4, lr=1e-4, updates=240, num_evals=7, eval_prompts=256,
               eval_samples=4)
SFT_STEPS = {"addition": 1500, "countdown": 3000}
SFT_LR = 2e-3
QUICK = dict(layers=1, width=32, heads=2, prompts_per_update=4, group_size=4, minibatches=2,
             updates=4, num_evals=3, eval_prompts=16, eval_samples=1)
QUICK_SFT_STEPS = 20
FULL = dict(layers=4, width=256, heads=8, prompts_per_update=64, group_size=16, minibatches=8,
            lr=5e-5, updates=1000, num_evals=11, eval_prompts=1024, eval_samples=8)
FULL_SFT_STEPS = {"addition": 2000, "countdown": 5000}

PAPER_CLAIMS = {
    "dppo": "Qi et al. 2026 (arXiv 2602.04879): a trust region on the policy divergence (binary "
            "TV/KL masks, anchored at the rollout probabilities) trains more stably than PPO/GRPO's "
            "ratio clip, which over-constrains rare tokens and under-constrains common ones.",
    "drpo": "Yao et al. 2026 (arXiv 2606.09821): DRPO's smooth |A|-weighted quadratic is more stable "
            "and efficient than GRPO and DPPO across scales and precisions (BF16, FP8 rollouts); "
            "removing |A| destabilises training; eps = 12.5 in the authors' code.",
    "pg_is": "Importance-weighted PG without a trust region collapses, most of all under a "
             "rollout/training precision mismatch (both papers).",
}


@dataclasses.dataclass
class Args:
    """experiments.llm_rl's own flags (GRPOConfig's fields are flags too, over the preset)."""

    tasks: tuple[str, ...] = ("addition", "countdown")
    losses: tuple[str, ...] = LOSSES
    mismatch_losses: tuple[str, ...] = MISMATCH_LOSSES
    drpo_eps: tuple[float, ...] = (0.5, 2.0, 50.0)  # DRPO eps values beside the preset's 12.5
    mismatch_noise: float = 0.5  # std of the logit noise of mismatched rollouts (+ bf16)
    sft_steps: int | None = None  # default: per task (addition 1500, countdown 3000)
    sft_noise: float = 0.5  # fraction of SFT traces with an injected error
    full: bool = False  # larger model and batch, longer runs (a GPU job)
    seed: int = 0


def check_args(args, tasks: tuple[str, ...], loss_params) -> None:
    """Raise `ValueError` naming a bad flag value (before anything compiles)."""
    for t in args.tasks:
        if t not in tasks:
            raise ValueError(f"--tasks: unknown task {t!r}; valid: {', '.join(tasks)}")
    if not args.tasks:
        raise ValueError("--tasks: give at least one task")
    for name in (*args.losses, *args.mismatch_losses):
        loss_params(name)
    for e in args.drpo_eps:
        if not e > 0:
            raise ValueError(f"--drpo-eps values must be > 0, got {e}")
    if args.mismatch_noise < 0:
        raise ValueError(f"--mismatch-noise must be >= 0, got {args.mismatch_noise}")


def variants(args, first_task: bool) -> list[tuple[str, dict]]:
    """(label, loss_params overrides as {"loss": name, **fields}) of the clean program."""
    rows = [(name, {"loss": name}) for name in args.losses]
    if first_task and "drpo" in args.losses:
        rows += [(f"drpo eps={e:g}", {"loss": "drpo", "drpo_eps": e}) for e in args.drpo_eps]
        rows += [("drpo no |A|", {"loss": "drpo", "drpo_abs_adv": 0.0})]
    return rows


def stacked_hparams(config, rows: list[dict], noise: float, seeds: int):
    """GRPOHParams `[len(rows) * seeds]`, variant-major."""
    import jax
    import jax.numpy as jnp

    from rlx.losses import sequence as seq

    hps = [config.hparams(seq.loss_params(r["loss"], **{k: v for k, v in r.items() if k != "loss"}),
                          rollout_noise=noise) for r in rows]
    hp = jax.tree.map(lambda *x: jnp.stack(x), *hps)
    return jax.tree.map(lambda x: jnp.repeat(x, seeds, axis=0), hp)


def warm_start(task, lm_cfg, sft_cfg, seed: int, out: Path):
    """SFT params for (task, model, SFT config, seed): restored from `out` when a run with the
    same settings saved them, else trained and saved (`rlx.checkpoint.save_pytree`)."""
    import jax

    from rlx import checkpoint
    from rlx.algos import sft
    from rlx.lm import model as lm

    spec = json.dumps({"task": repr(task), "model": dataclasses.asdict(lm_cfg),
                       "sft": dataclasses.asdict(sft_cfg), "seed": seed}, sort_keys=True)
    path = out / f"sft-{hashlib.sha256(spec.encode()).hexdigest()[:12]}"
    like = jax.eval_shape(lambda: lm.init_params(lm_cfg, jax.random.PRNGKey(0)))
    if path.exists():
        try:
            return checkpoint.restore_pytree(path, like), 0.0, True
        except Exception as e:  # damaged: train again
            print(f"warning: SFT checkpoint {path} unreadable ({type(e).__name__}); retraining")
    t0 = time.time()
    params, _ = jax.jit(sft.make_sft(task, lm_cfg, sft_cfg))(jax.random.PRNGKey(1000 + seed))
    params = jax.device_get(params)
    checkpoint.save_pytree(path, params)
    return params, time.time() - t0, False


def summarise(res, labels: list[str], seeds: int) -> dict:
    """Per variant: accuracy at the start and end (mean over seeds, per seed), its lowest
    point, greedy accuracy, KL to the reference and the cut-token fractions."""
    acc = np.asarray(res.eval["accuracy"]).reshape(len(res.eval_steps), len(labels), seeds)
    greedy = np.asarray(res.eval["greedy_accuracy"]).reshape(acc.shape)
    train = {k: np.asarray(v).reshape(v.shape[0], len(labels), seeds) for k, v in res.train.items()}
    out = {}
    for i, label in enumerate(labels):
        a = acc[:, i]
        tail = slice(max(1, train["kl_ref"].shape[0] * 3 // 4), None)  # last quarter of updates
        out[label] = {
            "initial_accuracy": float(a[0].mean()), "final_accuracy": float(a[-1].mean()),
            "final_accuracy_std": float(a[-1].std()), "final_accuracy_per_seed": a[-1].tolist(),
            "gain": float(a[-1].mean() - a[0].mean()), "min_accuracy": float(a.min(0).mean()),
            "initial_greedy_accuracy": float(greedy[0, i].mean()),
            "final_greedy_accuracy": float(greedy[-1, i].mean()),
            "collapsed_seeds": int(np.sum(a[-1] < a[0] - COLLAPSE_DROP)),
            "final_kl_ref": float(train["kl_ref"][-1, i].mean()),
            "inactive_frac": float(train["inactive_frac"][tail, i].mean()),
            "inactive_rare_frac": float(train["inactive_rare_frac"][tail, i].mean()),
            "inactive_common_frac": float(train["inactive_common_frac"][tail, i].mean()),
            "ratio_max": float(train["ratio_max"][:, i].max()),
        }
    return out


def main(argv: list[str] | None = None) -> dict:
    from rlx.algos.grpo import GRPOConfig

    args, overrides = common.cli(
        __doc__.split("\n")[0], argv, Args, GRPOConfig,
        exclude=("task", "loss", "rollout_dtype", "rollout_noise", "init"),
        defaults=dict(seeds=4))
    common.setup(args)
    if args.quick:
        args.tasks, args.seeds = args.tasks[:1], min(args.seeds, 1)
        args.drpo_eps = args.drpo_eps[:1]

    import jax

    from rlx import distributed, logging, runner
    from rlx.algos import grpo, sft
    from rlx.lm import model as lm
    from rlx.lm.tasks import TASKS
    from rlx.losses import sequence as seq

    common.exit_on_value_error(lambda: check_args(args, TASKS, seq.loss_params))
    preset = {**DEFAULT, **(FULL if args.full else {}), **(QUICK if args.quick else {})}
    configs = {t: GRPOConfig(**{**preset, **overrides, "task": t}) for t in args.tasks}
    sft_cfgs = {}
    for t, cfg in configs.items():
        common.exit_on_value_error(cfg.validate)
        steps = args.sft_steps or (QUICK_SFT_STEPS if args.quick else
                                   (FULL_SFT_STEPS if args.full else SFT_STEPS)[t])
        sft_cfgs[t] = sft.SFTConfig(steps=steps, lr=SFT_LR, noise=args.sft_noise)
        common.exit_on_value_error(sft_cfgs[t].validate)
        for n in (len(variants(args, t == args.tasks[0])), len(args.mismatch_losses)):
            common.exit_on_value_error(lambda: runner.choose_mesh(n * args.seeds, args.devices))

    out = Path(args.out)
    t0 = time.time()
    tasks, rows, digests, curves = {}, [], [], {}
    env_steps = 0
    for ti, (t, cfg) in enumerate(configs.items()):
        task = cfg.make_task()
        lm_cfg = cfg.lm_config(task)
        params, sft_s, reused = warm_start(task, lm_cfg, sft_cfgs[t], args.seed, out / t)
        cfg = dataclasses.replace(cfg, init=runner.params_digest(params))
        print(f"[{t}] SFT {'restored' if reused else f'{sft_s:.0f}s'} ({sft_cfgs[t].steps} steps); "
              f"{lm.num_params(lm_cfg)} params, prompt {task.prompt_length} + completion "
              f"{task.completion_length} tokens")
        keys_for = lambda n: jax.numpy.tile(  # noqa: E731  (same seeds for every variant)
            jax.random.split(jax.random.PRNGKey(args.seed), args.seeds), (n, 1))
        result = {"sft_steps": sft_cfgs[t].steps, "sft_s": round(sft_s, 1),
                  "params": int(lm.num_params(lm_cfg)), "prompt_length": task.prompt_length,
                  "completion_length": task.completion_length, "vocab_size": task.vocab.size}
        for setting in ("clean", "mismatch"):
            if setting == "clean":
                rows_v = variants(args, ti == 0)
                run_cfg, noise = cfg, 0.0
            else:
                rows_v = [(n, {"loss": n}) for n in args.mismatch_losses]
                run_cfg = dataclasses.replace(cfg, rollout_dtype="bfloat16")
                noise = args.mismatch_noise
            if not rows_v:
                continue
            labels = [label for label, _ in rows_v]
            hp = stacked_hparams(run_cfg, [r for _, r in rows_v], noise, args.seeds)
            trainer = grpo.make_train(run_cfg, params)
            print(f"[{t}/{setting}] {len(labels)} variants x {args.seeds} seeds, "
                  f"{run_cfg.updates} updates of {run_cfg.batch_size} completions")
            res = common.exit_on_value_error(lambda: runner.run(
                trainer, keys_for(len(labels)), out / t / setting, hparams=hp,
                devices=args.devices, progress=not args.no_progress))
            summary_v = summarise(res, labels, args.seeds)
            if setting == "clean":
                for label in labels:
                    key = label if label in args.losses else None
                    if key is not None:
                        result[label] = summary_v[label]
                eps_rows = {label: summary_v[label] for label in labels
                            if label.startswith("drpo ")}
                if eps_rows:
                    eps_rows["drpo eps=12.5"] = summary_v.get("drpo")
                    result["drpo_sweep"] = eps_rows
            else:
                result["mismatch"] = {"rollout_dtype": "bfloat16", "logit_noise": noise,
                                      **summary_v}
            digests.append(runner.params_digest(res.state.params))
            env_steps = trainer.total_env_steps
            rows += logging.curve_rows(res, [f"{lb}|seed{s}" for lb in labels
                                             for s in range(args.seeds)],
                                       extra={"task": t, "setting": setting})
            curves[(t, setting)] = (res, labels)
        tasks[t] = result

    wall = time.time() - t0
    tr = [tasks[t][loss]["final_accuracy"] for t in tasks for loss in args.losses
          if loss in TRUST_REGION]
    summary = {
        "experiment": "llm_rl", "env": ",".join(args.tasks), "env_steps": env_steps,
        "env_steps_unit": "sampled completions per run", "wall_s": round(wall, 1),
        "final_return": float(np.mean(tr)) if tr else None,
        "final_return_is": "mean final held-out accuracy of the trust-region losses",
        "params_digest": ",".join(digests), "seeds": args.seeds, "tasks": tasks,
        "collapse_rule": f"final accuracy more than {COLLAPSE_DROP:.2f} below the SFT start",
        "paper_claims": PAPER_CLAIMS,
        "config": {t: dataclasses.asdict(c) for t, c in configs.items()},
        "sft": {t: dataclasses.asdict(c) for t, c in sft_cfgs.items()},
    }
    if not distributed.is_primary():
        return summary
    logging.write_json(out / "summary.json", summary)
    logging.write_metrics(out, rows, wandb=args.wandb)
    _plots(out, curves, tasks, args)
    print(_table(tasks, args))
    print(f"done in {wall:.0f}s; outputs in {out}")
    return summary


def _table(tasks: dict, args) -> str:
    lines = ["| task | loss | held-out accuracy: SFT -> final (clean) | mismatch final | "
             "collapsed seeds (clean / mismatch) |", "|---|---|---|---|---|"]
    for t, r in tasks.items():
        for loss in args.losses:
            c = r.get(loss)
            if c is None:
                continue
            m = r.get("mismatch", {}).get(loss)
            mis = "" if m is None else f"{m['final_accuracy']:.3f}"
            mis_c = "" if m is None else m["collapsed_seeds"]
            lines.append(f"| {t} | {loss} | {c['initial_accuracy']:.3f} -> {c['final_accuracy']:.3f}"
                         f" ± {c['final_accuracy_std']:.3f} | {mis} | {c['collapsed_seeds']} / "
                         f"{mis_c} |")
    return "\n".join(lines)


def _plots(out: Path, curves: dict, tasks: dict, args) -> None:
    from rlx import logging

    panels = {}
    for (t, setting), (res, labels) in curves.items():
        acc = np.asarray(res.eval["accuracy"]).reshape(len(res.eval_steps), len(labels), args.seeds)
        x = np.asarray(res.eval_steps, float)
        panels[f"{t} ({setting})"] = {label: (x, acc[:, i]) for i, label in enumerate(labels)
                                      if setting != "clean" or not label.startswith("drpo ")}
    logging.plot_panels(out / "accuracy.png", panels, "sampled completions per run",
                        "held-out accuracy")
    sweep = next((r["drpo_sweep"] for r in tasks.values() if "drpo_sweep" in r), None)
    if sweep:
        logging.plot_bars(out / "drpo_eps.png",
                          {"final accuracy": {k: v["final_accuracy"] for k, v in sweep.items()
                                              if v is not None},
                           "SFT start": {k: v["initial_accuracy"] for k, v in sweep.items()
                                         if v is not None}},
                          "held-out accuracy")
    cut = {}
    for t, r in tasks.items():
        for loss in args.losses:
            if loss in r:
                cut.setdefault("rare tokens (mu < 0.1)", {})[f"{t}/{loss}"] = r[loss]["inactive_rare_frac"]
                cut.setdefault("common tokens", {})[f"{t}/{loss}"] = r[loss]["inactive_common_frac"]
    if cut:
        logging.plot_bars(out / "masked_fraction.png", cut,
                          "fraction of tokens whose gradient is cut (clip / mask), last quarter")


if __name__ == "__main__":
    main()
