"""Advantages on a rollout DAG: GRPO for chains, TreeRL for trees, GraphPO's dual group for graphs.

Every function here is a pure function of the edge arrays of a `rlx.lm.structures.Rollouts`
(duck-typed: any object with these fields works), per prompt p (leading axis P, vmapped inside):

    edge_tail [P,E], edge_head [P,E] int32   node ids, tail < head; head -1 = terminal edge
    edge_reward [P,E] float32                task reward of the completion a terminal edge ends
    edge_len [P,E] int32                     tokens generated on the edge
    edge_valid [P,E] bool                    fully generated within the token budget
    num_nodes, depth (static ints)           node count (0 = root) and a bound on edges per path
    edge_of_token / own / counted / tokens / completion_mask [P,M,T]  (token maps, below)

Notation: out(v) = edges with tail v, in(v) = edges with head v, term(e) = head(e) = -1.
"std-scaled" means, for a comparison group g with values x (n members, mean m),

    x -> (x - m) / (std_g + 1e-6)   if std_scale != 0,   x - m  otherwise,

with std_g the unbiased (ddof = 1) std, 0 for a group of one (as `rlx.losses.sequence.
group_advantages`). `std_scale` may be traced.

Resolution: an edge is *resolved* iff it is valid and terminal, or valid and its head has a
resolved outgoing edge; an unresolved edge's value is unknown and it gets no advantage
(`trainable` False). Values are backed up by `depth` vectorised sweeps (depth >= the longest
root-to-leaf path in edges, so the backup has converged).

The three advantage functions return (adv [P,E] float32, trainable [P,E] bool) with adv = 0
where not trainable; `token_advantages` maps them to tokens (each own token gets its edge's
advantage), `token_mask` gives the loss mask (own & trainable edge).
"""

from __future__ import annotations

from typing import Any, Sequence

import chex
import jax
import jax.numpy as jnp

EPS = 1e-6
Rollouts = Any  # rlx.lm.structures.Rollouts (duck-typed here: rlx.losses does not import rlx.lm)


# ----------------------------------------------------------------------------- DAG primitives


def _onehot(ids: jax.Array, n: int) -> jax.Array:
    """[E, n] float32: row e is one-hot at ids[e], all zero where ids[e] < 0."""
    return (ids[:, None] == jnp.arange(n)[None]).astype(jnp.float32)


def _std_scaled(dev: jax.Array, sq_sum: jax.Array, count: jax.Array,
                std_scale: float | jax.Array) -> jax.Array:
    """dev / (std + eps) if std_scale else dev; std = sqrt(sq_sum / (count - 1)) (0 if count <= 1)."""
    std = jnp.sqrt(sq_sum / jnp.maximum(count - 1.0, 1.0))
    return jnp.where(jnp.asarray(std_scale) != 0, dev / (std + EPS), dev)


def _backup(tail, head, reward, valid, num_nodes: int, depth: int):
    """One prompt's value backup (1-D edge arrays). Returns (V [N], count [N], Q [E], resolved [E]):

        Q(e) = r(e) if term(e) else V(head(e)),
        V(v) = mean_{e in out(v), resolved(e)} Q(e)   (0 if v has no resolved outgoing edge)."""
    Ot, Oh = _onehot(tail, num_nodes), _onehot(head, num_nodes)
    term = head < 0
    V = jnp.zeros(num_nodes, jnp.float32)
    cnt = jnp.zeros(num_nodes, jnp.float32)

    def edge_q(V, cnt):
        res = valid & (term | (Oh @ cnt > 0))
        return jnp.where(term, reward, Oh @ V), res

    def sweep(_, carry):  # reverse topological propagation
        V, cnt = carry
        Q, res = edge_q(V, cnt)
        w = res.astype(jnp.float32)
        cnt = Ot.T @ w
        return (Ot.T @ (w * Q)) / jnp.maximum(cnt, 1.0), cnt

    V, cnt = jax.lax.fori_loop(0, depth, sweep, (V, cnt))
    Q, res = edge_q(V, cnt)
    return V, cnt, Q, res


def _per_prompt(r: Rollouts) -> tuple[jax.Array, ...]:
    chex.assert_equal_shape([r.edge_tail, r.edge_head, r.edge_reward, r.edge_len, r.edge_valid])
    return (r.edge_tail.astype(jnp.int32), r.edge_head.astype(jnp.int32),
            r.edge_reward.astype(jnp.float32), r.edge_len.astype(jnp.float32),
            r.edge_valid.astype(bool))


def value_backup(rollouts: Rollouts) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(V [P,N], Q [P,E], resolved [P,E]): GraphPO's state values and edge Q-values,

        Q(e) = r(e) if e is terminal else V(head(e)),
        V(v) = mean of Q(e) over the resolved edges e leaving v,

    computed in reverse topological order by `depth` vectorised sweeps; V = 0 and Q of its
    incoming edges = 0 where a node has no resolved outgoing edge (those edges are unresolved)."""
    tail, head, reward, _, valid = _per_prompt(rollouts)
    f = lambda t, h, rw, v: _backup(t, h, rw, v, rollouts.num_nodes, rollouts.depth)  # noqa: E731
    V, _, Q, res = jax.vmap(f)(tail, head, reward, valid)
    return V, Q, res


def path_counts(rollouts: Rollouts) -> jax.Array:
    """n [P,N] float32: number of root-to-v paths through valid edges,

        n(root) = 1,   n(v) = sum_{e in in(v), valid(e)} n(tail(e))

    (a forward pass of `depth` sweeps). In a tree every reached node has n = 1; a merged graph
    state reached by k distinct paths has n = k."""
    tail, head, _, _, valid = _per_prompt(rollouts)
    N = rollouts.num_nodes

    def one(tail, head, valid):
        Ot, Oh = _onehot(tail, N), _onehot(head, N)
        w = valid.astype(jnp.float32)
        root = jnp.zeros(N, jnp.float32).at[0].set(1.0)
        return jax.lax.fori_loop(0, rollouts.depth, lambda _, n: root + Oh.T @ (w * (Ot @ n)),
                                 root)

    return jax.vmap(one)(tail, head, valid)


def edge_sums(ids: jax.Array, x: jax.Array, num: int) -> jax.Array:
    """[P,num]: out[p, j] = sum of x[p, ...] over the entries with ids[p, ...] == j (ids < 0 are
    dropped); ids and x [P, ...] of one shape (a per-prompt segment sum)."""
    P = ids.shape[0]
    ids = ids.reshape(P, -1)
    flat = jnp.where(ids >= 0, ids + num * jnp.arange(P)[:, None], P * num).reshape(-1)
    out = jax.ops.segment_sum(x.reshape(-1), flat, num_segments=P * num + 1)
    return out[:P * num].reshape(P, num)


def edge_counted(rollouts: Rollouts) -> jax.Array:
    """[P,E] int32: tokens of each edge counted against the budget (generated before it ran out)."""
    return edge_sums(rollouts.edge_of_token, rollouts.counted.astype(jnp.int32),
                     rollouts.edge_tail.shape[-1])


def merge_saved_frac(rollouts: Rollouts) -> jax.Array:
    """[P] float32: the share of tokens merging saved,

        1 - sum_e c(e) / sum_e c(e) n(tail(e)),

    c(e) the edge's counted tokens and n the `path_counts`: the denominator is what the unmerged
    tree (every path generating its own copy of each shared continuation) would have spent.
    0 for chains and trees (every n = 1); 0 where nothing was generated."""
    c = edge_counted(rollouts).astype(jnp.float32)
    n = path_counts(rollouts)
    n_tail = jnp.take_along_axis(n, jnp.maximum(rollouts.edge_tail, 0), axis=-1)
    generated = jnp.sum(c, axis=-1)
    unmerged = jnp.sum(c * n_tail, axis=-1)
    return jnp.where(unmerged > 0, 1.0 - generated / jnp.maximum(unmerged, 1.0), 0.0)


# ----------------------------------------------------------------------------- advantages


def chain_advantages(rollouts: Rollouts, std_scale: float | jax.Array = 1.0
                     ) -> tuple[jax.Array, jax.Array]:
    """GRPO over the valid terminal edges of each prompt (a chain has one edge per row):

        A_i = (r_i - mean_valid r) / (std_valid r + 1e-6)   (std_scale != 0; ddof = 1)
        A_i =  r_i - mean_valid r                            (std_scale == 0)

    equal to `rlx.losses.sequence.group_advantages` when every row is valid. Invalid rows (over
    budget) are left out of the group and get A = 0, trainable False."""
    _, head, reward, _, valid = _per_prompt(rollouts)
    ok = valid & (head < 0)
    w = ok.astype(jnp.float32)
    n = jnp.sum(w, axis=-1, keepdims=True)
    mean = jnp.sum(w * reward, axis=-1, keepdims=True) / jnp.maximum(n, 1.0)
    dev = reward - mean
    adv = _std_scaled(dev, jnp.sum(w * dev**2, axis=-1, keepdims=True), n, std_scale)
    return jnp.where(ok, adv, 0.0), ok


def tree_terms(rollouts: Rollouts, std_scale: float | jax.Array = 1.0) -> dict[str, jax.Array]:
    """TreeRL's quantities per edge (a tree edge = TreeRL's segment node). Leaves L = valid
    terminal edges; L(e) = leaves at or below edge e, L(v) = leaves below node v.

        r~_l = r_l - mean_{l' != l} r_l'           (leave-one-out centring over L; 0 if |L| < 2)
               then divided by (std_L r + 1e-6) if std_scale != 0
        V(e) = mean_{l in L(e)} r~_l,   V(v) = mean_{l in L(v)} r~_l
        A(e) = [ (V(e) - V(root)) + (V(e) - V(tail(e))) ] / sqrt(|L(e)|)

    (global + local advantage of TreeRL's Eq., arXiv 2506.11902). V(root) = 0 whenever |L| >= 2
    (leave-one-out residuals sum to 0). trainable(e) = valid(e) and |L(e)| > 0.

    What THUDM/TreeRL's code does (openrlhf/trainer/ppo_utils/tree_node.py `leaf_normalize`,
    `compute_weighted_update`; parallel_mcts.py `gather_paths`; release script
    scripts/treerl-qw14b.sh: --use_state_value_reward --use_weighted_value
    --weighted_value_style sqrt, overall_norm_style "none"): leaves centred leave-one-out over
    ALL leaves; S(n) = sum of centred leaves below segment n; then each S(n) is divided by
    sqrt(#selected leaves below n) (a random subset of num_traces leaves is trained on) and
    V'(n) = that / #leaves below n; a segment's advantage is V'(n) + (V'(n) - V'(parent)); an
    advantage exactly 0 is replaced by the previous segment's (`fill_in_paths`). Ranking for
    forks uses -log p of the sampled token. We differ: the 1/sqrt scaling multiplies the SUM of
    the two terms (the paper's equation) instead of each value; every valid leaf is used (no
    subset); V(root) is subtracted explicitly; no zero fill-in; optional std scaling."""
    tail, head, reward, _, valid = _per_prompt(rollouts)
    N, D = rollouts.num_nodes, rollouts.depth

    def one(tail, head, reward, valid):
        Ot, Oh = _onehot(tail, N), _onehot(head, N)
        leaf = valid & (head < 0)
        w = leaf.astype(jnp.float32)
        n = jnp.sum(w)
        mean = jnp.sum(w * reward) / jnp.maximum(n, 1.0)
        dev = reward - mean
        loo = jnp.where(n >= 2, dev * n / jnp.maximum(n - 1.0, 1.0), 0.0)  # r - mean of others
        rt = w * _std_scaled(loo, jnp.sum(w * dev**2), n, std_scale)
        vf = valid.astype(jnp.float32)

        def edges(Sv, Cv):  # leaf sums and counts at or below each edge
            return (vf * jnp.where(head < 0, rt, Oh @ Sv), vf * jnp.where(head < 0, w, Oh @ Cv))

        def sweep(_, carry):
            Se, Ce = edges(*carry)
            return Ot.T @ Se, Ot.T @ Ce

        zero = jnp.zeros(N, jnp.float32)
        Sv, Cv = jax.lax.fori_loop(0, D, sweep, (zero, zero))
        Se, Ce = edges(Sv, Cv)
        Ve = Se / jnp.maximum(Ce, 1.0)
        Vv = Sv / jnp.maximum(Cv, 1.0)
        adv = ((Ve - Vv[0]) + (Ve - Ot @ Vv)) / jnp.sqrt(jnp.maximum(Ce, 1.0))
        ok = valid & (Ce > 0)
        return {"centred_reward": rt, "value": Ve, "node_value": Vv, "leaves": Ce,
                "adv": jnp.where(ok, adv, 0.0), "trainable": ok}

    return jax.vmap(one)(tail, head, reward, valid)


def tree_advantages(rollouts: Rollouts, std_scale: float | jax.Array = 1.0
                    ) -> tuple[jax.Array, jax.Array]:
    """TreeRL's segment advantages (see `tree_terms` for the equations and the differences from
    THUDM/TreeRL's code): (adv [P,E], trainable [P,E])."""
    t = tree_terms(rollouts, std_scale)
    return t["adv"], t["trainable"]


def graph_terms(rollouts: Rollouts, std_scale: float | jax.Array = 1.0) -> dict[str, jax.Array]:
    """GraphPO's dual-group quantities per edge. These definitions are OURS (GraphPO, Zhan et al.
    2026, has no public code or exact formulas); the issue's description fixes only the groups.

    Values (`value_backup`): Q(e) = r(e) if terminal else V(head(e)); V(v) = mean of Q over the
    resolved edges leaving v.

    Correctness (outgoing group of tail(e): the steps taken from one state):

        A_c(e) = (Q(e) - V(tail(e))) / s,   s = std of Q over out(tail(e)) + 1e-6 (ddof = 1)
                                            if std_scale != 0, else s = 1.

    Efficiency (incoming group of head(e): the paths reaching one state). Path cost
    c(e) = d(tail(e)) + len(e), d(v) = mean_{e in in(v), valid} c(e), d(root) = 0 (mean tokens
    spent to reach v, a forward pass). For a non-terminal edge, with m = mean of c over the valid
    edges into head(e),

        A_e(e) = -(c(e) - m) / m;

    all valid *correct* terminal edges (reward > 0) form one "solved" class with m the mean c over
    it; incorrect terminal edges get A_e = 0.

        A(e) = A_c(e) + eff_weight * A_e(e)   (see `graph_advantages`),

    0 for unresolved / invalid edges (trainable False). Returns a dict of [P,E] arrays
    (q, cost, a_c, a_e, trainable) and [P,N] arrays (v, d)."""
    tail, head, reward, length, valid = _per_prompt(rollouts)
    N, D = rollouts.num_nodes, rollouts.depth

    def one(tail, head, reward, length, valid):
        V, cnt, Q, res = _backup(tail, head, reward, valid, N, D)
        Ot, Oh = _onehot(tail, N), _onehot(head, N)
        term = head < 0
        w = res.astype(jnp.float32)
        dev = Q - Ot @ V
        sq = Ot.T @ (w * dev**2)
        a_c = _std_scaled(dev, Ot @ sq, Ot @ cnt, std_scale)
        # efficiency: forward pass of mean path costs
        w_in = (valid & ~term).astype(jnp.float32)
        n_in = Oh.T @ w_in
        d = jax.lax.fori_loop(
            0, D, lambda _, d: (Oh.T @ (w_in * (Ot @ d + length))) / jnp.maximum(n_in, 1.0),
            jnp.zeros(N, jnp.float32))
        c = Ot @ d + length
        m_in = Oh @ ((Oh.T @ (w_in * c)) / jnp.maximum(n_in, 1.0))
        solved = valid & term & (reward > 0)
        ws = solved.astype(jnp.float32)
        m_solved = jnp.sum(ws * c) / jnp.maximum(jnp.sum(ws), 1.0)
        m = jnp.where(term, m_solved, m_in)
        a_e = jnp.where(solved | (valid & ~term), -(c - m) / jnp.maximum(m, EPS), 0.0)
        return {"q": Q, "v": V, "d": d, "cost": c, "a_c": jnp.where(res, a_c, 0.0),
                "a_e": jnp.where(res, a_e, 0.0), "trainable": res}

    return jax.vmap(one)(tail, head, reward, length, valid)


def graph_advantages(rollouts: Rollouts, std_scale: float | jax.Array = 1.0,
                     eff_weight: float | jax.Array = 0.1) -> tuple[jax.Array, jax.Array]:
    """GraphPO's dual-group advantage A = A_c + eff_weight * A_e (`graph_terms`; our
    definitions): (adv [P,E], trainable [P,E])."""
    t = graph_terms(rollouts, std_scale)
    return t["a_c"] + jnp.asarray(eff_weight, jnp.float32) * t["a_e"], t["trainable"]


# ----------------------------------------------------------------------------- token maps


def _gather_edges(x: jax.Array, edge_of_token: jax.Array) -> jax.Array:
    """x [P,E] at each token's edge: [P,M,T] (edge_of_token -1 -> x[0], mask it afterwards)."""
    P = x.shape[0]
    idx = jnp.maximum(edge_of_token, 0).reshape(P, -1)
    return jnp.take_along_axis(x, idx, axis=-1).reshape(edge_of_token.shape)


def token_advantages(rollouts: Rollouts, adv: jax.Array) -> jax.Array:
    """[P,M,T] float32: adv[p, edge_of_token[p,m,t]] on own tokens, 0 elsewhere (copied prefixes,
    padding): each generated token carries its edge's advantage exactly once."""
    chex.assert_equal_shape([adv, rollouts.edge_tail])
    eot = rollouts.edge_of_token
    return jnp.where(rollouts.own & (eot >= 0), _gather_edges(adv.astype(jnp.float32), eot), 0.0)


def token_mask(rollouts: Rollouts, trainable: jax.Array) -> jax.Array:
    """[P,M,T] bool loss mask: own tokens whose edge is trainable."""
    chex.assert_equal_shape([trainable, rollouts.edge_tail])
    eot = rollouts.edge_of_token
    return rollouts.own & (eot >= 0) & _gather_edges(trainable, eot)


# ----------------------------------------------------------------------------- variance measure


def first_step_advantage_variance(adv_tokens: jax.Array, rollouts: Rollouts,
                                  state_after_first_step: jax.Array, stop_ids: Sequence[int],
                                  mask: jax.Array | None = None, with_total: bool = False
                                  ) -> tuple[jax.Array, ...]:
    """Pooled within-state variance of the first step's advantage over R independent resamples.

    Inputs carry a leading resample axis R (same policy and prompts, independent keys):
    adv_tokens [R,P,M,T], rollouts with [R,P,M,T] token fields, state_after_first_step
    [R,P,M,k] (the row's state after its first step; any negative entry = invalid), mask
    [R,P,M,T] (default: rollouts.counted; pass `token_mask` for trainable tokens only).

    Sample i = a row whose first stop token (first token in stop_ids) is in `mask` (own tokens
    only, so each generated first step is one sample) and whose state is valid; a_i = its token
    advantage there. Groups g = (prompt, state after step 1), pooled over resamples and rows:

        var = sum_g sum_{i in g} (a_i - mean_g a)^2 / sum_g (n_g - 1)

    (groups of one contribute nothing). Standard error by the delta method on the per-sample
    terms u_i = (a_i - mean_g a)^2 N / dof over the N samples in groups of >= 2:
    se = std(u) / sqrt(N). Returns (var, se) float32 scalars (nan if no group has 2 samples).
    With std_scale = 0 every method's advantage is in reward units, so this measures the noise of
    each estimator of the same quantity (the advantage of reaching a given first state).
    `with_total`: also the total variance of a over the same samples (ddof = 1), so var / total
    is the scale-free share of the first-step advantage's variance that is estimation noise."""
    R, P, M, T = adv_tokens.shape
    if mask is None:
        mask = rollouts.counted
    chex.assert_shape([rollouts.tokens, rollouts.completion_mask, mask], (R, P, M, T))
    chex.assert_shape(state_after_first_step, (R, P, M, None))
    stop = jnp.isin(rollouts.tokens, jnp.asarray(list(stop_ids), jnp.int32)) & \
        rollouts.completion_mask.astype(bool)
    first = stop & (jnp.cumsum(stop, axis=-1) == 1)
    sel = first & mask.astype(bool)
    a = jnp.sum(jnp.where(sel, adv_tokens, 0.0), axis=-1)  # [R,P,M]
    ok = jnp.any(sel, axis=-1) & jnp.all(state_after_first_step >= 0, axis=-1)
    # per prompt: items over (R, M)
    a = jnp.moveaxis(a, 1, 0).reshape(P, R * M)
    ok = jnp.moveaxis(ok, 1, 0).reshape(P, R * M)
    st = jnp.moveaxis(state_after_first_step, 1, 0).reshape(P, R * M, -1)
    eq = jnp.all(st[:, :, None] == st[:, None], axis=-1) & ok[:, :, None] & ok[:, None]
    eqf = eq.astype(jnp.float32)
    n = jnp.sum(eqf, axis=-1)
    mean = jnp.sum(eqf * a[:, None], axis=-1) / jnp.maximum(n, 1.0)
    inside = ok & (n >= 2)
    sq = jnp.where(inside, (a - mean) ** 2, 0.0)
    dof = jnp.sum(jnp.where(inside, 1.0 - 1.0 / jnp.maximum(n, 1.0), 0.0))
    var = jnp.sum(sq) / dof
    N = jnp.sum(inside)
    u = sq * N / dof
    u_mean = jnp.sum(jnp.where(inside, u, 0.0)) / N
    u_var = jnp.sum(jnp.where(inside, (u - u_mean) ** 2, 0.0)) / jnp.maximum(N - 1.0, 1.0)
    se = jnp.sqrt(u_var / N)
    if not with_total:
        return var, se
    a_mean = jnp.sum(jnp.where(inside, a, 0.0)) / N
    total = jnp.sum(jnp.where(inside, (a - a_mean) ** 2, 0.0)) / jnp.maximum(N - 1.0, 1.0)
    return var, se, total
