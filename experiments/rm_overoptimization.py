"""Reward-model over-optimisation scaling laws (Gao, Schulman & Hilton 2022) in a synthetic
gold/proxy setup on a tiny transformer.

    python -m experiments.rm_overoptimization --out runs/rm_overopt           # CPU default
    python -m experiments.rm_overoptimization --out runs/q --quick            # tiny (tests)
    python -m experiments.rm_overoptimization --out runs/rm_overopt --full    # a GPU job

The setup, in order (every stage cached under `--out` by `rlx.checkpoint`, keyed by its settings,
so a rerun resumes where it stopped):

1. pi_init: the tiny LM after SFT on noisy 2-digit addition traces (`rlx.algos.sft`).
2. The gold RM: a transformer of `GOLD_SIZE` trained by least squares on the task's graded
   correctness (`rlx.algos.reward_model.task_signal_batches`; why a task signal and not a random
   gold: `rlx.lm.reward_model`'s docstring). Recentred and scaled to mean 0, std 1 on pi_init's
   samples.
3. Comparisons: pairs of pi_init's samples for the same training prompt, preferred = higher gold;
   identical pairs dropped; 10% held out.
4. Proxy RMs of every size in `--sizes` (two decades of parameters), Bradley-Terry on the first
   n comparisons for each n of the data sweep, `--proxy-seeds` seeds: one vmapped program per
   size. Each recentred and scaled on pi_init's samples (the paper's normalisation).
5. Best-of-n on held-out prompts, n = 1 .. `--bon-samples` by the unbiased estimator over N =
   `--bon-samples` samples per prompt (`rlx.losses.best_of_n`), KL_bon = log n - (n-1)/n.
6. RL: token-level PPO-clip (group-relative advantages, no critic; `rlx.algos.grpo` with the
   `ppo_clip` loss, no KL penalty) against each size's proxy (its first seed, all the data),
   gold and proxy scores and KL(pi || pi_init) of held-out samples logged along training; one
   more run with a k3 KL penalty (`--kl-beta`) against the `--kl-size` proxy.
7. Fits of R_bon(d) = d (alpha - beta d) and R_RL(d) = d (alpha - beta log d), d = sqrt(KL), to
   the gold curves (recentred to R(0) = 0), per size (`rlx.scaling_laws`); alpha and beta against
   log10(parameters).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

from experiments import common

SIZES = ("xs", "s", "m", "l", "xl")
PAPER = {
    "bon_form": "R_bon(d) = d (alpha - beta d): gold peaks at d* = alpha / (2 beta), then falls",
    "rl_form": "R_RL(d) = d (alpha - beta log d): gold peaks at d* = exp(alpha / beta - 1)",
    "bon_size_trend": "alpha_bon rises and beta_bon falls smoothly (about log-linearly) with "
                      "proxy size: larger proxies peak later and higher",
    "rl_size_trend": "beta_RL falls with proxy size; alpha_RL is about constant",
    "proxy_vs_gold": "the proxy score keeps rising while the gold peaks and falls",
    "rl_vs_bon_kl": "RL spends far more KL than best-of-n for the same gold score",
    "kl_penalty": "a KL penalty does not move the gold-vs-KL frontier (it acts like early "
                  "stopping)",
    "data_size": "below a critical amount of comparison data the proxies are near chance",
    "setup": "6B gold RM labels 100k comparisons (10% held out); proxies 3M-3B parameters trained "
             "on 90k; 1.2B policy; coefficients published only in figures",
}


@dataclasses.dataclass
class Args:
    """experiments.rm_overoptimization's flags (`--seeds`: RL seeds per proxy)."""

    sizes: tuple[str, ...] = SIZES  # proxy RM sizes (rlx.lm.reward_model.RM_SIZES)
    proxy_seeds: int = 3  # proxy RMs trained per size and data size
    data_fractions: tuple[float, ...] = (1 / 64, 1 / 16, 1 / 4, 1.0)  # of the comparisons
    comparison_prompts: int = 4096  # training prompts whose 8 samples give 4 comparisons each
    gold_steps: int = 3000  # gold RM regression steps (batch 256)
    proxy_steps: int = 1000  # Bradley-Terry steps per proxy (batch 64)
    bon_prompts: int = 32  # held-out prompts for best-of-n
    bon_samples: int = 10000  # N samples per prompt (largest n)
    rl_updates: int = 150  # PPO updates per RL run (16 prompts x 8 samples each)
    rl_lr: float = 5e-5
    kl_beta: float = 0.1  # k3 KL-penalty coefficient of the one penalised run
    kl_size: str = "m"  # the proxy the penalised run optimises
    sft_steps: int = 1500
    full: bool = False  # larger batches, longer RL, more seeds (a GPU job)
    seed: int = 0


QUICK = dict(sizes=("xs", "s"), proxy_seeds=1, data_fractions=(0.5, 1.0), comparison_prompts=64,
             gold_steps=20, proxy_steps=20, bon_prompts=2, bon_samples=64, rl_updates=6,
             rl_lr=3e-3, sft_steps=20, kl_size="xs")
FULL = dict(proxy_seeds=5, comparison_prompts=16384, gold_steps=10000, proxy_steps=3000,
            bon_prompts=128, bon_samples=20000, rl_updates=400)
LM = dict(task="addition", layers=2, width=64, heads=4, prompts_per_update=16, group_size=8,
          minibatches=4, num_evals=31, eval_prompts=128, eval_samples=4, loss="ppo_clip")
QUICK_LM = dict(layers=1, width=32, heads=2, prompts_per_update=4, group_size=4, minibatches=2,
                num_evals=3, eval_prompts=8, eval_samples=2)
GROUP = 8  # samples per comparison prompt
GOLD_BATCH = 256
SFT_LR, SFT_NOISE = 2e-3, 0.5


def check_args(args) -> None:
    """Raise `ValueError` naming a bad flag value (before anything compiles)."""
    from rlx.lm.reward_model import RM_SIZES

    if len(args.sizes) < 2:
        raise ValueError(f"--sizes: give at least 2 proxy sizes (a trend needs 2), got {args.sizes}")
    for s in args.sizes:
        if s not in RM_SIZES:
            raise ValueError(f"--sizes: unknown size {s!r}; valid: {', '.join(RM_SIZES)}")
    if args.kl_size not in args.sizes:
        raise ValueError(f"--kl-size {args.kl_size!r} is not one of --sizes {args.sizes}")
    for name in ("proxy_seeds", "comparison_prompts", "gold_steps", "proxy_steps", "bon_prompts",
                 "rl_updates", "sft_steps", "seeds"):
        v = getattr(args, name)
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be an int >= 1, got {v!r}")
    if args.bon_samples < 2:
        raise ValueError(f"--bon-samples must be >= 2, got {args.bon_samples}")
    if not args.data_fractions or any(not 0 < f <= 1 for f in args.data_fractions):
        raise ValueError(f"--data-fractions must be in (0, 1], got {args.data_fractions}")
    if not args.rl_lr >= 0:
        raise ValueError(f"--rl-lr must be >= 0, got {args.rl_lr}")
    if not args.kl_beta > 0:
        raise ValueError(f"--kl-beta must be > 0, got {args.kl_beta}")


def safe_fit(fit, d, r) -> dict:
    """A fit as a dict, or {"error": ...} where the points cannot determine it."""
    try:
        return fit(d, r).as_dict()
    except ValueError as e:
        return {"error": str(e)}


def rises_then_falls(r: np.ndarray, tol: float = 0.05) -> bool:
    """The curve climbs above its start and ends more than `tol` below its maximum."""
    r = np.asarray(r, float)
    return bool(r.max() > r[0] + tol and r[-1] < r.max() - tol)


def main(argv: list[str] | None = None) -> dict:
    from rlx.algos.grpo import GRPOConfig

    args, _ = common.cli(__doc__.split("\n")[0], argv, Args, defaults=dict(seeds=2))
    common.setup(args)
    preset = {**(FULL if args.full else {}), **(QUICK if args.quick else {})}
    tokens = sys.argv[1:] if argv is None else argv
    given = {a.split("=")[0].lstrip("-").replace("-", "_") for a in tokens if a.startswith("--")}
    for k, v in preset.items():
        if k not in given:
            setattr(args, k, v)
    if args.quick and "seeds" not in given:
        args.seeds = 1
    common.exit_on_value_error(lambda: check_args(args))

    import jax
    import jax.numpy as jnp

    from rlx import distributed, logging, runner
    from rlx import scaling_laws as sl
    from rlx.algos import grpo, sft
    from rlx.algos import reward_model as rma
    from rlx.lm import model as lm
    from rlx.lm import reward_model as rm
    from rlx.lm.tasks import EOS, PAD
    from rlx.losses import best_of_n as bon
    from rlx.losses import sequence as seq

    lm_preset = {**LM, **(QUICK_LM if args.quick else {}), "lr": args.rl_lr,
                 "updates": args.rl_updates}
    if args.quick:
        lm_preset["num_evals"] = min(lm_preset["num_evals"], args.rl_updates + 1)
    cfg = GRPOConfig(**lm_preset)
    common.exit_on_value_error(cfg.validate)
    sft_cfg = sft.SFTConfig(steps=args.sft_steps, lr=SFT_LR, noise=SFT_NOISE)
    common.exit_on_value_error(sft_cfg.validate)
    gold_train_cfg = rma.RMTrainConfig(steps=args.gold_steps, batch_size=GOLD_BATCH)
    proxy_train_cfg = rma.RMTrainConfig(steps=args.proxy_steps)
    common.exit_on_value_error(lambda: runner.choose_mesh(args.seeds, args.devices))

    out = Path(args.out)
    t0 = time.time()
    task = cfg.make_task()
    lm_cfg = cfg.lm_config(task)
    P, T = task.prompt_length, cfg.completion_length(task)
    L = P + T
    V = task.vocab.size
    root = jax.random.PRNGKey(args.seed)
    k_sft, k_cmp, k_gold, k_proxy, k_bon, k_rl = jax.random.split(root, 6)
    timings: dict[str, float] = {}
    last = [t0]

    def lap(name: str) -> None:
        """Seconds since the previous lap, as timings[name]."""
        now = time.time()
        timings[name], last[0] = now - last[0], now

    # 1. pi_init
    like = jax.eval_shape(lambda: lm.init_params(lm_cfg, jax.random.PRNGKey(0)))
    base_spec = {"task": repr(task), "model": dataclasses.asdict(lm_cfg), "seed": args.seed}
    params, _, _ = common.cached(
        common.spec_path(out, "sft", {**base_spec, "sft": dataclasses.asdict(sft_cfg)}), like,
        lambda: jax.jit(sft.make_sft(task, lm_cfg, sft_cfg))(k_sft)[0])
    init_digest = runner.params_digest(params)

    # policy samples: comparison prompts (train split) x GROUP
    prompts = task.prompts(jax.random.fold_in(k_cmp, 0), args.comparison_prompts, "train")
    toks, mask = jax.jit(lambda k: rma.sample_groups(params, lm_cfg, k, prompts.tokens,
                                                     prompts.mask, GROUP, T, EOS, PAD))(
        jax.random.fold_in(k_cmp, 1))
    flat_t, flat_m = toks.reshape(-1, L), mask.reshape(-1, L)
    flat_problem = jnp.repeat(prompts.problem, GROUP, axis=0)
    correct = task.reward(flat_problem, flat_t[:, P:], flat_m[:, P:])

    # 2. gold
    gold_cfg = rm.rm_config("gold", V, L)
    gold_like = jax.eval_shape(lambda: rm.rm_init(gold_cfg, jax.random.PRNGKey(0)))
    gold_spec = {**base_spec, "sft": dataclasses.asdict(sft_cfg), "gold": dataclasses.asdict(
        gold_train_cfg), "prompts": args.comparison_prompts, "gold_size": rm.GOLD_SIZE}
    gold_params, _, _ = common.cached(
        common.spec_path(out, "gold", gold_spec), gold_like,
        lambda: jax.jit(rma.make_regression_train(gold_cfg, gold_train_cfg,
                                                  rma.task_signal_batches(
                                                      task, flat_t, flat_m, flat_problem,
                                                      GOLD_BATCH)))(k_gold)[0])
    gold_raw = jax.jit(lambda t, m: rm.rm_score(gold_params, gold_cfg, t, m))
    gold_params = rm.normalize_head(gold_params, gold_raw(flat_t, flat_m))
    gold_fn = jax.jit(lambda t, m: rm.rm_score(gold_params, gold_cfg, t, m))
    g_policy = np.asarray(gold_fn(flat_t, flat_m))
    graded = np.asarray(task.graded_reward(flat_problem, flat_t[:, P:], flat_m[:, P:]))
    gold_info = {"params": rm.rm_num_params(gold_cfg), "size": rm.GOLD_SIZE,
                 "trained_on": "graded correctness of 2-digit addition answers",
                 "corr_with_graded_correctness_on_pi_init": float(np.corrcoef(g_policy, graded)[0, 1]),
                 "pi_init_accuracy": float(np.mean(np.asarray(correct))),
                 "gold_correct_minus_wrong": _mean_gap(g_policy, np.asarray(correct) > 0)}

    lap("sft_and_gold_s")
    # 3. comparisons
    comp = rma.label_comparisons(jax.random.fold_in(k_cmp, 2), gold_fn, toks, mask)
    n_valid = int(comp.n_valid)
    n_train = max(1, int(round(0.9 * n_valid)))
    held = tuple(x[n_train:n_valid] for x in comp.pairs())
    data_sizes = sorted({max(1, int(round(f * n_train))) for f in args.data_fractions})

    # 4. proxies: per size, vmapped over (seed, data size)
    S, D = args.proxy_seeds, len(data_sizes)
    proxy_keys = jnp.repeat(jax.random.split(k_proxy, S), D, axis=0)
    n_used = jnp.tile(jnp.asarray(data_sizes, jnp.int32), S)
    proxies, proxy_info = {}, {}
    for size in args.sizes:
        c = rm.rm_config(size, V, L)
        nparams = rm.rm_num_params(c)
        like_p = jax.eval_shape(lambda: jax.vmap(lambda k: rm.rm_init(c, k))(proxy_keys))
        fit = rma.make_rm_train(c, proxy_train_cfg)
        stacked, secs, _ = common.cached(
            common.spec_path(out, f"proxy-{size}", {**gold_spec, "proxy": dataclasses.asdict(
                proxy_train_cfg), "size": rm.RM_SIZES[size], "seeds": S,
                "data": data_sizes}), like_p,
            lambda: jax.jit(jax.vmap(lambda k, n: fit(k, *comp.pairs(), n)[0]))(proxy_keys,
                                                                                n_used))
        raw = jax.jit(jax.vmap(lambda p: rm.rm_score(p, c, flat_t, flat_m)))(stacked)
        stacked = jax.vmap(rm.normalize_head)(stacked, raw)
        acc = np.asarray(jax.jit(jax.vmap(
            lambda p: rma.preference_accuracy(p, c, *held)))(stacked)).reshape(S, D)
        proxies[size] = (c, stacked, nparams)
        proxy_info[size] = {"params": nparams, "shape": rm.RM_SIZES[size], "train_s": round(secs, 1),
                            "heldout_accuracy": {str(n): float(acc[:, j].mean())
                                                 for j, n in enumerate(data_sizes)},
                            "heldout_accuracy_per_seed": acc[:, -1].tolist()}
        print(f"[proxy {size}] {nparams} params; held-out preference accuracy "
              + ", ".join(f"n={n}: {acc[:, j].mean():.3f}" for j, n in enumerate(data_sizes)))
    full_idx = np.arange(S) * D + (D - 1)  # each seed's all-data proxy

    lap("comparisons_and_proxies_s")
    # 5. best-of-n (held-out prompts; distinct sequences scored once)
    N = args.bon_samples
    bp = task.prompts(jax.random.fold_in(k_bon, 0), args.bon_prompts, "test")
    bt, bm = jax.jit(lambda k: rma.sample_groups(params, lm_cfg, k, bp.tokens, bp.mask, N, T,
                                                 EOS, PAD))(jax.random.fold_in(k_bon, 1))
    uniq_t, uniq_m, inverse = rma.unique_sequences(bt.reshape(-1, L), bm.reshape(-1, L))
    g_bon_all = np.asarray(gold_fn(uniq_t, uniq_m))[inverse].reshape(args.bon_prompts, N)
    ns = np.unique(np.round(np.logspace(0, np.log10(N), 25)).astype(int))
    d_bon = np.sqrt(np.asarray(bon.kl_bon(ns), float))
    bon_curves = {}
    for size, (c, stacked, nparams) in proxies.items():
        full = jax.tree.map(lambda x: x[full_idx], stacked)
        p_all = np.asarray(jax.vmap(lambda p: rm.rm_score(p, c, uniq_t, uniq_m))(full))
        p_all = p_all[:, inverse].reshape(S, args.bon_prompts, N)
        gb, pb = bon.best_of_n(jnp.asarray(p_all), jnp.asarray(g_bon_all), ns)
        gb, pb = np.asarray(gb).mean(axis=1), np.asarray(pb).mean(axis=1)  # [S, len(ns)]
        bon_curves[size] = {"gold": gb - gb[:, :1], "proxy": pb - pb[:, :1]}

    lap("best_of_n_s")
    # 6. RL against each proxy (first seed, all data); the KL-penalised run shares its proxy's
    # program (the penalty is a traced hyper-parameter: members = betas x seeds)
    rl_curves, rows, digests = {}, [], []
    keys = jax.random.split(k_rl, args.seeds)
    env_steps = 0
    for size in args.sizes:
        c, stacked, nparams = proxies[size]
        pp = jax.tree.map(lambda x: x[full_idx[0]], stacked)
        proxy_fn = rma.as_reward_fn(rma.score_fn(pp, c))
        run_cfg = dataclasses.replace(
            cfg, init=f"{init_digest}+proxy:{runner.params_digest(pp)}+gold:"
                      f"{runner.params_digest(gold_params)}")
        trainer = grpo.make_train(run_cfg, params, reward_fn=proxy_fn,
                                  score_fns={"gold": rma.as_reward_fn(gold_fn), "proxy": proxy_fn})
        betas = [0.0] + ([args.kl_beta] if size == args.kl_size else [])
        labels = [size + (f" kl={b:g}" if b else "") for b in betas]
        hps = [run_cfg.hparams(seq.loss_params("ppo_clip", beta=b)) for b in betas]
        hp = jax.tree.map(lambda *x: jnp.repeat(jnp.stack(x), args.seeds, axis=0), *hps)
        print(f"[rl {size}] {' + '.join(labels)}: {args.seeds} seeds x {run_cfg.updates} updates")
        res = common.exit_on_value_error(lambda: runner.run(
            trainer, jnp.tile(keys, (len(betas), 1)), out / "rl" / size, hparams=hp,
            devices=args.devices, progress=not args.no_progress))
        E = len(res.eval_steps)
        ev = {k: np.asarray(v).reshape(E, len(betas), args.seeds) for k, v in res.eval.items()}
        for i, (label, beta) in enumerate(zip(labels, betas)):
            d = np.sqrt(np.maximum(ev["kl_init_seq"][:, i], 0.0))  # [evals, seeds]
            g, p = ev["eval_score_gold"][:, i], ev["eval_score_proxy"][:, i]
            rl_curves[label] = {"d": d.mean(1), "gold": (g - g[:1]).mean(1),
                                "proxy": (p - p[:1]).mean(1), "gold_seeds": g - g[:1],
                                "accuracy": ev["accuracy"][:, i].mean(1),
                                "size": size, "beta": beta, "params": nparams}
        digests.append(runner.params_digest(res.state.params))
        env_steps = trainer.total_env_steps
        rows += logging.curve_rows(res, [f"{lb}|seed{s}" for lb in labels
                                         for s in range(args.seeds)],
                                   extra={"method": "rl", "proxy": size})

    lap("rl_s")
    # 7. fits and trends
    fits = {"bon": {}, "rl": {}}
    checks = {"bon_rises_then_falls": {}, "rl_rises_then_falls": {}, "proxy_rises": {}}
    for size in args.sizes:
        nparams = proxies[size][2]
        gb = bon_curves[size]["gold"].mean(0)
        f = safe_fit(sl.fit_bon, d_bon, gb)
        f["observed_peak_d"] = float(d_bon[int(np.argmax(gb))])
        f["observed_peak_gold"] = float(gb.max())
        fits["bon"][str(nparams)] = f
        checks["bon_rises_then_falls"][size] = rises_then_falls(gb)
        r = rl_curves[size]
        f = safe_fit(sl.fit_rl, r["d"], r["gold"])
        f["observed_peak_d"] = float(r["d"][int(np.argmax(r["gold"]))])
        f["observed_peak_gold"] = float(r["gold"].max())
        f["final_d"] = float(r["d"][-1])
        fits["rl"][str(nparams)] = f
        checks["rl_rises_then_falls"][size] = rises_then_falls(r["gold"])
        checks["proxy_rises"][size] = bool(r["proxy"][-1] > 0.5 * r["proxy"].max() > 0
                                           and bon_curves[size]["proxy"].mean(0)[-1]
                                           >= bon_curves[size]["proxy"].mean(0).max() - 1e-6)
    sizes_n = [proxies[s][2] for s in args.sizes]
    trends = {}
    for method in ("bon", "rl"):
        for coef in ("alpha", "beta", "peak_d"):
            vals = [fits[method][str(n)].get(coef, np.nan) for n in sizes_n]
            if np.all(np.isfinite(vals)):
                slope, intercept, r2 = sl.trend(sizes_n, vals)
                trends[f"{coef}_{method}"] = {"slope_per_decade": slope, "intercept": intercept,
                                              "r2": r2}
    r2s = [f.get("r2", np.nan) for m in fits.values() for f in m.values()]
    checks["all_r2_ge_0.9"] = bool(np.all(np.asarray(r2s) >= 0.9))
    for method in ("bon", "rl"):
        peaks = [fits[method][str(n)].get("observed_peak_d", np.nan) for n in sizes_n]
        checks[f"{method}_peak_d_rank_corr_with_size"] = _rank_corr(sizes_n, peaks)
    kl_label = f"{args.kl_size} kl={args.kl_beta:g}"
    kl_run, free_run = rl_curves[kl_label], rl_curves[args.kl_size]
    kl_penalty = {"proxy_size": args.kl_size, "beta": args.kl_beta,
                  "final_d": float(kl_run["d"][-1]), "final_gold": float(kl_run["gold"][-1]),
                  "no_penalty_final_d": float(free_run["d"][-1]),
                  "no_penalty_gold_at_same_d": float(np.interp(kl_run["d"][-1], *_monotone(
                      free_run["d"], free_run["gold"]))),
                  "fit": safe_fit(sl.fit_rl, kl_run["d"], kl_run["gold"])}
    wall = time.time() - t0

    finals = [rl_curves[s]["gold"][-1] for s in args.sizes]
    summary = {
        "experiment": "rm_overoptimization", "env": task.name, "env_steps": env_steps,
        "env_steps_unit": "sampled completions per RL run", "wall_s": round(wall, 1),
        "final_return": float(np.mean(finals)),
        "final_return_is": "mean over proxy sizes of the final gold score of RL against the proxy "
                           "(recentred: pi_init = 0, gold std 1 on pi_init)",
        "params_digest": ",".join(digests), "fits": fits, "trends": trends, "checks": checks,
        "kl_penalty": kl_penalty, "gold": gold_info, "proxies": proxy_info,
        "comparisons": {"valid": n_valid, "train": n_train, "heldout": n_valid - n_train,
                        "dropped_identical": int(comp.valid.shape[0] - n_valid),
                        "data_sizes": data_sizes},
        "bon": {"n": ns.tolist(), "d": d_bon.tolist(), "samples_per_prompt": N,
                "prompts": args.bon_prompts, "distinct_sequences": int(uniq_t.shape[0]),
                "gold": {s: v["gold"].mean(0).tolist() for s, v in bon_curves.items()},
                "proxy": {s: v["proxy"].mean(0).tolist() for s, v in bon_curves.items()}},
        "rl": {k: {"d": v["d"].tolist(), "gold": v["gold"].tolist(), "proxy": v["proxy"].tolist(),
                   "accuracy": v["accuracy"].tolist()} for k, v in rl_curves.items()},
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "paper": PAPER, "seeds": args.seeds, "proxy_seeds": S,
        "config": {"args": {k: v for k, v in vars(args).items() if k != "multi_process"},
                   "policy": dataclasses.asdict(cfg), "sft": dataclasses.asdict(sft_cfg)},
    }
    if not distributed.is_primary():
        return summary
    for size in args.sizes:
        for j, n in enumerate(ns):
            rows.append({"method": "bon", "proxy": size, "n": int(n), "d": float(d_bon[j]),
                         "gold": float(bon_curves[size]["gold"].mean(0)[j]),
                         "proxy_score": float(bon_curves[size]["proxy"].mean(0)[j]),
                         "env_step": int(n)})
    logging.write_json(out / "summary.json", summary)
    logging.write_metrics(out, rows, wandb=args.wandb)
    _plots(out, args, proxies, d_bon, bon_curves, rl_curves, fits, proxy_info, data_sizes,
           kl_label)
    print(_table(fits, proxies, args))
    print(f"done in {wall:.0f}s; outputs in {out}")
    return summary


def _mean_gap(x: np.ndarray, where: np.ndarray) -> float | None:
    """mean(x[where]) - mean(x[~where]); None when either side is empty."""
    if where.all() or not where.any():
        return None
    return float(x[where].mean() - x[~where].mean())


def _rank_corr(x, y) -> float:
    """Spearman's rank correlation (nan where y has non-finite values)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if not np.all(np.isfinite(y)):
        return float("nan")
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    if np.std(ry) == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def _monotone(d, r):
    """(d, r) sorted by d (for interpolation)."""
    order = np.argsort(d, kind="stable")
    return np.asarray(d)[order], np.asarray(r)[order]


def _table(fits, proxies, args) -> str:
    lines = ["| proxy | params | BoN alpha | BoN beta | BoN R^2 | BoN peak d (fit / observed) | "
             "RL alpha | RL beta | RL R^2 | RL peak d (fit / observed) |", "|" + "---|" * 10]
    for size in args.sizes:
        n = str(proxies[size][2])
        b, r = fits["bon"][n], fits["rl"][n]
        cell = lambda f, k: f"{f[k]:.3g}" if k in f else "-"  # noqa: E731
        lines.append(f"| {size} | {n} | {cell(b, 'alpha')} | {cell(b, 'beta')} | {cell(b, 'r2')} | "
                     f"{cell(b, 'peak_d')} / {b['observed_peak_d']:.2f} | {cell(r, 'alpha')} | "
                     f"{cell(r, 'beta')} | {cell(r, 'r2')} | {cell(r, 'peak_d')} / "
                     f"{r['observed_peak_d']:.2f} |")
    return "\n".join(lines)


def _plots(out, args, proxies, d_bon, bon_curves, rl_curves, fits, proxy_info, data_sizes,
           kl_label) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rlx import scaling_laws as sl

    colors = plt.cm.viridis(np.linspace(0, 0.9, len(args.sizes)))
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    for i, size in enumerate(args.sizes):
        n = str(proxies[size][2])
        label = f"{size} ({int(n):,} params)"
        gb = bon_curves[size]["gold"].mean(0)
        axes[0, 0].plot(d_bon, gb, "o", ms=3, color=colors[i], label=label)
        axes[0, 1].plot(d_bon, bon_curves[size]["proxy"].mean(0), "-", color=colors[i], label=label)
        r = rl_curves[size]
        axes[1, 0].plot(r["d"], r["gold"], "o", ms=3, color=colors[i], label=label)
        axes[1, 1].plot(r["d"], r["proxy"], "-", color=colors[i], label=label)
        grid = np.linspace(0, max(d_bon.max(), 1e-3), 100)
        if "alpha" in fits["bon"][n]:
            f = fits["bon"][n]
            axes[0, 0].plot(grid, sl.bon_curve(grid, f["alpha"], f["beta"]), "--", color=colors[i])
        if "alpha" in fits["rl"][n]:
            f = fits["rl"][n]
            grid = np.linspace(0, max(r["d"].max(), 1e-3), 100)
            axes[1, 0].plot(grid, sl.rl_curve(grid, f["alpha"], f["beta"]), "--", color=colors[i])
    k = rl_curves[kl_label]
    axes[1, 0].plot(k["d"], k["gold"], "x", color="red", label=f"{kl_label} (KL penalty)")
    titles = [("best-of-n: gold (fits dashed)", "gold"), ("best-of-n: proxy", "proxy"),
              ("RL (PPO, no KL penalty): gold (fits dashed)", "gold"), ("RL: proxy", "proxy")]
    for ax, (title, yl) in zip(axes.flat, titles):
        ax.set_title(title)
        ax.set_xlabel("d = sqrt(KL(pi || pi_init)) (nats^0.5)")
        ax.set_ylabel(f"{yl} score (pi_init = 0)")
        ax.axhline(0, color="grey", lw=0.5)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "overoptimization.png", dpi=120)
    plt.close(fig)

    sizes_n = np.array([proxies[s][2] for s in args.sizes], float)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for method, marker in (("bon", "o"), ("rl", "s")):
        for ax, coef in zip(axes, ("alpha", "beta", "peak_d")):
            vals = [fits[method][str(int(n))].get(coef, np.nan) for n in sizes_n]
            ax.plot(sizes_n, vals, marker + "-", label=method)
            ax.set_xscale("log")
            ax.set_xlabel("proxy RM parameters")
            ax.set_title(coef)
            ax.legend()
    fig.tight_layout()
    fig.savefig(out / "coefficients.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for i, size in enumerate(args.sizes):
        acc = proxy_info[size]["heldout_accuracy"]
        ax.plot(data_sizes, [acc[str(n)] for n in data_sizes], "o-", color=colors[i],
                label=f"{size} ({proxies[size][2]:,})")
    ax.axhline(0.5, color="grey", lw=0.5)
    ax.set_xscale("log")
    ax.set_xlabel("training comparisons")
    ax.set_ylabel("held-out preference accuracy")
    ax.set_title("proxy RMs: data-size sweep")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "data_size.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
