"""Reward-model over-optimisation scaling laws (Gao, Schulman & Hilton 2022): fits of the gold
reward R against d = sqrt(KL(pi || pi_init)), host-side (numpy float64).

The two functional forms, both with R(0) = 0 (the initial policy's recentred gold reward):

    best-of-n:  R_bon(d) = d (alpha_bon - beta_bon d)        peak d* = alpha / (2 beta),
                                                              R(d*) = alpha^2 / (4 beta)
    RL:         R_RL(d)  = d (alpha_RL - beta_RL log d)       peak d* = exp(alpha / beta - 1),
                                                              R(d*) = beta d*

fitted by least squares with no intercept, on the features [d, -d^2] (best-of-n) or
[d, -d log d] (RL, with d log d = 0 at d = 0), and the trend of a coefficient against the
(proxy) reward model's size, value = slope log10(size) + intercept.
"""

from __future__ import annotations

import dataclasses

import numpy as np

@dataclasses.dataclass(frozen=True)
class Fit:
    """A fitted curve R(d) = d (alpha - beta d) (form "bon") or d (alpha - beta log d) ("rl").

    r2 = 1 - SS_res / SS_tot (SS_tot about the mean of the fitted r); (peak_d, peak_r) the curve's
    stationary point d* and R(d*) (formulas in the module docstring). Where beta <= 0 the curve
    has no interior maximum: peak_d = inf and peak_r = inf if it rises without bound (beta < 0, or
    beta = 0 < alpha), else both nan (beta = 0 >= alpha). For "bon" with beta > 0 and alpha < 0
    the stationary point d* < 0 is reported as is (the curve only falls on d >= 0).
    """
    alpha: float
    beta: float
    r2: float
    peak_d: float
    peak_r: float
    form: str = "bon"

    def predict(self, d) -> np.ndarray:
        """R(d) of this fit, elementwise."""
        return bon_curve(d, self.alpha, self.beta) if self.form == "bon" else rl_curve(
            d, self.alpha, self.beta)

    def as_dict(self) -> dict:
        """The fields as a JSON-ready dict (floats; inf / nan as Python floats)."""
        return {f.name: (getattr(self, f.name) if f.name == "form" else float(getattr(self, f.name)))
                for f in dataclasses.fields(self)}


def _d_log_d(d: np.ndarray) -> np.ndarray:
    """d log d with its limit 0 at d = 0."""
    d = np.asarray(d, np.float64)
    return np.where(d > 0, d * np.log(np.where(d > 0, d, 1.0)), 0.0)


def bon_curve(d, alpha: float, beta: float) -> np.ndarray:
    """R_bon(d) = d (alpha - beta d)."""
    d = np.asarray(d, np.float64)
    return alpha * d - beta * d * d


def rl_curve(d, alpha: float, beta: float) -> np.ndarray:
    """R_RL(d) = d (alpha - beta log d), with R(0) = 0."""
    d = np.asarray(d, np.float64)
    return alpha * d - beta * _d_log_d(d)


def _peak(form: str, alpha: float, beta: float) -> tuple[float, float]:
    if beta <= 0:
        return (np.inf, np.inf) if (beta < 0 or alpha > 0) else (np.nan, np.nan)
    if form == "bon":
        return alpha / (2 * beta), alpha * alpha / (4 * beta)
    with np.errstate(over="ignore"):
        d_star = float(np.exp(alpha / beta - 1))
    return d_star, beta * d_star  # d*(alpha - beta log d*) = d*(alpha - alpha + beta)


def _validate(d, r) -> tuple[np.ndarray, np.ndarray]:
    d = np.asarray(d, np.float64)
    r = np.asarray(r, np.float64)
    if d.ndim != 1 or d.shape != r.shape:
        raise ValueError(f"d and r must be equal-length 1-D arrays, got shapes {d.shape} and "
                         f"{r.shape}")
    if d.size < 2:
        raise ValueError(f"fitting two coefficients needs at least 2 points, got {d.size}")
    if not (np.all(np.isfinite(d)) and np.all(np.isfinite(r))):
        raise ValueError("d and r must be finite")
    if np.any(d < 0):
        raise ValueError(f"d = sqrt(KL) must be >= 0, got min {d.min()}")
    if np.all(r == r[0]):
        raise ValueError(f"r is constant ({r[0]}): no curve to fit (R^2 undefined)")
    return d, r


def _fit(form: str, d, r) -> Fit:
    d, r = _validate(d, r)
    second = d * d if form == "bon" else _d_log_d(d)
    x = np.stack([d, -second], axis=1)
    if np.linalg.matrix_rank(x) < 2:
        raise ValueError(f"the features [d, -{'d^2' if form == 'bon' else 'd log d'}] are "
                         f"collinear on these d ({np.unique(d)}): need more distinct d > 0")
    (alpha, beta), *_ = np.linalg.lstsq(x, r, rcond=None)
    resid = r - x @ np.array([alpha, beta])
    r2 = 1.0 - float(resid @ resid) / float(np.sum((r - r.mean()) ** 2))
    peak_d, peak_r = _peak(form, float(alpha), float(beta))
    return Fit(float(alpha), float(beta), r2, float(peak_d), float(peak_r), form)


def fit_bon(d, r) -> Fit:
    """Least-squares fit of R_bon(d) = alpha d - beta d^2 (no intercept: R(0) = 0) to points
    (d_j, r_j), d = sqrt(KL_bon) >= 0. Raises ValueError on fewer than 2 points, non-finite or
    negative d, constant r, or d that cannot separate the two features (e.g. all equal)."""
    return _fit("bon", d, r)


def fit_rl(d, r) -> Fit:
    """Least-squares fit of R_RL(d) = alpha d - beta d log d (d log d = 0 at d = 0; no intercept)
    to points (d_j, r_j), d = sqrt(KL) >= 0. Raises as `fit_bon` (d in {0, 1} only is collinear:
    d log d = 0 there)."""
    return _fit("rl", d, r)


def trend(sizes, values) -> tuple[float, float, float]:
    """Least-squares line of `values` against log10(`sizes`) (e.g. alpha or beta of each proxy
    RM against its parameter count): values = slope log10(size) + intercept.

    Returns (slope, intercept, r2), r2 = 1 - SS_res / SS_tot (nan when the values are constant).
    Raises ValueError unless sizes > 0 take at least 2 distinct values and everything is finite.
    """
    s = np.asarray(sizes, np.float64)
    v = np.asarray(values, np.float64)
    if s.ndim != 1 or s.shape != v.shape:
        raise ValueError(f"sizes and values must be equal-length 1-D arrays, got shapes {s.shape} "
                         f"and {v.shape}")
    if not (np.all(np.isfinite(s)) and np.all(np.isfinite(v)) and np.all(s > 0)):
        raise ValueError(f"sizes must be finite and > 0 and values finite, got sizes {s}, "
                         f"values {v}")
    if np.unique(s).size < 2:
        raise ValueError(f"a trend needs at least 2 distinct sizes, got {np.unique(s)}")
    x = np.log10(s)
    slope, intercept = np.polyfit(x, v, 1)
    resid = v - (slope * x + intercept)
    ss_tot = float(np.sum((v - v.mean()) ** 2))
    r2 = 1.0 - float(resid @ resid) / ss_tot if ss_tot > 0 else float("nan")
    return float(slope), float(intercept), r2
