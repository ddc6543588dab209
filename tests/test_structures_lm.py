"""Rollout structures (rlx.lm.structures) with the real `rlx.lm.sample` on a tiny random model:
each structure jitted and vmapped over keys (a smoke test of shapes, budget and advantages)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from rlx.lm import LMConfig, init_params, sample
from rlx.lm import structures as S
from rlx.lm.tasks import EOS, PAD, countdown_states, make_task

TASK = make_task("countdown")
T = TASK.completion_length
SEMI = TASK.vocab.id(";")
REWARD = TASK.reward
STATE = functools.partial(countdown_states, TASK)


def test_real_sampler_jit_vmap_smoke():
    cfg = LMConfig(vocab_size=TASK.vocab.size, context=TASK.prompt_length + 2 * T, layers=1,
                   width=16, heads=2)
    params = init_params(cfg, jax.random.key(1))

    def sample_fn(key, p, m):
        s = sample(params, cfg, key, p, m, max_new_tokens=T, eos_id=EOS, pad_id=PAD)
        return s.completion, s.completion_mask, s.log_probs, s.entropy

    prompts = TASK.prompts(jax.random.key(2), 2)
    keys = jax.random.split(jax.random.key(0), 2)
    for spec, budget in ((S.ChainSpec(4), 40), (S.TreeSpec(2, 1, 2), 60),
                         (S.GraphSpec((3, 2, 1), (1, 3, 3)), 60)):
        def run(key, spec=spec, budget=budget):
            r = S.rollout(spec, sample_fn, key, prompts, budget, T, EOS, (SEMI,), REWARD, STATE)
            return r, S.structure_advantages(spec, r, 1.0)

        r, (adv, ok) = jax.jit(jax.vmap(run))(keys)
        assert r.tokens.shape == (2, 2, spec.rows, T)
        assert adv.shape == r.edge_tail.shape == (2, 2, spec.edges)
        assert bool(jnp.all(r.spent <= budget)) and bool(jnp.all(jnp.isfinite(adv)))
        np.testing.assert_array_equal(r.spent, np.asarray(r.counted).sum(axis=(2, 3)))
        own, eot = np.asarray(r.own), np.asarray(r.edge_of_token)
        assert ((eot >= 0) == own).all()
