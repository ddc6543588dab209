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
from rlx.checkpoint import RunCheckpoints, fingerprint, tree_digest
from rlx.training import Trainer


class TrainingDiverged(RuntimeError):
    """Training produced NaN; the message names the update, the checkpoint is kept."""


# ---- progress: streamed from the host between compiled calls ------------------------------

class _Progress:
    """The progress bar's numbers, fed by the runner from each compiled call's train metrics.

    train_return: the stochastic (training) policy's return, a running mean over the last
    `window` finished episodes of all members (from `episode_return_sum` / `episode_count`;
    absent until an episode has finished). pop_return: a search's (ES, EPG) population mean
    return in its last generation. eval_return: the deterministic policy's mean at the last
    evaluation. env_steps/s: env steps of all members since the loop started per second.
    """

    def __init__(self, window: int = 100):
        self.window = window
        self.reset(None, 0)

    def reset(self, bar: Any, done_updates: int) -> None:
        self.bar = bar
        self.last = done_updates
        self.first_update_time: float | None = None
        self.loop_start = time.time()
        self.env_steps = 0.0
        self.episodes: list[tuple[float, float]] = []  # (return sum, count) per update, newest last
        self.pop_return: float | None = None
        self.eval_return: float | None = None

    def record(self, updates_done: int, train: dict[str, np.ndarray], env_steps: float) -> None:
        """`train[name]` `[members, k]`: the metrics of the k updates that just finished, after
        which `updates_done` updates are done; `env_steps`: their env steps, all members."""
        if self.first_update_time is None:
            self.first_update_time = time.time()
        self.env_steps += env_steps
        if "episode_return_sum" in train and "episode_count" in train:
            sums = np.asarray(train["episode_return_sum"], np.float64).sum(0)
            counts = np.asarray(train["episode_count"], np.float64).sum(0)
            self.episodes += [(float(a), float(c)) for a, c in zip(sums, counts) if c > 0]
            while len(self.episodes) > 1 and sum(c for _, c in self.episodes[1:]) >= self.window:
                self.episodes.pop(0)
        elif "return_mean" in train:
            last = np.asarray(train["return_mean"], np.float64)[:, -1]
            if np.isfinite(last).any():
                self.pop_return = float(np.nanmean(last))
        self._show(updates_done)

    def record_eval(self, eval_return: Any) -> None:
        r = np.asarray(eval_return, np.float64)
        self.eval_return = float(np.nanmean(r)) if np.isfinite(r).any() else None
        self._show(self.last)

    def postfix(self) -> dict[str, str]:
        """What the bar shows after the count (see the class docstring)."""
        out = {}
        if self.episodes:
            total = sum(c for _, c in self.episodes)
            out["train_return(stoch)"] = (f"{sum(s for s, _ in self.episodes) / total:.2f}"
                                          f" [{int(total)} ep]")
        if self.pop_return is not None:
            out["pop_return"] = f"{self.pop_return:.2f}"
        if self.eval_return is not None:
            out["eval_return(det)"] = f"{self.eval_return:.2f}"
        dt = time.time() - self.loop_start
        if self.env_steps and dt > 0:
            out["env_steps/s"] = f"{self.env_steps / dt:,.0f}"
        return out

    def _show(self, updates_done: int) -> None:
        if self.bar is not None:
            self.bar.set_postfix(self.postfix(), refresh=False)
            if updates_done > self.last:
                self.bar.update(updates_done - self.last)
        self.last = max(self.last, updates_done)


PROGRESS = _Progress()


def on_update(update: Any, episode_return: Any) -> None:
    """Accepted by every `make_train(..., on_update=...)` for compatibility and compiles no
    callback (`host_side`): `run` streams progress from the host between compiled calls."""


on_update.host_side = True  # type: ignore[attr-defined]


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
    """A short SHA-256 of every leaf's bytes (dtype and shape included): the first 16 hex
    digits of `rlx.checkpoint.tree_digest`."""
    return tree_digest(tree)[:16]


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


def place(trainer: Trainer, members: int, devices: int | None = None
          ) -> tuple[Trainer, Any, str | None]:
    """Where `members` of `trainer` run: (the trainer, its mesh, the member axis or None).

    The one place rlx decides placement. A trainer with `place` (ES, EPG: each member shards
    its own population) is placed on `devices` devices (default: every device, all processes;
    a trainer placed by its caller keeps its mesh when `devices` is None) and its members are
    replicated (axis None). Any other trainer has its members sharded over `choose_mesh`.
    Raises `ValueError` (before any compile) when the mesh does not fit.
    """
    if trainer.place is None:
        return trainer, choose_mesh(members, devices), population.AXIS
    if devices is None and trainer.mesh is not None:
        return trainer, trainer.mesh, None
    placed = trainer.place(population.make_mesh(devices))
    return placed, placed.mesh, None


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


# Fewest env steps (per member) one call of the updates program runs: fewer updates per call
# stream progress more often, more amortise the call's dispatch.
MIN_STEPS_PER_CALL = 4096


def updates_per_call(trainer: Trainer, min_steps: int = MIN_STEPS_PER_CALL) -> int:
    """Updates in one call of the updates program: the smallest divisor k of
    `updates_per_eval` with k * steps_per_update >= `min_steps` (else all of them)."""
    upe = trainer.updates_per_eval
    return next((k for k in range(1, upe + 1)
                 if upe % k == 0 and k * trainer.steps_per_update >= min_steps), upe)


def compile_programs(trainer: Trainer, keys: jax.Array, hparams: Any, mesh: Any,
                     axis: str | None, per_call: int | None = None
                     ) -> tuple[tuple[Any, Any, Any], dict[str, float]]:
    """(init, evaluate, updates) of the population, compiled ahead of time, and the
    seconds each took to lower and compile.

    `updates` runs `per_call` updates (default `updates_per_eval`; donating its state); a
    chunk is `updates_per_eval / per_call` calls of it and one of `evaluate`, so the
    evaluation is compiled once. No program holds a host callback (JAX's persistent
    compilation cache can keep them all); each is compiled with `trainer.compiler_options`.
    Calls take arguments placed as
    `population.shard` places them (`axis=None`: replicated).
    """
    name = trainer.axis_name
    per_call = trainer.updates_per_eval if per_call is None else per_call
    if per_call < 1 or trainer.updates_per_eval % per_call:
        raise ValueError(f"updates per call {per_call} does not divide the "
                         f"{trainer.updates_per_eval} updates per evaluation")
    init = population.pmap_population(trainer.init, mesh, axis, axis_name=name)
    evaluate = population.pmap_population(trainer.evaluate, mesh, axis, axis_name=name)
    def run_updates(state: Any) -> tuple[Any, Any]:
        return trainer.run_updates(state, per_call)

    updates = population.pmap_population(run_updates, mesh, axis, donate=True, axis_name=name)
    seconds = {}
    t = time.time()
    lowered_init = init.lower(keys, hparams)
    options = trainer.compiler_options
    programs = [lowered_init.compile(compiler_options=options)]
    seconds["init"] = time.time() - t
    state = population.abstract(lowered_init.out_info, mesh, axis)  # the state's shapes
    for label, fn in (("evaluate", evaluate), ("updates", updates)):
        t = time.time()
        programs.append(fn.lower(state).compile(compiler_options=options))
        seconds[label] = time.time() - t
    return tuple(programs), seconds


def run(trainer: Trainer, keys: jax.Array, out_dir: str | os.PathLike | None = None, *,
        hparams: Any = None, devices: int | None = None, checkpoint: bool = True,
        progress: bool = True, stop_after_chunks: int | None = None,
        release_memory: bool = True, per_call: int | None = None) -> RunResult:
    """Train `len(keys)` members as one sharded program, chunk by chunk.

    keys: `[members, 2]` PRNG keys (one per seed/member). hparams: one set for all
    members or a batched `[members]` pytree (a sweep). devices: mesh size (must
    divide the members; default: the most devices that do); a trainer that shards its own
    population (ES, EPG) is placed on `devices` instead (`place`). With `out_dir` and
    `checkpoint`, each chunk is saved under `out_dir/checkpoints` and a rerun resumes.
    `stop_after_chunks` ends early (as if killed) after that many chunks in this call.
    `release_memory`: before compiling, drop JAX's caches of earlier (eager) programs and
    return freed heap to the OS (`rlx.memory`; lowers peak RSS, other jitted functions
    recompile on their next call).

    Three programs are compiled ahead of time (`compile_programs`): init, evaluate and
    `per_call` updates (default `updates_per_call(trainer)`; any divisor of
    `updates_per_eval` gives the same results); a chunk is `updates_per_eval / per_call`
    calls of the last and one of evaluate. Between calls the host updates the progress bar
    (`progress`) from the train metrics: no program holds a host callback, so all of them can
    come from JAX's persistent compilation cache (`rlx.population.configure_compilation_cache`).

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
    trainer, mesh, axis = place(trainer, members, devices)
    ckpt = None
    if out_dir is not None and checkpoint:  # refuses another run's checkpoints, before compiling
        ckpt = RunCheckpoints(Path(out_dir) / "checkpoints", fingerprint(trainer, keys, hparams))
    per_call = updates_per_call(trainer) if per_call is None else per_call
    t_start = time.time()
    PROGRESS.reset(None, 0)
    if release_memory:
        memory.release_host_memory()
    (init, evaluate, updates), compile_times = compile_programs(trainer, keys, hparams, mesh,
                                                                axis, per_call)
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

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=trainer.num_updates, initial=done_chunks * trainer.updates_per_eval,
                   unit="update", dynamic_ncols=True)
    PROGRESS.reset(bar, done_chunks * trainer.updates_per_eval)
    PROGRESS.record_eval(np.asarray(eval_chunks[-1].get("eval_return", [np.nan])))
    try:
        for c in range(done_chunks, num_chunks):
            if stop_after_chunks is not None and c - done_chunks >= stop_after_chunks:
                break
            new_state, train_m = _run_chunk(updates, state, trainer, per_call, members,
                                            c * trainer.updates_per_eval)
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
            PROGRESS.record_eval(np.asarray(eval_m.get("eval_return", [np.nan])))
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


def _run_chunk(updates: Any, state: Any, trainer: Trainer, per_call: int, members: int,
               done: int) -> tuple[Any, dict[str, np.ndarray]]:
    """`updates_per_eval` updates as calls of `updates` (`per_call` updates each) after `done`
    updates; returns the new state and the train metrics `[members, updates_per_eval]` on the
    host. Each call is dispatched before the previous call's metrics are read (and shown)."""
    parts: list[dict[str, np.ndarray]] = []

    def read(metrics: dict, upto: int) -> None:
        host = {k: np.asarray(_to_host(v)).reshape(members, per_call) for k, v in metrics.items()}
        steps = (float(host["env_steps"].sum()) if "env_steps" in host
                 else float(per_call * trainer.steps_per_update * members))
        PROGRESS.record(upto, host, steps)
        parts.append(host)

    pending = None
    for j in range(trainer.updates_per_eval // per_call):
        state, metrics = updates(state)
        if pending is not None:
            read(pending, done + j * per_call)
        pending = metrics
    read(pending, done + trainer.updates_per_eval)
    return state, {k: np.concatenate([p[k] for p in parts], axis=1) for k in parts[0]}


def _first_bad_update(train_m: dict) -> int:
    arr = np.stack([np.asarray(v, np.float64).mean(-1) for v in train_m.values()])
    bad = np.isnan(arr).any(0)
    return int(np.argmax(bad)) if bad.any() else len(bad) - 1


__all__ = ["run", "RunResult", "TrainingDiverged", "on_update", "params_digest", "choose_mesh", "place",
           "updates_per_call", "compile_programs"]
