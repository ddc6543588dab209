"""Host-side outputs of an experiment: summary.json, metrics.csv (and the same scalars as
TensorBoard event files under tb/ and, on request, a Weights & Biases run) and PNG plots
(learning curves with their spread over seeds, score bars; matplotlib's Agg backend)."""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

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


# Columns that place a row in time, in order of preference: the first one a row has is its step.
STEP_COLUMNS = ("env_step", "env_steps", "update", "generation", "point")
TB_DIR = "tb"


def _is_number(v: Any) -> bool:
    """An int or float (Python or NumPy, 0-d arrays included); not a bool, string or list."""
    if isinstance(v, (bool, str, bytes)) or v is None:
        return False
    try:
        a = np.asarray(v)
    except Exception:  # noqa: BLE001 - anything NumPy cannot take is not a number
        return False
    return a.ndim == 0 and np.issubdtype(a.dtype, np.number)


def _tag_part(v: Any) -> str:
    """A tag component TensorBoard keeps as is (its allowed characters: letters, digits, _-.)."""
    return re.sub(r"[^-\w.]", "_", str(v))


def scalar_tags(row: Mapping[str, Any]) -> tuple[int | None, dict[str, float]]:
    """The step and the TensorBoard scalars of one metrics.csv row: `(step, {tag: value})`.

    One scalar per numeric column (the step column, the first of `STEP_COLUMNS` the row
    has, excluded; step None without one), tagged
    `kind/<identity values>/<column>/member_<member>`: `kind` and `member` where the row has
    them, the identity values being its other non-numeric columns in order (e.g. env, algo),
    e.g. `train/episode_return/member_0` or `eval/reacher/clip/eval_return/member_1`.
    """
    step_col = next((c for c in STEP_COLUMNS if c in row and _is_number(row[c])), None)
    ident = [_tag_part(v) for k, v in row.items()
             if k not in ("kind", "member") and not _is_number(v) and v is not None]
    prefix = ([_tag_part(row["kind"])] if "kind" in row else []) + ident
    suffix = [f"member_{_tag_part(row['member'])}"] if "member" in row else []
    scalars = {"/".join(prefix + [_tag_part(k)] + suffix): float(v) for k, v in row.items()
               if k != step_col and k != "member" and _is_number(v)}
    return (int(row[step_col]) if step_col else None), scalars


def scalar_events(rows: Sequence[Mapping[str, Any]]) -> list[tuple[int, str, float]]:
    """Every scalar of `rows` (metrics.csv's) as `(step, tag, value)`, in row order
    (`scalar_tags`); a row without a step column is placed at its index."""
    events = []
    for i, row in enumerate(rows):
        step, scalars = scalar_tags(row)
        events += [(i if step is None else step, tag, value) for tag, value in scalars.items()]
    return events


def write_tensorboard(log_dir: str | os.PathLike, rows: Sequence[Mapping[str, Any]]) -> None:
    """`rows` (metrics.csv's) as TensorBoard scalars (`scalar_events`) in one event file under
    `log_dir`; earlier event files there are removed (the directory mirrors metrics.csv)."""
    from tensorboardX import SummaryWriter

    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    for old in log_dir.glob("events.out.tfevents.*"):
        old.unlink()
    writer = SummaryWriter(str(log_dir), flush_secs=3600)
    try:
        for step, tag, value in scalar_events(rows):
            writer.add_scalar(tag, value, step)
    finally:
        writer.close()


WANDB_MISSING = ("--wandb needs the wandb package, which is not installed: pip install "
                 "'rlx[wandb]' (or pip install wandb; WANDB_MODE=offline needs no network)")


def check_wandb() -> None:
    """Raise a one-line `ValueError` (`WANDB_MISSING`) if `wandb` cannot be imported."""
    try:
        import wandb  # noqa: F401  (optional extra, imported only when asked for)
    except ImportError:
        raise ValueError(WANDB_MISSING) from None


def write_wandb(out_dir: str | os.PathLike, rows: Sequence[Mapping[str, Any]],
                summary: Mapping[str, Any] | None = None) -> None:
    """`rows` (metrics.csv's) as one Weights & Biases run, the same scalars as TensorBoard's
    (`scalar_events`), logged step by step in increasing step order.

    The run lives under `out_dir/wandb/`, is named after `out_dir`, in project
    `$WANDB_PROJECT` (default "rlx") and group `summary["experiment"]`; its config is
    `summary["config"]` and its summary the numbers and strings of `summary` (summary.json's).
    `WANDB_MODE=offline` writes it without a network (`wandb sync` uploads it later).
    """
    check_wandb()
    import wandb

    summary = dict(summary or {})
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    by_step: dict[int, dict[str, float]] = {}
    for step, tag, value in scalar_events(rows):
        by_step.setdefault(step, {})[tag] = value
    run = wandb.init(project=os.environ.get("WANDB_PROJECT", "rlx"), dir=str(out_dir),
                     name=out_dir.resolve().name, group=summary.get("experiment"),
                     config=_jsonable(summary.get("config") or {}))
    try:
        for step in sorted(by_step):
            run.log(by_step[step], step=step)
        run.summary.update({k: v for k, v in summary.items()
                            if _is_number(v) or isinstance(v, str)})
    finally:
        run.finish()


def write_metrics(out_dir: str | os.PathLike, rows: Sequence[dict], *,
                  tensorboard: bool = True, wandb: bool = False) -> None:
    """An experiment's metrics: `out_dir/metrics.csv` (`write_csv`), with `tensorboard` the
    same scalars as TensorBoard event files under `out_dir/tb/` (`write_tensorboard`), and
    with `wandb` as a Weights & Biases run (`write_wandb`, its config and summary from
    `out_dir/summary.json` when that exists)."""
    write_csv(Path(out_dir) / "metrics.csv", rows)
    if tensorboard:
        write_tensorboard(Path(out_dir) / TB_DIR, rows)
    if wandb:
        path = Path(out_dir) / "summary.json"
        write_wandb(out_dir, rows, json.loads(path.read_text()) if path.exists() else None)


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


Series = tuple[np.ndarray, np.ndarray]  # (x `[P]`, y `[P]` or `[P, members]`): a curve and its spread


def _pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (PNG files only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


_MARKERS = ("o", "s", "^", "D", "v", "P")


def plot_panels(path: str | os.PathLike, panels: Mapping[str, Mapping[str, Series]],
                xlabel: str, ylabel: str, *, band: str | None = "minmax",
                hlines: Mapping[str, Mapping[str, float]] | None = None, cols: int = 3,
                markers: bool = False, xscale: str = "linear", linthresh: float | None = None,
                panel_size: tuple[float, float] | None = None) -> None:
    """Learning curves, one panel per key of `panels` (its title), saved as a PNG.

    `panels[title][label] = (x, y)`: the mean over members of y `[len(x), members]` (or
    `[len(x)]`) as a line, and its spread as a band where there are several members:
    band "minmax" (min to max), "std" (mean +- std) or None. `hlines[title][label]`:
    dashed horizontal reference lines (e.g. a random policy's return). Panels fill a
    grid `cols` wide; the first panel holds the legend. `markers` marks each point (sparse
    curves); `xscale` "symlog" uses `linthresh`.
    """
    if band not in ("minmax", "std", None):
        raise ValueError(f"unknown band {band!r}; valid: minmax, std, None")
    if not panels:
        raise ValueError("plot_panels needs at least one panel")
    plt = _pyplot()
    n = len(panels)
    cols = max(1, min(cols, n))
    rows = -(-n // cols)
    w, h = panel_size or ((6.0, 4.0) if n == 1 else (4.5, 3.4))
    fig, axes = plt.subplots(rows, cols, figsize=(w * cols, h * rows), squeeze=False)
    colors: dict[str, str] = {}  # one colour per label across panels
    first = set(next(iter(panels.values())))
    for ax, (title, curves) in zip(axes.flat, panels.items()):
        for i, (label, (x, y)) in enumerate(curves.items()):
            x = np.asarray(x, np.float64)
            y = np.asarray(y, np.float64).reshape(len(x), -1)
            mean = y.mean(1)
            color = colors.setdefault(label, f"C{len(colors) % 10}")
            (line,) = ax.plot(x, mean, marker=_MARKERS[i % len(_MARKERS)] if markers else None,
                              label=label or None, color=color)
            if band is not None and y.shape[1] > 1:
                lo, hi = ((y.min(1), y.max(1)) if band == "minmax"
                          else (mean - y.std(1), mean + y.std(1)))
                ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2)
        for label, value in ((hlines or {}).get(title) or {}).items():
            ax.axhline(value, color="gray", ls="--", lw=1, label=label)
        if xscale == "symlog":
            ax.set_xscale("symlog", linthresh=linthresh or 1.0)
        elif xscale != "linear":
            ax.set_xscale(xscale)
        if title:
            ax.set_title(title, fontsize=None if n == 1 else 10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax is not axes.flat[0] and set(curves) - first:  # labels the first legend lacks
            ax.legend(fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if axes.flat[0].get_legend_handles_labels()[1]:
        axes.flat[0].legend(fontsize=8)
    _save(fig, path)


def plot_curves(path: str | os.PathLike, x: np.ndarray, curves: dict[str, np.ndarray],
                xlabel: str, ylabel: str, title: str = "", *, band: str | None = "minmax",
                hlines: Mapping[str, float] | None = None, markers: bool = False) -> None:
    """One panel of `plot_panels`: mean line and spread band per label, all on the same x;
    `curves[label]` is `[len(x), members]`."""
    plot_panels(path, {title: {label: (x, y) for label, y in curves.items()}}, xlabel, ylabel,
                band=band, hlines={title: hlines} if hlines else None, markers=markers)


def plot_bars(path: str | os.PathLike, values: Mapping[str, Mapping[str, float]],
              xlabel: str, title: str = "") -> None:
    """Grouped horizontal bars: `values[series][category]`, categories top to bottom in the
    first series' order, one bar per series in each group (e.g. this run vs a paper's table)."""
    if not values:
        raise ValueError("plot_bars needs at least one series")
    plt = _pyplot()
    categories = list(next(iter(values.values())))
    k = len(values)
    width = 0.8 / k
    y = np.arange(len(categories))
    fig, ax = plt.subplots(figsize=(7, max(4.0, 0.35 * len(categories))))
    for i, (series, v) in enumerate(values.items()):
        ax.barh(y + (i - (k - 1) / 2) * width, [v[c] for c in categories], width, label=series)
    ax.set_yticks(y, categories, fontsize=7)
    ax.invert_yaxis()
    ax.axvline(0, color="k", lw=0.5)
    ax.set_xlabel(xlabel)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    _save(fig, path)


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


def cumulative_env_steps(result: Any) -> np.ndarray:
    """Env steps actually taken (mean over members) at each evaluation of a
    `rlx.runner.RunResult` whose train metrics hold per-update `env_steps` (e.g. ES, where
    episodes end early): 0, then the running total after each evaluation chunk."""
    per_gen = np.asarray(result.train["env_steps"]).mean(1)  # [updates]
    upe = len(per_gen) // max(len(result.eval_steps) - 1, 1)
    cum = np.concatenate([[0.0], np.cumsum(per_gen)])
    return cum[:: upe] if upe else cum[:1]


def chunk_episode_means(returns_sum: np.ndarray, counts: np.ndarray, chunks: int) -> np.ndarray:
    """Mean return of the training episodes that finished in each of `chunks` equal runs of
    updates, `[chunks, members]` (0 where none finished); trailing updates that do not fill
    a chunk are dropped.

    `returns_sum`, `counts`: `[updates, members]` sums and counts per update, as for
    `last_episodes_mean`: chunk c covers updates [c k, (c + 1) k), k = updates // chunks.
    """
    s, c = np.asarray(returns_sum), np.asarray(counts)
    k = s.shape[0] // chunks
    s, c = s[: k * chunks].reshape(chunks, k, -1).sum(1), c[: k * chunks].reshape(chunks, k, -1).sum(1)
    return s / np.maximum(c, 1.0)


__all__ = ["write_json", "write_csv", "write_metrics", "write_tensorboard", "scalar_tags",
           "scalar_events", "write_wandb", "check_wandb", "WANDB_MISSING",
           "curve_rows", "plot_panels", "plot_curves", "plot_bars",
           "last_episodes_mean", "chunk_episode_means",
           "cumulative_env_steps"]
