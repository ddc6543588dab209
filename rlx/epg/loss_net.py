"""EPG's learned loss: a temporal convolution over the agent's recent experience.

Per step t of a buffer of length T the loss network sees a feature vector

    x_t = [o_t, a_t, r_t, d_t, pi(o_t) (loc, log_std), log pi(a_t|o_t), t / T, m]

(observation, buffer action, scaled reward, termination flag, the policy's
output, the log-probability of the buffer action, the relative time in the
buffer and an optional memory vector m that the inner loop trains too). The
network (Houthooft et al. 2018, modelled on openai/EPG):

    h   = conv_K(... conv_1(x_{1..T}))            VALID 1-D convolutions, leaky-ReLU
    c   = mean over time of h                     a context of the whole buffer
    f_t = MLP([x_t, c])                           dense layers, leaky-ReLU, last width 1

and the loss is a reduction of the per-step terms to a scalar:

    form "free":  L = mean_t f_t                  (the paper: any function of x)
    form "pg":    L = mean_t f_t * log pi(a_t|o_t) with f computed from stop_grad(x)
                  (a learned per-step advantage-like weight; always a policy
                  gradient, easier for ES to find -- an rlx option, not the paper's)

The policy's gradient flows through log pi, loc and log_std (and m) in x; the
parameters of this network are what ES evolves.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

FORMS = ("free", "pg")


def conv_output_length(length: int, conv: Sequence[tuple[int, int, int]]) -> int:
    """Length after VALID convolutions (kernel, stride, channels): floor((L - k) / s) + 1 each."""
    for k, s, _ in conv:
        length = (length - k) // s + 1
    return length


class EPGLossNet(nn.Module):
    """Per-step loss terms f_t [T] from step features x [T, F] (see the module docstring)."""

    conv: Sequence[tuple[int, int, int]] = ((6, 5, 16), (4, 2, 32))  # (kernel, stride, channels)
    dense: Sequence[int] = (32, 16)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = x[None]  # [1, T, F]
        for i, (k, s, c) in enumerate(self.conv):
            h = nn.leaky_relu(nn.Conv(c, (k,), strides=(s,), padding="VALID", name=f"conv{i}")(h))
        ctx = jnp.broadcast_to(h.mean(1), (x.shape[0], h.shape[-1]))
        z = jnp.concatenate([x, ctx], -1)
        for i, w in enumerate(self.dense):
            z = nn.leaky_relu(nn.Dense(w, name=f"dense{i}")(z))
        return nn.Dense(1, name="out", kernel_init=nn.initializers.normal(0.01))(z)[..., 0]


def reduce_loss(net: EPGLossNet, params, x: jax.Array, log_prob: jax.Array, form: str,
                mask: jax.Array | None = None) -> jax.Array:
    """The scalar learned loss of one buffer: x [T, F], log_prob [T] (see `form`)."""
    if form == "pg":
        f = net.apply(params, jax.lax.stop_gradient(x))
        terms = f * log_prob
    else:
        terms = net.apply(params, x)
    if mask is None:
        return terms.mean()
    return (terms * mask).sum() / jnp.maximum(mask.sum(), 1.0)


__all__ = ["EPGLossNet", "reduce_loss", "conv_output_length", "FORMS"]
