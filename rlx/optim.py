"""The one optimiser step in rlx, and the gradient transformations its trainers share.

Every learner (the on-policy engine, EPG's inner agents, the ES strategies' search
mean) applies its optax transformation through `optimizer_step`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax


def optimizer_step(tx: optax.GradientTransformation, params: Any, opt_state: Any, grads: Any,
                   axis_name: str | None = None) -> tuple[Any, Any, dict[str, jax.Array]]:
    """params <- params + tx(grads): the one optimiser step in rlx.

    With `axis_name`, gradients are first averaged over that (vmapped or sharded)
    axis, so every shard of a data-parallel agent takes the same step. Returns
    (params, opt_state, {"grad_norm": global norm of the (averaged) gradient before
    `tx`, "update_norm": global norm of the step `tx` produced}); unused norms cost
    nothing under `jit`.
    """
    if axis_name is not None:
        grads = jax.lax.pmean(grads, axis_name)
    updates, opt_state = tx.update(grads, opt_state, params)
    info = {"grad_norm": optax.tree.norm(grads), "update_norm": optax.tree.norm(updates)}
    return optax.apply_updates(params, updates), opt_state, info


def scale_by_global_norm_clip(max_norm: float | jax.Array) -> optax.GradientTransformation:
    """g <- g * min(1, max_norm / (||g|| + 1e-6)), ||g|| the global L2 norm.

    The clip of OpenAI baselines and PureJaxRL (a smooth form of
    `optax.clip_by_global_norm`); `max_norm` may be traced, and `inf` disables it.
    """
    def update(grads, state, params=None):
        gnorm = optax.tree.norm(grads)
        scale = jnp.minimum(1.0, max_norm / (gnorm + 1e-6))
        return jax.tree.map(lambda g: g * scale, grads), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def clipped_adam(lr: float | jax.Array, max_grad_norm: float | jax.Array,
                 eps: float = 1e-5) -> optax.GradientTransformation:
    """Global-norm clip (`scale_by_global_norm_clip`), Adam, step -lr: PPO's and A2C's optimiser."""
    return optax.chain(scale_by_global_norm_clip(max_grad_norm), optax.scale_by_adam(eps=eps),
                       optax.scale(-lr))


__all__ = ["optimizer_step", "scale_by_global_norm_clip", "clipped_adam"]
