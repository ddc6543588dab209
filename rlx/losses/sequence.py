"""Sequence (LLM-RL) policy losses: GRPO, Dr.GRPO, DPPO (TV / KL masks), DRPO, token PPO-clip and
importance-weighted PG, as values of ONE objective whose variant is chosen by traced
hyper-parameters (`SequenceLossParams`), so a sweep over losses x seeds is one vmapped program.

Notation, per token t of completion i (arrays `[B, T]`, B completions of T tokens):
    A_t            advantage (per completion, broadcast over its tokens, or per token)
    mu_t = exp(behaviour_log_prob)  the rollout policy's probability of the sampled token
    pi_t = exp(log_prob)            the current policy's
    r_t  = pi_t / mu_t              the importance ratio (log r clamped to [-20, 20], as verl does)

The objective (to be minimised), with w^agg_t the aggregation weight of token t (below):

    L = sum_t w^agg_t [ s_t + |A_t|^a mu_t (r_t - 1)^2 / (2 eps_D) + beta k3_t ]

    value:     s_t = -min(A_t rb_t, A_t clip(rb_t, 1 - eps_low, 1 + eps_high)),  rb_t = min(r_t, C)
    gradient:  d s_t / d log pi_t := -A_t min(r_t, C) M_t,   M_t = M^clip_t M^TV_t M^KL_t  (0 or 1)
    (M^clip is `clip_mask` of rb_t, M^TV `tv_mask`, M^KL `kl_mask`; each is 1 where A_t = 0)

`s_t` is evaluated as sg(s_t) - A_t sg(min(r_t, C) M_t) (log pi_t - sg(log pi_t)) (sg = stop-gradient),
so its value is the (capped, clipped) ratio surrogate and its gradient is the papers' masked,
capped importance-weighted policy gradient -A min(r, C) M grad log pi. For PPO-clip, GRPO, pg_is
and DRPO (C = inf, no TV/KL mask) this gradient IS autodiff of the value; DPPO's cap and masks act
on the gradient only (its loss -A sg(min(r, C) M) log pi has no meaningful value; we report the
capped ratio surrogate -A min(r, C) instead). `inf` switches a piece off:

    clip_low/high = inf: no PPO clip;  is_cap C = inf: no cap;  tv_delta_* / kl_delta = inf: no mask;
    drpo_eps = inf: no quadratic;  beta = 0: no reference KL.

Aggregation (traced, `jnp.where`): 0 token-mean over the batch (verl "token-mean", TRL "bnpo");
1 per-sequence token-mean then mean over the B sequences (TRL loss_type="grpo"); 2 per-sequence token
SUM / max_length then mean over sequences (TRL "dr_grpo", verl "seq-mean-token-sum-norm").

Which reference defined what:
  * GRPO (Shao et al. 2024, DeepSeekMath) and Dr.GRPO (Liu et al. 2025) follow TRL's GRPOTrainer
    (huggingface/trl grpo_trainer.py): -min(r A, clip(r, 1-eps_low, 1+eps_high) A) + beta k3 per token,
    k3 = pi_ref/pi - log(pi_ref/pi) - 1, aggregations "grpo" / "dr_grpo"; group advantages with the
    unbiased group std (torch.std) as TRL and verl compute them.
  * DPPO (Qi et al. 2026, arXiv 2602.04879) follows sail-sg/Stable-RL's `compute_policy_loss_with_mask`
    and verl's `dppo_tv` / `dppo_kl` (core_algos.py): loss -A sg(min(r, C)) M log pi anchored at the
    rollout log-probs, strict inequalities (a token exactly at the threshold keeps its gradient),
    Stable-RL's default IS cap C = 10 (verl's default is 20).
  * DRPO (Yao et al. 2026, arXiv 2606.09821) follows Tencent-Hunyuan/UniRL `ar_drpo.py` (= verl
    `spo_adaptive_eps`): L_t = -A r + |A| mu (r - 1)^2 / (2 eps), r differentiable, no cap, eps = 12.5.
"""

from __future__ import annotations

from typing import Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.scipy.special import xlogy

from rlx.losses.advantages import masked_mean

LOG_RATIO_CLAMP = 20.0  # |log r| and |log(pi_ref/pi)| are clamped here (verl's guard), so r <= e^20
INF = float("inf")
AGGREGATIONS = {0: "token-mean", 1: "sequence-mean (GRPO)", 2: "token-sum / max_length (Dr.GRPO)"}


@struct.dataclass
class SequenceLossParams:
    """Hyper-parameters selecting a sequence loss; every leaf a float32 scalar (traced, vmappable).

    clip_low, clip_high: PPO ratio clip [1 - clip_low, 1 + clip_high] (inf: none).
    is_cap: C, the cap on the importance weight min(r, C) of the gradient (inf: none).
    tv_delta_low, tv_delta_high: DPPO binary-TV mask thresholds (inf: no mask).
    kl_delta: DPPO binary-KL mask threshold (inf: no mask).
    drpo_eps: DRPO's quadratic-penalty eps (inf: no penalty).
    drpo_abs_adv: penalty weight |A| (1.0) or 1 (0.0, the "removing |A|" ablation).
    beta: coefficient of the per-token k3 KL to the reference policy (0: none).
    std_scale: group advantages divided by the group std (1.0, GRPO) or not (0.0, Dr.GRPO).
    aggregation: 0 token-mean, 1 per-sequence mean then mean (GRPO), 2 token-sum / max_length then
        mean over sequences (Dr.GRPO).
    """

    clip_low: jax.Array
    clip_high: jax.Array
    is_cap: jax.Array
    tv_delta_low: jax.Array
    tv_delta_high: jax.Array
    kl_delta: jax.Array
    drpo_eps: jax.Array
    drpo_abs_adv: jax.Array
    beta: jax.Array
    std_scale: jax.Array
    aggregation: jax.Array


_FIELDS = tuple(SequenceLossParams.__dataclass_fields__)
_OFF = dict(clip_low=INF, clip_high=INF, is_cap=INF, tv_delta_low=INF, tv_delta_high=INF,
            kl_delta=INF, drpo_eps=INF, drpo_abs_adv=1.0, beta=0.0, std_scale=1.0, aggregation=0.0)


def _params(**kw: float) -> SequenceLossParams:
    return SequenceLossParams(**{k: np.float32(v) for k, v in {**_OFF, **kw}.items()})


LOSSES: dict[str, SequenceLossParams] = {
    # token PPO-clip: clipped surrogate, no KL, token-mean (verl "vanilla" with token-mean).
    "ppo_clip": _params(clip_low=0.2, clip_high=0.2),
    # GRPO (DeepSeekMath; TRL loss_type="grpo"): std-scaled group advantages, per-sequence mean, k3 0.04.
    "grpo": _params(clip_low=0.2, clip_high=0.2, beta=0.04, aggregation=1.0),
    # Dr.GRPO (TRL loss_type="dr_grpo"): GRPO without the std division and the per-sequence length mean.
    "dr_grpo": _params(clip_low=0.2, clip_high=0.2, beta=0.04, std_scale=0.0, aggregation=2.0),
    # DPPO binary-TV / binary-KL (Stable-RL recipe: delta_TV 0.15, delta_KL 0.05, IS cap 10).
    "dppo_tv": _params(is_cap=10.0, tv_delta_low=0.15, tv_delta_high=0.15),
    "dppo_kl": _params(is_cap=10.0, kl_delta=0.05),
    # DRPO (UniRL ar_drpo.py; eps = 12.5, |A| penalty weight, token-mean).
    "drpo": _params(drpo_eps=12.5, drpo_abs_adv=1.0),
    # importance-weighted PG with no trust region (the collapse baseline).
    "pg_is": _params(),
}


def loss_params(name: str, **overrides: float) -> SequenceLossParams:
    """The preset `name` of `LOSSES` with some fields replaced (e.g. `beta=0.0`)."""
    if name not in LOSSES:
        raise ValueError(f"unknown sequence loss {name!r}; valid: {', '.join(LOSSES)}")
    bad = [k for k in overrides if k not in _FIELDS]
    if bad:
        raise ValueError(f"unknown SequenceLossParams field(s) {bad}; valid: {', '.join(_FIELDS)}")
    for k, v in overrides.items():
        if not v >= 0:  # also catches NaN
            raise ValueError(f"SequenceLossParams.{k} must be >= 0 (inf allowed), got {v}")
    if "aggregation" in overrides and float(overrides["aggregation"]) not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {overrides['aggregation']}")
    if "drpo_eps" in overrides and not overrides["drpo_eps"] > 0:
        raise ValueError(f"drpo_eps must be > 0 (inf: no DRPO penalty), got {overrides['drpo_eps']}")
    return LOSSES[name].replace(**{k: np.float32(v) for k, v in overrides.items()})


def stack_loss_params(losses: Sequence[str | SequenceLossParams]) -> SequenceLossParams:
    """Presets (names or params) stacked along a leading axis, for `jax.vmap` over losses."""
    ps = [loss_params(p) if isinstance(p, str) else p for p in losses]
    return jax.tree.map(lambda *xs: np.stack([np.float32(x) for x in xs]), *ps)


def group_advantages(rewards: jax.Array, group_size: int, std_scale: float | jax.Array = 1.0,
                     eps: float = 1e-6) -> jax.Array:
    """GRPO's group-relative advantages; completions of a prompt are contiguous in `rewards` [N]:

        A_i = (R_i - mean_g R) / (std_g R + eps)   if std_scale = 1 (GRPO)
        A_i =  R_i - mean_g R                      if std_scale = 0 (Dr.GRPO)

    std_g is the unbiased (ddof = 1) std of the group, as TRL and verl compute it (0 for a group of
    one). A group whose rewards are all equal gets A = 0.
    """
    chex.assert_rank(rewards, 1)
    n = rewards.shape[0]
    if not isinstance(group_size, (int, np.integer)) or group_size < 1 or n % group_size:
        raise ValueError(f"group_size must be a positive int dividing the {n} rewards, got {group_size}")
    g = rewards.astype(jnp.float32).reshape(n // group_size, group_size)
    centred = g - g.mean(axis=1, keepdims=True)
    ddof = 1 if group_size > 1 else 0
    std = jnp.sqrt(jnp.sum(centred**2, axis=1, keepdims=True) / (group_size - ddof))
    scaled = centred / (std + eps)
    return jnp.where(jnp.asarray(std_scale) != 0, scaled, centred).reshape(n)


def k3_kl(log_prob: jax.Array, ref_log_prob: jax.Array) -> jax.Array:
    """Schulman's k3 estimator of KL[pi || pi_ref] per token (TRL's GRPO penalty), >= 0:

        k3 = pi_ref/pi - log(pi_ref/pi) - 1,   log(pi_ref/pi) clamped to [-20, 20].
    """
    chex.assert_equal_shape([log_prob, ref_log_prob])
    d = jnp.clip(ref_log_prob - log_prob, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    return jnp.expm1(d) - d


def ratio(log_prob: jax.Array, behaviour_log_prob: jax.Array) -> jax.Array:
    """r = pi / mu = exp(clip(log pi - log mu, -20, 20))."""
    return jnp.exp(jnp.clip(log_prob - behaviour_log_prob, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))


def clip_mask(advantages: jax.Array, ratio: jax.Array, clip_low: float | jax.Array,
              clip_high: float | jax.Array) -> jax.Array:
    """PPO-clip's gradient mask (1 keep, 0 cut): the clip is active in the advantage's direction,

        M = 0  iff  (A > 0 and r > 1 + clip_high) or (A < 0 and r < 1 - clip_low),

    which is where d/d log pi of -min(r A, clip(r, 1 - clip_low, 1 + clip_high) A) vanishes.
    """
    cut = ((advantages > 0) & (ratio > 1.0 + clip_high)) | ((advantages < 0) & (ratio < 1.0 - clip_low))
    return 1.0 - cut.astype(jnp.float32)


def tv_mask(advantages: jax.Array, log_prob: jax.Array, behaviour_log_prob: jax.Array,
            delta_low: float | jax.Array, delta_high: float | jax.Array) -> jax.Array:
    """DPPO's binary-TV mask (1 keep, 0 cut; Stable-RL `dppo_binary_tv`, verl `dppo_tv`):

        M = 0  iff  (A > 0 and pi - mu > delta_high) or (A < 0 and pi - mu < -delta_low).
    """
    diff = jnp.exp(log_prob) - jnp.exp(behaviour_log_prob)
    cut = ((advantages > 0) & (diff > delta_high)) | ((advantages < 0) & (diff < -delta_low))
    return 1.0 - cut.astype(jnp.float32)


def binary_kl(log_prob: jax.Array, behaviour_log_prob: jax.Array) -> jax.Array:
    """KL between the Bernoulli(mu) and Bernoulli(pi) of the sampled token (DPPO's binary KL):

        D = mu log(mu / pi) + (1 - mu) log((1 - mu) / (1 - pi))   (0 log 0 = 0; +inf when pi = 1 > mu)
    """
    mu = jnp.exp(behaviour_log_prob)
    q_mu, q_pi = -jnp.expm1(behaviour_log_prob), -jnp.expm1(log_prob)  # 1 - mu, 1 - pi
    return mu * (behaviour_log_prob - log_prob) + xlogy(q_mu, q_mu) - xlogy(q_mu, q_pi)


def kl_mask(advantages: jax.Array, log_prob: jax.Array, behaviour_log_prob: jax.Array,
            delta: float | jax.Array) -> jax.Array:
    """DPPO's binary-KL mask (1 keep, 0 cut; Stable-RL `dppo_binary_kl`, verl `dppo_kl`):

        M = 0  iff  D > delta and ((A > 0 and pi > mu) or (A < 0 and pi < mu)),  D = binary_kl.
    """
    over = binary_kl(log_prob, behaviour_log_prob) > delta
    up = log_prob > behaviour_log_prob
    down = log_prob < behaviour_log_prob
    cut = over & (((advantages > 0) & up) | ((advantages < 0) & down))
    return 1.0 - cut.astype(jnp.float32)


def drpo_weight(advantages: jax.Array, log_prob: jax.Array, behaviour_log_prob: jax.Array,
                eps: float | jax.Array) -> jax.Array:
    """DRPO's smooth trust-region gradient weight (Yao et al. 2026, Table 1 / Eq. 9):

        w_t = 1 - sign(A_t (r_t - 1)) |pi_t - mu_t| / eps,

    so that d/d log pi of L_t = -A r + |A| mu (r - 1)^2 / (2 eps) is -A_t r_t w_t.
    """
    diff = jnp.exp(log_prob) - jnp.exp(behaviour_log_prob)
    return 1.0 - jnp.sign(advantages) * diff / eps  # sign(A (r - 1)) |pi - mu| = sign(A) (pi - mu)


def aggregation_weights(mask: jax.Array, aggregation: float | jax.Array,
                        max_length: int | None = None) -> jax.Array:
    """Per-token weights w^agg [B, T] with loss = sum_t w^agg_t l_t (m = mask, n_i = sum_t m_it):

        0: m / max(sum m, 1)            token-mean over the batch
        1: m / (B max(n_i, 1))          mean over tokens of each sequence, then over sequences (GRPO)
        2: m / (B max_length)           token-sum / max_length, then mean over sequences (Dr.GRPO)

    `max_length` defaults to T. A fully masked sequence counts as a zero in modes 1 and 2 (TRL).
    """
    chex.assert_rank(mask, 2)
    b, t = mask.shape
    length = t if max_length is None else max_length
    m = mask.astype(jnp.float32)
    w0 = m / jnp.maximum(m.sum(), 1.0)
    w1 = m / (b * jnp.maximum(m.sum(axis=1, keepdims=True), 1.0))
    w2 = m / (b * float(length))
    agg = jnp.asarray(aggregation)
    return jnp.where(agg == 0, w0, jnp.where(agg == 1, w1, w2))


def sequence_loss(log_prob: jax.Array, behaviour_log_prob: jax.Array, advantages: jax.Array,
                  mask: jax.Array, params: SequenceLossParams, ref_log_prob: jax.Array | None = None,
                  max_length: int | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The unified sequence policy loss (module docstring) and its diagnostics.

    log_prob [B, T]: log pi of the sampled tokens under the policy being trained (differentiated);
    behaviour_log_prob [B, T]: their rollout log-probs (the anchor: mu); advantages [B] (one per
    completion) or [B, T]; mask [B, T] bool, True on completion tokens; ref_log_prob [B, T]: the
    reference policy's (None: no KL term, kl_ref = 0); max_length: Dr.GRPO's normaliser (default T).
    Tokens with mask False contribute nothing, whatever their values (even inf or NaN).

    Returns (loss, metrics) with scalars "surrogate" (the aggregated s_t), "penalty" (DRPO's term),
    "kl_ref" (token-mean k3), "inactive_frac" (fraction of valid tokens whose policy gradient the clip
    or a DPPO mask cut), "capped_frac" (fraction with r > C), "ratio_mean", "ratio_max" (over valid
    tokens), and "inactive" [B, T] float: 1 where token t's policy gradient was cut (M_t = 0), 0
    elsewhere and on padding -- for the trainer to reduce over token subsets (e.g. rare vs common).
    """
    chex.assert_rank([log_prob, mask], 2)
    chex.assert_equal_shape([log_prob, behaviour_log_prob, mask])
    if max_length is not None and (not isinstance(max_length, (int, np.integer)) or max_length < 1):
        raise ValueError(f"max_length must be a positive int, got {max_length}")
    if advantages.ndim == 1:
        chex.assert_shape(advantages, (log_prob.shape[0],))
        advantages = advantages[:, None]
    else:
        chex.assert_equal_shape([advantages, log_prob])
    valid = mask.astype(bool)
    m = valid.astype(jnp.float32)
    zero = jnp.zeros(log_prob.shape, jnp.float32)
    # padding is replaced before any arithmetic, so its values reach neither the loss nor the grads
    lp = jnp.where(valid, log_prob.astype(jnp.float32), zero)
    blp = jnp.where(valid, jax.lax.stop_gradient(behaviour_log_prob).astype(jnp.float32), zero)
    adv = jnp.where(valid, jax.lax.stop_gradient(advantages).astype(jnp.float32), zero)
    p = params

    r = ratio(lp, blp)
    rb = jnp.minimum(r, p.is_cap)
    sg_lp = jax.lax.stop_gradient(lp)
    keep = (clip_mask(adv, jax.lax.stop_gradient(rb), p.clip_low, p.clip_high)
            * tv_mask(adv, sg_lp, blp, p.tv_delta_low, p.tv_delta_high)
            * kl_mask(adv, sg_lp, blp, p.kl_delta))
    surrogate = -jnp.minimum(adv * rb, adv * jnp.clip(rb, 1.0 - p.clip_low, 1.0 + p.clip_high))
    coef = jax.lax.stop_gradient(rb * keep)
    pg = jax.lax.stop_gradient(surrogate) - adv * coef * (lp - sg_lp)

    mu = jnp.exp(blp)
    pen_weight = p.drpo_abs_adv * jnp.abs(adv) + (1.0 - p.drpo_abs_adv)
    penalty = pen_weight * mu * (r - 1.0) ** 2 / (2.0 * p.drpo_eps)

    if ref_log_prob is None:
        k3 = zero
    else:
        chex.assert_equal_shape([ref_log_prob, log_prob])
        ref = jnp.where(valid, jax.lax.stop_gradient(ref_log_prob).astype(jnp.float32), zero)
        k3 = k3_kl(lp, ref)

    w = aggregation_weights(valid, p.aggregation, max_length)
    loss = jnp.sum(w * (pg + penalty + p.beta * k3))
    inactive = m * (1.0 - keep)
    r_sg = jax.lax.stop_gradient(r)
    metrics = {
        "surrogate": jax.lax.stop_gradient(jnp.sum(w * surrogate)),
        "penalty": jax.lax.stop_gradient(jnp.sum(w * penalty)),
        "kl_ref": jax.lax.stop_gradient(masked_mean(k3, m)),
        "inactive_frac": masked_mean(inactive, m),
        "capped_frac": masked_mean((r_sg > p.is_cap).astype(jnp.float32), m),
        "ratio_mean": masked_mean(r_sg, m),
        "ratio_max": jnp.max(jnp.where(valid, r_sg, 0.0)),
        "inactive": inactive,
    }
    return loss, metrics


__all__ = ["SequenceLossParams", "LOSSES", "loss_params", "stack_loss_params", "group_advantages",
           "k3_kl", "ratio", "clip_mask", "tv_mask", "binary_kl", "kl_mask", "drpo_weight",
           "aggregation_weights", "sequence_loss"]
