"""Rollout structures (rlx.lm.structures): exact accounting with a deterministic fake sampler,
graph merging on Countdown states, tree prefix copies (the jit + vmap smoke test with the real
lm.sample is tests/test_structures_lm.py)."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlx.lm import structures as S
from rlx.lm.tasks import EOS, PAD, Prompts, countdown_states, make_task
from rlx.losses import dag

TASK = make_task("countdown")  # 3 numbers in 1..9; prompt 11 tokens, completion T = 17
T = TASK.completion_length
SEMI = TASK.vocab.id(";")


def _enc(text: str) -> list[int]:
    return TASK.vocab.encode(text)


def fake_sampler(scripts, ents=None, T=T):
    """Deterministic SampleFn: batch row b plays script b % len(scripts) from just after its k-th
    ";" where k = number of ";" in b's prompt (the steps already taken; eos if the script has
    fewer); log mu = -0.01 (b+1) - 0.001 t; entropy = ents[script, t] (default 0)."""
    Ls = max(len(s) for s in scripts)
    table = jnp.asarray([s + [PAD] * (Ls + T - len(s)) for s in scripts], jnp.int32)
    ents = np.zeros((len(scripts), T)) if ents is None else np.asarray(ents)[:, :T]
    ent_table = jnp.asarray(ents, jnp.float32)

    def sample(key, prompt, pmask):
        del key
        n = prompt.shape[0]
        b = jnp.arange(n)
        s = table[b % len(scripts)]
        k = jnp.sum((prompt == SEMI) & pmask, axis=-1)
        semis = jnp.cumsum(s == SEMI, axis=-1)
        start = jnp.where(k == 0, 0, jnp.argmax(semis >= k[:, None], axis=-1) + 1)
        tok = jnp.take_along_axis(s, start[:, None] + jnp.arange(T)[None], axis=-1)
        tok = jnp.where((k > semis[:, -1])[:, None], EOS, tok)  # script has no step k+1: stop
        is_eos = tok == EOS
        mask = (jnp.cumsum(is_eos, -1) - is_eos == 0) & (tok != PAD)
        t = jnp.arange(T)[None]
        lp = -0.01 * (b[:, None] + 1) - 0.001 * t
        ent = ent_table[b % len(scripts)]
        return (jnp.where(mask, tok, PAD), mask, jnp.where(mask, lp, 0.0),
                jnp.where(mask, ent, 0.0))

    return sample


def _prompts(n=1):
    problem = jnp.tile(jnp.array([[6, 1, 2, 3]], jnp.int32), (n, 1))
    toks, mask = TASK._prompt_tokens(problem)
    return Prompts(tokens=toks, mask=mask, problem=problem)


REWARD = TASK.reward
STATE = functools.partial(countdown_states, TASK)
# one jitted rollout for every test (budget traced: calls differing only in budget share a compile)
ROLL = jax.jit(S.rollout, static_argnums=(0, 1, 5, 6, 7, 8, 9))


def _check_partition(r):
    """Every own token belongs to exactly one edge; edge lengths add up; ids are topological."""
    own, eot = np.asarray(r.own), np.asarray(r.edge_of_token)
    assert ((eot >= 0) == own).all()
    for p in range(own.shape[0]):
        lens = np.bincount(eot[p][own[p]], minlength=r.edge_len.shape[1])
        np.testing.assert_array_equal(lens, r.edge_len[p])
        exists = np.asarray(r.edge_len[p]) > 0
        h, tl = np.asarray(r.edge_head[p]), np.asarray(r.edge_tail[p])
        assert ((h[exists] < 0) | (h[exists] > tl[exists])).all()
    np.testing.assert_array_equal(r.spent, np.asarray(r.counted).sum(axis=(1, 2)))
    assert not (np.asarray(r.counted) & ~own).any()


# ----------------------------------------------------------------------------- chain


def test_chain_budget_accounting():
    scripts = [_enc("1+2=3;3+3=6;<eos>"), _enc("3*2=6;<eos>"), _enc("1+2=3;<eos>")]  # 13, 7, 7
    args = (S.ChainSpec(3), fake_sampler(scripts))
    r = ROLL(*args, jax.random.key(0), _prompts(2), 100, T, EOS, (SEMI,), REWARD, None)
    assert r.tokens.shape == (2, 3, T) and r.edge_tail.shape == (2, 3)
    np.testing.assert_array_equal(r.spent, [27, 27])
    np.testing.assert_array_equal(r.edge_len, [[13, 7, 7]] * 2)
    np.testing.assert_array_equal(r.row_reward, [[1, 1, 0]] * 2)
    assert bool(r.row_valid.all())
    _check_partition(r)
    # budget 16: row 0 (13) fits, row 1 counts 3 of its 7 tokens and is invalid, row 2 nothing
    r = ROLL(*args, jax.random.key(0), _prompts(2), 16, T, EOS, (SEMI,), REWARD, None)
    assert int(r.spent[0]) == 16
    np.testing.assert_array_equal(np.asarray(r.counted[0]).sum(-1), [13, 3, 0])
    assert r.edge_valid[0].tolist() == [True, False, False]
    assert r.row_valid[0].tolist() == [True, False, False]
    adv, ok = dag.chain_advantages(r, 0.0)
    assert ok[0].tolist() == [True, False, False] and float(adv[0, 0]) == 0.0  # group of one
    _check_partition(r)


# ----------------------------------------------------------------------------- tree

# Tokens are arbitrary ids here (no ";"), rewards from a toy rule.
TREE_SCRIPTS = [[5, 6, 7, 8, 2], [9, 10, 11, 2], [12, 2], [13, 14, 15, 16, 17, 18, 19]]
TREE_ENTS = np.zeros((4, T))
TREE_ENTS[0, :5] = [0.9, 0.1, 0.5, 0.2, 0.95]  # row 0 forks at t=2 (t=0 and eos not eligible)
TREE_ENTS[1, :4] = [0.9, 0.6, 0.3, 0.99]       # row 1 forks at t=1


def _toy_reward(problem, tok, mask):
    del problem
    has = lambda x: jnp.any(mask & (tok == x), axis=-1)  # noqa: E731
    return (has(EOS) & (has(8) | has(12))).astype(jnp.float32)


def test_tree_forks_copies_and_accounting():
    spec = S.TreeSpec(chains=2, forks=1, branches=2)
    assert (spec.rows, spec.edges, spec.num_nodes) == (6, 8, 3)
    sampler = fake_sampler(TREE_SCRIPTS, TREE_ENTS, 6)
    r = ROLL(spec, sampler, jax.random.key(0), _prompts(), 100, 6, EOS, (), _toy_reward, None)
    tok = np.asarray(r.tokens[0])
    want = [[5, 6, 7, 8, 2, 0], [9, 10, 11, 2, 0, 0],
            [5, 6, 5, 6, 7, 8], [5, 6, 9, 10, 11, 2],   # branches of row 0 at t=2
            [9, 12, 2, 0, 0, 0], [9, 13, 14, 15, 16, 17]]  # branches of row 1 at t=1
    np.testing.assert_array_equal(tok, want)
    own = np.asarray(r.own[0])
    np.testing.assert_array_equal(own.sum(-1), [5, 4, 4, 4, 2, 5])
    assert not own[2:4, :2].any() and not own[4:, :1].any()
    # copied prefixes carry the generating row's log-probs and entropies
    for child, parent, f in ((2, 0, 2), (3, 0, 2), (4, 1, 1), (5, 1, 1)):
        np.testing.assert_array_equal(r.log_probs[0, child, :f], r.log_probs[0, parent, :f])
        np.testing.assert_array_equal(r.entropy[0, child, :f], r.entropy[0, parent, :f])
    # fork (row 1, t=1) -> node 1, (row 0, t=2) -> node 2 (ids by position: topological)
    assert r.edge_tail[0].tolist() == [0, 2, 0, 1, 2, 2, 1, 1]
    assert r.edge_head[0].tolist() == [2, -1, 1, -1, -1, -1, -1, -1]
    assert r.edge_len[0].tolist() == [2, 3, 1, 3, 4, 4, 2, 5]
    assert r.row_reward[0].tolist() == [1, 0, 0, 0, 1, 0]
    assert r.edge_reward[0].tolist() == [0, 1, 0, 0, 0, 0, 1, 0]
    assert int(r.spent[0]) == 24 and bool(r.row_valid.all())
    _check_partition(r)
    # budget 12: rows 0, 1 (9 tokens) fit; row 2 counts 3 of 4; the rest count nothing
    r = ROLL(spec, sampler, jax.random.key(0), _prompts(), 12, 6, EOS, (), _toy_reward, None)
    assert int(r.spent[0]) == 12
    np.testing.assert_array_equal(np.asarray(r.counted[0]).sum(-1), [5, 4, 3, 0, 0, 0])
    assert r.edge_valid[0].tolist() == [True] * 4 + [False] * 4
    assert r.row_valid[0].tolist() == [True, True, False, False, False, False]
    _check_partition(r)


def test_tree_two_rounds_is_a_tree():
    spec = S.TreeSpec(chains=2, forks=2, branches=1, rounds=2)
    ents = np.tile(np.linspace(0.1, 1.0, T), (4, 1))
    r = ROLL(spec, fake_sampler(TREE_SCRIPTS, ents, 8), jax.random.key(0), _prompts(), 1000, 8,
             EOS, (), _toy_reward, None)
    assert r.tokens.shape[1] == spec.rows and r.edge_tail.shape[1] == spec.edges
    _check_partition(r)
    ok = np.asarray(r.edge_valid[0])
    heads = np.asarray(r.edge_head[0])[ok]
    inner = heads[heads >= 0]
    assert len(inner) == len(set(inner.tolist()))  # each fork node has one incoming edge
    assert np.isclose(float(dag.merge_saved_frac(r)[0]), 0.0)
    adv, trainable = dag.tree_advantages(r, 0.0)
    assert bool(jnp.all(jnp.isfinite(adv)))
    assert (np.asarray(trainable[0]) == ok).all()


# ----------------------------------------------------------------------------- graph

# Level 0 (3 samples): "1+2=3;" and "2+1=3;" reach {3,3} (merged: node 1, representative row 0),
# "3*2=6;" reaches {1,6} (node 2). Level 1 (2 samples per state): from {3,3}: "3+3=6;" -> {6}
# (node 5), "3*3=9;" -> {9} (node 6); from {1,6}: "<eos>" (correct, reward 1) and "3+3=6;"
# (invalid from {1,6}: terminal, reward 0). Level 2 (eos level): "<eos>" from {6} (reward 1) and
# from {9} (reward 0). Nodes: 0 | 1 2 3 (+ overflow 4) | 5 6 7 8 (+ overflow 9).
GRAPH_SCRIPTS = [_enc("1+2=3;3+3=6;<eos>"), _enc("2+1=3;3*3=9;<eos>"), _enc("3*2=6;<eos>")]
GRAPH = S.GraphSpec(widths=(3, 2, 1), frontier=(1, 3, 4))
GRAPH_SAMPLER = fake_sampler(GRAPH_SCRIPTS)


def _graph(budget, spec=GRAPH):
    return ROLL(spec, GRAPH_SAMPLER, jax.random.key(0), _prompts(2), budget, T, EOS, (SEMI,),
                REWARD, STATE)


def test_graph_merges_equal_states_and_shares_continuations():
    assert (GRAPH.rows, GRAPH.num_nodes) == (13, 10)
    r = _graph(100)
    assert r.edge_tail[0].tolist() == [0, 0, 0, 1, 1, 2, 2, 3, 3, 5, 6, 7, 8]
    assert r.edge_head[0].tolist() == [1, 1, 2, 5, 6, -1, -1, -1, -1, -1, -1, -1, -1]
    assert r.edge_len[0].tolist() == [6, 6, 6, 6, 6, 1, 6, 0, 0, 1, 1, 0, 0]
    assert r.edge_reward[0].tolist() == [0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0]
    assert r.row_valid[0].tolist() == [False] * 5 + [True, True, False, False, True, True,
                                                     False, False]
    tok = np.asarray(r.tokens[0])
    # the continuations of the merged state extend its representative (row 0, "1+2=3;") only
    np.testing.assert_array_equal(tok[3, :6], tok[0, :6])
    np.testing.assert_array_equal(tok[4, :6], tok[0, :6])
    np.testing.assert_array_equal(r.log_probs[0, 4, :6], r.log_probs[0, 0, :6])
    assert TASK.vocab.decode(tok[9]) == "1+2=3;3+3=6;" and tok[9, 12] == EOS
    assert not np.asarray(r.own[0, 9, :12]).any() and bool(r.own[0, 9, 12])
    assert int(r.spent[0]) == 39 and r.spent.tolist() == [39, 39]
    _check_partition(r)
    # the DAG's values and savings: V(5)=1, V(6)=0, V(1)=V(2)=1/2, V(0)=1/2; n(1)=2
    V, Q, res = dag.value_backup(r)
    np.testing.assert_allclose(V[0, [0, 1, 2, 5, 6]], [0.5, 0.5, 0.5, 1.0, 0.0])
    np.testing.assert_allclose(dag.path_counts(r)[0, [1, 2, 5, 6]], [2, 1, 2, 2])
    # unmerged: 18 (level 0) + 2*12 (e3, e4) + 7 (e5, e6) + 2*2 (e9, e10) = 53 tokens for 39
    np.testing.assert_allclose(dag.merge_saved_frac(r)[0], 1 - 39 / 53, rtol=1e-6)
    m = S.rollout_metrics(GRAPH, r)
    assert m["states_per_level"][0].tolist() == [2, 2] and m["overflow"][0].tolist() == [0, 0]
    assert int(m["valid_rows"][0]) == 4


def test_graph_budget_stop_and_frontier_cap():
    # budget 20: level 0 (18 tokens) fits; e3 counts 2 of 6 and is invalid; the rest nothing
    r = _graph(20)
    assert int(r.spent[0]) == 20
    np.testing.assert_array_equal(np.asarray(r.counted[0]).sum(-1)[:5], [6, 6, 6, 2, 0])
    assert r.edge_valid[0].tolist()[:5] == [True, True, True, False, False]
    _, ok = dag.graph_advantages(r)
    assert not np.asarray(ok[0]).any()  # nothing resolved: no valid terminal edge was reached
    _check_partition(r)
    # a frontier of one state at level 1: {1,6} overflows (node 2 = overflow 2), never expanded
    spec = S.GraphSpec(widths=(3, 2, 1), frontier=(1, 1, 4))
    r = _graph(100, spec)
    assert r.edge_head[0].tolist()[:3] == [1, 1, 2]
    _, ok = dag.graph_advantages(r)
    assert ok[0].tolist()[:3] == [True, True, False]


def test_graph_spread_deals_a_level_round_robin_over_its_unique_states():
    # spread: level 1 has 4 samples in all; two unique states -> 2 each (tails 1, 2, 1, 2)
    spec = S.GraphSpec(widths=(3, 4, 2), frontier=(1, 3, 4), spread=True)
    assert spec.rows == 9
    r = _graph(100, spec)
    assert r.edge_tail[0].tolist()[:7] == [0, 0, 0, 1, 2, 1, 2]
    tok = np.asarray(r.tokens[0])
    np.testing.assert_array_equal(tok[5, :6], tok[0, :6])  # continues {3,3}'s representative
    np.testing.assert_array_equal(tok[4, :6], tok[2, :6])  # continues {1,6}'s
    _check_partition(r)
    # every path merges into one state: all 4 continuations go to it (per-state widths: 2)
    same = fake_sampler([_enc("1+2=3;3+3=6;<eos>"), _enc("2+1=3;3*3=9;<eos>")])
    args = (jax.random.key(0), _prompts(2), 100, T, EOS, (SEMI,), REWARD, STATE)
    spread = ROLL(spec, same, *args)
    per_state = ROLL(S.GraphSpec(widths=(3, 2, 1), frontier=(1, 3, 4)), same, *args)
    assert spread.edge_tail[0].tolist()[3:7] == [1, 1, 1, 1]
    assert spread.edge_valid[0].tolist()[3:7] == [True] * 4
    assert int(jnp.sum(per_state.edge_valid[0] & (per_state.edge_tail[0] == 1))) == 2
    assert int(spread.spent[0]) > int(per_state.spent[0])
    _check_partition(spread)


def test_graph_fill_spends_what_dead_paths_leave_of_the_budget():
    # every level-0 step is invalid from {1,2,3} ("9+9=18;"): nothing to expand, a terminal edge
    dead = fake_sampler([_enc("9+9=18;<eos>")])
    args = (jax.random.key(0), _prompts(1), 30, T, EOS, (SEMI,), REWARD, STATE)
    spec = S.GraphSpec(widths=(2, 2), frontier=(1, 2), spread=True)
    r0 = ROLL(spec, dead, *args)
    r = ROLL(dataclasses.replace(spec, fill=3), dead, *args)
    # level 0: 2 x 7 tokens, level 1: nothing; fill: 8 + 8 (with eos), the third row over budget
    assert int(r0.spent[0]) == 14 and int(r.spent[0]) == 30
    assert r.edge_tail[0].tolist()[-3:] == [0, 0, 0] and r.edge_head[0].tolist()[-3:] == [-1] * 3
    assert r.edge_valid[0].tolist()[-3:] == [True, True, False]
    np.testing.assert_array_equal(r.tokens[0, :4], r0.tokens[0])  # the levels are unchanged
    _check_partition(r)
    with pytest.raises(ValueError, match="fill"):
        S.GraphSpec((2,), (1,), fill=-1)


def test_specs_reject_bad_values():
    with pytest.raises(ValueError, match="group"):
        S.ChainSpec(0)
    with pytest.raises(ValueError, match="forks"):
        S.TreeSpec(2, 0, 2)
    with pytest.raises(ValueError, match="frontier"):
        S.GraphSpec((2, 1), (2, 1))
    with pytest.raises(ValueError, match="equal length"):
        S.GraphSpec((2, 1), (1,))
    with pytest.raises(ValueError, match="forks=6"):
        S.rollout(S.TreeSpec(1, 6, 1), GRAPH_SAMPLER, jax.random.key(0), _prompts(), 10, 6, EOS,
                  (), REWARD)
    with pytest.raises(ValueError, match="stop_ids"):
        S.rollout(GRAPH, GRAPH_SAMPLER, jax.random.key(0), _prompts(), 10, T, EOS, (), REWARD,
                  STATE)

