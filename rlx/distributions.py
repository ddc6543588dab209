"""Action distributions for policy heads, built on distrax.

A policy network outputs *distribution parameters* (plain arrays, so they can be
stored in trajectories and vmapped); `make(head, params)` turns them into an
object with `sample`, `log_prob`, `entropy`, `kl`, `mode` and `to_env`.
Log-probabilities are over the *raw* sample (before squashing or clipping), the
quantity PPO ratios and KL penalties need. `log_prob_per_dim` gives the factors of
a factorised policy, log pi(a|s) = sum_i log pi_i(a_i|s) (shape [..., A]; [..., 1]
for a categorical), which action-dependent factorised baselines need.
"""

from __future__ import annotations

from typing import Literal

import distrax
import jax
import jax.numpy as jnp

Head = Literal["categorical", "gaussian", "tanh_gaussian"]
HEADS: tuple[str, ...] = ("categorical", "gaussian", "tanh_gaussian")


class Categorical:
    """pi(a|s) = softmax(logits)_a over `num_actions` discrete actions."""

    def __init__(self, logits: jax.Array):
        self.params = logits
        self._d = distrax.Categorical(logits=logits)

    def sample(self, key: jax.Array) -> jax.Array:
        return self._d.sample(seed=key)

    def log_prob(self, raw: jax.Array) -> jax.Array:
        return self._d.log_prob(raw.astype(jnp.int32))

    def log_prob_per_dim(self, raw: jax.Array) -> jax.Array:
        """[..., 1]: one factor (a categorical action is one dimension)."""
        return self.log_prob(raw)[..., None]

    def entropy(self, key: jax.Array | None = None) -> jax.Array:
        return self._d.entropy()

    def kl(self, other: "Categorical") -> jax.Array:
        """KL(self || other)."""
        return self._d.kl_divergence(other._d)

    def mode(self) -> jax.Array:
        return jnp.argmax(self.params, axis=-1)

    @staticmethod
    def to_env(raw: jax.Array) -> jax.Array:
        return raw


class Gaussian:
    """Diagonal Gaussian N(loc, exp(log_std)^2); the env sees clip(a, -1, 1).

    `params` = concat(loc, log_std) on the last axis (log_std is state-independent
    in `rlx.networks.ActorCritic`, as in the PPO paper's MuJoCo policy).
    """

    def __init__(self, params: jax.Array):
        self.params = params
        loc, log_std = jnp.split(params, 2, axis=-1)
        self.loc = loc
        self.scale = jnp.exp(log_std)
        self._d = distrax.MultivariateNormalDiag(loc, self.scale)

    def sample(self, key):
        return self._d.sample(seed=key)

    def log_prob(self, raw):
        return self._d.log_prob(raw)

    def log_prob_per_dim(self, raw):
        """log N(a_i; loc_i, std_i^2) per dimension, [..., A]; sums to `log_prob`."""
        return distrax.Normal(self.loc, self.scale).log_prob(raw)

    def entropy(self, key=None):
        return self._d.entropy()

    def kl(self, other: "Gaussian"):
        return self._d.kl_divergence(other._d)

    def mode(self):
        return self.to_env(self.loc)

    @staticmethod
    def to_env(raw):
        return jnp.clip(raw, -1.0, 1.0)


def _log_det_tanh_per_dim(raw: jax.Array) -> jax.Array:
    """log(1 - tanh(u_i)^2) = 2 (log 2 - u_i - softplus(-2 u_i)), per dimension."""
    return 2.0 * (jnp.log(2.0) - raw - jax.nn.softplus(-2.0 * raw))


def _log_det_tanh(raw: jax.Array) -> jax.Array:
    """sum_i log(1 - tanh(u_i)^2) = sum_i 2 (log 2 - u_i - softplus(-2 u_i))."""
    return jnp.sum(_log_det_tanh_per_dim(raw), axis=-1)


class TanhGaussian:
    """a = tanh(u), u ~ N(loc, scale^2), scale = softplus(raw_scale) + min_std.

    Brax's PPO policy head. `log_prob(u) = log N(u) - sum log(1 - tanh(u)^2)`; the
    entropy has no closed form and is estimated from one sample (as Brax does);
    KL is that of the Gaussians (tanh is a bijection, so it is exact).
    """

    min_std = 1e-3

    def __init__(self, params: jax.Array):
        self.params = params
        loc, raw_scale = jnp.split(params, 2, axis=-1)
        self.loc = loc
        self.scale = jax.nn.softplus(raw_scale) + self.min_std
        self._d = distrax.MultivariateNormalDiag(loc, self.scale)

    def sample(self, key):
        return self._d.sample(seed=key)

    def log_prob(self, raw):
        return self._d.log_prob(raw) - _log_det_tanh(raw)

    def log_prob_per_dim(self, raw):
        """log N(u_i) - log(1 - tanh(u_i)^2) per dimension, [..., A]; sums to `log_prob`."""
        return distrax.Normal(self.loc, self.scale).log_prob(raw) - _log_det_tanh_per_dim(raw)

    def entropy(self, key=None):
        ent = self._d.entropy()
        if key is None:
            return ent
        return ent + _log_det_tanh(self._d.sample(seed=key))

    def kl(self, other: "TanhGaussian"):
        return self._d.kl_divergence(other._d)

    def mode(self):
        return jnp.tanh(self.loc)

    @staticmethod
    def to_env(raw):
        return jnp.tanh(raw)


_CLASSES = {"categorical": Categorical, "gaussian": Gaussian, "tanh_gaussian": TanhGaussian}


def make(head: str, params: jax.Array):
    """The distribution of `head` with parameters `params` (network output)."""
    return _CLASSES[head](params)


def num_params(head: str, action_size: int) -> int:
    """Width of the network output for `head`."""
    return action_size if head == "categorical" else 2 * action_size
