"""DAG advantages (rlx.losses.dag) on hand-built DAGs with hand-computed values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlx.losses import dag
from rlx.losses.sequence import group_advantages
from rlx.lm.structures import Rollouts


def _edges(tail, head, reward, length, valid=None, num_nodes=1, depth=None, tokens_of=None, T=8):
    """A one-prompt Rollouts with only its edge arrays meaningful (one row per edge; each row owns
    the first len(e) tokens of its own edge, all counted) — enough for the dag functions."""
    E = len(tail)
    valid = [True] * E if valid is None else valid
    t = np.arange(T)
    own = np.array([t < length[e] for e in range(E)])
    eot = np.where(own, np.arange(E)[:, None], -1)
    z = np.zeros((1, E, T))
    arr = lambda x, d: jnp.asarray(np.asarray(x)[None], d)  # noqa: E731
    return Rollouts(
        tokens=jnp.asarray(z, jnp.int32), completion_mask=jnp.asarray(own[None]),
        log_probs=jnp.asarray(z, jnp.float32), entropy=jnp.asarray(z, jnp.float32),
        own=jnp.asarray(own[None]), counted=jnp.asarray(own[None]),
        edge_of_token=jnp.asarray(eot[None], jnp.int32), spent=arr([own.sum()], jnp.int32)[0],
        edge_tail=arr(tail, jnp.int32), edge_head=arr(head, jnp.int32),
        edge_reward=arr(reward, jnp.float32), edge_len=arr(length, jnp.int32),
        edge_valid=arr(valid, bool), edge_row=arr(np.arange(E), jnp.int32),
        row_reward=arr(reward, jnp.float32), row_valid=arr(valid, bool),
        num_nodes=num_nodes, depth=depth or num_nodes)


# The 2-level DAG: root 0; edges e0 (4 tokens) and e1 (6 tokens) both reach state 1 (merged);
# e2 (5 tokens) is terminal with reward 0; state 1 has 3 shared continuations e3, e4, e5
# (2, 3, 4 tokens) with rewards 1, 0, 1.
#   V(1) = 2/3; Q = [2/3, 2/3, 0, 1, 0, 1]; V(0) = 4/9
#   A_c (std 0): [2/9, 2/9, -4/9, 1/3, -2/3, 1/3]
#   std over out(0): deviations 2/9, 2/9, -4/9 -> var (ddof 1) = 24/81 / 2 = 4/27
#   std over out(1): 1/3, -2/3, 1/3 -> var = 2/3 / 2 = 1/3
#   d(1) = mean(4, 6) = 5; c = [4, 6, 5, 7, 8, 9]
#   A_e: into state 1 (m = 5): e0 +1/5, e1 -1/5; solved class {e3, e5} (m = 8): e3 +1/8, e5 -1/8;
#        e2, e4 incorrect terminal: 0
#   path counts n(0) = 1, n(1) = 2; unmerged tokens 4+6+5 + 2*(2+3+4) = 33, generated 24
DAG = dict(tail=[0, 0, 0, 1, 1, 1], head=[1, 1, -1, -1, -1, -1], reward=[0, 0, 0, 1, 0, 1],
           length=[4, 6, 5, 2, 3, 4], num_nodes=2, depth=2)


def test_graph_dual_group_by_hand():
    r = _edges(**DAG)
    t = jax.jit(dag.graph_terms)(r, 0.0)
    np.testing.assert_allclose(t["v"][0], [4 / 9, 2 / 3], rtol=1e-6)
    np.testing.assert_allclose(t["q"][0], [2 / 3, 2 / 3, 0, 1, 0, 1], rtol=1e-6)
    np.testing.assert_allclose(t["a_c"][0], [2 / 9, 2 / 9, -4 / 9, 1 / 3, -2 / 3, 1 / 3],
                               rtol=1e-5)
    np.testing.assert_allclose(t["cost"][0], [4, 6, 5, 7, 8, 9], rtol=1e-6)
    np.testing.assert_allclose(t["a_e"][0], [0.2, -0.2, 0, 1 / 8, 0, -1 / 8], rtol=1e-5, atol=1e-7)
    assert bool(jnp.all(t["trainable"]))
    s0, s1 = np.sqrt(4 / 27) + 1e-6, np.sqrt(1 / 3) + 1e-6
    t1 = dag.graph_terms(r, 1.0)
    np.testing.assert_allclose(t1["a_c"][0], [2 / 9 / s0, 2 / 9 / s0, -4 / 9 / s0, 1 / 3 / s1,
                                              -2 / 3 / s1, 1 / 3 / s1], rtol=1e-5)
    adv, ok = dag.graph_advantages(r, 0.0, 0.5)
    np.testing.assert_allclose(adv[0], np.array([2 / 9, 2 / 9, -4 / 9, 1 / 3, -2 / 3, 1 / 3])
                               + 0.5 * np.array([0.2, -0.2, 0, 1 / 8, 0, -1 / 8]), rtol=1e-5)
    V, Q, res = dag.value_backup(r)
    np.testing.assert_allclose(V[0], [4 / 9, 2 / 3], rtol=1e-6)


def test_path_counts_and_saved_fraction_by_hand():
    r = _edges(**DAG)
    np.testing.assert_allclose(dag.path_counts(r)[0], [1, 2])
    np.testing.assert_allclose(dag.merge_saved_frac(r)[0], 1 - 24 / 33, rtol=1e-6)
    # the same DAG unmerged (e1 reaches its own state 2 with no continuations): nothing saved,
    # and e1 is unresolved (its head has no outgoing edge) so it gets no advantage
    un = dict(DAG, head=[1, 2, -1, -1, -1, -1], num_nodes=3)
    ru = _edges(**un)
    np.testing.assert_allclose(dag.path_counts(ru)[0], [1, 1, 1])
    assert float(dag.merge_saved_frac(ru)[0]) == 0.0
    adv, ok = dag.graph_advantages(ru, 0.0)
    assert ok[0].tolist() == [True, False, True, True, True, True]
    assert float(adv[0, 1]) == 0.0
    # V(0) = mean(2/3, 0) over e0, e2 only
    np.testing.assert_allclose(dag.value_backup(ru)[0][0, 0], 1 / 3, rtol=1e-6)


def test_invalid_edges_drop_out_of_groups():
    # e5 over budget: state 1's value becomes mean(1, 0) = 1/2, e5 gets nothing
    r = _edges(**DAG, valid=[True] * 5 + [False])
    t = dag.graph_terms(r, 0.0)
    np.testing.assert_allclose(t["v"][0], [(1 / 2 + 1 / 2 + 0) / 3, 1 / 2], rtol=1e-6)
    assert t["trainable"][0].tolist() == [True] * 5 + [False]
    assert float(t["a_c"][0, 5]) == 0.0 and float(t["a_e"][0, 5]) == 0.0
    # the solved class is {e3} alone: its efficiency advantage is 0
    assert float(t["a_e"][0, 3]) == 0.0


# A TreeRL tree: root 0; row A is cut at fork node 1 into eA0 (0 -> 1) and its remainder eA1
# (reward 1); two branches B, C from node 1 (reward 0, 0); a second initial row D (reward 1).
#   leaves A1, B, C, D: r = 1, 0, 0, 1; leave-one-out: 1 - 1/3 = 2/3, -2/3, -2/3, 2/3
#   V(node 1) = V(eA0) = (2/3 - 2/3 - 2/3) / 3 = -2/9, |L(eA0)| = 3; V(root) = 0
#   A(eA0) = (-2/9 + -2/9) / sqrt(3);  A(eA1) = 2/3 + (2/3 + 2/9) = 14/9
#   A(B) = A(C) = -2/3 + (-2/3 + 2/9) = -10/9;  A(D) = 2/3 + 2/3 = 4/3
TREE = dict(tail=[0, 1, 1, 1, 0], head=[1, -1, -1, -1, -1], reward=[0, 1, 0, 0, 1],
            length=[3, 2, 4, 4, 5], num_nodes=2)


def test_tree_advantages_by_hand():
    r = _edges(**TREE)
    t = jax.jit(dag.tree_terms)(r, 0.0)
    np.testing.assert_allclose(t["centred_reward"][0], [0, 2 / 3, -2 / 3, -2 / 3, 2 / 3],
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(t["leaves"][0], [3, 1, 1, 1, 1])
    np.testing.assert_allclose(t["node_value"][0], [0, -2 / 9], atol=1e-6)
    adv, ok = dag.tree_advantages(r, 0.0)
    np.testing.assert_allclose(adv[0], [-4 / 9 / np.sqrt(3), 14 / 9, -10 / 9, -10 / 9, 4 / 3],
                               rtol=1e-5)
    assert bool(jnp.all(ok))
    # std scaling divides the centred leaf rewards by the leaf std (1, 0, 0, 1: std = 1/sqrt(3))
    adv1, _ = dag.tree_advantages(r, 1.0)
    np.testing.assert_allclose(adv1[0], adv[0] / (1 / np.sqrt(3) + 1e-6), rtol=1e-5)
    # a branch over budget leaves the tree: leaves A1, C, D (1, 0, 1) -> centred 1/2, -1, 1/2
    rv = _edges(**TREE, valid=[True, True, False, True, True])
    t = dag.tree_terms(rv, 0.0)
    np.testing.assert_allclose(t["centred_reward"][0], [0, 0.5, 0, -1, 0.5], atol=1e-6)
    assert t["trainable"][0].tolist() == [True, True, False, True, True]
    np.testing.assert_allclose(t["node_value"][0, 1], -0.25, rtol=1e-6)


@pytest.mark.parametrize("std_scale", [0.0, 1.0])
def test_chain_equals_group_advantages(std_scale):
    rewards = np.array([[1, 0, 0, 1, 1], [0, 0, 0, 0, 0], [1, 0, 1, 0, 0]], np.float32)
    rs = [_edges([0] * 5, [-1] * 5, rw, [3] * 5) for rw in rewards]
    r = jax.tree.map(lambda *x: jnp.concatenate(x), *rs)
    adv, ok = jax.jit(dag.chain_advantages)(r, std_scale)
    np.testing.assert_allclose(adv, group_advantages(jnp.asarray(rewards).reshape(-1), 5,
                                                     std_scale).reshape(3, 5), rtol=1e-6)
    assert bool(jnp.all(ok))
    # an invalid row leaves the group: the remaining [1, 0, 0, 1] are compared
    rv = _edges([0] * 5, [-1] * 5, rewards[0], [3] * 5, valid=[True] * 4 + [False])
    adv, ok = dag.chain_advantages(rv, std_scale)
    np.testing.assert_allclose(adv[0, :4], group_advantages(jnp.asarray(rewards[0, :4]), 4,
                                                            std_scale), rtol=1e-6)
    assert float(adv[0, 4]) == 0.0 and not bool(ok[0, 4])


def test_token_maps_and_vmap():
    r = _edges(**DAG)
    adv, ok = dag.graph_advantages(r, 0.0, 0.0)
    tok = dag.token_advantages(r, adv)
    # row e owns its first len(e) tokens: each carries A_c(e), the rest 0
    want = np.array([[a] * n + [0] * (8 - n) for a, n in zip(
        [2 / 9, 2 / 9, -4 / 9, 1 / 3, -2 / 3, 1 / 3], DAG["length"])])
    np.testing.assert_allclose(tok[0], want, rtol=1e-5, atol=1e-7)
    bad = ok.at[0, 2].set(False)
    assert int(dag.token_mask(r, bad).sum()) == 24 - 5
    # vmapped over a leading seed axis
    rr = jax.tree.map(lambda x: jnp.stack([x, x]), r)
    a2, _ = jax.vmap(lambda x: dag.graph_advantages(x, 0.0))(rr)
    np.testing.assert_allclose(a2[1], dag.graph_advantages(r, 0.0)[0], rtol=1e-6)


def test_first_step_advantage_variance_by_hand():
    # R=2 resamples, P=1, M=2 rows, T=3 tokens; stop id 9. Rows' first stop at t=1.
    # States after step 1: resample 0: (5,), (5,); resample 1: (5,), (7,).
    # Advantages at the stop: 1, 3 | 2, 10 -> group (5,): 1, 3, 2 (mean 2, sq 1+1+0 = 2, dof 2);
    # group (7,): one sample (no contribution). var = 2 / 2 = 1.
    tokens = jnp.array([[[[4, 9, 2], [4, 9, 2]]], [[[4, 9, 2], [4, 9, 9]]]], jnp.int32)
    adv = jnp.zeros((2, 1, 2, 3)).at[:, :, :, 1].set(jnp.array([[[1.0, 3.0]], [[2.0, 10.0]]]))
    own = jnp.ones((2, 1, 2, 3), bool)
    r = type("R", (), dict(tokens=tokens, completion_mask=own, counted=own))()
    state = jnp.array([[[[5], [5]]], [[[5], [7]]]])
    var, se = dag.first_step_advantage_variance(adv, r, state, [9])
    np.testing.assert_allclose(var, 1.0, rtol=1e-6)
    # u = sq * N / dof = (1, 1, 0) * 3/2 -> mean 1, std (ddof 1) 0.866; se = 0.866 / sqrt(3)
    np.testing.assert_allclose(se, np.std([1.5, 1.5, 0], ddof=1) / np.sqrt(3), rtol=1e-5)
    # a copied (not own) first step does not count: dropping row (0, 1) leaves 1, 2 -> var 0.5
    var2, _ = dag.first_step_advantage_variance(adv, r, state, [9], own.at[0, 0, 1].set(False))
    np.testing.assert_allclose(var2, 0.5, rtol=1e-6)
    # the total variance over the same samples (1, 3, 2; the singleton group's 10 excluded) is 1
    _, _, total = dag.first_step_advantage_variance(adv, r, state, [9], with_total=True)
    np.testing.assert_allclose(total, 1.0, rtol=1e-6)
