"""Policy gradients = soft Q-learning (Schulman, Chen & Abbeel 2017, Section 4), checked numerically.

With discrete actions, temperature tau, reference policy pibar and the parametrisation

    Q(s, a) = V(s) + tau log(pi(a|s) / pibar(a|s))                      (`losses.q_from_policy`)

the gradient of the n-step soft Q-learning loss (`losses.soft_q_loss`) is

    grad L_softQ = tau grad L_PG(sample) + grad L_V                      (per batch, exactly)

where L_PG(sample) is the regularised policy-gradient surrogate whose returns carry the
single-sample penalty tau log(pi/pibar)(a_t|s_t) (`losses.entropy_pg_loss`, kl_estimate
"sample") and L_V the value regression on the same returns. The standard estimator
g_std = grad(tau L_PG(exact) + L_V) (the KL over all actions in the returns, plus its
gradient) differs from it per sample but not in expectation under on-policy actions:

    E[grad L_softQ] = E[g_std].

`check_case` tests both on a random MDP (`rlx.envs.RandomMDP`) with random ActorCritic
networks, in float64: per batch to round-off, and in expectation as z-scores of the mean
paired difference over many on-policy batches. A `Case` with `q_scale != 1` (Q = V +
q_scale tau log(pi/pibar)) or `tau_factor != 1` (soft-Q at temperature tau_factor tau) breaks
the parametrisation; `BROKEN` lists such cases, which must fail both checks. Above the
losses (it samples rollouts of networks), below the trainers: a library check, not a trainer.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from rlx import losses
from rlx.envs.random_mdp import MDPArrays, RandomMDP, random_mdp_arrays
from rlx.networks import ActorCritic
from rlx.rollout import Transition, reset, rollout

FORMS: tuple[str, ...] = ("entropy", "kl")


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

    def __post_init__(self):
        if self.form not in FORMS:
            raise ValueError(f"unknown form {self.form!r}; valid: {', '.join(FORMS)}")
        if self.n is not None and self.n < 1:
            raise ValueError(f"n-step horizon must be >= 1 or None, got {self.n!r}")

    @property
    def should_hold(self) -> bool:
        return self.q_scale == 1.0 and self.tau_factor == 1.0


CASES = tuple(Case(f"{label} {form}", n, form) for n, label in ((1, "1-step"), (3, "3-step"),
                                                                 (None, "T-step"))
              for form in FORMS)
BROKEN = (Case("3-step kl, Q = V + 0.5 tau log pi", 3, "kl", q_scale=0.5),
          Case("3-step kl, soft-Q at 2 tau", 3, "kl", tau_factor=2.0),
          Case("1-step entropy, Q = V + 0.5 tau log pi", 1, "entropy", q_scale=0.5))

# Pass criteria of `holds`.
PER_BATCH_REL_TOL = 1e-6
MAX_Z = 5.0  # Bonferroni-safe over the ~100 parameters


def network(problem: Problem) -> ActorCritic:
    """The categorical actor-critic both sides differentiate (one hidden layer each)."""
    return ActorCritic(action_size=problem.num_actions, head="categorical",
                       policy_layers=(problem.hidden,), value_layers=(problem.hidden,))


def make_env(problem: Problem, mdp: MDPArrays) -> RandomMDP:
    """The problem's MDP with its termination probability and time limit."""
    return RandomMDP(mdp, term_prob=problem.term_prob, max_episode_steps=problem.max_episode_steps)


def gradient_fns(problem: Problem, n: int | jax.Array, form: str, env: RandomMDP,
                 q_scale: float | jax.Array = 1.0, tau_factor: float | jax.Array = 1.0
                 ) -> tuple[Callable, Callable]:
    """Flat gradient vectors of both sides of the identity, as functions of (params, batch).

        softq(params, tr)         = grad L_softQ   with Q = V + q_scale tau' log(pi/pibar),
                                                    tau' = tau_factor tau;
        pg(params, tr, estimate)  = grad (tau L_PG + L_V) at tau, L_PG with the "sample"
                                    log-ratio or the "exact" KL in the returns.

    pibar = 1 for form "entropy", `env.reference_log_probs` for "kl"; V(final_obs) is held
    fixed on the PG side (it is a bootstrap target there, as in the soft-Q target).
    """
    net = network(problem)
    tau, gamma = problem.tau, problem.gamma
    tau_q = tau_factor * tau

    def ref(obs):
        return env.reference_log_probs(obs) if form == "kl" else None

    def softq(params, tr: Transition) -> jax.Array:
        def loss(p):
            def q(obs):
                logits, values = net.apply(p, obs)
                return losses.q_from_policy(logits, values, q_scale * tau_q, ref(obs))
            return losses.soft_q_loss(q(tr.obs), q(tr.final_obs), tr.action, tr.reward,
                                      tr.terminated, tr.done, tau_q, gamma, n,
                                      ref(tr.obs), ref(tr.final_obs))[0]
        return ravel_pytree(jax.grad(loss)(params))[0]

    def pg(params, tr: Transition, kl_estimate: str) -> jax.Array:
        def loss(p):
            logits, values = net.apply(p, tr.obs)
            _, next_values = net.apply(p, tr.final_obs)
            pg_loss, v_loss, _ = losses.entropy_pg_loss(
                logits, values, jax.lax.stop_gradient(next_values), tr.action, tr.reward,
                tr.terminated, tr.done, tau, gamma, n, ref(tr.obs), kl_estimate)
            return tau * pg_loss + v_loss
        return ravel_pytree(jax.grad(loss)(params))[0]

    return softq, pg


def batch_gradients(problem: Problem, form: str, env: RandomMDP, params, key: jax.Array,
                    n: int | jax.Array, q_scale: float | jax.Array = 1.0,
                    tau_factor: float | jax.Array = 1.0
                    ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(g_softQ, g_sample, g_std) on one on-policy batch `[T, N]` from fresh starts.

    g_sample = grad(tau L_PG(sample) + L_V), the estimator g_softQ expands into;
    g_std = grad(tau L_PG(exact) + L_V), the standard one. Rewards are cast to float64.
    """
    net = network(problem)
    softq, pg = gradient_fns(problem, n, form, env, q_scale, tau_factor)
    k_reset, k_roll = jax.random.split(key)

    def policy(obs, k):
        a = jax.random.categorical(k, net.apply(params, obs)[0])
        return a, a, {}

    _, tr = rollout(env, policy, reset(env, k_reset, problem.num_envs), k_roll, problem.unroll)
    tr = tr.replace(reward=tr.reward.astype(jnp.float64))
    return softq(params, tr), pg(params, tr, "sample"), pg(params, tr, "exact")


def per_batch_errors(g_softq: jax.Array, g_sample: jax.Array) -> tuple[jax.Array, jax.Array]:
    """e = g_softQ - g_sample: (max_i |e_i|, ||e|| / ||g_sample||); both 0 if the identity holds."""
    e = g_softq - g_sample
    return jnp.abs(e).max(), jnp.linalg.norm(e) / jnp.linalg.norm(g_sample)


def expectation_stats(d: jax.Array, g: jax.Array) -> dict[str, jax.Array]:
    """Paired differences d_i = g_softQ,i - g_std,i `[batches, params]` against g = g_std `[batches, params]`:

        z_j = mean_i d_ij / (std_i d_ij / sqrt(batches))      (ddof 1)
        expect_max_z   = max_j |z_j|,       expect_mean_z2 = mean_j z_j^2,
        expect_rel     = ||mean_i d_i|| / ||mean_i g_i||,
        sample_rel     = mean_i ||d_i|| / mean_i ||g_i||   (per-sample distance of the estimators).
    """
    mean = d.mean(0)
    se = d.std(0, ddof=1) / jnp.sqrt(d.shape[0])
    z = mean / jnp.maximum(se, 1e-300)
    return {"expect_max_z": jnp.abs(z).max(), "expect_mean_z2": jnp.mean(z**2),
            "expect_rel": jnp.linalg.norm(mean) / jnp.linalg.norm(g.mean(0)),
            "sample_rel": jnp.linalg.norm(d, axis=1).mean() / jnp.linalg.norm(g, axis=1).mean()}


@functools.lru_cache(maxsize=None)
def _compiled_check(problem: Problem, form: str):
    """One jitted program per form: MDP, parameters, n and the parametrisation knobs are arguments."""

    def run(mdp, params, batch_keys, n, q_scale, tau_factor):
        env = make_env(problem, mdp)

        def one(key):
            g_sq, g_sample, g_std = batch_gradients(problem, form, env, params, key, n, q_scale,
                                                    tau_factor)
            max_abs, rel = per_batch_errors(g_sq, g_sample)
            return max_abs, rel, g_sq - g_std, g_std

        max_abs, rel, d, g = jax.vmap(one)(batch_keys)
        return {"per_batch_max_abs": max_abs.max(), "per_batch_rel": rel.max(),
                **expectation_stats(d, g)}

    return jax.jit(run)


def init_params(problem: Problem, k_init: jax.Array, k_noise: jax.Array):
    """Network parameters at init plus N(0, param_noise^2) per entry, in float64 (call under x64)."""
    params = network(problem).init(k_init, jnp.zeros((1, problem.obs_dim)))
    leaves, tree = jax.tree.flatten(params)
    noise = jax.random.split(k_noise, len(leaves))  # a generic, far from uniform policy
    return jax.tree.unflatten(tree, [(p + problem.param_noise * jax.random.normal(k, p.shape))
                                     .astype(jnp.float64) for p, k in zip(leaves, noise)])


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
    if batches < 2:
        raise ValueError(f"the expectation check needs batches >= 2, got {batches}")
    with jax.enable_x64(True):
        k_mdp, k_init, k_noise, k_batches = jax.random.split(jax.random.PRNGKey(seed), 4)
        mdp = random_mdp_arrays(k_mdp, problem.num_states, problem.num_actions, problem.obs_dim)
        params = init_params(problem, k_init, k_noise)
        n = problem.unroll if case.n is None else case.n  # n = T: to the end of the rollout
        out = _compiled_check(problem, case.form)(
            mdp, params, jax.random.split(k_batches, batches), n, case.q_scale, case.tau_factor)
        return {k: float(v) for k, v in out.items()}


def holds(result: dict[str, float]) -> bool:
    """The identity holds at both levels: per batch to PER_BATCH_REL_TOL, in expectation within MAX_Z SEs."""
    return result["per_batch_rel"] <= PER_BATCH_REL_TOL and result["expect_max_z"] <= MAX_Z


__all__ = ["Problem", "Case", "CASES", "BROKEN", "FORMS", "PER_BATCH_REL_TOL", "MAX_Z", "network",
           "make_env", "gradient_fns", "batch_gradients", "per_batch_errors", "expectation_stats",
           "init_params", "check_case", "holds"]
