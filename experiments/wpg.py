"""Wasserstein policy gradients: the geometric contraction of the WPG flow made visible
(Zhu, Gao & Li 2026), and WPO's learning curves beside SAC's and PPO's.

    python -m experiments.wpg --out runs/wpg            # CPU default (about 10 minutes on 2 shared cores)
    python -m experiments.wpg --out runs/wpg --quick    # about 1 minute smoke run (the test's)
    python -m experiments.wpg --out runs/wpg --full     # more particles, one more step size; humanoid, humanoid_x5

Part (a), the contraction figure (`rlx.wpg_flow`, float64 statistics): one state, Q(a) =
-(c/2)|a - a*|^2 - (beta/2)|a|^2, kappa = c + beta, optimum pi* = N(c a*/kappa, tau/kappa I).
For each step size eta: ULA particles (the KL of the Gaussian fitted to the cloud), the exact
law of ULA (infinitely many particles) and the Euler-stepped Gaussian WPG flow; log KL(pi_k ||
pi*) against the iteration k, the fitted per-iteration factor beside (1 - eta kappa)^2 and the
fitted floor beside ULA's predicted bias (d/2)(r - 1 - log r), r = 1/(1 - eta kappa/2) (0 for
the Gaussian flow). Done when, for every step size shown and every scheme, the fitted factor is
within 5% of theory and the floor within 10% of the bias (for a bias of 0: below 1e-12 x KL_0).
Then the multi-step check: an entropy-regularised LQR whose soft-optimal Gaussian policy comes
from a Riccati recursion; the Gaussian WPG flow from K = 0, Sigma = I converges to it, at the
rate the linearisation predicts (1 - eta lambda_min(M_aa*) for the gain).

Part (b), learning curves (`learning_curves`, one seed each): WPO (the off-policy engine of
`rlx.algos.sac` with its "wpo" actor loss: Acme's practical WPO loss on N action samples with
the decoupled KL to a target actor, no entropy), MPO (the same engine with its "mpo" actor loss,
`rlx.losses.mpo`: E-step weights on N samples of the target actor, decoupled M-step with learned
KL duals; the reference WPO is measured against), SAC (the same engine, its own actor loss) and
rlx PPO (`rlx.algos.ppo`, its preset for the env) on Brax inverted_pendulum (positional
backend; WPO, MPO and SAC 40,960 env steps each with 64 envs, batch 128, 16 gradient steps per
env step of all envs; PPO 409,600 steps of its "default" preset); --quick on gymnax
Pendulum-v1 with tiny sizes; --full adds humanoid (17 action dims) and `humanoid_x5`, five
humanoids side by side as one env of 85 action dims (`rlx.envs.replica`; the WPO paper's
high-dimensional replicas), 1M off-policy and 10M PPO steps each. `--env`, `--total-steps`
override part (b)'s env and steps. `--dims` (not in the default) adds WPO against MPO on
Pendulum-v1_x1 and Pendulum-v1_x4 (K pendulums in lockstep: K action dims, the same task per
copy; --full adds _x16): whether WPO's lead grows with the action dimension, at CPU size.

Writes summary.json (`contraction.<eta>.{rate_fit, rate_theory, floor_fit, floor_theory}` for
the particles, with `ula_law` and `gaussian_flow` entries of the same shape; `lqr`; `done`;
`learning.<algo>.{final_return, best_return, env_steps, wall_s, eval_steps, eval_returns}` and
`learning.<env>.<algo>` per env; with --dims `dims.runs.<env_xK>.{action_dims, wpo, mpo,
wpo_minus_mpo_final}`), metrics.csv + TensorBoard events (every curve),
contraction.png, lqr.png and learning.png to --out. Nothing
to resume: the run is short and deterministic for a given --seed.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time

import numpy as np

from experiments import common

# Step sizes as eta * kappa (the problem's kappa is 2, so eta is half of these).
PRESETS = {
    "quick": dict(eta_kappa=(0.1, 0.2, 0.4), particles=100_000, horizon=40.0, lqr_iters=300),
    "default": dict(eta_kappa=(0.05, 0.1, 0.2, 0.4), particles=400_000, horizon=40.0,
                    lqr_iters=400),
    "full": dict(eta_kappa=(0.025, 0.05, 0.1, 0.2, 0.4), particles=2_000_000, horizon=60.0,
                 lqr_iters=600),
}
RATE_RTOL, FLOOR_RTOL, ZERO_FLOOR_ATOL = 0.05, 0.10, 1e-12  # the done-bar (ATOL: x KL_0)
LQR_ETA = 0.5
SCHEMES = {"particles": "ULA particles (fitted Gaussian)", "ula_law": "ULA, exact law (P = inf)",
           "gaussian_flow": "Gaussian WPG flow (Euler)"}


@dataclasses.dataclass
class Args:
    """experiments.wpg's own flags."""

    full: bool = False  # more particles, a smaller step size too
    seed: int = 0  # the particles' PRNG seed
    particles: int | None = None  # ULA particles (default: the preset's)
    eta_kappa: tuple[float, ...] | None = None  # step sizes as eta * kappa, each in (0, 1) (default: the preset's)
    env: str | None = None  # part (b)'s env (default: the preset's: Pendulum-v1 quick, inverted_pendulum)
    total_steps: int | None = None  # part (b)'s env steps per algorithm (default: the preset's)
    dims: bool = False  # also WPO vs MPO on Pendulum-v1_x1 and _x4 (K copies: K action dims)


def check_args(args, cfg: dict, problem) -> None:
    """ValueError naming a bad flag value (before anything compiles)."""
    from rlx.wpg_flow import check_step

    if cfg["particles"] < 2:
        raise ValueError(f"--particles must be >= 2, got {cfg['particles']}")
    if not cfg["eta_kappa"]:
        raise ValueError("--eta-kappa: give at least one step size")
    for ek in cfg["eta_kappa"]:
        try:
            check_step(problem, ek / problem.kappa)
        except ValueError:
            raise ValueError(f"--eta-kappa values must be in (0, 1), got {ek!r}") from None
    if args.total_steps is not None and args.total_steps < 1:
        raise ValueError(f"--total-steps must be >= 1, got {args.total_steps}")
    preset = "quick" if args.quick else "full" if args.full else "default"
    for env in (args.env,) if args.env else LEARNING[preset]["envs"]:
        if env not in UNAVAILABLE_ENVS:
            cfgs = learning_configs(preset, env, args.total_steps)
            for c in cfgs.values():
                c.validate()
            if cfgs["sac"].make_env().action_spec.discrete:
                raise ValueError(f"--env {env}: WPO and SAC need continuous actions")
    if args.dims:
        for env in dims_envs(preset):
            for c in learning_configs(preset, env, None, DIMS).values():
                c.validate()


def within(fit: float, theory: float, rtol: float, atol: float = 0.0) -> bool:
    """|fit - theory| <= rtol |theory| + atol (False for NaN)."""
    return bool(abs(fit - theory) <= rtol * abs(theory) + atol)


# ---- Part (a): the contraction figure ---------------------------------------------------------

def contraction(problem, cfg: dict, seed: int) -> tuple[dict, dict]:
    """Per step size: the three schemes' curves and their fits beside theory.

    Returns (summary entries keyed by f"{eta:g}", curves[key][scheme] = {kl, mean_err, var})."""
    import jax
    import jax.numpy as jnp

    from rlx import wpg_flow as W

    entries, curves = {}, {}
    for i, ek in enumerate(cfg["eta_kappa"]):
        eta = ek / problem.kappa
        iters = int(math.ceil(cfg["horizon"] / ek))
        key = jax.random.fold_in(jax.random.PRNGKey(seed), i)
        run = jax.jit(lambda k, eta=eta, iters=iters: W.run_particles(
            problem, eta, iters, cfg["particles"], k, jnp.float32, jnp.float64))
        c = {"particles": run(key), "ula_law": W.ula_law(problem, eta, iters, jnp.float64),
             "gaussian_flow": W.gaussian_flow(problem, eta, iters, jnp.float64)}
        c = {s: {n: np.asarray(v, np.float64) for n, v in d.items()} for s, d in c.items()}
        th = W.theory(problem, eta, cfg["particles"])
        entry = {"eta": eta, "eta_kappa": ek, "iterations": iters}
        for scheme, d in c.items():
            floor_th = th["floor_kl_flow"] if scheme == "gaussian_flow" else th["floor_kl"]
            kl, mean = W.fit_contraction(d["kl"]), W.fit_contraction(d["mean_err"])
            atol = ZERO_FLOOR_ATOL * d["kl"][0] if floor_th == 0 else 0.0
            e = {"rate_fit": kl["rate"], "rate_theory": th["rate_kl"], "floor_fit": kl["floor"],
                 "floor_theory": floor_th, "fit_points": kl["points"],
                 "mean_rate_fit": mean["rate"], "mean_rate_theory": th["rate_mean"],
                 "rate_ok": within(kl["rate"], th["rate_kl"], RATE_RTOL),
                 "floor_ok": within(kl["floor"], floor_th, FLOOR_RTOL, atol)}
            if scheme == "particles":
                entry.update(e, floor_particle_excess=th["particle_excess"])
            else:
                entry[scheme] = e
        entries[f"{eta:g}"], curves[f"{eta:g}"] = entry, c
    return entries, curves


def plot_contraction(path: str, entries: dict, curves: dict) -> None:
    """log KL vs iteration per scheme (one panel each) and the particles' mean error; dashed:
    theory floor + (KL_0 - floor)(1 - eta kappa)^(2k); dotted: the predicted floor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(20, 4.6))
    for ax, scheme in zip(axes, SCHEMES):
        for j, (key, e) in enumerate(entries.items()):
            d = curves[key][scheme]
            f = e if scheme == "particles" else e[scheme]
            k = np.arange(len(d["kl"]))
            color = f"C{j}"
            ax.semilogy(k, d["kl"], color=color, lw=1.2,
                        label=f"eta={key}: rate {f['rate_fit']:.4f} (th {f['rate_theory']:.4f}), "
                              f"floor {f['floor_fit']:.2e} (th {f['floor_theory']:.2e})")
            th = f["floor_theory"] + (d["kl"][0] - f["floor_theory"]) * f["rate_theory"] ** k
            ax.semilogy(k, np.maximum(th, 1e-300), color=color, ls="--", lw=0.8)
            if f["floor_theory"] > 0:
                ax.axhline(f["floor_theory"], color=color, ls=":", lw=0.8)
        ax.set_ylim(bottom=1e-18 if scheme == "gaussian_flow" else 1e-4)
        ax.set_title(SCHEMES[scheme], fontsize=10)
        ax.set_xlabel("iteration k")
        ax.set_ylabel("KL(pi_k || pi*)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6.5)
    ax = axes[-1]
    for j, (key, e) in enumerate(entries.items()):
        d = curves[key]["particles"]
        k = np.arange(len(d["mean_err"]))
        ax.semilogy(k, d["mean_err"], color=f"C{j}",
                    label=f"eta={key}: {e['mean_rate_fit']:.4f} (th {e['mean_rate_theory']:.4f})")
        ax.semilogy(k, d["mean_err"][0] * e["mean_rate_theory"] ** k, color=f"C{j}", ls="--", lw=0.8)
    ax.set_ylim(bottom=1e-4)
    ax.set_title("particles: |mean - m*| (theory (1 - eta kappa)^k)", fontsize=10)
    ax.set_xlabel("iteration k")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- the multi-step check: entropy-regularised LQR ---------------------------------------------

def lqr_check(iters: int) -> tuple[dict, dict]:
    """The WPG flow on the LQR from K = 0, Sigma = I against the Riccati optimum, with fitted
    rates beside the linearisation's: 1 - eta l (gain), 1 - 2 eta l (covariance), (1 - eta l)^2
    (soft-objective gap, asymptotically), l = lambda_min(M_aa*)."""
    import jax
    import jax.numpy as jnp

    from rlx import wpg_flow as W

    lqr = W.LQR()
    with jax.enable_x64(True):
        opt = W.soft_riccati(lqr, dtype=jnp.float64)
        a = opt["Sigma"].shape[0]
        flow = W.lqr_wpg_flow(lqr, LQR_ETA, iters, jnp.zeros_like(opt["K"]),
                              jnp.eye(a, dtype=jnp.float64))
        j_star = float(W.soft_objective(lqr, opt["K"], opt["Sigma"]))
        lam = float(jnp.min(jnp.linalg.eigvalsh(W.soft_q_blocks(lqr, opt["P"], jnp.float64)[0])))
        opt = {k: np.asarray(v) for k, v in opt.items()}
        flow = {k: np.asarray(v) for k, v in flow.items()}
    curves = {"gain_error": np.linalg.norm(flow["K"] - opt["K"], axis=(1, 2)),
              "cov_error": np.linalg.norm(flow["Sigma"] - opt["Sigma"], axis=(1, 2)),
              "soft_gap": j_star - flow["J"]}
    theory = {"gain_error": 1 - LQR_ETA * lam, "cov_error": 1 - 2 * LQR_ETA * lam,
              "soft_gap": (1 - LQR_ETA * lam) ** 2}
    fits = {n: W.fit_contraction(np.abs(c), rel=1e-9) for n, c in curves.items()}
    out = {"eta": LQR_ETA, "iterations": iters, "K_star": opt["K"].tolist(),
           "Sigma_star": opt["Sigma"].tolist(), "P_star": opt["P"].tolist(), "soft_value": j_star,
           "lambda_min_Maa": lam,
           **{f"final_{n}": float(c[-1]) for n, c in curves.items()},
           **{f"{n}_rate_fit": fits[n]["rate"] for n in curves},
           **{f"{n}_rate_theory": theory[n] for n in curves}}
    out["converged"] = bool(out["final_gain_error"] < 1e-8 and out["final_cov_error"] < 1e-8
                            and abs(out["final_soft_gap"]) < 1e-8)
    # the gap mixes a (1 - eta l)^2 and a (1 - 2 eta l)^2 mode and meets round-off before its
    # asymptote: reported, not judged
    out["rates_ok"] = all(within(fits[n]["rate"], theory[n], RATE_RTOL)
                          for n in ("gain_error", "cov_error"))
    return out, curves


def plot_lqr(path: str, out: dict, curves: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.4))
    for j, (name, c) in enumerate(curves.items()):
        k = np.arange(len(c))
        ax.semilogy(k, np.abs(c), color=f"C{j}",
                    label=f"{name}: rate {out[name + '_rate_fit']:.4f} "
                          f"(th {out[name + '_rate_theory']:.4f})")
        ax.semilogy(k, abs(c[0]) * out[name + "_rate_theory"] ** k, color=f"C{j}", ls="--", lw=0.8)
    ax.set_ylim(1e-16, None)
    ax.set_title(f"entropy-regularised LQR: WPG flow (eta = {out['eta']}) to the Riccati policy",
                 fontsize=9)
    ax.set_xlabel("iteration k")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- Part (b): learning curves of WPO, SAC and PPO ----------------------------------------------

# Per preset: the env (Brax on the positional backend; gymnax Pendulum-v1 in --quick, which
# compiles in seconds), env steps per algorithm, and per-algorithm overrides of
# rlx.algos.sac.SACConfig (WPO and SAC share the off-policy engine and its sizes) and of
# rlx.algos.ppo's "default" preset; MPO samples as many actions as WPO. --full adds humanoid
# and humanoid_x5 (5 copies in lockstep: 85 action dims; the WPO paper's replicas are of DM
# Control's 21-dim humanoid, up to 105 dims).
LEARNING = {
    "quick": dict(envs=("Pendulum-v1",), steps={"wpo": 1_536, "mpo": 1_536, "sac": 1_536, "ppo": 4_096},
                  off_policy=dict(num_envs=16, batch_size=32, grad_updates_per_step=2,
                                  min_replay_size=256, max_replay_size=2_048, gamma=0.99,
                                  reward_scaling=0.1, actor_layers=(32, 32),
                                  critic_layers=(32, 32), num_evals=3, eval_envs=4,
                                  episode_length=100),
                  wpo=dict(num_samples=4), ppo=dict(num_envs=8, unroll_length=32,
                                                    num_minibatches=2, update_epochs=2,
                                                    num_evals=3, eval_envs=4,
                                                    policy_layers=(16, 16), value_layers=(16, 16),
                                                    episode_length=100)),
    "default": dict(envs=("inverted_pendulum",),
                    steps={"wpo": 40_960, "mpo": 40_960, "sac": 40_960, "ppo": 409_600},
                    off_policy=dict(num_envs=64, batch_size=128, grad_updates_per_step=16,
                                    min_replay_size=1_024, max_replay_size=65_536, gamma=0.97,
                                    reward_scaling=10.0, actor_layers=(256, 256),
                                    critic_layers=(256, 256), num_evals=11, eval_envs=32),
                    wpo=dict(num_samples=20), ppo=dict(num_evals=11, eval_envs=32)),
    "full": dict(envs=("inverted_pendulum", "humanoid", "humanoid_x5"),
                 steps={"wpo": 1_000_000, "mpo": 1_000_000, "sac": 1_000_000,
                        "ppo": 10_000_000},
                 off_policy=dict(num_envs=128, batch_size=256, grad_updates_per_step=32,
                                 min_replay_size=8_192, max_replay_size=1_048_576, n_step=5,
                                 gamma=0.99, reward_scaling=1.0, actor_layers=(256, 256, 256),
                                 critic_layers=(256, 256, 256), num_evals=21, eval_envs=64),
                 wpo=dict(num_samples=20), ppo=dict(num_evals=21, eval_envs=64)),
}
ALGOS = ("wpo", "mpo", "sac", "ppo")
UNAVAILABLE_ENVS: dict[str, str] = {}  # env -> why it is listed, not run (none at present)
# `--dims`: WPO against MPO as the action dimension grows, on K copies of a cheap env in lockstep
# (`<env>_x<K>`, `rlx.envs.replica`: K times the action dims, the same task per copy); off by
# default. Sizes: the engine's Pendulum-v1 learning-test config (tests/test_wpo_engine.py).
_DIMS_OFF_POLICY = dict(num_envs=8, batch_size=128, grad_updates_per_step=8, min_replay_size=1_024,
                        max_replay_size=16_384, gamma=0.99, lr=2e-3, reward_scaling=0.1,
                        actor_layers=(64, 64), critic_layers=(64, 64), num_evals=7, eval_envs=16)
DIMS = {
    "quick": dict(env="Pendulum-v1", copies=(1, 4), steps={"wpo": 1_536, "mpo": 1_536},
                  off_policy=LEARNING["quick"]["off_policy"], wpo=dict(num_samples=4)),
    "default": dict(env="Pendulum-v1", copies=(1, 4), steps={"wpo": 12_288, "mpo": 12_288},
                    off_policy=_DIMS_OFF_POLICY, wpo=dict(num_samples=8)),
    "full": dict(env="Pendulum-v1", copies=(1, 4, 16), steps={"wpo": 49_152, "mpo": 49_152},
                 off_policy=_DIMS_OFF_POLICY, wpo=dict(num_samples=20)),
}


def learning_configs(preset: str, env: str, total_steps: int | None = None,
                     table: dict | None = None) -> dict:
    """The runs of one env, in ALGOS order: {"wpo", "mpo", "sac": SACConfig, "ppo": PPOConfig}
    (those with steps in `table[preset]`, default `LEARNING`). WPO runs the engine's "wpo" actor
    loss (`rlx.losses.wpo.engine_wpo`, Acme's KL settings, no entropy) and MPO its "mpo" one
    (`rlx.losses.mpo.engine_mpo`, Acme's defaults), both registered with the preset's sample
    count; `total_steps` overrides the steps."""
    from rlx.algos import ppo, sac
    from rlx.losses import mpo, wpo

    p = (table or LEARNING)[preset]
    steps = {a: total_steps or p["steps"][a] for a in ALGOS if a in p["steps"]}
    n = p["wpo"]["num_samples"]
    name = "wpo" if n == wpo.WPOConfig().num_samples else f"wpo_n{n}"
    if name not in sac.ACTOR_LOSSES:
        sac.register_wpo(name, wpo.WPOConfig(num_samples=p["wpo"]["num_samples"]))
    mpo_name = "mpo" if n == mpo.MPOConfig().num_samples else f"mpo_n{n}"
    if mpo_name not in sac.ACTOR_LOSSES:
        sac.register_mpo(mpo_name, mpo.MPOConfig(num_samples=n))
    backend = dict(backend="positional")
    off = dict(env=env, **backend, **p["off_policy"])
    make = {"wpo": lambda: sac.SACConfig(total_steps=steps["wpo"], actor_loss=name, **off),
            "mpo": lambda: sac.SACConfig(total_steps=steps["mpo"], actor_loss=mpo_name, **off),
            "sac": lambda: sac.SACConfig(total_steps=steps["sac"], **off),
            "ppo": lambda: ppo.PPOConfig(**{**ppo.PRESETS[ppo.preset_for(env)], "env": env,
                                            **backend, "total_steps": steps["ppo"], **p["ppo"]})}
    return {a: make[a]() for a in steps}


def train_runs(args, cfgs: dict) -> tuple[dict, dict]:
    """Train each config of {algo: config} (one seed, `args.seed`): ({algo: {final_return,
    best_return, env_steps, wall_s, ...}}, {algo: (env steps, eval returns)})."""
    import jax

    from rlx import runner
    from rlx.algos import ppo, sac

    entries, curves = {}, {}
    for algo, cfg in cfgs.items():
        trainer = (ppo if algo == "ppo" else sac).make_train(cfg)
        res = runner.run(trainer, jax.random.PRNGKey(args.seed)[None], None,
                         progress=not args.no_progress)
        returns = [float(r) for r in res.eval["eval_return"][:, 0]]
        entries[algo] = {
            "final_return": returns[-1], "best_return": max(returns),
            "env_steps": int(res.eval_steps[-1]), "wall_s": round(res.wall_s, 2),
            "compile_s": round(res.compile_s or 0.0, 2), "eval_steps": list(map(int, res.eval_steps)),
            "eval_returns": returns, "params_digest": runner.params_digest(res.state.params),
            "config": dataclasses.asdict(cfg)}
        curves[algo] = (np.asarray(res.eval_steps), np.asarray(returns))
        print(f"{cfg.env} {algo}: final {returns[-1]:.1f}, best {max(returns):.1f}, "
              f"{res.eval_steps[-1]} steps, {res.wall_s:.0f}s")
    return entries, curves


def learning_curves(args, preset: str) -> tuple[dict, dict]:
    """Part (b) of issue 15, the summary's `learning` entry: learning curves of WPO (the
    off-policy engine with the "wpo" actor loss), MPO (its "mpo" actor loss), SAC (the engine's
    reference actor) and rlx PPO (`rlx.algos.ppo`, its preset for the env), one seed each, on the preset's envs.

    Returns (learning, curves): learning[env][algo] = {final_return, best_return, env_steps,
    wall_s, ...} (for the first env also learning[algo] = the same entry, the summary's
    `learning.<algo>`), curves[env][algo] = (env steps, eval returns)."""
    envs = (args.env,) if args.env else LEARNING[preset]["envs"]
    learning, curves = {"envs": list(envs), "seed": args.seed}, {}
    for env in envs:
        if env in UNAVAILABLE_ENVS:
            learning[env] = {"status": "not run", "reason": UNAVAILABLE_ENVS[env]}
            continue
        learning[env], curves[env] = train_runs(args, learning_configs(preset, env,
                                                                       args.total_steps))
    first = next((e for e in envs if e in curves), None)
    if first is not None:
        learning.update({algo: learning[first][algo] for algo in ALGOS})
    return learning, curves


def dims_envs(preset: str) -> list[str]:
    """`--dims`' envs: `<env>_x<K>` for each K of the preset."""
    return [f"{DIMS[preset]['env']}_x{k}" for k in DIMS[preset]["copies"]]


def dims_sweep(args, preset: str) -> tuple[dict, dict]:
    """`--dims` (the summary's `dims` entry): WPO and MPO, one seed each, on K copies of the
    preset's env for each K. Returns ({"env", "copies", "runs": {env_xK: {"action_dims", "wpo",
    "mpo"}}}, curves[env_xK][algo])."""
    p = DIMS[preset]
    out, curves = {"env": p["env"], "copies": list(p["copies"]), "seed": args.seed, "runs": {}}, {}
    for env in dims_envs(preset):
        cfgs = learning_configs(preset, env, None, DIMS)
        entries, curves[env] = train_runs(args, cfgs)
        dims = cfgs["wpo"].make_env().action_spec.size
        out["runs"][env] = {"action_dims": dims, **entries,
                            "wpo_minus_mpo_final": entries["wpo"]["final_return"]
                            - entries["mpo"]["final_return"]}
    return out, curves


def plot_learning(path: str, curves: dict) -> None:
    """Evaluation return against env steps, one panel per env, one line per algorithm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(6 * len(curves), 4.2), squeeze=False)
    for ax, (env, by_algo) in zip(axes[0], curves.items()):
        for algo, (steps, returns) in by_algo.items():
            ax.plot(steps, returns, marker="o", ms=3, label=algo.upper())
        ax.set_xscale("symlog", linthresh=max(1.0, float(min(s[1] for s, _ in by_algo.values()))))
        ax.set_title(env)
        ax.set_xlabel("env steps")
        ax.set_ylabel("evaluation return")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- main --------------------------------------------------------------------------------------

def metric_rows(curves: dict, lqr_curves: dict, learning_curves: dict | None = None) -> list[dict]:
    rows = [{"kind": "learning", "env": env, "algo": algo, "point": i, "env_steps": int(st),
             "eval_return": float(r)}
            for env, by_algo in (learning_curves or {}).items()
            for algo, (steps, returns) in by_algo.items()
            for i, (st, r) in enumerate(zip(steps, returns))]
    for key, by_scheme in curves.items():
        for scheme, d in by_scheme.items():
            for k in range(len(d["kl"])):
                rows.append({"kind": "contraction", "scheme": scheme, "eta": key, "point": k,
                             "kl": d["kl"][k], "mean_err": d["mean_err"][k], "var": d["var"][k]})
    n = len(next(iter(lqr_curves.values())))
    rows += [{"kind": "lqr", "point": k, **{name: float(c[k]) for name, c in lqr_curves.items()}}
             for k in range(n)]
    return rows


def main(argv: list[str] | None = None) -> dict:
    args, _ = common.cli(__doc__.split("\n")[0], argv, Args,
                         run=("out", "quick", "no_progress", "coordinator_address",
                              "num_processes", "process_id"))
    common.setup(args)
    preset = "quick" if args.quick else "full" if args.full else "default"
    cfg = dict(PRESETS[preset])
    if args.particles is not None:
        cfg["particles"] = args.particles
    if args.eta_kappa is not None:
        cfg["eta_kappa"] = tuple(args.eta_kappa)

    import jax

    from rlx import distributed, logging, runner
    from rlx.wpg_flow import Quadratic

    problem = Quadratic()
    common.exit_on_value_error(lambda: check_args(args, cfg, problem))
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()
    with jax.enable_x64(True):
        entries, curves = contraction(problem, cfg, args.seed)
    contraction_s = time.time() - t0
    lqr, lqr_curves = lqr_check(cfg["lqr_iters"])
    t1 = time.time()
    learning, l_curves = learning_curves(args, preset)
    learning["wall_s"] = round(time.time() - t1, 2)
    dims = None
    if args.dims:
        t2 = time.time()
        dims, d_curves = dims_sweep(args, preset)
        dims["wall_s"] = round(time.time() - t2, 2)
        l_curves = {**l_curves, **d_curves}
    wall = time.time() - t0

    for key, e in entries.items():
        for scheme in SCHEMES:
            f = e if scheme == "particles" else e[scheme]
            print(f"eta={key:6s} (eta kappa {e['eta_kappa']}) {scheme:14s} rate {f['rate_fit']:.5f} "
                  f"vs {f['rate_theory']:.5f}  floor {f['floor_fit']:.4e} vs {f['floor_theory']:.4e}"
                  f"  {'ok' if f['rate_ok'] and f['floor_ok'] else 'MISSED'}")
    print(f"LQR: gain error {lqr['final_gain_error']:.1e}, soft gap {lqr['final_soft_gap']:.1e}, "
          f"gain rate {lqr['gain_error_rate_fit']:.4f} vs {lqr['gain_error_rate_theory']:.4f}")
    oks = [f[k] for e in entries.values() for f in (e, e["ula_law"], e["gaussian_flow"])
           for k in ("rate_ok", "floor_ok")]
    digest_tree = {k: {s: d["kl"] for s, d in c.items()} for k, c in curves.items()}
    summary = {
        "experiment": "wpg", "preset": preset,
        "env": f"single-state quadratic Q (d={problem.dim}) + entropy-regularised LQR",
        "env_steps": sum(learning[a]["env_steps"] for a in ALGOS if a in learning),
        "wall_s": round(wall, 2), "contraction_s": round(contraction_s, 2),
        "final_return": None, "params_digest": runner.params_digest(digest_tree),
        "problem": {**dataclasses.asdict(problem), "kappa": problem.kappa,
                    "m_star": problem.m_star, "v_star": problem.v_star},
        "particles": cfg["particles"], "horizon": cfg["horizon"], "seed": args.seed,
        "contraction": entries, "lqr": lqr, "learning": learning,
        "done": {"contraction": all(oks), "lqr": lqr["converged"] and lqr["rates_ok"],
                 "rate_rtol": RATE_RTOL, "floor_rtol": FLOOR_RTOL,
                 "zero_floor_atol_x_kl0": ZERO_FLOOR_ATOL},
    }
    if dims is not None:
        summary["dims"] = dims
        for env, r in dims["runs"].items():
            print(f"--dims {env} ({r['action_dims']} action dims): WPO {r['wpo']['final_return']:.1f}, "
                  f"MPO {r['mpo']['final_return']:.1f} (final returns)")
    if not distributed.is_primary():
        return summary
    logging.write_json(f"{args.out}/summary.json", summary)
    logging.write_metrics(args.out, metric_rows(curves, lqr_curves, l_curves))
    if l_curves:
        plot_learning(f"{args.out}/learning.png", l_curves)
    plot_contraction(f"{args.out}/contraction.png", entries, curves)
    plot_lqr(f"{args.out}/lqr.png", lqr, lqr_curves)
    print(f"contraction done-bar met: {summary['done']['contraction']}; LQR: {summary['done']['lqr']}; "
          f"{wall:.0f}s; outputs in {args.out}")
    return summary


if __name__ == "__main__":
    main()
