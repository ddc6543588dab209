"""Policy gradients = soft Q-learning (Schulman, Chen & Abbeel 2017): the identity, checked
numerically, and n-step soft Q-learning against entropy-regularised A2C on MinAtar.

    python -m experiments.softq_equivalence --out runs/softq            # CPU default
    python -m experiments.softq_equivalence --out runs/softq --quick    # < 60 s smoke run
    python -m experiments.softq_equivalence --out runs/softq --full     # GPU: 5 games, 10M steps, 8 seeds

Part 1, the gradient check (float64, a random MDP with random networks): for each
case (1-step / n-step / whole-rollout returns; entropy or KL-to-a-reference form),
  per batch:      grad L_softQ  vs  tau * grad L_PG(sampled log-ratio) + grad L_V, exactly;
  in expectation: the same soft-Q gradient vs the standard estimator (KL over all actions
                  in the returns plus its gradient), averaged over many on-policy batches,
                  as z-scores of the mean paired difference;
plus two broken parametrisations (Q = V + 0.5 tau log pi; a wrong tau) that must fail both.
Part 2: learning curves of both trainers on MinAtar games, several seeds as one
program through `rlx.runner` (the paper's Atari figure, scaled down).

Writes summary.json, metrics.csv (curves), grad_check.csv (the table) and PNGs to --out.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Any

import numpy as np

from experiments import common

GAMES = ("Breakout-MinAtar", "SpaceInvaders-MinAtar", "Asterix-MinAtar", "Freeway-MinAtar",
         "Seaquest-MinAtar")
ALGOS = ("softq", "a2c")
LABELS = {"softq": "n-step soft Q-learning", "a2c": "A2C (entropy in returns)"}

# Trainer settings shared by both algorithms (fields of rlx.algos.a2c.NStepConfig). The
# paper's A2C: 5-step updates, entropy coefficient (tau) 0.01. On MinAtar a 2x2 sweep
# (lr 3e-4 / 1e-3 x tau 0.01 / 0.03, Breakout, 2M steps, both algorithms) put tau 0.01 on
# a plateau near 5.5 and tau 0.03 at about 9, so the presets use tau 0.03, lr 1e-3.
_TRAINER = dict(num_envs=64, unroll_length=5, lr=1e-3, tau=0.03, gamma=0.99)
PRESETS: dict[str, dict[str, Any]] = {
    # CPU: 3 games x 2 algorithms x 4 seeds x 3M steps, about 15-25 minutes on 2 cores.
    "default": dict(games=GAMES[:3], total_steps=3_000_000, seeds=4,
                    trainer=dict(_TRAINER, policy_layers=(64, 64), value_layers=(64, 64),
                                 num_evals=16, eval_envs=16),
                    check_batches=20_000),
    # GPU: the paper's figure scaled to MinAtar, all five games.
    "full": dict(games=GAMES, total_steps=10_000_000, seeds=8,
                 trainer=dict(_TRAINER, num_envs=256, policy_layers=(256, 256),
                              value_layers=(256, 256), num_evals=41, eval_envs=64),
                 check_batches=100_000),
    "quick": dict(games=GAMES[:1], total_steps=2 * 8 * 5 * 4, seeds=2,
                  trainer=dict(_TRAINER, num_envs=8, policy_layers=(16,),
                               value_layers=(16,), num_evals=3, eval_envs=4),
                  check_batches=2_000, check_only=(3, "kl")),
}


# ---- Part 1: the gradient identity ------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Problem:
    """A random MDP observed through random features, and random small networks."""

    num_states: int = 5
    num_actions: int = 3
    obs_dim: int = 4
    hidden: int = 8
    unroll: int = 6  # T: steps per batch
    num_envs: int = 4  # N: envs per batch
    max_episode_steps: int = 4  # time limit, so batches hold truncations as well as terminations
    term_prob: float = 0.15
    gamma: float = 0.9
    tau: float = 0.5
    param_noise: float = 0.7  # added to the initial parameters: a non-uniform policy


@dataclasses.dataclass(frozen=True)
class Case:
    """One row of the check. `q_scale != 1` or `tau_factor != 1` break the parametrisation.

    n: n-step horizon (None: to the end of the rollout); form: "entropy" (pibar = 1) or
    "kl" (pibar a fixed random state-dependent policy). The soft-Q side uses
    Q = V + q_scale * tau' log(pi / pibar) and temperature tau' = tau_factor * tau; the
    policy-gradient side always uses tau.
    """

    name: str
    n: int | None
    form: str
    q_scale: float = 1.0
    tau_factor: float = 1.0

    @property
    def should_hold(self) -> bool:
        return self.q_scale == 1.0 and self.tau_factor == 1.0


CASES = tuple(Case(f"{label} {form}", n, form) for n, label in ((1, "1-step"), (3, "3-step"),
                                                                 (None, "T-step"))
              for form in ("entropy", "kl"))
BROKEN = (Case("3-step kl, Q = V + 0.5 tau log pi", 3, "kl", q_scale=0.5),
          Case("3-step kl, soft-Q at 2 tau", 3, "kl", tau_factor=2.0),
          Case("1-step entropy, Q = V + 0.5 tau log pi", 1, "entropy", q_scale=0.5))


def _random_mdp(problem: Problem, key) -> dict:
    """Arrays of a random tabular MDP with feature observations, and a reference policy."""
    import jax

    S, A, D = problem.num_states, problem.num_actions, problem.obs_dim
    k_phi, k_p, k_r, k_ref = jax.random.split(key, 4)
    return {"features": jax.random.normal(k_phi, (S, D)),
            "log_p": 2.0 * jax.random.normal(k_p, (S, A, S)),
            "reward": jax.random.normal(k_r, (S, A)),
            "ref_weights": jax.random.normal(k_ref, (D, A))}


def _mdp_env(problem: Problem, mdp: dict):
    """The MDP as an `rlx.envs.Env` (so the one `rlx.rollout.rollout` samples it), with a
    time limit so that batches hold truncations as well as terminations."""
    import jax
    import jax.numpy as jnp

    from rlx.envs.base import ActionSpec, Env

    features, log_p, reward = mdp["features"], mdp["log_p"], mdp["reward"]
    S = problem.num_states

    class RandomMDP(Env):
        name = "random-mdp"
        obs_shape = (problem.obs_dim,)
        action_spec = ActionSpec(discrete=True, size=problem.num_actions)
        max_episode_steps = problem.max_episode_steps

        def _reset(self, k):
            s = jax.random.randint(k, (), 0, S)
            return s, features[s]

        def _step(self, k, s, action, t):
            k_next, k_term, k_reset = jax.random.split(k, 3)
            s_next = jax.random.categorical(k_next, log_p[s, action])
            terminated = jax.random.bernoulli(k_term, problem.term_prob)
            truncated = t >= problem.max_episode_steps
            s_new = jnp.where(terminated | truncated, jax.random.randint(k_reset, (), 0, S), s_next)
            return s_new, features[s_new], reward[s, action], terminated, features[s_next], truncated

    return RandomMDP()


def _network(problem: Problem):
    from rlx.networks import ActorCritic

    return ActorCritic(action_size=problem.num_actions, head="categorical",
                       policy_layers=(problem.hidden,), value_layers=(problem.hidden,))


def _gradients(problem: Problem, n, form: str, ref_weights, q_scale, tau_factor):
    """Flat gradient vectors of both sides of the identity, as functions of (params, batch).

    soft-Q side: grad L_softQ with Q = V + q_scale * tau' log(pi / pibar), tau' = tau_factor * tau;
    PG side: grad (tau L_PG + L_V) at tau, L_PG with the sampled or the exact KL.
    """
    import jax
    from jax.flatten_util import ravel_pytree

    from rlx import losses

    net = _network(problem)
    tau, gamma = problem.tau, problem.gamma
    tau_q = tau_factor * tau

    def ref(obs):
        return jax.nn.log_softmax(obs @ ref_weights, -1) if form == "kl" else None

    def softq(params, tr):
        def loss(p):
            def q(obs):
                logits, values = net.apply(p, obs)
                return losses.q_from_policy(logits, values, q_scale * tau_q, ref(obs))
            return losses.soft_q_loss(q(tr.obs), q(tr.final_obs), tr.action, tr.reward,
                                      tr.terminated, tr.done, tau_q, gamma, n,
                                      ref(tr.obs), ref(tr.final_obs))[0]
        return ravel_pytree(jax.grad(loss)(params))[0]

    def pg(params, tr, kl_estimate):
        def loss(p):
            logits, values = net.apply(p, tr.obs)
            _, next_values = net.apply(p, tr.final_obs)
            pg_loss, v_loss, _ = losses.entropy_pg_loss(
                logits, values, jax.lax.stop_gradient(next_values), tr.action, tr.reward,
                tr.terminated, tr.done, tau, gamma, n, ref(tr.obs), kl_estimate)
            return tau * pg_loss + v_loss
        return ravel_pytree(jax.grad(loss)(params))[0]

    return softq, pg


@functools.lru_cache(maxsize=None)
def _compiled_check(problem: Problem, form: str):
    """One jitted program per form: MDP, parameters, n and the parametrisation knobs are arguments."""
    import jax
    import jax.numpy as jnp

    from rlx.rollout import reset, rollout

    net = _network(problem)

    def run(mdp, params, batch_keys, n, q_scale, tau_factor):
        env = _mdp_env(problem, mdp)
        softq, pg = _gradients(problem, n, form, mdp["ref_weights"], q_scale, tau_factor)

        def one(key):  # one on-policy batch [T, N] from fresh starts
            k_reset, k_roll = jax.random.split(key)

            def policy(obs, k):
                a = jax.random.categorical(k, net.apply(params, obs)[0])
                return a, a, {}

            _, tr = rollout(env, policy, reset(env, k_reset, problem.num_envs), k_roll, problem.unroll)
            tr = tr.replace(reward=tr.reward.astype(jnp.float64))
            g_sq, g_sample, g_std = softq(params, tr), pg(params, tr, "sample"), pg(params, tr, "exact")
            e = g_sq - g_sample
            return jnp.abs(e).max(), jnp.linalg.norm(e) / jnp.linalg.norm(g_sample), g_sq - g_std, g_std

        max_abs, rel, d, g = jax.vmap(one)(batch_keys)
        mean = d.mean(0)
        se = d.std(0, ddof=1) / jnp.sqrt(d.shape[0])
        z = mean / jnp.maximum(se, 1e-300)
        return {"per_batch_max_abs": max_abs.max(), "per_batch_rel": rel.max(),
                "expect_max_z": jnp.abs(z).max(), "expect_mean_z2": jnp.mean(z**2),
                "expect_rel": jnp.linalg.norm(mean) / jnp.linalg.norm(g.mean(0)),
                "sample_rel": jnp.linalg.norm(d, axis=1).mean() / jnp.linalg.norm(g, axis=1).mean()}

    return jax.jit(run)


def check_case(case: Case, batches: int = 20_000, seed: int = 0,
               problem: Problem = Problem()) -> dict[str, float]:
    """Both checks of the identity for `case`, in float64, on one random MDP and network.

    Over `batches` on-policy batches at fixed parameters:
    per batch -- g_softQ against the estimator it expands into (tau grad L_PG + grad L_V
    with the sampled log-ratio): the largest component difference (per_batch_max_abs)
    and the largest ||difference|| / ||g_PG+V|| (per_batch_rel) over the batches;
    in expectation -- d_i = g_softQ,i - g_std,i against the standard estimator (exact KL
    in the returns and its gradient): expect_max_z = max over parameters of
    |mean d| / SE, expect_mean_z2 the mean squared z (of order 1 when the means agree;
    the parameters are correlated, so it scatters), expect_rel = ||mean d|| / ||mean g_std||,
    and sample_rel = mean ||d_i|| / mean ||g_std,i||: how far apart the two estimators are
    per sample (they agree only on average).
    """
    import jax
    import jax.numpy as jnp

    with jax.enable_x64(True):
        k_mdp, k_init, k_noise, k_batches = jax.random.split(jax.random.PRNGKey(seed), 4)
        mdp = _random_mdp(problem, k_mdp)
        params = _network(problem).init(k_init, jnp.zeros((1, problem.obs_dim)))
        leaves, tree = jax.tree.flatten(params)
        noise = jax.random.split(k_noise, len(leaves))  # a generic, far from uniform policy
        params = jax.tree.unflatten(tree, [(p + problem.param_noise * jax.random.normal(k, p.shape))
                                           .astype(jnp.float64) for p, k in zip(leaves, noise)])
        n = problem.unroll if case.n is None else case.n  # n = T: to the end of the rollout
        out = _compiled_check(problem, case.form)(
            mdp, params, jax.random.split(k_batches, batches), n, case.q_scale, case.tau_factor)
        return {k: float(v) for k, v in out.items()}


# Pass criteria (also what tests/test_softq.py asserts).
PER_BATCH_REL_TOL = 1e-6
MAX_Z = 5.0  # Bonferroni-safe over the ~100 parameters


def holds(result: dict[str, float]) -> bool:
    """The identity holds at both levels: per batch to 1e-6, in expectation within MAX_Z SEs."""
    return result["per_batch_rel"] <= PER_BATCH_REL_TOL and result["expect_max_z"] <= MAX_Z


def gradient_table(batches: int, cases=CASES + BROKEN) -> list[dict]:
    """Both checks for every case, with the verdict next to what the case should give."""
    rows = []
    for case in cases:
        r = check_case(case, batches=batches)
        rows.append({"case": case.name, "n": case.n or "T", "form": case.form, **r,
                     "batches": batches, "expected": "holds" if case.should_hold else "fails",
                     "verdict": "holds" if holds(r) else "fails"})
    return rows


def print_table(rows: list[dict]) -> None:
    head = (f"{'case':38s} {'max|dg|':>9s} {'rel':>9s} {'E max|z|':>9s} {'E rel':>9s} "
            f"{'expected':>8s} {'verdict':>8s}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['case']:38s} {r['per_batch_max_abs']:9.2e} {r['per_batch_rel']:9.2e} "
              f"{r['expect_max_z']:9.2f} {r['expect_rel']:9.2e} {r['expected']:>8s} {r['verdict']:>8s}")


# ---- Part 2: learning curves -------------------------------------------------------------------

def make_trainer(algo: str, game: str, total_steps: int, trainer_kw: dict, on_update=None):
    from rlx.algos import a2c, softq

    if algo == "softq":
        return softq.make_train(softq.SoftQConfig(env=game, total_steps=total_steps, **trainer_kw),
                                on_update=on_update)
    return a2c.make_train(a2c.A2CConfig(env=game, total_steps=total_steps, **trainer_kw),
                          on_update=on_update)


def _train_curve(result, points: int) -> np.ndarray:
    """Mean training-episode return per evaluation chunk, `[evals - 1, seeds]`."""
    s, c = result.train["episode_return_sum"], result.train["episode_count"]
    k = s.shape[0] // points
    s, c = s[: k * points].reshape(points, k, -1).sum(1), c[: k * points].reshape(points, k, -1).sum(1)
    return s / np.maximum(c, 1.0)


def plot_grid(path: str, curves: dict, ylabel: str, baselines: dict | None = None) -> None:
    """One panel per game, mean and min-max band over seeds per algorithm (dashed: random)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    games = list(curves)
    cols = min(3, len(games))
    rows = -(-len(games) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.4 * rows), squeeze=False)
    for ax, game in zip(axes.flat, games):
        for algo, (x, y) in curves[game].items():
            ax.plot(x, y.mean(1), label=LABELS[algo])
            ax.fill_between(x, y.min(1), y.max(1), alpha=0.2)
        if baselines and game in baselines:
            ax.axhline(baselines[game], color="gray", ls="--", lw=1, label="random policy")
        ax.set_title(game, fontsize=10)
        ax.set_xlabel("env steps per seed")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(games):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    p = common.parser(__doc__.split("\n")[0], env=None, total_steps=None, seeds=None)
    p.add_argument("--full", action="store_true",
                   help="GPU config: 5 games, 10M steps, 8 seeds, 256-wide networks")
    p.add_argument("--env", nargs="+", default=None, help="MinAtar games (default: the preset's)")
    p.add_argument("--total-steps", type=int, default=None, help="env steps per seed and run")
    p.add_argument("--seeds", type=int, default=None, help="seeds per run, trained as one program")
    p.add_argument("--check-batches", type=int, default=None,
                   help="batches for the in-expectation check")
    p.add_argument("--skip-training", action="store_true", help="only the gradient check")
    p.add_argument("--seed", type=int, default=0, help="first seed")
    args = p.parse_args(argv)
    common.setup(args)
    preset = "quick" if args.quick else "full" if args.full else "default"
    cfg = PRESETS[preset]
    games = tuple(args.env or cfg["games"])
    total_steps = args.total_steps or cfg["total_steps"]
    seeds = args.seeds or cfg["seeds"]
    check_batches = args.check_batches or cfg["check_batches"]

    import jax

    from rlx import distributed, logging, runner
    from rlx.envs import make as make_env
    from rlx.rollout import random_return

    for algo in ALGOS:  # validate every config before compiling anything
        for game in games:
            common.exit_on_value_error(lambda: make_trainer(algo, game, total_steps, cfg["trainer"]))
    common.exit_on_value_error(lambda: runner.choose_mesh(seeds, args.devices))
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()

    only = cfg.get("check_only")  # quick: one (n, form)
    rows = gradient_table(check_batches, tuple(c for c in CASES + BROKEN
                                               if only is None or (c.n, c.form) == only))
    print_table(rows)
    if distributed.is_primary():
        logging.write_csv(f"{args.out}/grad_check.csv", rows)
    max_rel = max(r["per_batch_rel"] for r in rows if r["expected"] == "holds")
    check_s = time.time() - t0

    results: dict[str, dict] = {}
    csv_rows: list[dict] = []
    eval_curves: dict[str, dict] = {}
    train_curves: dict[str, dict] = {}
    keys = jax.random.split(jax.random.PRNGKey(args.seed), seeds)
    for game in ([] if args.skip_training else games):
        results[game], eval_curves[game], train_curves[game] = {}, {}, {}
        # a random policy's return, the curves' zero (skipped in --quick: one more compile)
        random_ret = (None if args.quick else
                      float(random_return(make_env(game), jax.random.PRNGKey(args.seed))))
        for algo in ALGOS:
            trainer = make_trainer(algo, game, total_steps, cfg["trainer"], runner.on_update)
            res = runner.run(trainer, keys, f"{args.out}/runs/{game}/{algo}", devices=args.devices,
                             checkpoint=not args.quick, progress=not args.no_progress)
            ret = res.eval["eval_return"]
            x = np.asarray(res.eval_steps)
            points = len(x) - 1
            eval_curves[game][algo] = (x, ret)
            train_curves[game][algo] = (x[1:], _train_curve(res, points))
            results[game][algo] = {
                "final_return": float(ret[-1].mean()), "final_return_per_seed": ret[-1].tolist(),
                "initial_return": float(ret[0].mean()),
                "final_train_return_per_seed": logging.last_episodes_mean(
                    res.train["episode_return_sum"], res.train["episode_count"]).tolist(),
                "params_digest": runner.params_digest(res.state.params),
                "random_return": random_ret, "wall_s": round(res.wall_s, 2),
                "compile_s": res.compile_s, "env_steps": trainer.total_env_steps}
            csv_rows += logging.curve_rows(res, extra={"env": game, "algo": algo})
            rnd = "-" if random_ret is None else f"{random_ret:.2f}"
            print(f"{game} {algo}: random {rnd}; eval return "
                  f"{results[game][algo]['initial_return']:.2f} -> "
                  f"{results[game][algo]['final_return']:.2f} (per seed {np.round(ret[-1], 2).tolist()}), "
                  f"{res.wall_s:.0f}s")
        if distributed.is_primary():
            logging.plot_curves(f"{args.out}/{game}.png", eval_curves[game]["softq"][0],
                                {LABELS[a]: eval_curves[game][a][1] for a in ALGOS},
                                "env steps per seed", "eval return (greedy)", f"{game}: {seeds} seeds")
    if results and distributed.is_primary():
        randoms = {g: r["softq"]["random_return"] for g, r in results.items()
                   if r["softq"]["random_return"] is not None}
        plot_grid(f"{args.out}/curves_eval.png", eval_curves, "eval return (greedy)", randoms)
        plot_grid(f"{args.out}/curves_train.png", train_curves, "training episode return", randoms)
    wall = time.time() - t0

    summary = {
        "experiment": "softq_equivalence", "preset": preset, "env": list(games), "seeds": seeds,
        "env_steps": total_steps if not results else results[games[0]]["softq"]["env_steps"],
        "wall_s": round(wall, 2), "check_s": round(check_s, 2),
        "max_rel_grad_error": max_rel,
        "identity_holds_all": all(r["verdict"] == r["expected"] for r in rows),
        "final_return": {g: {a: r[a]["final_return"] for a in ALGOS} for g, r in results.items()},
        "params_digest": {g: {a: r[a]["params_digest"] for a in ALGOS} for g, r in results.items()},
        "results": results, "grad_check": rows, "trainer": cfg["trainer"],
        "devices": len(jax.devices()),
    }
    if not distributed.is_primary():  # multi-process: process 0 writes the files
        return summary
    logging.write_json(f"{args.out}/summary.json", summary)
    logging.write_csv(f"{args.out}/metrics.csv", csv_rows)
    print(f"max relative gradient error {max_rel:.2e}; all checks as expected: "
          f"{summary['identity_holds_all']}; {wall:.0f}s; outputs in {args.out}")
    return summary


if __name__ == "__main__":
    main()
