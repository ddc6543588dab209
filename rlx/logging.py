"""Host-side outputs of an experiment: summary.json, metrics.csv and PNG plots."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.generic,)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, float) and not np.isfinite(x):
        return str(x)
    return x


def write_json(path: str | os.PathLike, data: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(_jsonable(data), f, indent=2, sort_keys=False)
        f.write("\n")


def write_csv(path: str | os.PathLike, rows: Sequence[dict]) -> None:
    """Rows of dicts; the header is the union of keys in first-seen order."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: _jsonable(v) for k, v in r.items()})


def curve_rows(result: Any, labels: Sequence[str] | None = None,
               extra: dict | None = None) -> list[dict]:
    """metrics.csv rows of a `rlx.runner.RunResult`: one per (kind, update, member)."""
    rows = []
    members = next(iter(result.eval.values())).shape[1]
    labels = labels or [str(i) for i in range(members)]
    for i, step in enumerate(result.eval_steps):
        for m in range(members):
            row = {"kind": "eval", "env_step": step, "member": labels[m], **(extra or {})}
            row.update({k: float(v[i, m]) for k, v in result.eval.items()})
            rows.append(row)
    n_updates = next(iter(result.train.values())).shape[0] if result.train else 0
    for u in range(n_updates):
        for m in range(members):
            row = {"kind": "train", "update": u + 1, "env_step": (u + 1) * result.steps_per_update,
                   "member": labels[m], **(extra or {})}
            row.update({k: float(v[u, m]) for k, v in result.train.items()})
            rows.append(row)
    return rows


def plot_curves(path: str | os.PathLike, x: np.ndarray, curves: dict[str, np.ndarray],
                xlabel: str, ylabel: str, title: str = "") -> None:
    """Mean line and min-max band per label; `curves[label]` is `[len(x), members]`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, y in curves.items():
        y = np.asarray(y, np.float64).reshape(len(x), -1)
        ax.plot(x, y.mean(1), label=label)
        if y.shape[1] > 1:
            ax.fill_between(x, y.min(1), y.max(1), alpha=0.2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if len(curves) > 1 or len(curves) and list(curves)[0]:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def last_episodes_mean(returns_sum: np.ndarray, counts: np.ndarray, n: int = 100) -> np.ndarray:
    """Mean return of (about) the last `n` finished training episodes, per member.

    `returns_sum`, `counts`: `[updates, members]` sums and counts of episodes that
    finished in each update; whole updates are taken from the end until >= n episodes.
    """
    returns_sum, counts = np.asarray(returns_sum), np.asarray(counts)
    out = []
    for m in range(returns_sum.shape[1]):
        s = c = 0.0
        for u in range(returns_sum.shape[0] - 1, -1, -1):
            s += returns_sum[u, m]
            c += counts[u, m]
            if c >= n:
                break
        out.append(s / c if c > 0 else np.nan)
    return np.asarray(out)


__all__ = ["write_json", "write_csv", "curve_rows", "plot_curves", "last_episodes_mean"]
