"""Run a `Trainer` for a population of members: sharded, checkpointed, resumable.

`run(trainer, keys, out_dir)` vmaps the trainer over the members (seeds and/or
hyper-parameters), shards them over the device mesh, and runs one compiled chunk
(`updates_per_eval` updates + an evaluation) at a time. After every chunk the
state is checked for NaN and saved (`rlx.checkpoint`); calling `run` again with
the same `out_dir` resumes from the newest intact checkpoint and ends with the
same parameters as an uninterrupted run. A rerun with another configuration in
the same `out_dir` is refused (`rlx.checkpoint.CheckpointMismatch`, a ValueError).
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from rlx import memory, population
from rlx.checkpoint import RunCheckpoints, fingerprint
from rlx.training import Trainer


class TrainingDiverged(RuntimeError):
    """Training produced NaN; the message names the update, the checkpoint is kept."""


# ---- progress: trainers call `on_update` through jax.debug.callback ----------------------

class _Progress:
    def __init__(self):
        self.bar = None
        self.last = 0
        self.first_update_time: float | None = None

    def __call__(self, update: Any, episode_return: Any) -> None:
        u = int(np.max(np.asarray(update)))
        if self.first_update_time is None:
            self.first_update_time = time.time()
        if self.bar is not None and u > self.last:
            self.bar.update(u - self.last)
            r = np.asarray(episode_return)
            if np.isfinite(r).any():
                self.bar.set_postfix(train_return=f"{np.nanmean(r):.2f}", refresh=False)
            self.last = u


PROGRESS = _Progress()


def on_update(update: Any, episode_return: Any) -> None:
    """Host-side hook for `make_train(..., on_update=rlx.runner.on_update)`."""
    PROGRESS(update, episode_return)


# ---- results -------------------------------------------------------------------------------

@dataclasses.dataclass
class RunResult:
    """Final state and metric history of a population run.

    `train[name]` is `[updates, members]`, `eval[name]` is `[evals, members]`;
    `eval_steps[i]` is the env steps per member at evaluation i and
    `eval_times[i]` its host time (seconds since the run started).
    """

    state: Any
    train: dict[str, np.ndarray]
    eval: dict[str, np.ndarray]
    eval_steps: list[int]
    eval_times: list[float]
    wall_s: float
    compile_s: float | None
    resumed_from: int | None
    devices: int
    steps_per_update: int
    started_at: float = 0.0  # time.time() when the run started (eval_times count from it)
    compile_times: dict[str, float] = dataclasses.field(default_factory=dict)  # per program, s


def params_digest(tree: Any) -> str:
    """A short SHA-256 of every leaf's bytes (dtype and shape included)."""
    import hashlib

    h = hashlib.sha256()
    for leaf in jax.tree.leaves(tree):
        a = np.asarray(jax.device_get(leaf))
        h.update(str((a.dtype, a.shape)).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def _no_nan(tree: Any) -> bool:
    """No NaN in any float leaf (inf is allowed: e.g. `clip_eps = inf` means "no clipping").

    Multi-process: each process checks the shards it holds and the processes agree."""
    if jax.process_count() == 1:
        return not any(bool(np.isnan(np.asarray(x)).any()) for x in jax.tree.leaves(tree)
                       if np.issubdtype(np.asarray(x).dtype, np.floating))
    local = not any(bool(np.isnan(np.asarray(part)).any()) for x in jax.tree.leaves(tree)
                    for part in _local_parts(x) if np.issubdtype(part.dtype, np.floating))
    return bool(np.all(multihost_utils.process_allgather(np.asarray(local))))


def _local_parts(x: Any) -> list:
    """The data of `x` this process holds: its shards of a jax.Array, else `x` itself."""
    if isinstance(x, jax.Array):
        return [np.asarray(shard.data) for shard in x.addressable_shards]
    return [np.asarray(x)]


def _to_host(x: Any) -> np.ndarray:
    """A (possibly multi-process) array's global value on this host."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


def _gather_state(state: Any, mesh: Any) -> Any:
    """Multi-process: `state` replicated on every device of `mesh` (every process can then
    read any member); single-process: `state` unchanged."""
    if jax.process_count() == 1:
        return state

    def replicate(x):
        if not isinstance(x, jax.Array) or x.is_fully_replicated:
            return x
        return population.shard(_to_host(x), mesh, None)

    return jax.tree.map(replicate, state)


def choose_mesh(members: int, devices: int | None = None) -> Any:
    """A mesh for `members`: `devices` if given (must divide), else the most devices that divide."""
    avail = len(jax.devices())
    if devices is not None:
        mesh = population.make_mesh(devices)
        population.check_divisible(members, mesh)
    else:
        mesh = population.make_mesh(max(d for d in range(1, avail + 1) if members % d == 0))
    idle = sorted(set(range(jax.process_count())) - {d.process_index for d in mesh.devices.flat})
    if idle:
        raise ValueError(f"{members} members on {mesh.devices.size} of the {avail} devices leave "
                         f"process(es) {idle} without a device; in a multi-process run use a "
                         f"member count (and --devices) that spans every process")
    return mesh


def broadcast_hparams(hparams: Any, members: int) -> Any:
    """Tile unbatched hyper-parameters to `[members]`; check batched ones."""
    leaves = jax.tree.leaves(hparams)
    if all(np.ndim(x) == 0 for x in leaves):
        return jax.tree.map(lambda x: jnp.full((members,), x, jnp.asarray(x).dtype), hparams)
    sizes = {np.shape(x)[0] for x in leaves}
    if sizes != {members}:
        raise ValueError(f"batched hyper-parameters have leading sizes {sorted(sizes)}, "
                         f"expected {members} (one per member)")
    return hparams


def _to_lists(metrics: dict) -> dict:
    """Member-major device arrays `[members, ...]` -> time-major lists `[time, members]`."""
    out = {}
    for k, v in metrics.items():
        a = np.asarray(_to_host(v), np.float64)
        out[k] = (a.T if a.ndim == 2 else a[None]).tolist()
    return out


def _stack(chunks: list[dict]) -> dict[str, np.ndarray]:
    if not chunks:
        return {}
    return {k: np.concatenate([np.asarray(c[k], np.float64).reshape(-1, np.shape(c[k])[-1])
                               for c in chunks]) for k in chunks[0]}


def compile_programs(trainer: Trainer, keys: jax.Array, hparams: Any, mesh: Any,
                     axis: str | None) -> tuple[tuple[Any, Any, Any], dict[str, float]]:
    """(init, evaluate, updates) of the population, compiled ahead of time, and the
    seconds each took to lower and compile.

    `updates` runs `updates_per_eval` updates (donating its state); a chunk is one
    call of it and one of `evaluate`, so the evaluation is compiled once. Calls
    take arguments placed as `population.shard` places them (`axis=None`: replicated).
    """
    name = trainer.axis_name
    init = population.pmap_population(trainer.init, mesh, axis, axis_name=name)
    evaluate = population.pmap_population(trainer.evaluate, mesh, axis, axis_name=name)
    updates = population.pmap_population(trainer.run_updates, mesh, axis, donate=True,
                                         axis_name=name)
    seconds = {}
    t = time.time()
    lowered_init = init.lower(keys, hparams)
    programs = [lowered_init.compile()]
    seconds["init"] = time.time() - t
    state = population.abstract(lowered_init.out_info, mesh, axis)  # the state's shapes
    for label, fn in (("evaluate", evaluate), ("updates", updates)):
        t = time.time()
        programs.append(fn.lower(state).compile())
        seconds[label] = time.time() - t
    return tuple(programs), seconds


def run(trainer: Trainer, keys: jax.Array, out_dir: str | os.PathLike | None = None, *,
        hparams: Any = None, devices: int | None = None, checkpoint: bool = True,
        progress: bool = True, stop_after_chunks: int | None = None,
        release_memory: bool = True) -> RunResult:
    """Train `len(keys)` members as one sharded program, chunk by chunk.

    keys: `[members, 2]` PRNG keys (one per seed/member). hparams: one set for all
    members or a batched `[members]` pytree (a sweep). devices: mesh size (must
    divide the members; default: the most devices that do). A trainer with its
    own `mesh` (ES: the population inside one run is sharded) keeps the members
    replicated on that mesh and ignores `devices`. With `out_dir` and
    `checkpoint`, each chunk is saved under `out_dir/checkpoints` and a rerun resumes.
    `stop_after_chunks` ends early (as if killed) after that many chunks in this call.
    `release_memory`: before compiling, drop JAX's caches of earlier (eager) programs and
    return freed heap to the OS (`rlx.memory`; lowers peak RSS, other jitted functions
    recompile on their next call).

    Three programs are compiled ahead of time (`compile_programs`): init, evaluate and
    `updates_per_eval` updates; a chunk is one call of the last two.

    Multi-process (after `rlx.distributed.initialize`; every process calls `run` alike):
    the members are sharded over every process's devices, the metrics are gathered on
    every process and the returned state is replicated on the mesh.
    """
    keys = jnp.asarray(keys)
    if trainer.shards > 1:  # data parallel: the shards of one agent share its key
        if keys.shape[0] != 1:
            raise ValueError(f"a data-parallel trainer ({trainer.shards} shards) trains one seed "
                             f"at a time, got {keys.shape[0]} seeds")
        keys = jnp.repeat(keys, trainer.shards, axis=0)
    members = keys.shape[0]
    hparams = broadcast_hparams(trainer.default_hparams if hparams is None else hparams, members)
    if trainer.mesh is not None:  # the trainer shards its own population (ES) over its mesh
        mesh, axis = trainer.mesh, None
    else:
        mesh, axis = choose_mesh(members, devices), population.AXIS
    ckpt = None
    if out_dir is not None and checkpoint:  # refuses another run's checkpoints, before compiling
        ckpt = RunCheckpoints(Path(out_dir) / "checkpoints", fingerprint(trainer, keys, hparams))
    t_start = time.time()
    PROGRESS.first_update_time = None
    if release_memory:
        memory.release_host_memory()
    (init, evaluate, updates), compile_times = compile_programs(trainer, keys, hparams, mesh,
                                                                axis)
    num_chunks = trainer.num_evals - 1
    state = init(*population.shard((keys, hparams), mesh, axis))
    if release_memory:
        memory.trim_heap()  # the compiler's freed heap
    restored = ckpt.restore_latest(state) if ckpt is not None else None  # newest intact step
    resumed_from = None
    if restored is not None:
        resumed_from, state, history = restored
        train_chunks = [history["train"][i] for i in range(len(history["train"]))]
        eval_chunks = history["eval"]
        done_chunks = resumed_from
    else:
        eval_chunks = [_to_lists(evaluate(state))]
        train_chunks, done_chunks = [], 0
    eval_times = [time.time() - t_start]

    PROGRESS.last = done_chunks * trainer.updates_per_eval
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=trainer.num_updates, initial=PROGRESS.last, unit="update", dynamic_ncols=True)
    PROGRESS.bar = bar
    try:
        for c in range(done_chunks, num_chunks):
            if stop_after_chunks is not None and c - done_chunks >= stop_after_chunks:
                break
            new_state, train_m = updates(state)
            eval_m = evaluate(new_state)
            train_m, eval_m = _to_lists(train_m), _to_lists(eval_m)
            if not (_no_nan(new_state) and _no_nan(train_m)):
                bad = _first_bad_update(train_m)
                u = c * trainer.updates_per_eval + bad + 1
                where = (f"kept checkpoint {c} (update {c * trainer.updates_per_eval})"
                         if ckpt is not None and c > 0 else "no checkpoint kept")
                raise TrainingDiverged(
                    f"training produced NaN at update {u} (env step {u * trainer.steps_per_update}"
                    f" per member); stopped, {where}")
            state = new_state
            train_chunks.append(train_m)
            eval_chunks.append(eval_m)
            eval_times.append(time.time() - t_start)
            if bar is not None:
                ret = np.mean(eval_m.get("eval_return", [np.nan]))
                bar.set_postfix(eval_return=f"{ret:.2f}")
            if ckpt is not None:
                ckpt.save(c + 1, state, {"train": train_chunks, "eval": eval_chunks})
    finally:
        if bar is not None:
            bar.close()
        PROGRESS.bar = None
    wall = time.time() - t_start
    compile_s = (PROGRESS.first_update_time - t_start) if PROGRESS.first_update_time else None
    evals = _stack(eval_chunks)
    n_evals = len(eval_chunks)
    return RunResult(state=_gather_state(state, mesh), train=_stack(train_chunks), eval=evals,
                     eval_steps=[i * trainer.updates_per_eval * trainer.steps_per_update
                                 for i in range(n_evals)],
                     eval_times=eval_times, wall_s=wall, compile_s=compile_s, started_at=t_start,
                     compile_times=compile_times,
                     resumed_from=resumed_from, devices=mesh.devices.size,
                     steps_per_update=trainer.steps_per_update)


def _first_bad_update(train_m: dict) -> int:
    arr = np.stack([np.asarray(v, np.float64).mean(-1) for v in train_m.values()])
    bad = np.isnan(arr).any(0)
    return int(np.argmax(bad)) if bad.any() else len(bad) - 1


__all__ = ["run", "RunResult", "TrainingDiverged", "on_update", "params_digest", "choose_mesh"]
