"""Preference (reward-model) losses and score normalisation, as in Gao, Schulman & Hilton (2022),
"Scaling Laws for Reward Model Overoptimization".

Notation: a batch of N comparisons, comparison j has a chosen (preferred) and a rejected response
with reward-model scores r_c[j], r_r[j] (arrays `[N]`, or any equal shapes), optional mask m[j] in
{0, 1} (padding: comparisons with m = 0 do not count).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from rlx.losses.advantages import masked_mean


def bradley_terry_loss(chosen_scores: jax.Array, rejected_scores: jax.Array,
                       mask: jax.Array | None = None) -> jax.Array:
    """Bradley-Terry negative log-likelihood of the observed preferences (the reward-model loss):

        P(chosen > rejected) = sigmoid(r_c - r_r)
        L = mean_j -log sigmoid(r_c[j] - r_r[j])        (masked: sum_j m_j l_j / max(sum_j m_j, 1))

    Gradients: dL/dr_c[j] = -sigmoid(r_r[j] - r_c[j]) / N, dL/dr_r[j] = +sigmoid(r_r[j] - r_c[j]) / N.
    Computed with `jax.nn.log_sigmoid`, finite for any score gap. Returns a scalar.
    """
    chex.assert_equal_shape([chosen_scores, rejected_scores])
    losses = -jax.nn.log_sigmoid(chosen_scores - rejected_scores)
    return masked_mean(losses, mask)


def preference_accuracy(chosen_scores: jax.Array, rejected_scores: jax.Array,
                        mask: jax.Array | None = None) -> jax.Array:
    """Fraction of comparisons the scores rank correctly:

        acc = mean_j [ 1{r_c[j] > r_r[j]} + 1/2 1{r_c[j] = r_r[j]} ]     (masked as the loss)

    A tie counts 1/2 (the accuracy of breaking it by a fair coin). Returns a scalar in [0, 1].
    """
    chex.assert_equal_shape([chosen_scores, rejected_scores])
    gap = chosen_scores - rejected_scores
    correct = jnp.where(gap > 0, 1.0, jnp.where(gap == 0, 0.5, 0.0)).astype(
        jnp.result_type(gap.dtype, jnp.float32))
    return masked_mean(correct, mask)


def recentre_and_normalise(scores: jax.Array, reference_scores: jax.Array,
                           unit_variance: bool = True) -> jax.Array:
    """A reward model's scores on the paper's scale, fixed by the INITIAL policy's samples:

        s' = (s - mean(s_ref)) / std(s_ref)     unit_variance=True   (the gold RM)
        s' = s - mean(s_ref)                    unit_variance=False  (a proxy RM)

    `reference_scores` are the same reward model's scores of samples from the initial policy
    pi_init (the population std, ddof = 0), so that R(pi_init) = 0 (the curves start at R(0) = 0)
    and, for the gold RM, the initial policy's gold scores have variance 1. Gao et al. recentre
    every RM this way and normalise only the gold RM's variance; proxy scores keep their own scale
    (they only rank samples for best-of-n, and the RL reward's scale is the proxy's own).

    Shapes: `scores` `[..., N]`, `reference_scores` `[..., M]` with the same leading (e.g. per-RM)
    axes; the mean and std are taken over the last axis of `reference_scores`. The std must be
    > 0 (a constant reference gives inf / nan).
    """
    chex.assert_rank(reference_scores, scores.ndim)
    chex.assert_equal_shape_prefix([scores, reference_scores], scores.ndim - 1)
    centred = scores - jnp.mean(reference_scores, axis=-1, keepdims=True)
    if not unit_variance:
        return centred
    return centred / jnp.std(reference_scores, axis=-1, keepdims=True)
