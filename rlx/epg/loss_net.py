"""EPG's learned loss: a temporal convolution over the agent's recent experience.

Per step t of a buffer of length T the loss network sees a feature vector

    x_t = [o_t, a_t, r_t, d_t, pi(o_t) (loc, log_std), log pi(a_t|o_t), t / T, m]

(observation, buffer action, scaled reward, termination flag, the policy's
output, the log-probability of the buffer action, the relative time in the
buffer and an optional memory vector m that the inner loop trains too; with
`rtg_feature`, an rlx option, also the step's normalised discounted return-to-go
inside the buffer, which the paper's features lack). The network (Houthooft et al.
2018, modelled on openai/EPG):

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


class Conv1D(nn.Module):
    """VALID strided 1-D convolution, y_t = b + sum_j x_{t s + j} W_j  (W: [k, F, C], flax's layout).

    Taps are taken in groups of `stride`: group g reads x[g s : g s + out s] as
    [out, s, F] blocks (a reshape, no gather) and contracts its taps in one matmul,
    so a kernel of size k costs ceil(k / s) matmuls. On XLA:CPU, at these small
    channel counts, that is several times faster than `lax.conv`, forward and backward.
    """

    features: int
    kernel_size: int
    stride: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, s = self.kernel_size, self.stride
        f = x.shape[-1]
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, f, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        length = x.shape[-2]
        out_len = (length - k) // s + 1
        groups = -(-k // s)
        # the last group's block may run past the end by < s steps it never uses
        pad = max(0, (groups - 1) * s + out_len * s - length)
        if pad:
            x = jnp.pad(x, [(0, 0)] * (x.ndim - 2) + [(0, pad), (0, 0)])
        lead = x.shape[:-2]
        y = bias
        for g in range(groups):
            w = min(s, k - g * s)  # taps in this group
            block = jax.lax.slice_in_dim(x, g * s, g * s + out_len * s, axis=x.ndim - 2)
            block = block.reshape(lead + (out_len, s, f))[..., :w, :]
            y = y + block.reshape(lead + (out_len, w * f)) @ kernel[g * s: g * s + w].reshape(
                w * f, self.features)
        return y


class EPGLossNet(nn.Module):
    """Per-step loss terms f_t [..., T] from step features x [..., T, F] (see the module docstring)."""

    conv: Sequence[tuple[int, int, int]] = ((6, 5, 16), (4, 2, 32))  # (kernel, stride, channels)
    dense: Sequence[int] = (32, 16)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = x if x.ndim >= 3 else x[None]  # [B, T, F]
        for i, (k, s, c) in enumerate(self.conv):
            h = nn.leaky_relu(Conv1D(c, k, s, name=f"conv{i}")(h))
        h = h.mean(-2, keepdims=True) if x.ndim >= 3 else h.mean(-2)  # context over time
        ctx = jnp.broadcast_to(h, x.shape[:-1] + (h.shape[-1],))
        z = jnp.concatenate([x, ctx], -1)
        for i, w in enumerate(self.dense):
            z = nn.leaky_relu(nn.Dense(w, name=f"dense{i}")(z))
        return nn.Dense(1, name="out", kernel_init=nn.initializers.normal(0.01))(z)[..., 0]


def reduce_loss(net: EPGLossNet, params, x: jax.Array, log_prob: jax.Array, form: str,
                mask: jax.Array | None = None) -> jax.Array:
    """The scalar learned loss of buffers x [..., T, F], log_prob [..., T] (see `form`);
    a mean over every step of every buffer (each buffer has its own context)."""
    if form == "pg":
        f = net.apply(params, jax.lax.stop_gradient(x))
        terms = f * log_prob
    else:
        terms = net.apply(params, x)
    if mask is None:
        return terms.mean()
    return (terms * mask).sum() / jnp.maximum(mask.sum(), 1.0)


__all__ = ["EPGLossNet", "reduce_loss", "conv_output_length", "FORMS"]
