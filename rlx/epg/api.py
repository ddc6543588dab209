"""Saving, loading and using a learned loss; the PPO baseline on the same task.

    save_loss(path, phi, config) / load_loss(path) -> (phi, config)   rlx.checkpoint + config.json
    train_with_loss(phi, task, key, steps, config)  -> learning curve of a fresh agent
    train_ppo(task, key, steps, config, lr=...)     -> the same curve for rlx PPO

Both curves report the mean return of `config.eval_envs` episodes of the
deterministic policy against env steps of training, so they compare directly;
both are pure jittable functions of (task, key), so `jax.vmap` runs many tasks.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from rlx.checkpoint import restore_pytree, save_pytree
from rlx.epg.config import EPGConfig
from rlx.epg.inner import Inner


def _config_to_json(config: EPGConfig) -> dict:
    return dataclasses.asdict(config)


def _config_from_json(d: dict) -> EPGConfig:
    fields = {f.name for f in dataclasses.fields(EPGConfig)}
    kw = {k: v for k, v in d.items() if k in fields}
    for k in ("policy_layers", "dense"):
        if k in kw:
            kw[k] = tuple(kw[k])
    if "conv" in kw:
        kw["conv"] = tuple(tuple(l) for l in kw["conv"])
    if "strategy_kwargs" in kw:
        kw["strategy_kwargs"] = tuple((k, v) for k, v in kw["strategy_kwargs"])
    return EPGConfig(**kw)


def save_loss(path: str | Path, loss_params: Any, config: EPGConfig) -> None:
    """Write the loss parameters (`path/loss_params`, `rlx.checkpoint.save_pytree`) and the
    config that shapes them (`path/config.json`) under `path`."""
    path = Path(path).absolute()
    path.mkdir(parents=True, exist_ok=True)
    save_pytree(path / "loss_params", loss_params)
    (path / "config.json").write_text(json.dumps(_config_to_json(config), indent=2) + "\n")


def load_loss(path: str | Path) -> tuple[Any, EPGConfig]:
    """(loss parameters, EPGConfig) saved by `save_loss`; a missing or damaged `path` is a
    one-line ValueError naming it."""
    path = Path(path).absolute()
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{path} holds no saved loss (no config.json; expected a directory "
                         f"written by rlx.epg.save_loss)")
    try:
        config = _config_from_json(json.loads(config_file.read_text()))
    except (ValueError, TypeError, AttributeError) as e:
        raise ValueError(f"{config_file} is damaged ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from None
    template = Inner(config).init_loss_params(jax.random.PRNGKey(0))
    return restore_pytree(path / "loss_params", template), config


def train_with_loss(loss_params: Any, task: jax.Array, key: jax.Array, steps: int,
                    config: EPGConfig, num_points: int = 11) -> dict:
    """Train a fresh agent on `task` with the learned loss alone (alpha = 0) for >= `steps`.

    Returns {"env_steps": [P], "eval_return": [P], "train_return": [U]}.
    """
    inner = Inner(config)
    updates = config.updates_for_steps(steps)
    return inner.curve(loss_params, task, key, updates, num_points, alpha=0.0)


def ppo_config(config: EPGConfig, steps: int, lr: float = 3e-3, num_points: int = 11, **kw):
    """rlx PPO at the EPG agent's scale: same envs, policy widths and eval episodes.

    PPO validates an env *name*; the env itself is passed to `make_train`, so the
    name is a placeholder.
    """
    from rlx.algos.ppo import PPOConfig

    base = dict(env="reacher", total_steps=steps, num_envs=config.num_envs,
                unroll_length=2 * config.rollout_length, num_minibatches=2, update_epochs=4,
                lr=lr, policy_layers=tuple(config.policy_layers),
                value_layers=tuple(config.policy_layers), activation=config.activation,
                normalize_observations=config.normalize_observations, gamma=config.gamma,
                num_evals=num_points, eval_envs=config.eval_envs, max_grad_norm=0.5)
    base.update(kw)
    return PPOConfig(**base)


def train_ppo(task: jax.Array, key: jax.Array, steps: int, config: EPGConfig,
              lr: float | jax.Array = 3e-3, num_points: int = 11, **ppo_overrides) -> dict:
    """rlx PPO (`rlx.algos.ppo.make_train`) on the same task: {"env_steps", "eval_return"}.

    `lr` may be traced (it enters PPO's hyper-parameters), so a sweep is one vmap.
    """
    from rlx.algos import ppo

    pc = ppo_config(config, steps, 3e-3, num_points, **ppo_overrides)
    trainer = ppo.make_train(pc, env=config.task_family().make_env(task))
    hp = trainer.default_hparams.replace(lr=jnp.asarray(lr, jnp.float32))
    _, metrics = trainer(key, hp)
    n = metrics["eval"]["eval_return"].shape[0]
    env_steps = jnp.arange(n) * trainer.updates_per_eval * trainer.steps_per_update
    return {"env_steps": env_steps, "eval_return": metrics["eval"]["eval_return"],
            "train_return": metrics["train"]["episode_return"]}


__all__ = ["save_loss", "load_loss", "train_with_loss", "train_ppo", "ppo_config"]
