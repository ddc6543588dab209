"""Best-of-n sampling against a proxy reward model: the unbiased estimator of its expected scores
from N >= n samples, and its KL from the sampling policy (Gao, Schulman & Hilton 2022, App. A/B;
Nakano et al. 2021; Beirami et al. 2024 for the KL bound).

Best-of-n draws n samples from pi_init and keeps the one the proxy RM scores highest. Given N
samples with proxy scores p_j and gold scores g_j, sorted by proxy so p_(1) <= ... <= p_(N), the
sample of rank i is the best of a uniformly random n-subset with probability

    w_i(N, n) = C(i - 1, n - 1) / C(N, n)        (i = n..N; 0 for i < n;  sum_i w_i = 1)

so E[score of the best-of-n sample] is estimated without bias by sum_i w_i s_(i) (gold or proxy),
using every subset of the N samples at once. Its KL from pi_init (continuous scores) is

    KL_bon(n) = log n - (n - 1) / n,

which is an upper bound on the exact KL for any distribution (equality when no two samples tie).
`exact_kl_bon` gives the exact KL for a discrete distribution, to measure the gap.

`bon_weights`, `exact_bon_probs` and `exact_kl_bon` are host-side (numpy float64); `best_of_n` is
JAX (jittable, vmappable over reward models), with its n values concrete (static).
"""

from __future__ import annotations

from typing import Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import gammaln


def _as_int(x, name: str) -> int:
    if isinstance(x, (bool, np.bool_)) or not float(x).is_integer():
        raise ValueError(f"{name} must be an integer, got {x!r}")
    return int(x)


def bon_weights(N: int, n: int) -> np.ndarray:
    """Weights of the unbiased best-of-n estimator, `[N]` float64, for the samples in increasing
    proxy order (index i - 1 holds the weight of the i-th smallest):

        w_i = C(i - 1, n - 1) / C(N, n)     (i >= n),   0 (i < n)

    in log space (log C(a, b) = gammaln(a + 1) - gammaln(b + 1) - gammaln(a - b + 1)), accurate
    to ~1e-10 for N up to 10^5 and any 1 <= n <= N, then divided by their sum (exactly 1 by the
    hockey-stick identity; this removes the common rounding error of the log normaliser).
    n = 1 gives the uniform weights (the mean), n = N puts all weight on the largest (the max).
    """
    N, n = _as_int(N, "N"), _as_int(n, "n")
    if N < 1 or not 1 <= n <= N:
        raise ValueError(f"best-of-n needs 1 <= n <= N, got n={n}, N={N}")
    i = np.arange(n, N + 1, dtype=np.float64)
    log_c_total = gammaln(N + 1.0) - gammaln(n + 1.0) - gammaln(N - n + 1.0)
    log_w = gammaln(i) - gammaln(float(n)) - gammaln(i - n + 1.0) - log_c_total
    w = np.concatenate([np.zeros(n - 1), np.exp(log_w)])
    return w / w.sum()


def _check_ns(ns, N: int) -> np.ndarray:
    try:
        arr = np.asarray(ns)
    except jax.errors.TracerArrayConversionError:
        raise ValueError("best_of_n needs concrete n values (close over them or mark them static "
                         "under jit), got a traced array") from None
    arr = np.atleast_1d(arr)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"ns must be a non-empty 1-D sequence of n values, got shape {arr.shape}")
    return np.array([_as_int(n, "n") for n in arr])


def best_of_n(proxy: jax.Array, gold: jax.Array,
              ns: Sequence[int] | np.ndarray) -> tuple[jax.Array, jax.Array]:
    """Expected gold and proxy scores of the best-of-n sample (best by proxy), for each n in `ns`,
    by the unbiased estimator over the N given samples of pi_init:

        gold_bon(n)  = sum_i w_i(N, n) g_[i],     proxy_bon(n) = sum_i w_i(N, n) p_(i)

    with (i) the i-th smallest proxy score (`bon_weights`) and g_[i] the gold score of that sample.
    Ties in proxy: best-of-n picks uniformly among tied maxima, so g_[i] is the MEAN gold score of
    the samples tied with p_(i) (exactly the expectation over uniform tie-breaking; with distinct
    proxy scores it is just the sorted gold). Scores must be finite.

    Shapes: `proxy` `[..., N]` (e.g. `[R, N]`, one row per proxy RM), `gold` broadcastable to it
    (`[N]` or `[..., N]`); returns (gold_bon, proxy_bon), each `[..., len(ns)]`. `ns` are concrete
    ints with 1 <= n <= N (weights are precomputed on the host, float64 cast to the scores' dtype);
    the function is jittable and vmappable in `proxy` and `gold`.
    """
    N = proxy.shape[-1]
    chex.assert_axis_dimension(gold, -1, N)
    ns = _check_ns(ns, N)
    dtype = jnp.result_type(proxy.dtype, gold.dtype, jnp.float32)
    w = jnp.asarray(np.stack([bon_weights(N, int(n)) for n in ns]), dtype)  # [len(ns), N]

    def one(p: jax.Array, g: jax.Array) -> tuple[jax.Array, jax.Array]:
        order = jnp.argsort(p, stable=True)
        p_sorted = p[order].astype(dtype)
        g_sorted = g[order].astype(dtype)
        new_group = jnp.concatenate([jnp.ones((1,), bool), p_sorted[1:] != p_sorted[:-1]])
        group = jnp.cumsum(new_group) - 1
        sums = jax.ops.segment_sum(g_sorted, group, num_segments=N)
        counts = jax.ops.segment_sum(jnp.ones_like(g_sorted), group, num_segments=N)
        g_tied = sums[group] / counts[group]
        hi = jax.lax.Precision.HIGHEST
        return jnp.matmul(w, g_tied, precision=hi), jnp.matmul(w, p_sorted, precision=hi)

    return jnp.vectorize(one, signature="(n),(n)->(k),(k)")(proxy, gold)


def kl_bon(n):
    """KL(pi_bon || pi_init) of best-of-n for continuous scores (an upper bound in general):

        KL_bon(n) = log n - (n - 1) / n

    n >= 1, a scalar or array (numpy in, float64 numpy out; a jax.Array in, jax out).
    """
    if isinstance(n, jax.Array):
        return jnp.log(n) - (n - 1) / n
    n = np.asarray(n, np.float64)
    if np.any(~(n >= 1)):
        raise ValueError(f"best-of-n needs n >= 1, got {n}")
    out = np.log(n) - (n - 1) / n
    return float(out) if out.ndim == 0 else out


def _groups(probs, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validated (p, group index of each outcome, group probs in increasing score order, mask of
    outcomes with p > 0)."""
    p = np.asarray(probs, np.float64)
    s = np.asarray(scores, np.float64)
    if p.ndim != 1 or p.shape != s.shape or p.size == 0:
        raise ValueError(f"probs and scores must be equal-length 1-D arrays, got shapes "
                         f"{p.shape} and {s.shape}")
    if not (np.all(np.isfinite(p)) and np.all(p >= 0) and abs(p.sum() - 1) < 1e-6):
        raise ValueError(f"probs must be finite, >= 0 and sum to 1, got sum {p.sum()}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite")
    p = p / p.sum()
    keep = p > 0
    _, group = np.unique(s[keep], return_inverse=True)
    pg = np.bincount(group, weights=p[keep])
    return p, group, pg, keep


def _log_bon_group_probs(pg: np.ndarray, n: np.ndarray) -> np.ndarray:
    """log P_bon(group g) = log(F_g^n - F_{g-1}^n), `[len(n), G]`, with F the CDF over groups in
    increasing score order, computed from the lower tail where F < 1/2 and from the upper tail
    (F_g = 1 - sum_{h > g} p_h) above, so that F near 0 and near 1 keeps its precision."""
    above = np.append(np.cumsum(pg[::-1])[::-1][1:], 0.0)  # sum_{h > g} p_h
    cdf = np.cumsum(pg)
    with np.errstate(divide="ignore"):
        log_f = np.where(cdf < 0.5, np.log(cdf), np.log1p(-np.minimum(above, 1.0)))
    log_f_prev = np.concatenate([[-np.inf], log_f[:-1]])   # F(G-) = F(previous level), F(0-) = 0
    n = n[:, None]
    with np.errstate(divide="ignore"):
        return n * log_f + np.log(-np.expm1(n * (log_f_prev - log_f)))


def exact_bon_probs(probs, scores, n: float) -> np.ndarray:
    """The exact best-of-n distribution over K discrete outcomes, `[K]` float64:

        p_bon(k) = (p_k / p_G) (F(G)^n - F(G-)^n)

    where G is k's score level (the outcomes with k's score), p_G its probability, F(G) the
    probability of a score <= k's and F(G-) of a score < k's. Best-of-n draws n i.i.d. outcomes and
    keeps one with the highest score, uniformly among the draws that tie at that score (so within
    a level outcomes keep their relative probabilities). With distinct scores, p_bon(k) =
    F(k)^n - F(k-1)^n in score order. n >= 1 (real n allowed).
    """
    p, group, pg, keep = _groups(probs, scores)
    n = float(n)
    if not n >= 1:
        raise ValueError(f"best-of-n needs n >= 1, got {n}")
    log_bon = _log_bon_group_probs(pg, np.array([n]))[0]
    out = np.zeros_like(p)
    out[keep] = p[keep] / pg[group] * np.exp(log_bon[group])
    return out


def exact_kl_bon(probs, scores, n):
    """Exact KL(p_bon || p) of best-of-n (`exact_bon_probs`) on a discrete distribution, in nats:

        KL = sum_G P_bon(G) log(P_bon(G) / p_G),    P_bon(G) = F(G)^n - F(G-)^n

    over score levels G (tied outcomes contribute only through their level: within a level
    p_bon is proportional to p). Always <= `kl_bon(n)` = log n - (n - 1)/n, approaching it as the
    distribution approaches a continuous one (e.g. uniform over K outcomes, K -> inf); at most
    log(1/p_top) for any n. `n` a scalar (returns a float) or an array of n >= 1 (returns `[len]`).
    """
    _, _, pg, _ = _groups(probs, scores)
    n_arr = np.atleast_1d(np.asarray(n, np.float64))
    if n_arr.ndim != 1 or np.any(~(n_arr >= 1)):
        raise ValueError(f"best-of-n needs n >= 1, got {n}")
    log_bon = _log_bon_group_probs(pg, n_arr)               # [len(n), G]
    terms = np.where(np.isneginf(log_bon), 0.0, np.exp(log_bon) * (log_bon - np.log(pg)))
    kl = np.sum(terms, axis=-1)
    kl = np.maximum(kl, 0.0)                                # rounding at n = 1 (KL = 0)
    return float(kl[0]) if np.ndim(n) == 0 else kl
