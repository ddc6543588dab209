"""The shape every rlx trainer shares.

`make_train(config)` returns a `Trainer`: calling it, `train(key, hparams)`, runs
the whole experiment as one pure, jittable, vmappable function. Its pieces
(`init`, `update`, `evaluate`, `run_chunk`) are the same functions, exposed so
that `rlx.runner` can run a long job in checkpointed chunks with identical
results.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

Metrics = dict[str, jax.Array]


def report(on_update: Callable[[jax.Array, jax.Array], None] | None, index: jax.Array,
           value: jax.Array, after: Any) -> None:
    """Call `on_update(index, value)` on the host once `after` (the new state) is computed.

    XLA runs a host callback as soon as its own arguments are ready (PPO's episode
    return: right after the rollout, before the SGD epochs), so progress bars and
    first-update timings would run ahead of training. One element of every leaf
    of `after` is passed along (and ignored) to make the call wait for all of it.

    A program with a host callback is never stored in JAX's persistent compilation cache,
    so a hook marked `host_side` (`rlx.runner.on_update`) compiles nothing: the runner
    shows progress from the host between compiled calls instead.
    """
    if on_update is None or getattr(on_update, "host_side", False):
        return  # no hook, or the runner's (it streams progress from the host between calls)
    witness = [x.reshape(-1)[:1] for x in jax.tree.leaves(after) if x.size]
    jax.debug.callback(lambda i, v, _: on_update(i, v), index, value, witness)


@dataclasses.dataclass(frozen=True, eq=False)
class Trainer:
    """A trainer as pure functions of a state pytree.

    init(key, hparams) -> state;  update(state) -> (state, metrics);
    evaluate(state) -> eval metrics. Evaluations happen at update 0 and after
    every `updates_per_eval` updates, `num_evals` in all. `mesh`: see below.
    """

    init: Callable[[jax.Array, Any], Any]
    update: Callable[[Any], tuple[Any, Metrics]]
    evaluate: Callable[[Any], Metrics]
    default_hparams: Any
    num_evals: int
    updates_per_eval: int
    steps_per_update: int
    # Placement. Trainers that shard work inside one member (ES/EPG: the population a
    # generation evaluates) have `place(mesh) -> Trainer`, the same trainer sharded over `mesh`;
    # `rlx.runner.run` calls it with the mesh it chooses (`devices`) and replicates the members
    # (seeds) over that mesh instead of sharding them. `mesh` is the mesh a placed trainer
    # shards over (None: unplaced, one device). Every other trainer is placed by the runner
    # sharding its members over the mesh.
    mesh: Any = None
    place: Callable[[Any], "Trainer"] | None = None
    # Set by trainers whose members are shards of ONE agent (data parallelism):
    # they must be vmapped with this axis name (collectives average over it).
    axis_name: str | None = None
    # The typed config the trainer was built from (a dataclass): checkpoints record it, and a
    # resume with another config is refused (`rlx.checkpoint`).
    config: Any = None
    # Data parallelism: each member (seed) is this many shards of one agent, vmapped with
    # `axis_name`; `rlx.runner.run` repeats each seed's key once per shard.
    shards: int = 1
    # XLA options the runner compiles this trainer's programs with (None: the defaults), e.g.
    # SAC's fast CPU matmuls (`rlx.algos.sac.COMPILER_OPTIONS`).
    compiler_options: dict[str, Any] | None = None

    @property
    def num_updates(self) -> int:
        return self.updates_per_eval * (self.num_evals - 1)

    @property
    def total_env_steps(self) -> int:
        return self.num_updates * self.steps_per_update

    def run_updates(self, state: Any, length: int | None = None) -> tuple[Any, Metrics]:
        """`length` (default `updates_per_eval`) updates, one `lax.scan`; metrics stacked
        `[length]`."""
        return jax.lax.scan(lambda s, _: self.update(s), state, None,
                            length=self.updates_per_eval if length is None else length)

    def run_chunk(self, state: Any) -> tuple[Any, tuple[Metrics, Metrics]]:
        """`updates_per_eval` updates, then one evaluation."""
        state, train_metrics = self.run_updates(state)
        return state, (train_metrics, self.evaluate(state))

    def __call__(self, key: jax.Array, hparams: Any = None) -> tuple[Any, dict[str, Metrics]]:
        """The whole run: returns (final state, {"train": [U] metrics, "eval": [E] metrics})."""
        state = self.init(key, self.default_hparams if hparams is None else hparams)
        first_eval = self.evaluate(state)
        state, (train, evals) = jax.lax.scan(lambda s, _: self.run_chunk(s), state, None,
                                             length=self.num_evals - 1)
        train = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), train)
        evals = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), first_eval, evals)
        return state, {"train": train, "eval": evals}
