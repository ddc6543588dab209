"""A random tabular MDP seen through random feature observations (for exact numerical checks).

States s in {0..S-1} are observed as feature vectors phi(s) in R^D; actions a in {0..A-1};

    s_0 ~ Uniform(S),   s' ~ softmax(log_p[s, a, :]),   r = reward[s, a],
    terminated ~ Bernoulli(term_prob) independently at every step,

with a time limit of `max_episode_steps`, so rollouts hold both terminations and
truncations. It also carries a random linear-softmax reference policy on the features,
pibar(.|s) = softmax(phi(s) @ ref_weights), for KL-regularised objectives.
The arrays may be traced: build the env inside a jitted function to make the MDP an argument.
"""

from __future__ import annotations

from typing import Any

import chex
import jax
import jax.numpy as jnp
from flax import struct

from rlx.envs.base import ActionSpec, Env


@struct.dataclass
class MDPArrays:
    """The arrays of a random MDP.

    Attributes:
      features: `[S, D]` observation phi(s) of each state.
      log_p: `[S, A, S]` unnormalised log transition probabilities.
      reward: `[S, A]` reward of each state-action pair.
      ref_weights: `[D, A]` weights of the reference policy softmax(phi @ ref_weights).
    """

    features: jax.Array
    log_p: jax.Array
    reward: jax.Array
    ref_weights: jax.Array


def random_mdp_arrays(key: jax.Array, num_states: int = 5, num_actions: int = 3,
                      obs_dim: int = 4) -> MDPArrays:
    """Standard-normal features, rewards and reference weights; transition logits N(0, 2^2)."""
    for name, v in (("num_states", num_states), ("num_actions", num_actions), ("obs_dim", obs_dim)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"random MDP needs {name} >= 1, got {v!r}")
    S, A, D = num_states, num_actions, obs_dim
    k_phi, k_p, k_r, k_ref = jax.random.split(key, 4)
    return MDPArrays(features=jax.random.normal(k_phi, (S, D)),
                     log_p=2.0 * jax.random.normal(k_p, (S, A, S)),
                     reward=jax.random.normal(k_r, (S, A)),
                     ref_weights=jax.random.normal(k_ref, (D, A)))


class RandomMDP(Env):
    """The MDP of `arrays` as an `rlx.envs.Env` (sample it with `rlx.rollout.rollout`)."""

    name = "random-mdp"

    def __init__(self, arrays: MDPArrays, term_prob: float = 0.15, max_episode_steps: int = 4):
        S, A = arrays.reward.shape
        chex.assert_shape(arrays.log_p, (S, A, S))
        chex.assert_axis_dimension(arrays.features, 0, S)
        chex.assert_shape(arrays.ref_weights, (arrays.features.shape[1], A))
        if not 0.0 <= term_prob <= 1.0:
            raise ValueError(f"term_prob must be in [0, 1], got {term_prob!r}")
        if max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps!r}")
        self.arrays = arrays
        self.num_states = S
        self.term_prob = term_prob
        self.obs_shape = (arrays.features.shape[1],)
        self.action_spec = ActionSpec(discrete=True, size=A)
        self.max_episode_steps = max_episode_steps

    def reference_log_probs(self, obs: jax.Array) -> jax.Array:
        """log pibar(.|s) = log_softmax(phi(s) @ ref_weights), `[..., A]`."""
        return jax.nn.log_softmax(obs @ self.arrays.ref_weights, -1)

    def _reset(self, key: jax.Array) -> tuple[Any, jax.Array]:
        s = jax.random.randint(key, (), 0, self.num_states)
        return s, self.arrays.features[s]

    def _step(self, key, s, action, t):
        a = self.arrays
        k_next, k_term, k_reset = jax.random.split(key, 3)
        s_next = jax.random.categorical(k_next, a.log_p[s, action])
        terminated = jax.random.bernoulli(k_term, self.term_prob)
        truncated = t >= self.max_episode_steps
        s_new = jnp.where(terminated | truncated,
                          jax.random.randint(k_reset, (), 0, self.num_states), s_next)
        return s_new, a.features[s_new], a.reward[s, action], terminated, a.features[s_next], truncated


__all__ = ["MDPArrays", "random_mdp_arrays", "RandomMDP"]
