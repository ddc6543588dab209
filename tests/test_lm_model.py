"""rlx.lm.model: the causal transformer LM, its log-probs and its KV-cache sampler."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from rlx import lm

PAD, BOS, EOS = 0, 1, 2
CFG = lm.LMConfig(vocab_size=16, context=16, layers=2, width=32, heads=4)
T = 6
# temperature and logit_noise passed explicitly are traced: the float32 calls share one compile.
KW = dict(max_new_tokens=T, eos_id=EOS, pad_id=PAD, temperature=1.0, logit_noise=0.0)
logits = jax.jit(lm.logits, static_argnames=("config", "dtype"))
init_params = jax.jit(lm.init_params, static_argnums=0)
token_log_probs = jax.jit(lm.token_log_probs, static_argnames=("config", "dtype"))


@pytest.fixture(scope="module")
def params():
    return init_params(CFG, jax.random.key(0))


def _prompts(batch: int = 12, P: int = 5, seed: int = 0):
    """Left-padded prompts: BOS + 0..P-2 random digits (3..15), different real lengths."""
    rng = np.random.default_rng(seed)
    lengths = 1 + np.arange(batch) % P
    toks = rng.integers(3, CFG.vocab_size, size=(batch, P))
    toks[:, 0] = BOS
    out = np.full((batch, P), PAD)
    for b, n in enumerate(lengths):
        out[b, P - n:] = toks[b, :n]
    return jnp.asarray(out, jnp.int32), jnp.asarray(out != PAD)


def _full_mask(prompt_mask, s: lm.Sample):
    return jnp.concatenate([prompt_mask, s.completion_mask], axis=1)


def test_config_validation_and_num_params():
    with pytest.raises(ValueError, match="width=130 is not divisible by heads=4"):
        lm.LMConfig(vocab_size=16, width=130)
    with pytest.raises(ValueError, match="vocab_size must be a positive int, got 0"):
        lm.LMConfig(vocab_size=0)
    with pytest.raises(ValueError, match="layers"):
        lm.LMConfig(vocab_size=16, layers=-1)
    c, W, V = CFG, CFG.width, CFG.vocab_size
    per_layer = 4 * W + (3 * W * W + 3 * W) + (W * W + W) + (W * 4 * W + 4 * W) + (4 * W * W + W)
    assert lm.num_params(c) == V * W + c.context * W + c.layers * per_layer + 2 * W


def test_too_long_prompt_raises_before_compiling(params):
    prompts, mask = _prompts(P=12)
    with pytest.raises(ValueError, match=r"prompt length 12 \+ max_new_tokens 6 = 18 exceeds "
                                         r"config.context=16"):
        lm.sample_jit(params, CFG, jax.random.key(0), prompts, mask, **KW)
    with pytest.raises(ValueError, match="top_k"):
        lm.sample(params, CFG, jax.random.key(0), prompts[:, :4], mask[:, :4], top_k=17, **KW)
    with pytest.raises(ValueError, match="temperature"):
        lm.sample(params, CFG, jax.random.key(0), prompts[:, :4], mask[:, :4],
                  **dict(KW, temperature=0.0))


def test_positions_ignore_left_padding():
    mask = jnp.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]], bool)
    np.testing.assert_array_equal(lm.positions_from_mask(mask), [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]])


@pytest.mark.parametrize("temperature,noise", [(1.0, 0.0), (0.7, 0.5)])
def test_cache_matches_cacheless_reference(params, temperature, noise):
    prompts, mask = _prompts()
    key = jax.random.key(3)
    kw = dict(KW, temperature=temperature, logit_noise=noise)  # traced: one compile each
    s = lm.sample_jit(params, CFG, key, prompts, mask, **kw)
    r = lm.reference_sample_jit(params, CFG, key, prompts, mask, **kw)
    np.testing.assert_array_equal(s.tokens, r.tokens)
    np.testing.assert_array_equal(s.completion_mask, r.completion_mask)
    np.testing.assert_allclose(s.log_probs, r.log_probs, atol=1e-5)
    np.testing.assert_allclose(s.entropy, r.entropy, atol=1e-5)
    assert s.tokens.shape == (12, 5 + T) and s.log_probs.dtype == jnp.float32
    np.testing.assert_array_equal(s.tokens[:, :5], prompts)


def test_rollout_log_probs_equal_training_log_probs(params):
    prompts, mask = _prompts()
    s = lm.sample_jit(params, CFG, jax.random.key(4), prompts, mask, **dict(KW, temperature=0.8))
    lp, ent = token_log_probs(params, CFG, s.tokens, _full_mask(mask, s), temperature=0.8)
    assert lp.shape == ent.shape == (12, 5 + T - 1)
    np.testing.assert_allclose(lp[:, 4:], s.log_probs, atol=1e-5)
    np.testing.assert_allclose(ent[:, 4:], s.entropy, atol=1e-5)


def test_causality(params):
    tokens = jax.random.randint(jax.random.key(5), (12, 5 + T), 3, 16)
    mask = jnp.ones_like(tokens, bool)
    lp, _ = token_log_probs(params, CFG, tokens, mask)
    lp2, _ = token_log_probs(params, CFG, tokens.at[:, 6].set(3 + (tokens[:, 6] - 2) % 13), mask)
    np.testing.assert_allclose(lp[:, :5], lp2[:, :5], atol=1e-6)  # targets 1..5 see tokens < 6
    assert not np.allclose(lp[:, 5:], lp2[:, 5:])


def test_left_padding_invariance(params):
    """The same real tokens after 7 or 3 padding columns (or 7 masked non-pad ids) give the
    same next-token logits."""
    real = [BOS, 7, 4, 9]
    toks = jnp.array([[PAD] * 7 + real, [PAD] * 3 + real + [5, 6, 7, 8], [11] * 7 + real])
    mask = jnp.array([[0] * 7 + [1] * 4, [0] * 3 + [1] * 8, [0] * 7 + [1] * 4], bool)
    lg = logits(params, CFG, jnp.tile(toks, (4, 1)), jnp.tile(mask, (4, 1)))  # the [12, 11] compile
    np.testing.assert_allclose(lg[0, 10], lg[1, 6], atol=1e-5)
    np.testing.assert_allclose(lg[0, 10], lg[2, 10], atol=1e-5)


def test_eos_masking(params):
    prompts, mask = _prompts()
    s = lm.sample_jit(params, CFG, jax.random.key(6), prompts, mask, **KW)
    comp, cm = np.asarray(s.completion), np.asarray(s.completion_mask)
    assert (comp == EOS).any(axis=1).sum() >= 2 and cm.all(axis=1).sum() >= 2
    for b in range(12):
        eos = np.flatnonzero(comp[b] == EOS)
        n = eos[0] + 1 if len(eos) else T
        assert cm[b, :n].all() and not cm[b, n:].any()
        assert (comp[b, n:] == PAD).all()
    assert (np.asarray(s.log_probs)[~cm] == 0).all() and (np.asarray(s.log_probs)[cm] < 0).all()
    np.testing.assert_array_equal(s.tokens[:, 5:], s.completion)


def test_top_k_1_is_greedy(params):
    prompts, mask = _prompts()
    s = lm.sample_jit(params, CFG, jax.random.key(7), prompts, mask, top_k=1, **KW)
    # Greedy decoding by full forwards over the fixed [B, P+T] buffer (causal: the
    # not-yet-written columns do not matter).
    toks = jnp.concatenate([prompts, jnp.zeros((12, T), jnp.int32)], 1)
    m = jnp.concatenate([mask, jnp.zeros((12, T), bool)], 1)
    alive = jnp.ones((12,), bool)
    for t in range(T):
        nxt = jnp.argmax(logits(params, CFG, toks, m)[:, 4 + t], -1)
        toks = toks.at[:, 5 + t].set(jnp.where(alive, nxt, PAD))
        m = m.at[:, 5 + t].set(alive)
        alive = alive & (nxt != EOS)
    np.testing.assert_array_equal(s.tokens, toks)
    np.testing.assert_allclose(s.log_probs, 0.0, atol=1e-6)


def test_bf16_rollout_close_to_float32(params):
    prompts, mask = _prompts()
    s = lm.sample_jit(params, CFG, jax.random.key(8), prompts, mask, dtype=jnp.bfloat16, **KW)
    lg32 = logits(params, CFG, s.tokens, _full_mask(mask, s))
    lg16 = logits(params, CFG, s.tokens, _full_mask(mask, s), dtype=jnp.bfloat16)
    assert lg16.dtype == jnp.float32
    diff = float(jnp.max(jnp.abs(lg16 - lg32)))
    assert 0 < diff < 0.05, diff
    lp, _ = token_log_probs(params, CFG, s.tokens, _full_mask(mask, s))
    gap = np.abs(np.asarray(lp[:, 4:] - s.log_probs))
    assert np.isfinite(s.log_probs).all() and 0 < gap.max() < 0.05, gap.max()


def test_grads_finite(params):
    prompts, mask = _prompts()
    s = lm.sample_jit(params, CFG, jax.random.key(9), prompts, mask, **KW)
    full = _full_mask(mask, s)

    def loss(p):
        lp, ent = token_log_probs(p, CFG, s.tokens, full, temperature=0.9)
        return -jnp.sum(lp) - 0.01 * jnp.sum(ent)

    g = jax.jit(jax.grad(loss))(params)
    leaves = jax.tree.leaves(g)
    assert all(bool(jnp.isfinite(x).all()) for x in leaves)
    assert all(float(jnp.abs(x).max()) > 0 for x in leaves)


def test_vmap_over_params_and_shard_map(params):
    prompts, mask = _prompts()
    key = jax.random.key(10)
    p2 = init_params(CFG, jax.random.key(1))
    stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), params, p2)
    run = functools.partial(lm.sample, config=CFG, key=key, prompts=prompts, prompt_mask=mask,
                            **KW)
    both = jax.jit(jax.vmap(lambda p: run(p)))(stacked)
    for i, p in enumerate((params, p2)):
        one = lm.sample_jit(p, CFG, key, prompts, mask, **KW)
        np.testing.assert_array_equal(both.tokens[i], one.tokens)
        np.testing.assert_allclose(both.log_probs[i], one.log_probs, atol=1e-5)

    # The two seeds sharded over the 2 test devices (one each), as a population runs.
    mesh = jax.make_mesh((2,), ("d",))
    local = jax.shard_map(jax.vmap(lambda p: run(p).tokens), mesh=mesh,
                          in_specs=PartitionSpec("d"), out_specs=PartitionSpec("d"))
    sharding = jax.sharding.NamedSharding(mesh, PartitionSpec("d"))
    sharded = jax.jit(local)(jax.device_put(stacked, sharding))
    np.testing.assert_array_equal(np.asarray(sharded), both.tokens)


def test_groups_compute_each_prompt_once_with_the_same_results(params):
    """sample(group_size=G) and group_log_probs equal the per-row computations (left-padded
    prompts, each repeated G times); group_log_probs' gradient too (summed in another order)."""
    prompts, mask = _prompts(batch=4)
    G = 3
    rep_p, rep_m = jnp.repeat(prompts, G, axis=0), jnp.repeat(mask, G, axis=0)
    s = lm.sample_jit(params, CFG, jax.random.key(9), rep_p, rep_m, **KW)
    sg = lm.sample_jit(params, CFG, jax.random.key(9), rep_p, rep_m, group_size=G, **KW)
    np.testing.assert_array_equal(s.tokens, sg.tokens)
    np.testing.assert_allclose(s.log_probs, sg.log_probs, atol=1e-6)

    def per_row(p):
        return token_log_probs(p, CFG, s.tokens, _full_mask(rep_m, s))[0][:, 4:]

    def grouped(p):
        return lm.group_log_probs(p, CFG, prompts, mask, s.completion, s.completion_mask)[0]

    np.testing.assert_allclose(per_row(params), grouped(params), atol=1e-6)
    w = jnp.arange(1.0, T + 1.0)
    g1, g2 = (jax.grad(lambda p, f=f: (f(p) * w).sum())(params) for f in (per_row, grouped))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), g1, g2)
    with pytest.raises(ValueError, match="group_size"):
        lm.sample(params, CFG, jax.random.key(0), rep_p, rep_m, group_size=5, **KW)
