"""Reward-model training from pairwise comparisons (Bradley-Terry), the comparisons themselves
(pairs of a policy's samples for the same prompt labelled by a gold scorer), and adapters that
turn a reward model into `rlx.algos.grpo` reward / score hooks.

    L(phi) = mean_i -log sigmoid(r_phi(chosen_i) - r_phi(rejected_i))

over minibatches drawn uniformly (with replacement) from the first `n_used` comparisons, one
`lax.scan` of `steps` Adam steps from a fresh `rm_init`. `n_used` is traced, so a data-size sweep
is a `vmap` over it (and over seeds) of one program per reward-model size (sizes differ in shape,
so each size is its own program).

Comparisons (`label_comparisons`): each prompt's G >= 2 samples are paired (0, 1), (2, 3), ...;
the preferred one has the higher gold score. Ties are DROPPED: with a continuous gold they occur
only when the two completions are identical (often, for a peaked SFT policy), a pair that
carries no preference and would only count as a coin flip in accuracies. Dropped pairs are
moved to the end (`valid` False) so that the first `n_valid` are usable and any prefix of them
is a uniformly random subset (pairs are shuffled first).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from rlx.lm import model as lm
from rlx.lm import reward_model as rm
from rlx.lm.tasks import Task
from rlx.losses.preference import bradley_terry_loss
from rlx.optim import optimizer_step, scale_by_global_norm_clip

Params = Any
ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]  # (tokens [B,L], mask [B,L]) -> [B]
RewardFn = Callable[..., jax.Array]  # grpo hook: (problem, tokens, mask, completion, cmask) -> [n]


@dataclasses.dataclass(frozen=True)
class RMTrainConfig:
    """Bradley-Terry training: `steps` Adam steps on minibatches of `batch_size` comparisons,
    lr cosine-decayed to 10% (lr 0 is allowed: a no-op control), global-norm clip."""

    steps: int = 500
    batch_size: int = 64
    lr: float = 1e-3
    max_grad_norm: float = 1.0

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise a one-line ValueError naming the first bad value."""
        for name in ("steps", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"RMTrainConfig.{name} must be an int >= 1, got {v!r}")
        if not self.lr >= 0:
            raise ValueError(f"RMTrainConfig.lr must be >= 0, got {self.lr!r}")
        if not self.max_grad_norm > 0:
            raise ValueError(f"RMTrainConfig.max_grad_norm must be > 0, got {self.max_grad_norm!r}")


def _pair_scores(params, config, chosen_tokens, chosen_mask, rejected_tokens, rejected_mask):
    """(r(chosen) [N], r(rejected) [N]) in one forward over the 2N sequences."""
    n = chosen_tokens.shape[0]
    s = rm.rm_score(params, config, jnp.concatenate([chosen_tokens, rejected_tokens]),
                    jnp.concatenate([chosen_mask, rejected_mask]))
    return s[:n], s[n:]


def _check_pairs(chosen_tokens, chosen_mask, rejected_tokens, rejected_mask) -> None:
    chex.assert_rank(chosen_tokens, 2)
    chex.assert_equal_shape([chosen_tokens, chosen_mask, rejected_tokens, rejected_mask])


def _optimizer(train_config: RMTrainConfig) -> optax.GradientTransformation:
    """Adam, lr cosine-decayed to 10%, global-norm clip."""
    return optax.chain(scale_by_global_norm_clip(train_config.max_grad_norm),
                       optax.scale_by_adam(),
                       optax.scale_by_schedule(optax.cosine_decay_schedule(
                           1.0, train_config.steps, 0.1)),
                       optax.scale(-train_config.lr))


def _fit(rm_config: rm.RMConfig, train_config: RMTrainConfig, key: jax.Array,
         step_loss: Callable[[Params, jax.Array], tuple[jax.Array, Any]]):
    """A fresh `rm_init(rm_config, k_init)` after `train_config.steps` optimiser steps, step j
    minimising `step_loss(params, k_j) -> (loss, aux)` (one `lax.scan`). Returns (params,
    (losses [steps], aux [steps, ...])); the optimiser is `_optimizer(train_config)`."""
    tx = _optimizer(train_config)
    k_init, k_steps = jax.random.split(key)
    params = rm.rm_init(rm_config, k_init)

    def step(carry, k):
        params, opt_state = carry
        (loss, aux), grads = jax.value_and_grad(step_loss, has_aux=True)(params, k)
        params, opt_state, _ = optimizer_step(tx, params, opt_state, grads)
        return (params, opt_state), (loss, aux)

    (params, _), out = jax.lax.scan(step, (params, tx.init(params)),
                                    jax.random.split(k_steps, train_config.steps))
    return params, out


def make_rm_train(rm_config: rm.RMConfig, train_config: RMTrainConfig):
    """`train(key, chosen_tokens [N,L], chosen_mask, rejected_tokens, rejected_mask, n_used)
    -> (params, {"loss": [steps], "accuracy": [steps]})`: Bradley-Terry training of a fresh
    `rm_init(rm_config, k_init)` on the first `n_used` (int32, traced; clipped to [1, N])
    comparisons, minibatch accuracy = fraction with r(chosen) > r(rejected). Pure and
    vmappable over key and n_used."""
    rm_config.validate()
    train_config.validate()
    B = train_config.batch_size

    def loss_fn(params, ct, cm, rt, rmask):
        c, r = _pair_scores(params, rm_config, ct, cm, rt, rmask)
        return bradley_terry_loss(c, r), jnp.mean((c > r).astype(jnp.float32))

    def train(key, chosen_tokens, chosen_mask, rejected_tokens, rejected_mask, n_used):
        _check_pairs(chosen_tokens, chosen_mask, rejected_tokens, rejected_mask)
        N = chosen_tokens.shape[0]
        n = jnp.clip(jnp.asarray(n_used, jnp.int32), 1, N)

        def step_loss(params, k):
            idx = jax.random.randint(k, (B,), 0, n)
            return loss_fn(params, chosen_tokens[idx], chosen_mask[idx], rejected_tokens[idx],
                           rejected_mask[idx])

        params, (losses, accs) = _fit(rm_config, train_config, key, step_loss)
        return params, {"loss": losses, "accuracy": accs}

    return train


BatchFn = Callable[[jax.Array], tuple[jax.Array, jax.Array, jax.Array]]


def make_regression_train(rm_config: rm.RMConfig, train_config: RMTrainConfig,
                          sample_batch: BatchFn):
    """`train(key) -> (params, {"loss": [steps]})`: a fresh `rm_init(rm_config, k_init)` fitted by
    least squares, L(phi) = mean_b (r_phi(x_b) - y_b)^2, to minibatches
    `sample_batch(key) -> (tokens [B,L], mask [B,L], targets [B])` drawn afresh every step (the
    optimiser is `make_rm_train`'s). How a gold reward model learns a task signal."""
    rm_config.validate()
    train_config.validate()

    def step_loss(params, k):
        tokens, mask, targets = sample_batch(k)
        chex.assert_rank([tokens, mask, targets], [2, 2, 1])
        scores = rm.rm_score(params, rm_config, tokens, mask)
        return jnp.mean((scores - targets) ** 2), ()

    def train(key):
        params, (losses, _) = _fit(rm_config, train_config, key, step_loss)
        return params, {"loss": losses}

    return train


def task_signal_batches(task: Task, tokens: jax.Array, mask: jax.Array, problem: jax.Array,
                        batch_size: int) -> BatchFn:
    """The gold reward model's training data: `sample_batch(key)` returns `batch_size` sequences
    with targets `task.graded_reward`, half drawn uniformly from the given policy samples
    (tokens, mask [M, P+T], their problems [M, K]: what the policy writes) and half
    `task.answer_variants` of fresh training prompts (near and far misses the policy rarely
    writes), so the gold model is trained beyond the policy's support."""
    if batch_size < 2 or batch_size % 2:
        raise ValueError(f"task_signal_batches: batch_size must be even >= 2, got {batch_size}")
    chex.assert_rank([tokens, mask, problem], [2, 2, 2])
    P = task.prompt_length
    targets = task.graded_reward(problem, tokens[:, P:], mask[:, P:])
    half = batch_size // 2

    def sample_batch(key):
        k_pick, k_prompts, k_var = jax.random.split(key, 3)
        idx = jax.random.randint(k_pick, (half,), 0, tokens.shape[0])
        prompts = task.prompts(k_prompts, half, "train")
        comp, cmask = task.answer_variants(k_var, prompts.problem)
        var_tokens = jnp.concatenate([prompts.tokens, comp], axis=1)
        var_mask = jnp.concatenate([prompts.mask, cmask], axis=1)
        return (jnp.concatenate([tokens[idx], var_tokens]),
                jnp.concatenate([mask[idx].astype(bool), var_mask]),
                jnp.concatenate([targets[idx], task.graded_reward(prompts.problem, comp, cmask)]))

    return sample_batch


def preference_accuracy(params: Params, rm_config: rm.RMConfig, chosen_tokens: jax.Array,
                        chosen_mask: jax.Array, rejected_tokens: jax.Array,
                        rejected_mask: jax.Array, valid: jax.Array | None = None) -> jax.Array:
    """Fraction of (valid) comparisons the RM orders like the labels: 1[r(c) > r(r)], a tie 1/2."""
    _check_pairs(chosen_tokens, chosen_mask, rejected_tokens, rejected_mask)
    c, r = _pair_scores(params, rm_config, chosen_tokens, chosen_mask, rejected_tokens,
                        rejected_mask)
    hit = (c > r).astype(jnp.float32) + 0.5 * (c == r)
    w = jnp.ones_like(hit) if valid is None else valid.astype(jnp.float32)
    return jnp.sum(hit * w) / jnp.maximum(jnp.sum(w), 1.0)


@struct.dataclass
class Comparisons:
    """N labelled pairs: chosen/rejected tokens and masks [N,L], their gold scores [N], and
    `valid` [N] (False: a tie, dropped; all ties come after all valid pairs)."""

    chosen_tokens: jax.Array
    chosen_mask: jax.Array
    rejected_tokens: jax.Array
    rejected_mask: jax.Array
    chosen_gold: jax.Array
    rejected_gold: jax.Array
    valid: jax.Array

    @property
    def n_valid(self) -> jax.Array:
        return jnp.sum(self.valid, dtype=jnp.int32)

    def pairs(self) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
        """(chosen_tokens, chosen_mask, rejected_tokens, rejected_mask): `train`'s data."""
        return self.chosen_tokens, self.chosen_mask, self.rejected_tokens, self.rejected_mask


def label_comparisons(key: jax.Array, gold_fn: ScoreFn, tokens: jax.Array,
                      mask: jax.Array) -> Comparisons:
    """Pair each prompt's samples (tokens, mask [n, G, L], G even >= 2) as (0, 1), (2, 3), ...,
    prefer the higher `gold_fn(tokens [B,L], mask [B,L]) -> [B]` score; shuffle the n G / 2
    pairs with `key` and move ties (dropped, `valid` False) to the end."""
    if tokens.ndim != 3 or mask.shape != tokens.shape or tokens.shape[1] < 2 or tokens.shape[1] % 2:
        raise ValueError(f"label_comparisons: tokens and mask must be [n, G, L] with G even >= 2, "
                         f"got {tokens.shape} and {mask.shape}")
    n, G, L = tokens.shape
    gold = gold_fn(tokens.reshape(n * G, L), mask.reshape(n * G, L)).reshape(n * G // 2, 2)
    tok = tokens.reshape(n * G // 2, 2, L)
    msk = mask.reshape(n * G // 2, 2, L)
    valid = gold[:, 0] != gold[:, 1]
    c = (gold[:, 1] > gold[:, 0]).astype(jnp.int32)  # which member is chosen
    order = jax.random.permutation(key, n * G // 2)
    order = order[jnp.argsort(~valid[order], stable=True)]  # valid first, shuffled within
    rows, c = order, c[order]
    return Comparisons(chosen_tokens=tok[rows, c], chosen_mask=msk[rows, c],
                       rejected_tokens=tok[rows, 1 - c], rejected_mask=msk[rows, 1 - c],
                       chosen_gold=gold[rows, c], rejected_gold=gold[rows, 1 - c],
                       valid=valid[rows])


def sample_groups(params: Params, lm_config: lm.LMConfig, key: jax.Array, prompts: jax.Array,
                  prompt_mask: jax.Array, group_size: int, max_new_tokens: int, eos_id: int,
                  pad_id: int, temperature: float = 1.0) -> tuple[jax.Array, jax.Array]:
    """(tokens, mask) [n, G, P+T]: G sampled completions of each of the n prompts [n,P] (prompt
    then completion; mask = prompt mask then completion mask)."""
    n = prompts.shape[0]
    rep = lambda x: jnp.repeat(x, group_size, axis=0)  # noqa: E731
    s = lm.sample(params, lm_config, key, rep(prompts), rep(prompt_mask),
                  max_new_tokens=max_new_tokens, eos_id=eos_id, pad_id=pad_id,
                  temperature=temperature, group_size=group_size)
    mask = jnp.concatenate([rep(prompt_mask).astype(bool), s.completion_mask], axis=1)
    return s.tokens.reshape(n, group_size, -1), mask.reshape(n, group_size, -1)


def unique_sequences(tokens: jax.Array, mask: jax.Array
                     ) -> tuple[jax.Array, jax.Array, np.ndarray]:
    """(unique_tokens [U,L], unique_mask [U,L], inverse [B]) with tokens[i] = unique_tokens[
    inverse[i]] on its mask: the distinct sequences of a batch (host-side), so that a scorer runs
    once per distinct sequence (best-of-n's N samples of a peaked policy repeat a lot).
    Positions outside the mask are ignored."""
    t = np.asarray(tokens)
    m = np.asarray(mask).astype(bool)
    if t.ndim != 2 or m.shape != t.shape:
        raise ValueError(f"unique_sequences: tokens and mask must be [B, L], got {t.shape} and "
                         f"{m.shape}")
    rows = np.concatenate([np.where(m, t, -1), m], axis=1)
    _, first, inverse = np.unique(rows, axis=0, return_index=True, return_inverse=True)
    return jnp.asarray(t[first]), jnp.asarray(m[first]), inverse.reshape(-1)


def score_fn(params: Params, rm_config: rm.RMConfig) -> ScoreFn:
    """(tokens [B,L], mask [B,L]) -> [B] float32: `rm_score` with these params."""
    return lambda tokens, mask: rm.rm_score(params, rm_config, tokens, mask)


def as_reward_fn(score: ScoreFn) -> RewardFn:
    """A (tokens, mask) scorer as an `rlx.algos.grpo` `reward_fn` / `score_fns` entry:
    (problem, tokens, mask, completion, completion_mask) -> score(tokens, mask)."""
    return lambda problem, tokens, mask, completion, completion_mask: score(tokens, mask)


__all__ = ["RMTrainConfig", "make_rm_train", "preference_accuracy", "Comparisons",
           "label_comparisons", "sample_groups", "score_fn", "as_reward_fn"]
