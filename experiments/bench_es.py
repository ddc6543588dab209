"""Speed of one ES generation; prints ONE JSON line.

    python -m experiments.bench_es                      # one XLA device per core (rlx default)
    python -m experiments.bench_es --devices 1          # one device
    python -m experiments.bench_es --with-anchor        # + evosax anchor in a subprocess, ratio

Defaults match ../shared/anchors/evosax_es.py: Brax reacher (spring), population
256, 1000-step episodes, MLP 32-32 tanh, sigma 0.05, Adam 0.01.

Fields: env_steps_per_s and generations_per_s (timed generations after the
first), compile_s (the first generation: compile + run), peak_rss_mb
(ru_maxrss after the ES generations, before anything else runs; as in
experiments.es, `rlx.memory.release_host_memory()` runs before the
generation is compiled and the compiler's freed heap is trimmed before it runs,
--keep-host-memory skips both), and
env_only_steps_per_s: the same envs (same count, same devices, same rlx env)
stepped with constant actions and no policy -- the machine's limit for this env:
the faster of two layouts, the ES evaluator's per-device chunks
(env_only_same_chunks_steps_per_s) and every env of a device at once
(env_only_all_at_once_steps_per_s). `fraction_of_env_only` compares it with ES
generations interleaved with the env-only runs (interleaved_es_steps_per_s),
so both see the same machine conditions.
With --with-anchor the anchor runs afterwards as a child process with the
caller's environment; its JSON is embedded and `speedup_vs_anchor` =
rlx env_steps_per_s / anchor env_steps_per_s (back to back, one invocation),
`anchor_peak_rss_mb` is the child's ru_maxrss. The anchor's own timed loop
includes one recompile (weak types in its state), so a second anchor run of 3x
the generations gives its steady state and `speedup_vs_anchor_steady`, the
conservative ratio (--no-anchor-steady skips it).
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ANCHOR = Path(__file__).resolve().parents[1] / ".." / "shared" / "anchors" / "evosax_es.py"


# The anchor's config (../shared/anchors/evosax_es.py): ESConfig fields, the flags' defaults.
ANCHOR_CONFIG = dict(env="reacher", backend="spring", population_size=256, episode_length=1000,
                     generations=5, sigma=0.05, lr=0.01, hidden_layers=(32, 32),
                     strategy="openai_es")


@dataclasses.dataclass
class Args:
    """bench_es's own flags; ESConfig's fields are flags too (`--population`, `--hidden`:
    old spellings of `--population-size`, `--hidden-layers`; `--generations`: timed
    generations; `--devices`: XLA CPU devices for this process, default one per core)."""

    devices: int | None = None  # XLA CPU devices for this process (default one per core)
    no_env_only: bool = False  # skip the env-only measurement
    keep_host_memory: bool = False  # skip rlx.memory.release_host_memory() before compiling
    with_anchor: bool = False  # also run the evosax anchor (same config) and print the ratio
    anchor_path: str = str(ANCHOR)
    anchor_steady: bool = True  # also run the anchor for 3x the generations to take out its recompile


def parse(argv: list[str] | None):
    """(flags, the benchmarked ESConfig)."""
    from experiments import common
    from rlx.es import ESConfig

    a, overrides = common.cli(
        __doc__.split("\n")[0], argv, Args, ESConfig, run=(),
        exclude=("total_steps", "num_evals"), defaults=ANCHOR_CONFIG,
        aliases={"population_size": ("--population",), "hidden_layers": ("--hidden",)})
    config = common.exit_on_value_error(lambda: ESConfig(**{**overrides, "num_evals": 2}))
    return a, config


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024.0  # Linux: KiB


def make_env_only(env, num_envs: int, steps: int, mesh, chunk: int | None = None):
    """A jitted `run()` stepping `num_envs` envs sharded over `mesh` with constant actions.

    `chunk`: envs stepped at once per device (sequential chunks, like the ES
    evaluator's members_per_chunk); None: all of a device's envs at once.
    """
    import jax
    import jax.numpy as jnp
    from jax.sharding import PartitionSpec as P

    from rlx import population

    def one_chunk(xs):
        keys, a = xs
        s = jax.vmap(env.reset)(keys)

        def body(carry, _):
            s, r = carry
            s, out = jax.vmap(env.step)(s, a)
            return (s, r + out.reward), None

        (_, r), _ = jax.lax.scan(body, (s, jnp.zeros(keys.shape[0])), None, length=steps)
        return r

    def local(keys, a):
        n = keys.shape[0]
        c = min(chunk or n, n)
        xs = jax.tree.map(lambda x: x.reshape((n // c, c) + x.shape[1:]), (keys, a))
        return jax.lax.map(one_chunk, xs).reshape(n)

    fn = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=P(population.AXIS),
                               out_specs=P(population.AXIS), check_vma=False))
    keys = population.shard(jax.random.split(jax.random.PRNGKey(1), num_envs), mesh)
    # constant actions passed as data (not compile-time constants XLA could fold into the physics)
    shape = (num_envs,) if env.action_spec.discrete else (num_envs, env.action_spec.size)
    actions = population.shard(jnp.zeros(shape, jnp.int32 if env.action_spec.discrete
                                          else jnp.float32), mesh)
    return lambda: jax.block_until_ready(fn(keys, actions))


def run_anchor(a, config, generations: int) -> dict:
    """One run of the anchor script (a child process); its JSON plus its peak RSS."""
    env = dict(os.environ)
    if "RLX_ORIG_XLA_FLAGS" in env:  # give the anchor the caller's XLA_FLAGS, not ours
        env["XLA_FLAGS"] = env.pop("RLX_ORIG_XLA_FLAGS")
    cmd = [sys.executable, a.anchor_path, "--env", config.env, "--backend", config.backend,
           "--population", str(config.population_size), "--episode-length",
           str(config.episode_length), "--generations", str(generations), "--sigma",
           str(config.sigma), "--lr", str(config.lr)]
    before = peak_rss_mb(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("{")][-1]
    res = json.loads(line)
    res["peak_rss_mb"] = round(max(before, peak_rss_mb(resource.RUSAGE_CHILDREN)), 1)
    res["timed_s"] = generations / res["generations_per_s"]
    return res


def anchor_measurements(a, config) -> dict:
    """The anchor as printed, and its steady state from a second, longer run.

    The anchor's timed loop recompiles `generation` once (its state's weak types
    change after the first call), so its printed rate includes a compile. With
    runs of g and 3g generations, t_gen = (T(3g) - T(g)) / 2g excludes it.
    """
    g = config.generations
    first = run_anchor(a, config, g)
    out = {"printed": first, "peak_rss_mb": first["peak_rss_mb"],
           "env_steps_per_s": first["env_steps_per_s"]}
    if a.anchor_steady:
        longer = run_anchor(a, config, 3 * g)
        per_gen = (longer["timed_s"] - first["timed_s"]) / (2 * g)
        out["steady_env_steps_per_s"] = round(
            config.population_size * config.episode_length / per_gen, 1)
        out["recompile_in_timed_loop_s"] = round(first["timed_s"] - g * per_gen, 2)
        out["longer_run"] = longer
    return out


def main(argv: list[str] | None = None) -> dict:
    os.environ.setdefault("RLX_ORIG_XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))  # before rlx
    a, config = parse(argv)
    if a.devices is not None:
        os.environ["RLX_CPU_DEVICES"] = str(a.devices)
    from experiments import common

    common.setup()
    import jax
    from jax.sharding import NamedSharding, PartitionSpec as P

    from rlx.es import make_train
    from rlx.memory import release_host_memory, trim_heap
    from rlx.es.trainer import build, chunk_size

    from rlx import runner

    trainer, _, _ = common.exit_on_value_error(
        lambda: runner.place(make_train(config), 1, a.devices))
    chunk = chunk_size(config, trainer.mesh)
    # the run's state lives replicated on the mesh (as under rlx.runner), so every
    # generation reuses the first one's executable
    replicated = NamedSharding(trainer.mesh, P())
    state = jax.jit(trainer.init, out_shardings=replicated)(jax.random.PRNGKey(0),
                                                            trainer.default_hparams)
    jax.block_until_ready(state)
    if not a.keep_host_memory:
        release_host_memory()  # env construction's cached eager-op executables, freed heap
    t0 = time.perf_counter()
    update = jax.jit(trainer.update, donate_argnums=0, out_shardings=replicated
                     ).lower(state).compile()
    if not a.keep_host_memory:
        trim_heap()  # the compiler's freed heap
    state, m = update(state)
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t0
    steps = 0.0
    t0 = time.perf_counter()
    for _ in range(config.generations):
        state, m = update(state)
        steps += float(m["env_steps"])
    dt = time.perf_counter() - t0
    rss = peak_rss_mb()
    res = {"bench": "rlx ES", "strategy": config.strategy, "env": config.env, "backend": config.backend,
           "population": config.population_size, "episode_length": config.episode_length,
           "devices": trainer.mesh.devices.size, "backend_platform": jax.default_backend(),
           "members_per_chunk": chunk,
           "env_steps_per_s": round(steps / dt, 1), "generations_per_s": round(config.generations / dt, 3),
           "compile_s": round(compile_s, 2), "peak_rss_mb": round(rss, 1),
           "released_host_memory": not a.keep_host_memory,
           "mean_return": round(float(m["return_mean"]), 2)}
    if not a.no_env_only:
        env = build(config, trainer.mesh)[0]
        same = make_env_only(env, config.population_size, config.episode_length, trainer.mesh, chunk)
        whole = make_env_only(env, config.population_size, config.episode_length, trainer.mesh)
        same(), whole()  # compile
        # interleaved rounds (ES generation, env-only in both layouts): the ratio is
        # measured under the same machine conditions even when they drift
        spent = {"es": 0.0, "same": 0.0, "whole": 0.0}
        es_steps = 0.0
        for _ in range(config.generations):
            t = time.perf_counter()
            state, m = update(state)
            es_steps += float(m["env_steps"])
            spent["es"] += time.perf_counter() - t
            for name, run in (("same", same), ("whole", whole)):
                t = time.perf_counter()
                run()
                spent[name] += time.perf_counter() - t
        n = config.generations * config.population_size * config.episode_length
        same_rate, whole_rate = n / spent["same"], n / spent["whole"]
        eo = max(same_rate, whole_rate)
        res["env_only_steps_per_s"] = round(eo, 1)
        res["env_only_same_chunks_steps_per_s"] = round(same_rate, 1)
        res["env_only_all_at_once_steps_per_s"] = round(whole_rate, 1)
        res["interleaved_es_steps_per_s"] = round(es_steps / spent["es"], 1)
        res["fraction_of_env_only"] = round(res["interleaved_es_steps_per_s"] / eo, 3)
    if a.with_anchor:
        anchor = anchor_measurements(a, config)
        res["anchor"] = anchor
        res["anchor_env_steps_per_s"] = anchor["env_steps_per_s"]
        res["anchor_peak_rss_mb"] = anchor["peak_rss_mb"]
        res["speedup_vs_anchor"] = round(res["env_steps_per_s"] / anchor["env_steps_per_s"], 2)
        res["peak_rss_vs_anchor"] = round(rss / anchor["peak_rss_mb"], 3)
        if "steady_env_steps_per_s" in anchor:
            res["anchor_steady_env_steps_per_s"] = anchor["steady_env_steps_per_s"]
            res["speedup_vs_anchor_steady"] = round(
                res["env_steps_per_s"] / anchor["steady_env_steps_per_s"], 2)
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
