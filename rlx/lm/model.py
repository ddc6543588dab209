"""The sequence policy: a small GPT-2-shaped causal transformer LM and its sampler.

pi_theta(x_{t+1} | x_{<=t}) = softmax(W_e h_t / temperature), where h_t is the final
LayerNorm of pre-LN GPT-2 blocks (causal self-attention + GELU MLP) over token plus
learned position embeddings, and W_e is the token embedding (tied output head).

Token conventions (shared by every `rlx.lm` piece): prompts are LEFT-padded to a fixed
length P (`prompt_mask [B,P]` True on real tokens), so generation starts at column P for
every row; positions count real tokens only (`positions_from_mask`), so left padding does
not shift them, and attention never looks at padding keys. A completion is T tokens;
`completion_mask [B,T]` is True up to and including the first EOS, tokens after it are
`pad_id`.

`sample` prefills the prompt in one forward pass that writes a KV cache
[layers, B, P+T, heads, head_dim], then decodes one token per `lax.scan` step;
`reference_sample` decodes the same way without a cache (a full forward per step) and
exists to test `sample`. Both are pure and traceable: jit them with
`static_argnames=SAMPLE_STATIC` (or use `sample_jit`), vmap them over a leading axis of
params, run them under shard_map.

Precision: everything is float32 by default; `dtype=jnp.bfloat16` casts the params to
bf16 and runs every matmul/activation in bf16 (softmax and LayerNorm statistics are
reduced in float32), and the logits are cast to float32 only after being computed in
bf16. Sampling (temperature, top-k, noise, log-softmax) is always float32.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import chex
import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

Params = Any
DType = Any

# Masked attention scores and excluded top-k logits: finite (so fully-masked rows of
# padding queries stay finite and 0 * log p = 0 in entropies), far below any real logit.
_NEG = -1e30
SAMPLE_STATIC: tuple[str, ...] = ("config", "max_new_tokens", "eos_id", "pad_id", "top_k", "dtype",
                                   "group_size")


@dataclasses.dataclass(frozen=True)
class LMConfig:
    """Shape of a `TransformerLM`: `context` is the maximum total length (prompt +
    completion) and the size of the position table; head_dim = width // heads."""

    vocab_size: int
    context: int = 32
    layers: int = 2
    width: int = 128
    heads: int = 4
    mlp_ratio: int = 4

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise a one-line ValueError naming the first bad value."""
        for name in ("vocab_size", "context", "layers", "width", "heads", "mlp_ratio"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{type(self).__name__}.{name} must be a positive int, got {v!r}")
        if self.width % self.heads:
            raise ValueError(f"{type(self).__name__}.width={self.width} is not divisible by "
                             f"heads={self.heads}")

    @property
    def head_dim(self) -> int:
        return self.width // self.heads


def _normal(std: float):
    return nn.initializers.normal(stddev=std)


class _Block(nn.Module):
    """x + attn(LN(x)), then x + mlp(LN(x)); returns the new x and this layer's keys/values."""

    config: LMConfig
    dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, x, mask, cache, index):
        c = self.config
        B, L, _ = x.shape
        dense = functools.partial(nn.Dense, dtype=self.dtype, kernel_init=_normal(0.02),
                                  bias_init=nn.initializers.zeros)
        resid = functools.partial(nn.Dense, dtype=self.dtype,
                                  kernel_init=_normal(0.02 / math.sqrt(2 * c.layers)),
                                  bias_init=nn.initializers.zeros)
        h = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name="ln_1")(x)
        qkv = dense(3 * c.width, name="c_attn")(h).reshape(B, L, 3, c.heads, c.head_dim)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        if cache is not None:  # write this chunk's keys/values at column `index`
            k = jax.lax.dynamic_update_slice(cache[0], k.astype(cache[0].dtype), (0, index, 0, 0))
            v = jax.lax.dynamic_update_slice(cache[1], v.astype(cache[1].dtype), (0, index, 0, 0))
        q = q * jnp.asarray(1.0 / math.sqrt(c.head_dim), q.dtype)
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32)
        probs = jax.nn.softmax(jnp.where(mask, scores, _NEG), axis=-1).astype(self.dtype)
        att = jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(B, L, c.width)
        x = x + resid(c.width, name="c_proj")(att)
        h = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name="ln_2")(x)
        h = nn.gelu(dense(c.mlp_ratio * c.width, name="c_fc")(h), approximate=True)
        x = x + resid(c.width, name="mlp_proj")(h)
        return x, (k, v)


class TransformerLM(nn.Module):
    """GPT-2 (pre-LN, tied head, no dropout) over `config`, computing in `dtype`.

    `__call__(tokens [B,L], positions [B,L], key_mask [B,S], cache=None, index=0)`
    returns (logits [B,L,V] float32, (k, v) each [layers,B,S,heads,head_dim]). Without a
    cache, S = L and the keys are this chunk's own; with a cache (k, v) of S columns, the
    chunk's keys/values are written at columns index..index+L-1 first. Query i sits at
    column index+i and attends to key columns <= its own where `key_mask` is True.
    `hidden=True` returns the trunk's final-LayerNorm states [B,L,width] (in `dtype`) in
    place of the logits (the reward models' features, `rlx.lm.reward_model`).
    """

    config: LMConfig
    dtype: DType = jnp.float32
    hidden: bool = False

    @nn.compact
    def __call__(self, tokens, positions, key_mask, cache=None, index=0):
        c = self.config
        L = tokens.shape[1]
        wte = nn.Embed(c.vocab_size, c.width, embedding_init=_normal(0.02), dtype=self.dtype,
                       name="wte")
        wpe = nn.Embed(c.context, c.width, embedding_init=_normal(0.02), dtype=self.dtype,
                       name="wpe")
        x = wte(tokens) + wpe(positions)
        S = L if cache is None else cache[0].shape[2]
        causal = jnp.arange(S)[None, :] <= (index + jnp.arange(L))[:, None]  # [L,S]
        mask = causal[None, None] & key_mask[:, None, None, :]  # [B,1,L,S]
        ks, vs = [], []
        for i in range(c.layers):
            layer_cache = None if cache is None else (cache[0][i], cache[1][i])
            x, (k, v) = _Block(c, self.dtype, name=f"h_{i}")(x, mask, layer_cache, index)
            ks.append(k)
            vs.append(v)
        x = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name="ln_f")(x)
        if self.hidden:
            return x, (jnp.stack(ks), jnp.stack(vs))
        return wte.attend(x).astype(jnp.float32), (jnp.stack(ks), jnp.stack(vs))


def init_params(config: LMConfig, key: jax.Array) -> Params:
    """GPT-2 init: weights N(0, 0.02^2), residual projections (attention and MLP outputs)
    N(0, (0.02/sqrt(2 layers))^2), biases 0, LayerNorms (1, 0). float32."""
    tokens = jnp.zeros((1, 1), jnp.int32)
    return TransformerLM(config).init(key, tokens, tokens, jnp.ones((1, 1), bool))["params"]


def num_params(config: LMConfig) -> int:
    """Number of scalar parameters (the tied head counted once)."""
    shapes = jax.eval_shape(functools.partial(init_params, config), jax.random.key(0))
    return int(sum(math.prod(x.shape) for x in jax.tree.leaves(shapes)))


def positions_from_mask(mask: jax.Array) -> jax.Array:
    """[B,L] int32 position of each real token among the real tokens (cumsum - 1), 0 on
    leading padding, so left padding does not shift positions."""
    return jnp.maximum(jnp.cumsum(mask.astype(jnp.int32), axis=-1) - 1, 0)


def _cast(params: Params, dtype: DType) -> Params:
    return jax.tree.map(lambda p: p.astype(dtype), params)


def _check_tokens(config: LMConfig, tokens, mask, what: str = "tokens") -> None:
    if tokens.ndim != 2:
        raise ValueError(f"{what} must be [B, L], got shape {tokens.shape}")
    if mask.shape != tokens.shape:
        raise ValueError(f"{what} mask shape {mask.shape} != {what} shape {tokens.shape}")
    if tokens.shape[1] > config.context:
        raise ValueError(f"{what} length {tokens.shape[1]} exceeds config.context={config.context}")


def logits(params: Params, config: LMConfig, tokens: jax.Array, mask: jax.Array,
           dtype: DType = jnp.float32) -> jax.Array:
    """[B,L,V] float32: logits[b,t] of pi(. | tokens[b, :t+1]) (full causal forward; padding
    keys, mask False, are never attended to)."""
    _check_tokens(config, tokens, mask)
    chex.assert_type(tokens, int)
    out, _ = TransformerLM(config, dtype).apply({"params": _cast(params, dtype)}, tokens,
                                                positions_from_mask(mask), mask.astype(bool))
    return out


def _log_softmax_entropy(logp: jax.Array) -> jax.Array:
    """H = -sum_v p_v log p_v, with 0 log 0 = 0."""
    return -jnp.sum(jnp.where(logp > _NEG / 2, jnp.exp(logp) * logp, 0.0), axis=-1)


def token_log_probs(params: Params, config: LMConfig, tokens: jax.Array, mask: jax.Array,
                    temperature: float | jax.Array = 1.0,
                    dtype: DType = jnp.float32) -> tuple[jax.Array, jax.Array]:
    """(log_probs [B,L-1], entropy [B,L-1]) float32, with p = softmax(logits / temperature):

        log_probs[b,t] = log p(tokens[b,t+1] | tokens[b,:t+1]),
        entropy[b,t]   = -sum_v p(v | tokens[b,:t+1]) log p(v | tokens[b,:t+1]),

    both 0 where the target tokens[b,t+1] is padding (mask False). Differentiable in params.
    """
    lg = logits(params, config, tokens, mask, dtype)[:, :-1] / temperature
    logp = jax.nn.log_softmax(lg, axis=-1)
    lp = jnp.take_along_axis(logp, tokens[:, 1:, None].astype(jnp.int32), axis=-1)[..., 0]
    ent = -jnp.sum(jnp.exp(logp) * logp, axis=-1)
    valid = mask[:, 1:].astype(bool)
    return jnp.where(valid, lp, 0.0), jnp.where(valid, ent, 0.0)


def group_log_probs(params: Params, config: LMConfig, prompts: jax.Array, prompt_mask: jax.Array,
                    completion: jax.Array, completion_mask: jax.Array,
                    temperature: float | jax.Array = 1.0,
                    dtype: DType = jnp.float32) -> tuple[jax.Array, jax.Array]:
    """(log_probs [B,T], entropy [B,T]) float32 of the completions [B,T] of n prompts [n,P], each
    prompt's G = B / n completions in consecutive rows (i G .. i G + G - 1): the completion columns
    of `token_log_probs` of the concatenated sequences [prompt_i, completion_b], with each
    prompt's forward computed once for its group (a prefill, then the completions as one cached
    chunk) instead of G times. Differentiable in params."""
    n, P = prompts.shape
    B, T = completion.shape
    if prompt_mask.shape != prompts.shape or completion_mask.shape != completion.shape:
        raise ValueError(f"masks {prompt_mask.shape}, {completion_mask.shape} do not match prompts "
                         f"{prompts.shape} and completion {completion.shape}")
    if n == 0 or B % n:
        raise ValueError(f"{B} completions do not split into groups of the {n} prompts")
    if P + T > config.context:
        raise ValueError(f"prompt length {P} + completion length {T} exceeds config.context="
                         f"{config.context}")
    G = B // n
    model = TransformerLM(config, dtype)
    params = _cast(params, dtype)
    pmask = prompt_mask.astype(bool)
    lg_p, (k, v) = model.apply({"params": params}, prompts, positions_from_mask(pmask), pmask)
    first = jnp.repeat(lg_p[:, -1:], G, axis=0)  # predicts completion token 0
    if T > 1:
        pad_cols = ((0, 0), (0, 0), (0, T), (0, 0), (0, 0))
        cache = tuple(jnp.pad(jnp.repeat(x, G, axis=1), pad_cols) for x in (k, v))
        mask = jnp.concatenate([jnp.repeat(pmask, G, axis=0), completion_mask.astype(bool)], 1)
        lg_c, _ = model.apply({"params": params}, completion[:, :-1].astype(jnp.int32),
                              positions_from_mask(mask)[:, P:P + T - 1], mask, cache, P)
        first = jnp.concatenate([first, lg_c], axis=1)
    logp = jax.nn.log_softmax(first / temperature, axis=-1)
    lp = jnp.take_along_axis(logp, completion[..., None].astype(jnp.int32), axis=-1)[..., 0]
    ent = -jnp.sum(jnp.exp(logp) * logp, axis=-1)
    valid = completion_mask.astype(bool)
    return jnp.where(valid, lp, 0.0), jnp.where(valid, ent, 0.0)


@flax.struct.dataclass
class Sample:
    """A batch of rollouts. tokens [B,P+T] = prompt then completion; completion [B,T]
    (pad after the first EOS); completion_mask [B,T] True up to and including the first
    EOS; log_probs [B,T] = log mu(completion_t | prefix) under the distribution actually
    sampled from (after noise, temperature, top-k; the rollout's own dtype), 0 where the
    mask is False; entropy [B,T] of that distribution, 0 where the mask is False."""

    tokens: jax.Array
    completion: jax.Array
    completion_mask: jax.Array
    log_probs: jax.Array
    entropy: jax.Array


def _check_sample_args(config, prompts, prompt_mask, max_new_tokens, eos_id, pad_id,
                       temperature, top_k, logit_noise) -> None:
    if prompts.ndim != 2 or prompt_mask.shape != prompts.shape:
        raise ValueError(f"prompts must be [B, P] with a prompt_mask of the same shape, got "
                         f"{prompts.shape} and {prompt_mask.shape}")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
    P = prompts.shape[1]
    if P + max_new_tokens > config.context:
        raise ValueError(f"prompt length {P} + max_new_tokens {max_new_tokens} = "
                         f"{P + max_new_tokens} exceeds config.context={config.context}")
    for name, v in (("eos_id", eos_id), ("pad_id", pad_id)):
        if not isinstance(v, int) or not 0 <= v < config.vocab_size:
            raise ValueError(f"{name}={v!r} is not a token id in [0, {config.vocab_size})")
    if not isinstance(top_k, int) or not 0 <= top_k <= config.vocab_size:
        raise ValueError(f"top_k={top_k!r} must be an int in [0, vocab_size={config.vocab_size}]")
    if isinstance(temperature, (int, float)) and temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if isinstance(logit_noise, (int, float)) and logit_noise < 0:
        raise ValueError(f"logit_noise must be >= 0, got {logit_noise!r}")


def _pick(lg: jax.Array, key: jax.Array, noise_key: jax.Array, temperature, top_k: int,
          logit_noise) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Sample from mu = softmax(topk((lg + logit_noise * eps) / temperature)), eps ~ N(0, I);
    returns (token [B] int32, log mu(token) [B], entropy of mu [B])."""
    lg = lg.astype(jnp.float32)
    if not (isinstance(logit_noise, (int, float)) and logit_noise == 0):
        lg = lg + logit_noise * jax.random.normal(noise_key, lg.shape, jnp.float32)
    lg = lg / temperature
    if top_k:
        kth = jax.lax.top_k(lg, top_k)[0][..., -1:]
        lg = jnp.where(lg >= kth, lg, _NEG)
    logp = jax.nn.log_softmax(lg, axis=-1)
    tok = jax.random.categorical(key, logp, axis=-1).astype(jnp.int32)
    lp = jnp.take_along_axis(logp, tok[:, None], axis=-1)[:, 0]
    return tok, lp, _log_softmax_entropy(logp)


def _vary_like(tree, anchor: jax.Array):
    """`tree` with every leaf made to depend on `anchor` (adding an exact zero), so that under
    shard_map each scan carry varies over the same mesh axes as the sampled tokens do (every
    input of a sampling step reaches the first sampled token)."""
    zero = anchor.reshape(-1)[0] * 0
    return jax.tree.map(lambda x: x | (zero != 0) if x.dtype == bool else x + zero.astype(x.dtype),
                        tree)


def _step_keys(key: jax.Array, max_new_tokens: int) -> tuple[jax.Array, jax.Array]:
    """Per-step (sampling keys [T], noise keys [T]): the fixed key schedule of both samplers."""
    sample_key, noise_key = jax.random.split(key)
    return jax.random.split(sample_key, max_new_tokens), jax.random.split(noise_key, max_new_tokens)


def _finish(prompts, toks, lps, ents, eos_id: int, pad_id: int) -> Sample:
    """Mask everything after the first EOS (toks, lps, ents: [T,B] per-step raw samples)."""
    toks, lps, ents = toks.T, lps.T, ents.T  # [B,T]
    is_eos = toks == eos_id
    # True up to and including the first EOS: no EOS strictly before t.
    before = jnp.cumsum(is_eos.astype(jnp.int32), axis=1) - is_eos.astype(jnp.int32)
    mask = before == 0
    completion = jnp.where(mask, toks, pad_id).astype(jnp.int32)
    chex.assert_equal_shape([completion, lps, ents])
    return Sample(tokens=jnp.concatenate([prompts.astype(jnp.int32), completion], axis=1),
                  completion=completion, completion_mask=mask,
                  log_probs=jnp.where(mask, lps, 0.0), entropy=jnp.where(mask, ents, 0.0))


def sample(params: Params, config: LMConfig, key: jax.Array, prompts: jax.Array,
           prompt_mask: jax.Array, *, max_new_tokens: int, eos_id: int, pad_id: int,
           temperature: float | jax.Array = 1.0, top_k: int = 0, dtype: DType = jnp.float32,
           logit_noise: float | jax.Array = 0.0, group_size: int = 1) -> Sample:
    """Sample T = max_new_tokens completion tokens for left-padded prompts [B,P] with a KV cache.

    Token t ~ mu_t = softmax(topk((logits_t + logit_noise * eps_t) / temperature)), eps_t ~ N(0, I),
    logits_t computed in `dtype` (params cast to it). Keys: (k_sample, k_noise) =
    split(key); step t uses split(k_sample, T)[t] and split(k_noise, T)[t]. Tokens after
    the first EOS become pad_id and are masked. Static: config, max_new_tokens, eos_id,
    pad_id, top_k (0 = no top-k), dtype, group_size (`SAMPLE_STATIC`); temperature and
    logit_noise may be traced. Requires P + T <= config.context (ValueError otherwise, before
    tracing). `group_size` G > 1: rows i G .. i G + G - 1 of prompts are G copies of one prompt
    (`jnp.repeat(p, G, axis=0)`), whose prefill is computed once (the same samples).
    """
    _check_sample_args(config, prompts, prompt_mask, max_new_tokens, eos_id, pad_id,
                       temperature, top_k, logit_noise)
    chex.assert_type(prompts, int)
    B, P = prompts.shape
    T = max_new_tokens
    model = TransformerLM(config, dtype)
    params = _cast(params, dtype)
    prompt_mask = prompt_mask.astype(bool)
    sample_keys, noise_keys = _step_keys(key, T)

    if not isinstance(group_size, int) or group_size < 1 or B % group_size:
        raise ValueError(f"group_size={group_size!r} must be an int >= 1 dividing the batch {B}")
    G = group_size
    # Prefill: one forward over each distinct prompt, its keys/values become cache columns 0..P-1.
    distinct, distinct_mask = prompts[::G], prompt_mask[::G]
    lg, (k, v) = model.apply({"params": params}, distinct, positions_from_mask(distinct_mask),
                             distinct_mask)
    if G > 1:
        lg = jnp.repeat(lg[:, -1:], G, axis=0)
        k, v = jnp.repeat(k, G, axis=1), jnp.repeat(v, G, axis=1)
    pad_cols = ((0, 0), (0, 0), (0, T), (0, 0), (0, 0))
    cache = (jnp.pad(k, pad_cols), jnp.pad(v, pad_cols))  # [layers,B,P+T,heads,head_dim]
    key_mask = jnp.concatenate([prompt_mask, jnp.zeros((B, T), bool)], axis=1)
    n_real = jnp.sum(prompt_mask, axis=1, dtype=jnp.int32)
    tok0, lp0, ent0 = _pick(lg[:, -1], sample_keys[0], noise_keys[0], temperature, top_k,
                            logit_noise)

    def step(carry, xs):
        # Feed token t-1 at column P+t-1, then sample token t.
        # `alive`: no EOS before token t-1 (its column is a valid key).
        cache, key_mask, prev, alive = carry
        t, k_s, k_n = xs
        col = P + t - 1
        key_mask = jax.lax.dynamic_update_slice(key_mask, alive[:, None], (0, col))
        lg, cache = model.apply({"params": params}, prev[:, None], (n_real + t - 1)[:, None],
                                key_mask, cache, col)
        tok, lp, ent = _pick(lg[:, 0], k_s, k_n, temperature, top_k, logit_noise)
        return (cache, key_mask, tok, alive & (prev != eos_id)), (tok, lp, ent)

    carry = _vary_like((cache, key_mask, tok0, jnp.ones((B,), bool)), tok0)
    _, (toks, lps, ents) = jax.lax.scan(
        step, carry,
        (jnp.arange(1, T, dtype=jnp.int32), sample_keys[1:], noise_keys[1:]))
    toks = jnp.concatenate([tok0[None], toks], axis=0)
    lps = jnp.concatenate([lp0[None], lps], axis=0)
    ents = jnp.concatenate([ent0[None], ents], axis=0)
    return _finish(prompts, toks, lps, ents, eos_id, pad_id)


def reference_sample(params: Params, config: LMConfig, key: jax.Array, prompts: jax.Array,
                     prompt_mask: jax.Array, *, max_new_tokens: int, eos_id: int, pad_id: int,
                     temperature: float | jax.Array = 1.0, top_k: int = 0,
                     dtype: DType = jnp.float32, logit_noise: float | jax.Array = 0.0,
                     group_size: int = 1) -> Sample:
    """`sample` without a KV cache: every step recomputes the full causal forward over the
    [B, P+T] sequence so far (same keys, same distribution). For testing `sample`
    (`group_size` is accepted for `sample`'s signature; every row is computed anyway)."""
    _check_sample_args(config, prompts, prompt_mask, max_new_tokens, eos_id, pad_id,
                       temperature, top_k, logit_noise)
    B, P = prompts.shape
    T = max_new_tokens
    sample_keys, noise_keys = _step_keys(key, T)
    tokens = jnp.concatenate([prompts.astype(jnp.int32), jnp.full((B, T), pad_id, jnp.int32)], 1)
    mask = jnp.concatenate([prompt_mask.astype(bool), jnp.zeros((B, T), bool)], axis=1)

    def step(carry, xs):
        tokens, mask, alive = carry
        t, k_s, k_n = xs
        lg = logits(params, config, tokens, mask, dtype)
        tok, lp, ent = _pick(jax.lax.dynamic_index_in_dim(lg, P + t - 1, 1, keepdims=False),
                             k_s, k_n, temperature, top_k, logit_noise)
        tokens = jax.lax.dynamic_update_slice(tokens, tok[:, None], (0, P + t))
        mask = jax.lax.dynamic_update_slice(mask, alive[:, None], (0, P + t))
        return (tokens, mask, alive & (tok != eos_id)), (tok, lp, ent)

    carry, first = step((tokens, mask, jnp.ones((B,), bool)),
                        (jnp.int32(0), sample_keys[0], noise_keys[0]))
    _, rest = jax.lax.scan(step, _vary_like(carry, first[0]),
                           (jnp.arange(1, T, dtype=jnp.int32), sample_keys[1:], noise_keys[1:]))
    toks, lps, ents = (jnp.concatenate([a[None], b], axis=0) for a, b in zip(first, rest))
    return _finish(prompts, toks, lps, ents, eos_id, pad_id)


def grpo_step_flops(w: int, layers: int, vocab: int, batch: int, prompt: int, completion: int) -> int:
    """The analytic matmul FLOPs of one GRPO step of B = `batch` completions (w = width,
    Lyr = layers, V = vocab, P = prompt, T = completion tokens):

        f(S) = 2 (12 Lyr w^2 + V w) + 4 Lyr w S      one token's forward attending to S keys
        sample    = B P f(P) + B (T - 1) f(P + T)    prefill, then T - 1 cached decode steps
        reference = B (P + T) f(P + T)               the frozen policy's forward
        step      = sample + reference + 3 reference (the policy's forward + backward)
    """
    def f(keys: int) -> int:
        return 2 * (12 * layers * w * w + vocab * w) + 4 * layers * w * keys

    L = prompt + completion
    sample = batch * prompt * f(prompt) + batch * (completion - 1) * f(L)
    reference = batch * L * f(L)
    return sample + reference + 3 * reference


sample_jit = jax.jit(sample, static_argnames=SAMPLE_STATIC)
reference_sample_jit = jax.jit(reference_sample, static_argnames=SAMPLE_STATIC)
