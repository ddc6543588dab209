"""Scalar reward models over a sequence policy's samples, and the fixed "gold" reward model of
a synthetic gold/proxy over-optimisation setup (Gao, Schulman & Hilton 2022).

    r_phi(x) = w . h_last(x) + b,

where h(x) [L, width] is the final LayerNorm of the same GPT-2 trunk as `rlx.lm.TransformerLM`
(`TransformerLM(hidden=True)`: token plus position embeddings, pre-LN causal blocks) and
h_last is its row at the LAST REAL token of the sequence. Token conventions are `rlx.lm`'s: the
prompt is left-padded and the completion right-padded after its first EOS, `mask` is True on
real tokens, so the last real token is the completion's EOS (or its last token when it has
none). Positions count real tokens and attention never sees padding keys, so the score does
not depend on how much left padding a prompt has nor on anything after the last real token.

Sizes: `RM_SIZES` are proxy presets spanning about two decades of parameters (1.96: about 1.1e3 to
1.0e5 at the 2-digit addition task's vocabulary 15 and context 12); `GOLD_SIZE` is four times
the largest (about 4.0e5).

Gold reward model: a transformer of `GOLD_SIZE` TRAINED ON A TASK SIGNAL
(`rlx.algos.reward_model.make_regression_train` on `task_signal_batches`: least squares onto
the task's graded correctness, on the policy's samples and on answer variants around the correct
answer), not randomly initialised. Why: Gao et al.'s gold is a 6B RM standing in for humans, who
judge answers by what they mean, well outside what the policy writes; proxies see only
comparisons of the initial policy's samples. Our first gold was a fixed random transformer (a
rich, smooth function of the whole sequence): its proxies reached 0.71-0.77 preference accuracy,
yet RL against them raised the gold to +1.2 std and it never fell (the policy became
deterministic on sequences whose gold the proxies ranked correctly; the gold was mostly a
function of completion length). A gold that knows arithmetic is what a small proxy cannot
learn from ~1e4 comparisons: proxies learn surface features of good answers (length, plausible
digits), and optimising them finds wrong answers that look right, the over-optimisation the
paper measures.
Normalisation (as in the paper): every RM, gold and proxy, is recentred so that its mean score
on the initial policy's samples is 0; we also scale it to unit standard deviation there, so
gold and proxy scores share a scale (`normalize_head`, folded into the head's weights).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from rlx.lm.model import LMConfig, TransformerLM, positions_from_mask

Params = Any
DType = Any


@dataclasses.dataclass(frozen=True)
class RMConfig(LMConfig):
    """Shape of a reward model: the trunk of a `TransformerLM` of these sizes (an `LMConfig`,
    validated alike) plus a scalar head. `context` is the maximum sequence length."""

    layers: int = 1
    width: int = 32
    heads: int = 2

    def lm_config(self) -> LMConfig:
        """The trunk's shape."""
        return LMConfig(vocab_size=self.vocab_size, context=self.context, layers=self.layers,
                        width=self.width, heads=self.heads, mlp_ratio=self.mlp_ratio)


# Proxy presets (layers, width, heads), smallest to largest, and the gold RM's shape.
RM_SIZES: dict[str, tuple[int, int, int]] = {
    "xs": (1, 8, 2),
    "s": (1, 16, 2),
    "m": (1, 32, 2),
    "l": (2, 32, 4),
    "xl": (2, 64, 4),
}
GOLD_SIZE: tuple[int, int, int] = (2, 128, 4)


def rm_config(size: str | tuple[int, int, int], vocab_size: int, context: int) -> RMConfig:
    """The `RMConfig` of a preset name in `RM_SIZES` ("gold": `GOLD_SIZE`) or (layers, width,
    heads)."""
    if isinstance(size, str):
        if size == "gold":
            size = GOLD_SIZE
        elif size in RM_SIZES:
            size = RM_SIZES[size]
        else:
            raise ValueError(f"unknown reward-model size {size!r}; valid: "
                             f"{', '.join([*RM_SIZES, 'gold'])}")
    layers, width, heads = size
    return RMConfig(vocab_size=vocab_size, context=context, layers=layers, width=width,
                    heads=heads)


class RewardModel(nn.Module):
    """`__call__(tokens [B,L], mask [B,L]) -> [B] float32`: the scalar head on the trunk's final
    hidden state at each row's last real token (mask True)."""

    config: RMConfig
    dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, tokens, mask):
        c = self.config
        mask = mask.astype(bool)
        h, _ = TransformerLM(c.lm_config(), self.dtype, hidden=True, name="trunk")(
            tokens, positions_from_mask(mask), mask)
        last = last_real_index(mask)
        h_last = jnp.take_along_axis(h, last[:, None, None], axis=1)[:, 0]  # [B, width]
        head = nn.Dense(1, dtype=self.dtype, kernel_init=nn.initializers.normal(
            1.0 / math.sqrt(c.width)), bias_init=nn.initializers.zeros, name="head")
        return head(h_last)[:, 0].astype(jnp.float32)


def last_real_index(mask: jax.Array) -> jax.Array:
    """[B] int32: the column of each row's last True (0 for an all-False row)."""
    L = mask.shape[-1]
    return jnp.max(jnp.where(mask.astype(bool), jnp.arange(L, dtype=jnp.int32), 0), axis=-1)


@functools.partial(jax.jit, static_argnames=("config", "init_scale"))
def rm_init(config: RMConfig, key: jax.Array, init_scale: float = 1.0) -> Params:
    """GPT-2 init of the trunk (as `rlx.lm.init_params`), head weights N(0, 1/width), bias 0;
    every weight matrix and embedding (not biases, not LayerNorms) times `init_scale`. float32.
    (Jitted: config and init_scale are static.)"""
    tokens = jnp.zeros((1, 1), jnp.int32)
    params = RewardModel(config).init(key, tokens, jnp.ones((1, 1), bool))["params"]
    if init_scale == 1.0:
        return params

    def scale(path, x):
        name = path[-1].key
        return x * init_scale if name in ("kernel", "embedding") else x

    return jax.tree_util.tree_map_with_path(scale, params)


def rm_num_params(config: RMConfig) -> int:
    """Number of scalar parameters (trunk + head)."""
    shapes = jax.eval_shape(functools.partial(rm_init, config), jax.random.key(0))
    return int(sum(math.prod(x.shape) for x in jax.tree.leaves(shapes)))


def rm_score(params: Params, config: RMConfig, tokens: jax.Array, mask: jax.Array,
             dtype: DType = jnp.float32) -> jax.Array:
    """[B] float32 scores r(tokens[b]) read at each row's last real token (mask True)."""
    if tokens.ndim != 2 or mask.shape != tokens.shape:
        raise ValueError(f"tokens must be [B, L] with a mask of the same shape, got "
                         f"{tokens.shape} and {mask.shape}")
    if tokens.shape[1] > config.context:
        raise ValueError(f"tokens length {tokens.shape[1]} exceeds RMConfig.context="
                         f"{config.context}")
    chex.assert_type(tokens, int)
    params = jax.tree.map(lambda p: p.astype(dtype), params)
    return RewardModel(config, dtype).apply({"params": params}, tokens, mask)


def normalize_head(params: Params, scores: jax.Array, unit_std: bool = True) -> Params:
    """`params` with the head changed so that the given `scores` (of these params, e.g. on the
    initial policy's samples) become mean 0 (and std 1 if `unit_std`): r' = (r - mean) / std."""
    mean = jnp.mean(scores)
    std = jnp.maximum(jnp.std(scores), 1e-6) if unit_std else jnp.ones((), jnp.float32)
    head = params["head"]
    return {**params, "head": {"kernel": head["kernel"] / std,
                               "bias": (head["bias"] - mean) / std}}


__all__ = ["RMConfig", "RM_SIZES", "GOLD_SIZE", "RewardModel", "rm_config", "rm_init",
           "rm_num_params", "rm_score", "normalize_head", "last_real_index"]
