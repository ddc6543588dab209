"""Every policy and value network in rlx (flax): MLP torsos, the actor-critic, the
factorised action-dependent baseline, EPG's Gaussian policy, soft Q-learning's Q-network, SAC's
twin critics (`ContinuousQ`) and ES's deterministic policy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rlx.envs.base import Env

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "tanh": nn.tanh, "relu": nn.relu, "swish": nn.swish, "silu": nn.silu, "elu": nn.elu,
}


def orthogonal(scale: float = 1.0):
    """Orthogonal initialiser (Saxe et al. 2014), the distribution of flax's.

    Q of the QR decomposition of a Gaussian matrix, signs fixed so diag(R) > 0
    (Haar-distributed), times `scale`. Computed with two passes of Gram-Schmidt
    in plain JAX instead of LAPACK's QR: jaxlib 0.10.2's batched CPU QR kernel
    deadlocks when a population of networks is initialised under `vmap`.
    """

    def init(key, shape, dtype=jnp.float32):
        rows, cols = int(np.prod(shape[:-1])), int(shape[-1])
        tall = (max(rows, cols), min(rows, cols))
        a = jax.random.normal(key, tall, jnp.float32)
        q = _gram_schmidt(a)
        if rows < cols:
            q = q.T
        return (scale * q).reshape(shape).astype(dtype)

    return init


@jax.jit  # flax traces every initialiser again on each `apply` (a shape check): jit caches it
def _gram_schmidt(a: jax.Array) -> jax.Array:
    """Orthonormal columns spanning a's leading columns (CGS2): the Q of a = QR, diag(R) > 0."""
    n = a.shape[1]

    def body(j, q):
        v = a[:, j]
        mask = (jnp.arange(n) < j).astype(a.dtype)
        for _ in range(2):  # re-orthogonalise once: numerically as good as Householder here
            v = v - q @ (mask * (q.T @ v))
        return q.at[:, j].set(v / jnp.linalg.norm(v))

    return jax.lax.fori_loop(0, n, body, jnp.zeros_like(a))


def _ortho(scale: float):
    return orthogonal(scale)


class MLP(nn.Module):
    """Dense layers with orthogonal init (gain sqrt(2) hidden, `out_scale` last)."""

    layers: Sequence[int]
    out_dim: int
    activation: str = "tanh"
    out_scale: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        for width in self.layers:
            x = act(nn.Dense(width, kernel_init=_ortho(np.sqrt(2)),
                             bias_init=nn.initializers.zeros)(x))
        return nn.Dense(self.out_dim, kernel_init=_ortho(self.out_scale),
                        bias_init=nn.initializers.zeros)(x)


class ActorCritic(nn.Module):
    """Separate policy and value MLPs (no shared parameters).

    Returns (distribution parameters, value). For `gaussian` the log-std is a
    learned, state-independent vector (the PPO paper's MuJoCo policy); for
    `tanh_gaussian` the network outputs loc and a raw scale per state (Brax);
    for `categorical` it outputs logits. The policy's last layer is initialised
    with gain 0.01 and the value's with 1 (orthogonal init as in OpenAI baselines).
    Observations of any shape are flattened.
    """

    action_size: int
    head: str
    policy_layers: Sequence[int] = (64, 64)
    value_layers: Sequence[int] = (64, 64)
    activation: str = "tanh"
    init_log_std: float = 0.0
    obs_ndim: int = 1  # rank of one observation (3 for MinAtar's H x W x C)

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = obs.reshape(obs.shape[: obs.ndim - self.obs_ndim] + (-1,))
        value = MLP(self.value_layers, 1, self.activation, 1.0, name="value")(x)[..., 0]
        if self.head == "gaussian":
            loc = MLP(self.policy_layers, self.action_size, self.activation, 0.01, name="policy")(x)
            log_std = self.param("log_std", nn.initializers.constant(self.init_log_std),
                                 (self.action_size,))
            dist = jnp.concatenate([loc, jnp.broadcast_to(log_std, loc.shape)], axis=-1)
        else:
            out = self.action_size if self.head == "categorical" else 2 * self.action_size
            dist = MLP(self.policy_layers, out, self.activation, 0.01, name="policy")(x)
        return dist, value


class FactorisedBaseline(nn.Module):
    """Action-dependent baselines b_i(s, a_-i) for every action dimension i (Wu et al. 2018),
    `[..., A]`, from observations `[..., *obs]` and actions `[..., A]`:

        e_i = sum_{j != i} a_j W_j + D_i   (a learned embedding of a_-i plus a learned
                                           per-dimension code D_i)
        b_i = MLP([s, e_i])         (one MLP shared by all i; W `[A, embed]`, D `[A, embed]`)

    b_i never sees a_i (a_i is masked out before the sum: its gradient w.r.t. a_i is exactly
    0), so it keeps the estimator unbiased; the MLP runs on A rows per state (O(A) forwards,
    O(A^2 embed) for the embeddings).
    """

    action_size: int
    embed: int = 8
    layers: Sequence[int] = (64, 64)
    activation: str = "tanh"
    obs_ndim: int = 1

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        A = self.action_size
        x = obs.reshape(obs.shape[: obs.ndim - self.obs_ndim] + (-1,))
        W = self.param("embed", nn.initializers.normal(1.0 / np.sqrt(A)), (A, self.embed))
        code = self.param("dim_code", nn.initializers.zeros, (A, self.embed))
        others = action[..., None, :] * (1.0 - jnp.eye(A, dtype=action.dtype))  # row i: a_-i
        e = others @ W + code                                                  # [..., A, embed]
        xs = jnp.broadcast_to(x[..., None, :], x.shape[:-1] + (A, x.shape[-1]))
        return MLP(self.layers, 1, self.activation, 1.0, name="mlp")(
            jnp.concatenate([xs, e], axis=-1))[..., 0]


LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


class GaussianPolicy(nn.Module):
    """A Gaussian policy without a critic (EPG's inner agent).

    Returns (distribution parameters concat(loc, log_std), memory): loc = MLP(obs), a
    learned state-independent log-std clipped to [LOG_STD_MIN, LOG_STD_MAX], and an
    optional learned memory vector (EPG's memory unit; size 0 by default).
    """

    action_size: int
    layers: tuple[int, ...] = (32, 32)
    activation: str = "tanh"
    init_log_std: float = -0.5
    memory_size: int = 0

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        loc = MLP(self.layers, self.action_size, self.activation, 0.01, name="mlp")(obs)
        log_std = self.param("log_std", nn.initializers.constant(self.init_log_std),
                             (self.action_size,))
        log_std = jnp.clip(log_std, LOG_STD_MIN, LOG_STD_MAX)
        dist = jnp.concatenate([loc, jnp.broadcast_to(log_std, loc.shape)], -1)
        memory = self.param("memory", nn.initializers.zeros, (self.memory_size,))
        return dist, memory


class QNetwork(nn.Module):
    """Q(s, .) from one MLP over the flattened observation (soft Q-learning's "direct"
    parametrisation)."""

    action_size: int
    layers: tuple[int, ...]
    activation: str
    obs_ndim: int

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x = obs.reshape(obs.shape[: obs.ndim - self.obs_ndim] + (-1,))
        return MLP(self.layers, self.action_size, self.activation, 0.01, name="q")(x)


class ContinuousQ(nn.Module):
    """Q_i(s, a), i < num_critics, for continuous actions: independent MLPs over
    concat(flattened obs, action) (SAC's twin critics). Returns `[num_critics, ...]`.

    Separate MLPs rather than one vmapped ensemble: plain 2-D matmuls, which XLA:CPU can
    hand to its fast dot library (`rlx.algos.sac.COMPILER_OPTIONS`); a batched matmul
    it cannot."""

    layers: tuple[int, ...] = (256, 256)
    activation: str = "relu"
    num_critics: int = 2
    obs_ndim: int = 1

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        x = obs.reshape(obs.shape[: obs.ndim - self.obs_ndim] + (-1,))
        x = jnp.concatenate([x, action.astype(x.dtype)], axis=-1)
        return jnp.stack([MLP(tuple(self.layers), 1, self.activation, 1.0, name=f"q_{i}")(x)[..., 0]
                          for i in range(self.num_critics)])


def deterministic_policy(env: Env, hidden_layers: tuple[int, ...], activation: str = "tanh"
                ) -> tuple[MLP, Callable[[Any, jax.Array], jax.Array]]:
    """ES's policy: a deterministic MLP, tanh-squashed actions (continuous) or argmax (discrete).

    Returns (net, act) with act(params, obs [B, *obs_shape]) -> env action [B, ...].
    """
    spec = env.action_spec
    net = MLP(tuple(hidden_layers), spec.size, activation, out_scale=0.01)
    obs_ndim = len(env.obs_shape)

    def act(params: Any, obs: jax.Array) -> jax.Array:
        x = obs.reshape(obs.shape[: obs.ndim - obs_ndim] + (-1,))
        out = net.apply(params, x)
        return jnp.argmax(out, -1) if spec.discrete else jnp.tanh(out)

    return net, act
