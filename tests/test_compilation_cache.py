"""Warm starts: entry points turn on JAX's persistent compilation cache, and every program the
runner compiles (no host callbacks) is loaded from it on a rerun, with identical results."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TINY = dict(env="CartPole-v1", total_steps=2 * 128, num_envs=4, unroll_length=32,
            num_minibatches=2, update_epochs=1, policy_layers=(8,), value_layers=(8,),
            num_evals=2, eval_envs=2)  # a tiny PPO config

# One tiny PPO run through the entry-point setup; prints its compile times and digest.
SCRIPT = f"TINY = {TINY!r}\n" + r"""
import json, jax
from experiments import common
common.setup()
from rlx import runner
from rlx.algos import ppo
cfg = ppo.PPOConfig(**TINY)
res = runner.run(ppo.make_train(cfg, on_update=runner.on_update),
                 jax.random.split(jax.random.PRNGKey(0), 2), None, progress=False)
print(json.dumps({"compile_times": res.compile_times, "cache": jax.config.jax_compilation_cache_dir,
                  "digest": runner.params_digest(res.state.params)}))
"""


def _run(cache: str) -> dict:
    env = {**os.environ, "RLX_COMPILATION_CACHE": cache, "PYTHONPATH": str(ROOT),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}  # keep even the tiny programs
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_rerun_loads_every_program_from_the_cache(tmp_path):
    cache = tmp_path / "cache"
    cold = _run(str(cache))
    assert cold["cache"] == str(cache)
    entries = {p.name for p in cache.iterdir()}
    names = " ".join(entries)
    for program in ("jit_init", "jit_evaluate", "jit_run_updates"):  # the runner's three programs
        assert program in names, (program, sorted(entries))
    warm = _run(str(cache))
    assert warm["digest"] == cold["digest"]
    assert {p.name for p in cache.iterdir()} == entries  # nothing new was compiled
    assert sum(warm["compile_times"].values()) < 0.5 * sum(cold["compile_times"].values())


def test_cache_can_be_turned_off(tmp_path):
    assert _run("0")["cache"] is None


def test_making_a_brax_env_does_not_run_its_reset(monkeypatch):
    """The observation shape comes from a trace of `reset` (Brax's own `observation_size`
    runs `reset` op by op: hundreds of small compiles, ~10 s on CPU)."""
    import brax.envs.ant
    import brax.envs.reacher
    import jax

    from rlx import envs
    from rlx.envs.tasks import AntGoalEnv

    concrete = []
    for cls in (brax.envs.reacher.Reacher, brax.envs.ant.Ant):
        original = cls.reset

        def reset(self, rng, _original=original):
            concrete.append(not isinstance(rng, jax.core.Tracer))
            return _original(self, rng)

        monkeypatch.setattr(cls, "reset", reset)
    made = [envs.make("reacher"), AntGoalEnv(goal=jax.numpy.zeros(2))]  # AntGoal: EPG's task
    assert [e.obs_shape for e in made] == [(11,), (27,)]
    assert concrete and not any(concrete)  # traced, never run


def test_the_runners_programs_share_one_trace_of_the_env_step(monkeypatch):
    """init, evaluate and updates step the same env: its `_step` is traced once, not once per
    program (for Brax the trace of the physics costs seconds)."""
    import jax

    from rlx import runner
    from rlx.algos import ppo
    from rlx.envs.adapters import GymnaxEnv

    calls = {"_step": 0, "_reset": 0}
    for name in calls:
        original = getattr(GymnaxEnv, name)

        def counted(self, *args, _original=original, _name=name):
            calls[_name] += 1
            return _original(self, *args)

        monkeypatch.setattr(GymnaxEnv, name, counted)
    trainer = ppo.make_train(ppo.PPOConfig(**TINY))
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    hparams = runner.broadcast_hparams(trainer.default_hparams, 2)
    trainer, mesh, axis = runner.place(trainer, 2)
    runner.compile_programs(trainer, keys, hparams, mesh, axis)
    assert calls == {"_step": 1, "_reset": 1}
