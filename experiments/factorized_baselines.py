"""Action-dependent factorised baselines (Wu et al. 2018) and where the variance really is
(Tucker et al. 2018): estimator variance against action dimension, the decomposition on the
LQG and a Brax task, and learning curves per baseline.

    python -m experiments.factorized_baselines --out runs/fb            # CPU default
    python -m experiments.factorized_baselines --out runs/fb_q --quick  # tiny (tests)
    python -m experiments.factorized_baselines --out runs/fb --full     # Wu's k's, longer (GPU)

1. variance_ratio_by_dim: on `multiaction_point` (d = 2, k per `--ks`, time observed) at the
   initial policy, state and factorised network baselines are fitted (policy frozen), then
   Var[g] (trace over the policy's parameters) of each estimator over independent batches
   (same batches for both: paired); ratio = state / factorised, 95% CI by paired bootstrap
   over batches, per seed and pooled.
   oracle_variance_ratio_by_dim: the same ratio with the *optimal* baselines at the same
   initial policies, by Monte Carlo from saved env states (V(s) and b_i(s, a_-i) = E_{a_i} Q,
   independent continuations, debiased for their MC noise; single-sample estimator with the
   Monte-Carlo return G), with Sigma_tau's share, at the task's horizon and (`one_step`) on
   the same task cut to one step (Sigma_tau = 0).
   variance_ratio_by_dim_one_step: the learned measurement of 1. (plus Wu's linear-feature
   baseline) on that one-step task (the horizon terminates the episode; 32 x 10 i.i.d. steps
   per batch, rewards x 0.5 so the baselines' targets have the default's scale; 100 baseline
   updates; the first seed's initial policy): where the factorised baseline's gain grows with A.
2. decomposition.lqg: Tucker's point mass (their constants, policy variance 1e-4) at step
   `--lqg-t`: Sigma_tau, Sigma_a, Sigma_s (traces) per baseline (exact baselines, exact Q).
3. decomposition.<brax env>: the same at the final policy of the Brax run, by resetting the
   simulator to saved env states and sampling actions and continuations (MC baselines).
4. Learning curves per baseline on the synthetic task (k = `--curve-k`) and on the Brax task
   (each: every baseline x seed as one vmapped program; resumable).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path

import numpy as np

from experiments import common

DEFAULT = dict(ks=(1, 6, 25), fit_updates=150, batches=32, var_seeds=2, lqg_samples=(64, 16, 8),
               curve_k=6, curve_steps=400_000, brax_steps=300_000, brax_horizon=50,
               brax_samples=(16, 8, 4), brax_mc=8, oracle_samples=1024, oracle_mc=8,
               one_step_fit_updates=100, one_step_unroll=10, one_step_var_seeds=1)
QUICK = dict(ks=(2,), fit_updates=3, batches=4, var_seeds=1, lqg_samples=(8, 4, 2), curve_k=3,
             curve_steps=3 * 8 * 50, brax_steps=3 * 8 * 20, brax_horizon=5,
             brax_samples=(4, 2, 2), brax_mc=2, oracle_samples=16, oracle_mc=2,
             one_step_fit_updates=3)
FULL = dict(ks=(6, 50, 200, 500), fit_updates=400, batches=64, var_seeds=4, curve_steps=2_000_000,
            brax_steps=5_000_000, brax_samples=(64, 16, 8), brax_mc=32, oracle_samples=4096,
            one_step_fit_updates=400, one_step_var_seeds=4)
SYNTH = dict(num_envs=32, unroll_length=50, lr=3e-3, reward_scaling=0.01, max_grad_norm=10.0,
             policy_layers=(64, 64), value_layers=(64, 64), num_evals=6, eval_envs=16)
SYNTH_QUICK = dict(num_envs=8, policy_layers=(16,), value_layers=(16,), num_evals=2, eval_envs=4)
BRAX = dict(num_envs=32, unroll_length=64, lr=3e-4, reward_scaling=0.1, init_log_std=-0.5,
            gamma=0.99, gae_lambda=0.95, normalize_observations=True, policy_layers=(64, 64),
            value_layers=(64, 64), num_evals=6, eval_envs=16)
BRAX_QUICK = dict(num_envs=8, unroll_length=20, policy_layers=(16,), value_layers=(16,),
                  num_evals=2, eval_envs=2)
# the one-step task: rewards x 0.01 x 50 (the default horizon) keep the targets' scale
ONE_STEP_REWARD_SCALING = 0.5
CURVE_BASELINES = ("none", "state", "factorised", "linear")
BRAX_BASELINES = ("state", "factorised")

PAPER_CLAIMS = {
    "wu2018": "Wu et al. 2018 (arXiv 1803.07246): b_i(s, a_-i) is unbiased for a factorised policy "
              "and its variance reduction over a state baseline grows with the action dimension "
              "(synthetic task, k in {6, 50, 200, 500}; high-dimensional target matching).",
    "tucker2018": "Tucker et al. 2018 (arXiv 1802.10031): Sigma_tau (trajectory noise) dominates "
                  "the policy-gradient variance, so state-action baselines can only remove the "
                  "small Sigma_a; published MuJoCo gains came from implementation details.",
}


@dataclasses.dataclass
class Args:
    """experiments.factorized_baselines' own flags."""

    ks: tuple[int, ...] | None = None  # k per coordinate of the synthetic task (A = 2 k)
    fit_updates: int | None = None  # baseline-only updates before measuring variance
    batches: int | None = None  # independent batches per variance estimate
    var_seeds: int | None = None  # policies (seeds) per action dimension
    curve_k: int | None = None  # k of the synthetic task's learning curves
    curve_steps: int | None = None  # env steps per member, synthetic learning curves
    brax_env: str | None = None  # Brax task (default reacher; --quick: none); '' skips it
    brax_steps: int | None = None  # env steps per member, Brax learning curves
    brax_horizon: int | None = None  # continuation length of the Brax decomposition
    lqg_t: int = 0  # LQG time step of the decomposition
    full: bool = False  # Wu's k's, longer runs (a GPU job)
    seed: int = 0


def check_args(args, p: dict) -> None:
    """Raise `ValueError` naming a bad flag value (before anything compiles)."""
    if not p["ks"] or any(k < 1 for k in p["ks"]):
        raise ValueError(f"--ks must be positive integers, got {p['ks']}")
    for name in ("batches", "var_seeds", "curve_k", "curve_steps", "brax_steps", "brax_horizon"):
        if not p[name] >= (2 if name == "batches" else 1):
            raise ValueError(f"--{name.replace('_', '-')} must be >= "
                             f"{2 if name == 'batches' else 1}, got {p[name]}")
    if p["fit_updates"] < 0:
        raise ValueError(f"--fit-updates must be >= 0, got {p['fit_updates']}")
    if not 0 <= args.lqg_t < 100:
        raise ValueError(f"--lqg-t must be in [0, 100), got {args.lqg_t}")
    if args.brax_env:
        from rlx.envs import BRAX_ENVS

        if args.brax_env not in BRAX_ENVS:
            raise ValueError(f"--brax-env {args.brax_env!r} is not a Brax env; valid: "
                             f"{', '.join(BRAX_ENVS)} (or '' to skip)")


def _cached(path: Path, spec: dict, compute):
    """compute() once per spec: the JSON result is kept in `path` and reused on a rerun."""
    key = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:12]
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("spec") == key:
            return saved["result"], True
    result = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"spec": key, "result": result}))
    return result, False


def _trace_var(g: np.ndarray) -> float:
    return float(g.var(0, ddof=1).sum())


def variance_by_dim(p: dict, synth: dict, seed: int, one_step: bool = False) -> dict:
    """variance_ratio_by_dim: {A: ratio, CI, per-seed ratios, variances per baseline}; with
    `one_step` the same on the one-step task (variance_ratio_by_dim_one_step, + linear)."""
    import jax

    from rlx.algos import factorised as fa
    from rlx.envs import MultiactionPointEnv

    out = {}
    rng = np.random.default_rng(seed)
    if one_step:
        synth = {**synth, "unroll_length": p["one_step_unroll"],
                 "reward_scaling": ONE_STEP_REWARD_SCALING}
    fit_updates = p["one_step_fit_updates"] if one_step else p["fit_updates"]
    var_seeds = p["one_step_var_seeds"] if one_step else p["var_seeds"]
    env_kw = dict(horizon=1, horizon_terminates=True) if one_step else {}
    for k in p["ks"]:
        names = ("none", "state", "factorised") + (
            ("linear",) if one_step and 2 * k <= fa.LINEAR_MAX_ACTIONS else ())
        cfg = fa.FactorisedConfig(env=f"multiaction_point_k{k}", baselines=names, **synth)
        env = MultiactionPointEnv(k=k, observe_time=True, **env_kw)
        per_seed, var, grads = [], {b: [] for b in cfg.candidates}, []
        for s in range(var_seeds):
            g = fa.estimator_samples(cfg, jax.random.PRNGKey(1000 * seed + s), fit_updates,
                                     p["batches"], env)
            g = {b: np.asarray(x, np.float64) for b, x in g.items()}
            for b in g:
                var[b].append(_trace_var(g[b]))
            per_seed.append(_trace_var(g["state"]) / _trace_var(g["factorised"]))
            grads.append(g)
        boot = []
        pooled = sum(var["state"]) / sum(var["factorised"])
        for _ in range(500):  # paired bootstrap over batches, within each seed
            num = den = 0.0
            for g in grads:
                idx = rng.integers(0, p["batches"], p["batches"])
                num += _trace_var(g["state"][idx])
                den += _trace_var(g["factorised"][idx])
            if den > 0:  # (tiny --batches can draw one batch repeatedly)
                boot.append(num / den)
        out[str(2 * k)] = {"k": k, "ratio": pooled, "ci95": np.percentile(boot or [pooled], [2.5, 97.5]).tolist(),
                           "ratio_per_seed": per_seed,
                           "variance": {b: float(np.mean(v)) for b, v in var.items()},
                           "state_over_none": float(np.mean(var["state"]) / np.mean(var["none"]))}
        if one_step:
            out[str(2 * k)].update(horizon=1, fit_updates=fit_updates)
            if "linear" in var:
                out[str(2 * k)]["state_over_linear"] = float(np.mean(var["state"])
                                                             / np.mean(var["linear"]))
        print(f"[variance{' one-step' if one_step else ''}] A = {2 * k}: state / factorised = {pooled:.4f} "
              f"(95% CI {out[str(2 * k)]['ci95'][0]:.4f}-{out[str(2 * k)]['ci95'][1]:.4f}); "
              f"state / none = {out[str(2 * k)]['state_over_none']:.3f}")
    return out


def _ratio_ci(u_num: list, u_den: list, rng, reps: int = 1000) -> tuple[float, list]:
    """sum u_num / sum u_den pooled over seeds, 95% CI by paired bootstrap over samples."""
    ratio = sum(u.sum() for u in u_num) / sum(u.sum() for u in u_den)
    boot = []
    for _ in range(reps):
        idx = [rng.integers(0, len(u), len(u)) for u in u_num]
        boot.append(sum(u[i].sum() for u, i in zip(u_num, idx))
                    / sum(u[i].sum() for u, i in zip(u_den, idx)))
    return float(ratio), np.percentile(boot, [2.5, 97.5]).tolist()


def oracle_by_dim(p: dict, synth: dict, seed: int) -> dict:
    """oracle_variance_ratio_by_dim: {A: ratio and CI with the Monte-Carlo optimal baselines,
    variances, Sigma_tau's share, and the same on the one-step task}."""
    import jax

    from rlx.algos import factorised as fa
    from rlx.envs import MultiactionPointEnv

    out = {}
    rng = np.random.default_rng(seed + 7)
    n, mc = p["oracle_samples"], p["oracle_mc"]
    for k in p["ks"]:
        A = 2 * k
        cfg = fa.FactorisedConfig(env=f"multiaction_point_k{k}", baselines=("none", "state"),
                                  baseline="state", **synth)
        res = {}
        for name, horizon in (("task", None), ("one_step", 1)):
            env = MultiactionPointEnv(k=k, observe_time=True,
                                      **({"horizon": horizon} if horizon else {}))
            trainer = fa.make_train(cfg, env)
            u = {b: [] for b in ("none", "state", "factorised", "tau")}
            for s in range(p["var_seeds"]):  # the initial policies of variance_by_dim
                k_init, _ = jax.random.split(jax.random.PRNGKey(1000 * seed + s))
                params = trainer.init(k_init, cfg.hparams("state")).params
                g = jax.jit(lambda key, params=params, env=env: fa.oracle_estimator_samples(
                    cfg, env, params, key, n, mc, chunk=max(1, min(64, 32768 // (A * mc)))))(
                    jax.random.PRNGKey(1000 * seed + s + 500))
                u["none"].append(fa.cross_trace_variance(g["none"], g["none"]))
                u["state"].append(fa.cross_trace_variance(*g["state"]))
                u["factorised"].append(fa.cross_trace_variance(*g["factorised"]))
                u["tau"].append((g["tau"] ** 2).sum(-1) * (n - 1) / n)
                u = {b: [np.asarray(x, np.float64) for x in v] for b, v in u.items()}
            ratio, ci = _ratio_ci(u["state"], u["factorised"], rng)
            var = {b: float(np.mean([x.sum() / (n - 1) for x in v])) for b, v in u.items()}
            res[name] = {"ratio": ratio, "ci95": ci,
                         "ratio_per_seed": [float(a.sum() / b.sum())
                                            for a, b in zip(u["state"], u["factorised"])],
                         "variance": {b: var[b] for b in ("none", "state", "factorised")},
                         "sigma_tau": var["tau"],
                         "sigma_tau_over_factorised": var["tau"] / var["factorised"],
                         "state_over_none": var["state"] / var["none"],
                         "horizon": env.max_episode_steps}
        out[str(A)] = {"k": k, **res["task"], "one_step": res["one_step"],
                       "samples": n, "mc_samples": mc}
        print(f"[oracle] A = {A}: state / factorised = {res['task']['ratio']:.4f} (95% CI "
              f"{res['task']['ci95'][0]:.4f}-{res['task']['ci95'][1]:.4f}); Sigma_tau / Var[fact] "
              f"{res['task']['sigma_tau_over_factorised']:.3f}; one-step task: "
              f"{res['one_step']['ratio']:.3f} ({res['one_step']['ci95'][0]:.3f}-"
              f"{res['one_step']['ci95'][1]:.3f})")
    return out


def lqg_decomposition(p: dict, t: int, seed: int) -> dict:
    """Tucker's LQG: Sigma_tau, Sigma_a, Sigma_s (traces) per baseline, with the exact Q and
    by nested Monte Carlo, plus Sigma_s in closed form."""
    import jax

    from rlx.envs import lqg
    from rlx.losses import baselines as bl

    params = lqg.point_mass()
    mean, std = lqg.tucker_policy(jax.random.PRNGKey(seed), params)
    fns = lqg.decomposition_fns(params, mean, std, t)
    bases = lqg.exact_baselines(params, mean, std, t)
    n_s, n_a, n_r = p["lqg_samples"]
    names = ("none", "state", "factorised")

    @jax.jit
    def run(key):
        res = {}
        for name in names:
            for exact in (True, False):
                res[name + ("" if exact else "_mc")] = bl.variance_decomposition(
                    key, fns["sample_state"], fns["sample_action"], fns["sample_return"],
                    fns["score_per_dim"], bases[name], n_s, n_a, n_r,
                    q_value=fns["q_value"] if exact else None)
        return res

    res = run(jax.random.PRNGKey(seed + 1))
    _, sigma_s = lqg.state_term(params, mean, std, t)
    out = {"t": t, "samples": [n_s, n_a, n_r], "sigma_s_exact": float(sigma_s.sum())}
    for name, r in res.items():
        out[name] = {k: float(v.sum()) for k, v in r.items() if k != "mean"}
        out[name]["tau_over_a"] = out[name]["sigma_tau"] / max(abs(out[name]["sigma_a"]), 1e-30)
    return out


def brax_decomposition(env, cfg, params, obs_stats, p: dict, seed: int) -> dict:
    """The decomposition at a trained Brax policy (saved env states, MC baselines)."""
    import jax
    import jax.numpy as jnp

    from rlx.algos import factorised as fa
    from rlx.losses import baselines as bl
    from rlx.rollout import reset, rollout

    mean_fn, std = fa.policy_mean_std(cfg, env, params, obs_stats)
    n_s, n_a, n_r = p["brax_samples"]
    names = ("none", "state", "factorised")

    @jax.jit
    def run(key):
        k0, k1, k2, k3 = jax.random.split(key, 4)

        def policy(obs, k):
            a = mean_fn(obs) + std * jax.random.normal(k, (obs.shape[0], std.shape[0]))
            return jnp.clip(a, -1.0, 1.0), a, {}

        # saved states: 2 n_s envs after 20 steps of the policy from fresh starts
        states, _ = rollout(env, policy, reset(env, k0, 2 * n_s), k1, 20)
        fns, bases = fa.env_decomposition_fns(env, mean_fn, std, states, p["brax_horizon"],
                                              cfg.gamma, p["brax_mc"], k2)
        return {name: bl.variance_decomposition(
            k3, fns["sample_state"], fns["sample_action"], fns["sample_return"],
            fns["score_per_dim"], bases[name], n_s, n_a, n_r) for name in names}

    res = run(jax.random.PRNGKey(seed + 2))
    out = {"samples": [n_s, n_a, n_r], "horizon": p["brax_horizon"], "mc_samples": p["brax_mc"],
           "gamma": cfg.gamma}
    for name, r in res.items():
        out[name] = {k: float(v.sum()) for k, v in r.items() if k != "mean"}
        out[name]["tau_over_a"] = out[name]["sigma_tau"] / max(abs(out[name]["sigma_a"]), 1e-30)
    return out


def curves(cfg, env, baselines, seeds: int, seed: int, out_dir: Path, args):
    """Every baseline x seed as one program (`rlx.runner.run`, resumable)."""
    import jax
    import jax.numpy as jnp

    from rlx import runner
    from rlx.algos import factorised as fa

    trainer = fa.make_train(cfg, env)
    hp = jax.tree.map(lambda *x: jnp.repeat(jnp.stack(x), seeds, axis=0),
                      *[cfg.hparams(b) for b in baselines])
    keys = jnp.tile(jax.random.split(jax.random.PRNGKey(seed), seeds), (len(baselines), 1))
    res = runner.run(trainer, keys, out_dir, hparams=hp, devices=args.devices,
                     progress=not args.no_progress)
    ret = np.asarray(res.eval["eval_return"]).reshape(len(res.eval_steps), len(baselines), seeds)
    summary = {b: {"initial_return": float(ret[0, i].mean()), "final_return": float(ret[-1, i].mean()),
                   "final_return_per_seed": ret[-1, i].tolist()} for i, b in enumerate(baselines)}
    return res, trainer, summary, ret


def main(argv: list[str] | None = None) -> dict:
    args, _ = common.cli(__doc__.split("\n")[0], argv, Args, defaults=dict(seeds=2))
    common.setup(args)
    p = {**DEFAULT, **(FULL if args.full else {}), **(QUICK if args.quick else {})}
    for name in ("ks", "fit_updates", "batches", "var_seeds", "curve_k", "curve_steps",
                 "brax_steps", "brax_horizon"):
        if getattr(args, name) is not None:
            p[name] = tuple(getattr(args, name)) if name == "ks" else getattr(args, name)
    seeds = 1 if args.quick else args.seeds
    if args.brax_env is None:
        args.brax_env = "" if args.quick else "reacher"
    common.exit_on_value_error(lambda: check_args(args, p))

    import jax

    from rlx import distributed, logging, runner
    from rlx.algos import factorised as fa
    from rlx.envs import MultiactionPointEnv

    synth = {**SYNTH, **(SYNTH_QUICK if args.quick else {})}
    brax_kw = {**BRAX, **(BRAX_QUICK if args.quick else {})}
    out = Path(args.out)
    t0 = time.time()
    stages = {}

    def stage(name):
        stages[name] = round(time.time() - t0 - sum(stages.values()), 1)

    p_var = {k_: v for k_, v in p.items() if not k_.startswith(("oracle", "one_step"))}
    var, reused_v = _cached(out / "variance.json", {"p": p_var, "synth": synth, "seed": args.seed},
                            lambda: variance_by_dim(p, synth, args.seed))
    stage("variance")
    p_one = {k_: v for k_, v in p.items() if k_ in ("ks", "batches") or k_.startswith("one_step")}
    var_one, _ = _cached(out / "variance_one_step.json",
                         {"p": p_one, "synth": synth, "seed": args.seed,
                          "reward_scaling": ONE_STEP_REWARD_SCALING},
                         lambda: variance_by_dim(p, synth, args.seed, one_step=True))
    stage("variance_one_step")
    p_or = {k_: v for k_, v in p.items() if not k_.startswith("one_step")}
    oracle, _ = _cached(out / "oracle.json", {"p": p_or, "synth": synth, "seed": args.seed},
                        lambda: oracle_by_dim(p, synth, args.seed))
    stage("oracle")
    lqg_dec, _ = _cached(out / "lqg.json", {"p": p["lqg_samples"], "t": args.lqg_t,
                                            "seed": args.seed},
                         lambda: lqg_decomposition(p, args.lqg_t, args.seed))
    stage("lqg")
    d = lqg_dec
    print(f"[lqg t={args.lqg_t}] Sigma_tau {d['state']['sigma_tau']:.4g}; Sigma_a none "
          f"{d['none']['sigma_a']:.4g}, state {d['state']['sigma_a']:.4g}, factorised "
          f"{d['factorised']['sigma_a']:.4g}; Sigma_s {d['state']['sigma_s']:.4g} (exact "
          f"{d['sigma_s_exact']:.4g})")

    # learning curves: the synthetic task
    k = p["curve_k"]
    s_cfg = fa.FactorisedConfig(env=f"multiaction_point_k{k}", baselines=CURVE_BASELINES,
                                baseline="factorised", total_steps=p["curve_steps"], **synth)
    s_env = MultiactionPointEnv(k=k, observe_time=True)
    common.exit_on_value_error(s_cfg.validate)
    res_s, tr_s, curve_s, ret_s = common.exit_on_value_error(lambda: curves(
        s_cfg, s_env, CURVE_BASELINES, seeds, args.seed, out / "curves_synthetic", args))
    digests = [runner.params_digest(res_s.state.params)]
    rows = logging.curve_rows(res_s, [f"{b}|seed{s}" for b in CURVE_BASELINES for s in range(seeds)],
                              extra={"task": f"multiaction_point_k{k}"})
    panels = {f"multiaction_point (A = {2 * k})": {
        b: (np.asarray(res_s.eval_steps, float), ret_s[:, i]) for i, b in enumerate(CURVE_BASELINES)}}
    env_steps = tr_s.total_env_steps
    stage("curves_synthetic")
    decomposition = {"lqg": lqg_dec}
    curve = {"synthetic": curve_s}

    if args.brax_env:
        b_cfg = fa.FactorisedConfig(env=args.brax_env, baselines=BRAX_BASELINES,
                                    baseline="factorised", total_steps=p["brax_steps"], **brax_kw)
        common.exit_on_value_error(b_cfg.validate)
        b_env = b_cfg.make_env()
        res_b, tr_b, curve_b, ret_b = common.exit_on_value_error(lambda: curves(
            b_cfg, b_env, BRAX_BASELINES, seeds, args.seed, out / f"curves_{args.brax_env}", args))
        digests.append(runner.params_digest(res_b.state.params))
        rows += logging.curve_rows(res_b, [f"{b}|seed{s}" for b in BRAX_BASELINES
                                           for s in range(seeds)], extra={"task": args.brax_env})
        panels[args.brax_env] = {b: (np.asarray(res_b.eval_steps, float), ret_b[:, i])
                                 for i, b in enumerate(BRAX_BASELINES)}
        curve[args.brax_env] = curve_b
        member = BRAX_BASELINES.index("factorised") * seeds  # seed 0 of the factorised runs
        pick = lambda x: jax.tree.map(lambda y: np.asarray(y)[member], x)  # noqa: E731
        decomposition[args.brax_env], _ = _cached(
            out / f"decomposition_{args.brax_env}.json",
            {"p": [p["brax_samples"], p["brax_horizon"], p["brax_mc"]], "seed": args.seed,
             "params": digests[-1]},
            lambda: brax_decomposition(b_env, b_cfg, pick(res_b.state.params),
                                       pick(res_b.state.obs_stats), p, args.seed))
        stage(f"brax_{args.brax_env}")
        d = decomposition[args.brax_env]
        print(f"[{args.brax_env}] Sigma_tau {d['state']['sigma_tau']:.4g}; Sigma_a none "
              f"{d['none']['sigma_a']:.4g}, state {d['state']['sigma_a']:.4g}, factorised "
              f"{d['factorised']['sigma_a']:.4g}; Sigma_s {d['state']['sigma_s']:.4g}")

    wall = time.time() - t0
    summary = {
        "experiment": "factorized_baselines", "env": f"multiaction_point_k{k}"
        + (f",{args.brax_env}" if args.brax_env else ""),
        "env_steps": env_steps, "wall_s": round(wall, 1),
        "final_return": curve_s["factorised"]["final_return"],
        "final_return_is": "synthetic task, factorised baseline, mean over seeds",
        "params_digest": ",".join(digests), "seeds": seeds, "stage_s": stages,
        "variance_ratio_by_dim": var, "variance_reused": reused_v,
        "variance_ratio_by_dim_one_step": var_one,
        "oracle_variance_ratio_by_dim": oracle,
        "decomposition": decomposition, "curves": curve, "paper_claims": PAPER_CLAIMS,
        "settings": {k_: list(v) if isinstance(v, tuple) else v for k_, v in p.items()},
        "config": {"synthetic": dataclasses.asdict(s_cfg),
                   **({args.brax_env: dataclasses.asdict(b_cfg)} if args.brax_env else {})},
    }
    if not distributed.is_primary():
        return summary
    logging.write_json(out / "summary.json", summary)
    logging.write_metrics(out, rows)
    logging.plot_panels(out / "learning_curves.png", panels, "env steps per member",
                        "eval return (deterministic)")
    _plot_variance(out, var, decomposition, oracle, var_one)
    print(f"done in {wall:.0f}s; outputs in {out}")
    return summary


def _plot_variance(out: Path, var: dict, decomposition: dict, oracle: dict | None = None,
                   var_one: dict | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    dims = sorted(var, key=int)
    x = [int(a) for a in dims]
    r = np.array([var[a]["ratio"] for a in dims])
    ci = np.array([var[a]["ci95"] for a in dims]).T
    axes[0].errorbar(x, r, yerr=[r - ci[0], ci[1] - r], marker="o", capsize=3,
                     label="learned baselines (GAE), horizon 50")
    for key, label in (("task", "optimal baselines (MC)"), ("one_step", "optimal, one-step task")):
        if not oracle:
            break
        o = [oracle[a] if key == "task" else oracle[a]["one_step"] for a in dims]
        r_o = np.array([d["ratio"] for d in o])
        ci_o = np.array([d["ci95"] for d in o]).T
        axes[0].errorbar(x, r_o, yerr=[r_o - ci_o[0], ci_o[1] - r_o], marker="s", capsize=3,
                         label=label)
    if var_one:
        r_1 = np.array([var_one[a]["ratio"] for a in dims])
        ci_1 = np.array([var_one[a]["ci95"] for a in dims]).T
        axes[0].errorbar(x, r_1, yerr=[r_1 - ci_1[0], ci_1[1] - r_1], marker="^", capsize=3,
                         label="learned, one-step task")
    if oracle or var_one:
        axes[0].set_yscale("log")
        axes[0].legend(fontsize=7)
    axes[0].axhline(1.0, color="grey", lw=0.8)
    axes[0].set(xscale="log", xlabel="action dimension A = d k",
                ylabel="Var[state] / Var[factorised]", title="multiaction_point (95% CI)")
    axes[0].xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    axes[0].set_xticks(x, [str(v) for v in x])
    names = ("none", "state", "factorised")
    width = 0.8 / len(decomposition)
    for j, (task, d) in enumerate(decomposition.items()):
        vals = [d[n]["sigma_a"] / d[n]["sigma_tau"] for n in names]
        axes[1].bar(np.arange(3) + j * width, vals, width, label=task)
    axes[1].set(xticks=np.arange(3) + width * (len(decomposition) - 1) / 2, xticklabels=names,
                yscale="symlog", ylabel="Sigma_a / Sigma_tau", title="action term vs trajectory noise")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(out / "variance.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
