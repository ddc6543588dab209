"""Supervised warm start of a sequence policy on a task's noisy solution traces.

    L(theta) = - sum_{i,t} m_it log pi_theta(y_it | prompt_i, y_i,<t) / sum_{i,t} m_it

over fresh batches of training-split prompts and their demonstrations
(`Task.demonstrations(key, problem, noise)`: a fraction `noise` of the traces carries an
error), one `lax.scan` of `steps` Adam steps. A short run leaves a partly competent
policy, the starting point LLM RL assumes; `rlx.checkpoint.save_pytree` stores it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

from rlx.lm import model as lm
from rlx.lm.tasks import Task
from rlx.optim import optimizer_step, scale_by_global_norm_clip


@dataclasses.dataclass(frozen=True)
class SFTConfig:
    steps: int = 1000
    batch_size: int = 128
    lr: float = 1e-3
    max_grad_norm: float = 1.0
    noise: float = 0.2  # fraction of demonstrations with an injected error

    def validate(self) -> None:
        for name in ("steps", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"SFTConfig.{name} must be an int >= 1, got {v!r}")
        if not self.lr > 0:
            raise ValueError(f"SFTConfig.lr must be > 0, got {self.lr!r}")
        if not 0 <= self.noise <= 1:
            raise ValueError(f"SFTConfig.noise must be in [0, 1], got {self.noise!r}")


def sft_loss(params: Any, cfg: lm.LMConfig, tokens: jax.Array, mask: jax.Array,
             prompt_length: int) -> jax.Array:
    """Mean negative log-likelihood of the completion tokens (columns >= prompt_length)."""
    lp, _ = lm.token_log_probs(params, cfg, tokens, mask)
    m = mask[:, prompt_length:].astype(jnp.float32)
    return -jnp.sum(lp[:, prompt_length - 1:] * m) / jnp.maximum(m.sum(), 1.0)


def make_sft(task: Task, cfg: lm.LMConfig, config: SFTConfig):
    """`train(key) -> (params, {"loss": [steps]})`: the whole warm start as one program."""
    config.validate()
    Lp = task.prompt_length
    tx = optax.chain(scale_by_global_norm_clip(config.max_grad_norm), optax.scale_by_adam(),
                     optax.scale_by_schedule(optax.cosine_decay_schedule(1.0, config.steps, 0.1)),
                     optax.scale(-config.lr))

    def step(carry, key):
        params, opt_state = carry
        k_prompt, k_demo = jax.random.split(key)
        pr = task.prompts(k_prompt, config.batch_size, "train")
        completion, cmask = task.demonstrations(k_demo, pr.problem, config.noise)
        tokens = jnp.concatenate([pr.tokens, completion], axis=1)
        mask = jnp.concatenate([pr.mask, cmask], axis=1)
        loss, grads = jax.value_and_grad(sft_loss)(params, cfg, tokens, mask, Lp)
        params, opt_state, _ = optimizer_step(tx, params, opt_state, grads)
        return (params, opt_state), loss

    def train(key: jax.Array) -> tuple[Any, dict[str, jax.Array]]:
        k_init, k_steps = jax.random.split(key)
        params = lm.init_params(cfg, k_init)
        (params, _), losses = jax.lax.scan(step, (params, tx.init(params)),
                                           jax.random.split(k_steps, config.steps))
        return params, {"loss": losses}

    return train


__all__ = ["SFTConfig", "make_sft", "sft_loss"]
