"""Checkpoints: the one place rlx talks to orbax.

A run's checkpoints (`rlx.runner.run(..., out_dir)`) live in `out_dir/checkpoints`:
orbax step directories `<chunk>/` (the state pytree and a JSON history), at most
`MAX_TO_KEEP` of them, and `run.json`, the fingerprint of the run they belong to
(`fingerprint`: the trainer's typed config, the members, the hyper-parameters'
values, the chunking and a digest of the PRNG keys). `RunCheckpoints` guarantees:

- Identity: opening a directory that holds checkpoints of a run with another
  fingerprint raises `CheckpointMismatch` (a `ValueError`) with one line naming
  the directory and the first differing fields, before anything compiles. Fields
  that do not change results (`IGNORED_CONFIG_FIELDS`, e.g. the device count) are
  not part of the fingerprint. A directory with checkpoints but no readable
  `run.json` (written by an older rlx) resumes with a one-line warning.
- Integrity: every save records SHA-256 digests of the state's bytes and of the
  history; a restored step is used only if it reproduces both exactly. A step that
  fails (truncated or overwritten files, missing metadata, an empty or half-written
  step directory, bad JSON) is skipped with a one-line warning for the newest
  intact earlier step; if none is intact the run starts from scratch, again with a
  one-line warning. The damaged steps are deleted. Orbax and json errors never
  escape as tracebacks here.
- Half-written saves: orbax writes a step to `<step>.orbax-checkpoint-tmp-*` and
  renames it when complete; leftovers of a killed save are ignored and removed.

`save_pytree` / `restore_pytree` store one pytree in a directory (with the same
digest check); a missing or damaged directory is a one-line `ValueError`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import shutil
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np

MAX_TO_KEEP = 2  # the latest step and one to fall back to
RUN_FILE = "run.json"
DIGEST_FILE = "rlx_digest.txt"  # save_pytree's digest, inside the pytree's directory
IGNORED_CONFIG_FIELDS = frozenset({"devices"})  # results are the same on any mesh size
_DIGESTS = "_rlx_digests"  # key of the digests in a saved history
_TMP = ".orbax-checkpoint-tmp-"


class CheckpointMismatch(ValueError):
    """The output directory holds checkpoints of another run (one-line message)."""


# ---- digests and the run fingerprint --------------------------------------------------------

def _host(x: Any) -> np.ndarray:
    """A leaf as a host array (typed PRNG keys as their raw key data)."""
    if hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        # multi-process: every process takes part and gets the global value
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


def tree_digest(tree: Any) -> str:
    """SHA-256 (hex) of every leaf's dtype, shape and bytes, in leaf order."""
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(tree):
        a = _host(leaf)
        h.update(str((a.dtype, a.shape)).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _json_digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _jsonable(x: Any) -> Any:
    """`x` as plain JSON: tuples -> lists, numpy -> Python, inf/nan -> "inf"/"nan", else repr."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.ndarray, np.generic)):
        return _jsonable(x.tolist())
    if isinstance(x, float):
        return x if math.isfinite(x) else str(x)
    if x is None or isinstance(x, (bool, int, str)):
        return x
    return repr(x)


def fingerprint(trainer: Any, keys: Any, hparams: Any) -> dict:
    """What identifies a population run, as plain JSON.

    trainer: an `rlx.training.Trainer` (its `config` dataclass, `num_evals`,
    `updates_per_eval`, `steps_per_update`); keys: the `[members, ...]` PRNG keys
    (recorded as a digest); hparams: the hyper-parameters as run (values as lists).
    Config fields in `IGNORED_CONFIG_FIELDS` are left out.
    """
    config = trainer.config
    if dataclasses.is_dataclass(config):
        cfg = {k: v for k, v in dataclasses.asdict(config).items()
               if k not in IGNORED_CONFIG_FIELDS}
    else:
        cfg = None if config is None else {"repr": repr(config)}
    flat, _ = jax.tree_util.tree_flatten_with_path(hparams)
    return _jsonable({
        "config_type": None if config is None else type(config).__name__,
        "config": cfg,
        "members": int(np.shape(keys)[0]),
        "num_evals": int(trainer.num_evals),
        "updates_per_eval": int(trainer.updates_per_eval),
        "steps_per_update": int(trainer.steps_per_update),
        "hparams": {jax.tree_util.keystr(p, simple=True, separator="."): _host(x).tolist()
                    for p, x in flat},
        "keys": tree_digest(keys)[:16],
    })


_ABSENT = "<absent>"


def _fields(fp: dict) -> dict[str, Any]:
    """A fingerprint flattened to {field name: value}, config fields first."""
    out: dict[str, Any] = {"config type": fp.get("config_type", _ABSENT)}
    cfg = fp.get("config")
    out.update(cfg if isinstance(cfg, dict) else {"config": cfg})
    for k in ("members", "num_evals", "updates_per_eval", "steps_per_update"):
        out[k] = fp.get(k, _ABSENT)
    out.update({f"hparams.{k}": v for k, v in (fp.get("hparams") or {}).items()})
    out["keys"] = fp.get("keys", _ABSENT)
    return out


def _short(v: Any, width: int = 40) -> str:
    s = v if isinstance(v, str) else json.dumps(v)
    return s if len(s) <= width else s[:width - 3] + "..."


def differences(saved: dict, now: dict) -> list[str]:
    """The fields where two fingerprints differ, as "name saved != now", in field order."""
    a, b = _fields(saved), _fields(now)
    names = list(a) + [k for k in b if k not in a]
    return [f"{k} {_short(a.get(k, _ABSENT))} != {_short(b.get(k, _ABSENT))}"
            for k in names if a.get(k, _ABSENT) != b.get(k, _ABSENT)]


def _mismatch_message(out: Path, ckpt_dir: Path, diffs: list[str], shown: int = 3) -> str:
    first = diffs[0].replace(" != ", " (saved) != ", 1) + " (now)"
    parts = [first] + diffs[1:shown]
    more = f" (+{len(diffs) - shown} more)" if len(diffs) > shown else ""
    return (f"{out} holds another run: {', '.join(parts)}{more}; "
            f"use another --out or delete {ckpt_dir}")


# ---- small helpers ---------------------------------------------------------------------------

def _warn(message: str) -> None:
    """One line on stderr (first process only)."""
    if jax.process_index() == 0:
        print(f"warning: {message}", file=sys.stderr, flush=True)


def _reason(e: BaseException) -> str:
    """An exception as one short line."""
    text = str(e).strip().splitlines()
    first = text[0].split(" See full TensorStore details")[0] if text else ""
    if len(first) > 120:
        first = first[:117] + "..."
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


@contextlib.contextmanager
def _quiet_orbax():
    """Silence orbax's own log warnings while probing steps that may be damaged
    (what is wrong is reported once, by `RunCheckpoints.restore_latest`)."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _abstract(like: Any, sharded: bool) -> Any:
    def f(x):
        if sharded and hasattr(x, "sharding"):
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
        return jax.ShapeDtypeStruct(np.shape(x), x.dtype)
    return jax.tree.map(f, like)


# ---- a run's checkpoints ---------------------------------------------------------------------

class RunCheckpoints:
    """The checkpoints of one run in `directory` (see the module docstring).

    Opening checks the directory against `run` (a `fingerprint`): raises
    `CheckpointMismatch` if it holds another run's steps, then records `run` in
    `run.json`. `restore_latest(like)` returns (step, state, history) of the newest
    intact step or None; `save(step, state, history)` writes a step and waits.
    """

    def __init__(self, directory: str | Path, run: dict, max_to_keep: int = MAX_TO_KEEP):
        self.directory = Path(directory).absolute()
        self.run = run
        self.max_to_keep = max_to_keep
        self._primary = jax.process_index() == 0
        self._remove_half_written()
        self._check_and_record_run()
        self._mngr = self._open()

    # -- opening

    def _step_dirs(self) -> list[int]:
        if not self.directory.is_dir():
            return []
        return sorted(int(p.name) for p in self.directory.iterdir()
                      if p.is_dir() and p.name.isdigit())

    def _remove_half_written(self) -> None:
        """Delete leftovers of saves that were killed before orbax renamed them."""
        if self._primary and self.directory.is_dir():
            for p in self.directory.glob(f"*{_TMP}*"):
                shutil.rmtree(p, ignore_errors=True)

    def _check_and_record_run(self) -> None:
        """Raise `CheckpointMismatch` if the steps here belong to another run; write run.json."""
        path = self.directory / RUN_FILE
        saved = None
        readable = True
        if path.exists():
            try:
                saved = json.loads(path.read_text())
                if not isinstance(saved, dict):
                    raise ValueError("not a JSON object")
            except (OSError, ValueError) as e:
                saved, readable = None, False
                if self._step_dirs():
                    _warn(f"{path} is unreadable ({_reason(e)}); resuming without checking "
                          f"that its checkpoints belong to this run")
        if self._step_dirs():
            if saved is None and readable:
                _warn(f"{self.directory} has no {RUN_FILE} (written by an older rlx); resuming "
                      f"without checking that its checkpoints belong to this run")
            elif saved is not None:
                diffs = differences(saved, self.run)
                if diffs:
                    raise CheckpointMismatch(_mismatch_message(self.directory.parent,
                                                               self.directory, diffs))
        if saved != self.run and self._primary:
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(RUN_FILE + ".tmp")
            tmp.write_text(json.dumps(self.run, indent=1) + "\n")
            tmp.replace(path)

    def _open(self):
        import orbax.checkpoint as ocp

        with _quiet_orbax():  # it reads every step's metadata, damaged ones included
            return ocp.CheckpointManager(
                self.directory,
                options=ocp.CheckpointManagerOptions(max_to_keep=self.max_to_keep, create=True),
                item_names=("state", "history"))

    def _drop(self, steps: list[int]) -> None:
        """Delete damaged steps and reopen the manager so that it forgets them."""
        if not steps:
            return
        self._mngr.close()
        if self._primary:
            for s in steps:
                shutil.rmtree(self.directory / str(s), ignore_errors=True)
        self._mngr = self._open()

    # -- saving and restoring

    def save(self, step: int, state: Any, history: dict) -> None:
        """Write `state` and the JSON `history` as `step` (with their digests) and wait."""
        import orbax.checkpoint as ocp

        record = dict(history)
        record[_DIGESTS] = {"state": tree_digest(state), "history": _json_digest(history)}
        self._mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                      history=ocp.args.JsonSave(record)))
        self._mngr.wait_until_finished()

    def _restore(self, step: int, abstract: Any) -> tuple[Any, dict]:
        """State and history of `step`; raises if anything is missing, unreadable or altered."""
        import orbax.checkpoint as ocp

        out = self._mngr.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), history=ocp.args.JsonRestore()))
        history = out.history
        if not isinstance(history, dict):
            raise ValueError("history is not a JSON object")
        history = dict(history)
        digests = history.pop(_DIGESTS, None)  # None: saved by an older rlx, nothing to check
        if digests is not None:
            if _json_digest(history) != digests.get("history"):
                raise ValueError("history does not match its digest")
            if tree_digest(out.state) != digests.get("state"):
                raise ValueError("state does not match its digest")
        return out.state, history

    def restore_latest(self, like: Any) -> tuple[int, Any, dict] | None:
        """(step, state, history) of the newest intact step, placed like `like`; None if none.

        Damaged newer steps are reported in one line and deleted; with no intact
        step at all the directory is emptied of steps (a fresh start).
        """
        abstract = _abstract(like, sharded=True)
        damaged: list[tuple[int, str]] = []
        try:
            with _quiet_orbax():
                steps = sorted(self._mngr.all_steps(), reverse=True)
        except Exception as e:  # noqa: BLE001 -- an unreadable directory is a fresh start
            _warn(f"cannot list the checkpoints in {self.directory} ({_reason(e)}); "
                  f"starting from scratch")
            return None
        for step in steps:
            try:
                with _quiet_orbax():
                    state, history = self._restore(step, abstract)
            except Exception as e:  # noqa: BLE001 -- orbax/tensorstore/json: all mean damaged
                damaged.append((step, _reason(e)))
                continue
            if damaged:
                _warn(f"{self._describe(damaged)}; resuming from checkpoint {step}")
                self._drop([s for s, _ in damaged])
            return step, state, history
        if damaged:
            _warn(f"{self._describe(damaged)}; no intact checkpoint left, starting from scratch")
            self._drop([s for s, _ in damaged])
        return None

    def _describe(self, damaged: list[tuple[int, str]]) -> str:
        items = "; ".join(f"{s} ({why})" for s, why in damaged)
        return f"damaged checkpoint{'s' if len(damaged) > 1 else ''} in {self.directory}: {items}"

    def close(self) -> None:
        """Release orbax's manager (waits for nothing: every save already waited)."""
        self._mngr.close()


# ---- single pytrees --------------------------------------------------------------------------

def save_pytree(path: str | Path, tree: Any) -> None:
    """Write `tree` (copied to the host) to the directory `path`, replacing what is there."""
    import orbax.checkpoint as ocp

    path = Path(path).absolute()
    tree = jax.device_get(tree)
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(path, tree, force=True)
        ckpt.wait_until_finished()
    if jax.process_index() == 0:
        (path / DIGEST_FILE).write_text(tree_digest(tree) + "\n")


def restore_pytree(path: str | Path, like: Any) -> Any:
    """The pytree `save_pytree` wrote to `path`, with the structure, shapes and dtypes of
    `like`; a missing, damaged or different pytree is a one-line `ValueError` naming `path`."""
    import orbax.checkpoint as ocp

    path = Path(path).absolute()
    if not path.is_dir():
        raise ValueError(f"{path} does not exist (no saved pytree there)")
    try:
        with _quiet_orbax(), ocp.StandardCheckpointer() as ckpt:
            tree = ckpt.restore(path, _abstract(like, sharded=False))
    except Exception as e:  # noqa: BLE001 -- any orbax/tensorstore failure means damaged
        raise ValueError(f"{path} is damaged or holds another pytree ({_reason(e)})") from None
    digest_file = path / DIGEST_FILE
    if digest_file.exists() and digest_file.read_text().strip() != tree_digest(tree):
        raise ValueError(f"{path} is damaged (its arrays do not match their digest)")
    return tree


__all__ = ["RunCheckpoints", "CheckpointMismatch", "fingerprint", "differences", "tree_digest",
           "save_pytree", "restore_pytree", "MAX_TO_KEEP", "IGNORED_CONFIG_FIELDS"]
