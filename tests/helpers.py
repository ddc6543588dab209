"""Shared pieces of the tests: an on-disk compilation cache, the kill-and-resume check and the
off-policy engine's Pendulum learning check for a registered actor loss."""

from __future__ import annotations

import jax
import pytest

from rlx import runner

_CACHE_FLAGS = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
                "jax_persistent_cache_min_entry_size_bytes")


@pytest.fixture(scope="module")
def disk_compile_cache(tmp_path_factory):
    """Speed only: a module whose runs compile the same programs caches them on disk (takes
    effect when the module compiles first in the session). Use with
    `pytestmark = pytest.mark.usefixtures("disk_compile_cache")` after importing it."""
    old = {n: getattr(jax.config, n) for n in _CACHE_FLAGS}
    jax.config.update(_CACHE_FLAGS[0], str(tmp_path_factory.mktemp("jax_cache")))
    jax.config.update(_CACHE_FLAGS[1], 0.0)
    jax.config.update(_CACHE_FLAGS[2], 0)
    yield
    for n, v in old.items():
        jax.config.update(n, v)


def run_killed_and_resumed(trainer, keys, tmp_path):
    """(full, resumed): a whole run, and one stopped after 2 chunks then resumed; asserts the
    resumed run restarted from chunk 2 and ends with the whole run's parameters."""
    full = runner.run(trainer, keys, tmp_path / "full", progress=False)
    part = runner.run(trainer, keys, tmp_path / "killed", progress=False, stop_after_chunks=2)
    assert part.resumed_from is None
    resumed = runner.run(trainer, keys, tmp_path / "killed", progress=False)
    assert resumed.resumed_from == 2
    assert runner.params_digest(resumed.state.params) == runner.params_digest(full.state.params)
    return full, resumed


def pendulum_lr_and_lr0(register, name: str, loss_config, total_steps: int):
    """The `RunResult` of the off-policy engine on Pendulum-v1 with the actor loss
    `register(name, loss_config)` (registered only while the trainer is built): two members in
    one program, the second with lr 0 (a random policy scores about -1200)."""
    import jax.numpy as jnp

    from rlx.algos import sac

    register(name, loss_config)
    try:
        cfg = sac.SACConfig(env="Pendulum-v1", total_steps=total_steps, num_envs=8, batch_size=128,
                            grad_updates_per_step=8, min_replay_size=1_024, max_replay_size=8_000,
                            gamma=0.99, lr=2e-3, reward_scaling=0.1, actor_layers=(64, 64),
                            critic_layers=(64, 64), num_evals=3, eval_envs=16, actor_loss=name)
        trainer = sac.make_train(cfg)
    finally:
        sac.ACTOR_LOSSES.pop(name)
        sac.ACTOR_EXTRAS.pop(name)
    hp = jax.tree.map(lambda x: jnp.stack([x, x]), cfg.hparams())
    hp = hp.replace(lr=jnp.array([cfg.lr, 0.0]))
    res = runner.run(trainer, jnp.stack([jax.random.PRNGKey(1)] * 2), None, hparams=hp,
                     progress=False)
    return res
