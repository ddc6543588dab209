"""Rollout structures under a token budget: chain (GRPO), tree (TreeRL's EPTree), graph (GraphPO).

All three produce one representation, `Rollouts`: per prompt, M *rows* (root-to-leaf completions
of T tokens, or for a graph also root-to-state partial paths) and E *edges* (segments between
nodes). Node 0 is the root (the prompt); other nodes are tree fork points or graph state classes,
numbered so that every edge's tail id < its head id. Some tokens of a row are copied from another
row (a tree branch's prefix, a graph state's representative path); the rest are generated in this
row (`own`) and split into edges. Every generated token is own in exactly one row, so it is
trained (loss mask = own & edge trainable) and counted once.

    rollout(spec, sample_fn, key, prompts, budget, T, eos_id, stop_ids, reward_fn, state_fn)

dispatches on the spec:

* `ChainSpec(group)`: G independent completions per prompt; one edge per row (root -> terminal).
* `TreeSpec(chains, forks, branches, rounds=1)`: TreeRL's entropy-guided tree (EPTree, arXiv
  2506.11902): `chains` initial completions; each round, in every existing row, the `forks` own,
  non-eos positions t of highest entropy (distinct, t > the row's own start, not already a fork)
  each get `branches` new continuations (prefix = tokens before t; token t is resampled). Fork
  points are nodes; a row is cut into edges at its fork points. Differences from THUDM/TreeRL:
  positions are ranked by the policy's entropy (TreeRL ranks by -log p of the sampled token) and
  chosen per row (TreeRL picks the top `forks` across all rows of one initial chain's tree; the
  same when rounds = 1); forks at a row's first own token are excluded (no empty segments).
* `GraphSpec(widths, frontier)`: GraphPO's DAG (arXiv 2606.18954; our construction). Level l
  expands up to `frontier[l]` unique states (frontier[0] = 1, the root) with `widths[l]` samples
  each; a sample generates one segment (to its first stop id or eos; at the last level to eos or
  T). The state after a segment is `state_fn(problem, row, mask)[:, l]` (Countdown:
  `rlx.lm.tasks.countdown_states`, the canonical multiset after step l+1). A row ends in a
  terminal edge (reward = reward_fn of the row) if it ended with eos, reached T, did not end with
  a stop id, reached an invalid state (any entry < 0), or is at the last level. Valid non-terminal
  heads of a level are merged by equal state within a prompt: the unique states, in order of first
  arrival and capped at frontier[l+1], are the next level's nodes, each continued from ONE
  representative row (its first arrival), so the continuations are shared by every path reaching
  it; states past the cap go to the level's overflow node, which is never expanded (its incoming
  edges stay unresolved). Without `state_fn` no two rows merge. Countdown with k numbers:
  k-1 step levels + 1 eos level (widths there 1). Non-terminal graph rows are partial paths: they
  end at their segment, have no terminal edge and `row_valid` False (their tokens are trained
  through their edges).

Budget (equal-token comparisons): generation happens in a fixed order (chain: rows in order;
tree: initial chains, then each round's branches in (parent row, fork, branch) order; graph:
level by level, samples in (state, width) order), and tokens are counted in that order. The unit
(row / branch / segment) that crosses `budget` counts its tokens up to the budget and is invalid;
later units are invalid and count nothing. The fixed-shape arrays compute past the stop; `counted`
and `spent` are what a generator stopping at the budget would have spent, so spent = min(budget,
what the structure would generate). Size structures so that spent == budget almost always.
An edge is valid iff all its tokens are counted; an edge whose head has no valid outgoing edge is
unresolved (no advantage; see `rlx.losses.dag`).

Sampling interface: `sample_fn(key, prompt_tokens [n,L], prompt_mask [n,L]) -> (completion
[n,T], completion_mask [n,T], log_probs [n,T], entropy [n,T])` generates up to T tokens after
left-padded prompts (bind `rlx.lm.sample` with a model context >= Lp + 2T: continuing a row from
its first t tokens uses the prompt `_compact(prompt ++ row[:t])` right-aligned to Lp + T; the new
row is row[:t] ++ new tokens, truncated at T). `reward_fn(problem [n,K], completion [n,T], mask)
-> [n]`; `state_fn(problem, completion, mask) -> [n,S,k]`.

Metrics: `rollout_metrics` (tokens spent, valid rows, states reached per graph level, merge saved
fraction); advantages: `structure_advantages` dispatches to `rlx.losses.dag`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import chex
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from rlx.lm.tasks import PAD, Prompts, _compact
from rlx.losses import dag

SampleFn = Callable[[jax.Array, jax.Array, jax.Array],
                    tuple[jax.Array, jax.Array, jax.Array, jax.Array]]
RewardFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
StateFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


@flax.struct.dataclass
class Rollouts:
    """The rollouts of P prompts as a DAG over M rows and E edges (see the module docstring).

    Token fields [P,M,T]: tokens int32, completion_mask bool, log_probs / entropy float32 (of
    the row that generated the token; copied tokens carry their generating row's values), own
    bool (generated in this row), counted bool (own and within budget), edge_of_token int32
    (edge id of own tokens, -1 elsewhere). spent [P] int32 = sum of counted.
    Edge fields [P,E]: edge_tail / edge_head int32 (head -1 = terminal), edge_reward float32
    (task reward of the row a terminal edge ends, else 0), edge_len int32 (own tokens),
    edge_valid bool (fully generated within budget), edge_row int32 (the row owning its tokens).
    Row fields [P,M]: row_reward float32 (0 for non-terminal graph rows), row_valid bool (the row
    is a complete completion whose terminal edge, hence every edge on its path, is valid).
    Static: num_nodes (0 = root), depth (a bound on the edges of any root-to-leaf path)."""

    tokens: jax.Array
    completion_mask: jax.Array
    log_probs: jax.Array
    entropy: jax.Array
    own: jax.Array
    counted: jax.Array
    edge_of_token: jax.Array
    spent: jax.Array
    edge_tail: jax.Array
    edge_head: jax.Array
    edge_reward: jax.Array
    edge_len: jax.Array
    edge_valid: jax.Array
    edge_row: jax.Array
    row_reward: jax.Array
    row_valid: jax.Array
    num_nodes: int = flax.struct.field(pytree_node=False, default=1)
    depth: int = flax.struct.field(pytree_node=False, default=1)


# ----------------------------------------------------------------------------- specs


def _positive(owner: str, name: str, v) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{owner}.{name}={v!r} must be a positive int")


@dataclasses.dataclass(frozen=True)
class ChainSpec:
    """G = `group` independent completions per prompt (GRPO)."""

    group: int

    def __post_init__(self):
        _positive("ChainSpec", "group", self.group)

    @property
    def rows(self) -> int:
        return self.group

    @property
    def edges(self) -> int:
        return self.group

    @property
    def num_nodes(self) -> int:
        return 1

    @property
    def depth(self) -> int:
        return 1


@dataclasses.dataclass(frozen=True)
class TreeSpec:
    """TreeRL's EPTree: `chains` initial completions, then `rounds` rounds in which every row
    forks at its `forks` highest-entropy own positions with `branches` continuations each."""

    chains: int
    forks: int
    branches: int
    rounds: int = 1

    def __post_init__(self):
        for name in ("chains", "forks", "branches", "rounds"):
            _positive("TreeSpec", name, getattr(self, name))

    def _blocks(self) -> list[int]:
        """Rows created in round 0 (initial chains), 1, ..., rounds."""
        blocks, total = [self.chains], self.chains
        for _ in range(self.rounds):
            blocks.append(total * self.forks * self.branches)
            total += blocks[-1]
        return blocks

    @property
    def rows(self) -> int:
        return sum(self._blocks())

    @property
    def num_nodes(self) -> int:
        blocks = self._blocks()
        return 1 + sum(sum(blocks[:q + 1]) * self.forks for q in range(self.rounds))

    @property
    def edges(self) -> int:
        return self.rows + self.num_nodes - 1

    @property
    def depth(self) -> int:
        return self.num_nodes  # a path visits each node at most once


@dataclasses.dataclass(frozen=True)
class GraphSpec:
    """GraphPO's level-by-level expansion: level l expands up to frontier[l] unique states
    (frontier[0] = 1, the root) with widths[l] one-segment samples each, or, with `spread`,
    widths[l] samples in all, dealt round-robin over the level's unique states (sample j
    continues state j mod count): when paths merge into fewer states, each gets more
    continuations, so the budget moves from re-exploring a state to exploring the ones there are
    (GraphPO's budget argument), and a level spends the same tokens however much merged.
    `fill` independent completions from the prompt come last (root -> terminal edges, like a
    chain's): what a graph whose paths died early (invalid steps) leaves of the budget is spent
    there, so every structure spends its budget; past the budget they count nothing."""

    widths: tuple[int, ...]
    frontier: tuple[int, ...]
    spread: bool = False
    fill: int = 0  # after the levels: this many independent completions from the prompt

    def __post_init__(self):
        w, f = tuple(self.widths), tuple(self.frontier)
        if not w or len(w) != len(f):
            raise ValueError(f"GraphSpec: widths={w!r} and frontier={f!r} must be non-empty and "
                             f"of equal length")
        for name, xs in (("widths", w), ("frontier", f)):
            for x in xs:
                _positive("GraphSpec", name, x)
        if f[0] != 1:
            raise ValueError(f"GraphSpec.frontier[0]={f[0]!r} must be 1 (the root)")
        if isinstance(self.fill, bool) or not isinstance(self.fill, (int, np.integer)) \
                or self.fill < 0:
            raise ValueError(f"GraphSpec.fill={self.fill!r} must be an int >= 0")
        object.__setattr__(self, "widths", w)
        object.__setattr__(self, "frontier", f)

    @property
    def levels(self) -> int:
        return len(self.widths)

    @property
    def rows(self) -> int:
        if self.spread:
            return sum(self.widths) + self.fill
        return sum(f * w for f, w in zip(self.frontier, self.widths)) + self.fill

    @property
    def edges(self) -> int:
        return self.rows

    def node_offsets(self) -> list[int]:
        """Id of each level's first state node (level l >= 1 has frontier[l] nodes + 1 overflow)."""
        offs = [0, 1]
        for f in self.frontier[1:-1]:
            offs.append(offs[-1] + f + 1)
        return offs[:self.levels]

    @property
    def num_nodes(self) -> int:
        return 1 + sum(f + 1 for f in self.frontier[1:])

    @property
    def depth(self) -> int:
        return self.levels


Spec = ChainSpec | TreeSpec | GraphSpec


# ----------------------------------------------------------------------------- helpers


def _sample(sample_fn: SampleFn, key, tokens, mask, T: int):
    out = sample_fn(key, tokens, mask)
    if len(out) != 4:
        raise ValueError(f"sample_fn must return (completion, mask, log_probs, entropy), got "
                         f"{len(out)} arrays")
    c, cm, lp, ent = out
    chex.assert_shape([c, cm, lp, ent], (tokens.shape[0], T))
    return (c.astype(jnp.int32), cm.astype(bool), lp.astype(jnp.float32),
            ent.astype(jnp.float32))


def _continue_prompts(prompt, prompt_mask, prefix, prefix_len):
    """Prompts [n, Lp+T] = prompt ++ prefix[:prefix_len], right-aligned (left padding)."""
    T = prefix.shape[-1]
    keep = jnp.concatenate([prompt_mask.astype(bool),
                            jnp.arange(T)[None] < prefix_len[:, None]], axis=-1)
    toks = jnp.concatenate([prompt, prefix], axis=-1)
    return _compact(toks, keep, right=True), jnp.sort(keep, axis=-1)


def _compose(parent, f, new):
    """Rows [n,T] = parent[:f] ++ new completion (truncated at T); returns (tok, mask, lp, ent,
    own) with own = the new tokens' positions."""
    ptok, pmask, plp, pent = parent
    c, cm, clp, cent = new
    T = c.shape[-1]
    t = jnp.arange(T)[None]
    idx = jnp.clip(t - f[:, None], 0, T - 1)
    g = lambda x: jnp.take_along_axis(x, idx, axis=-1)  # noqa: E731
    before = t < f[:, None]
    own = ~before & g(cm)
    tok = jnp.where(before, ptok, jnp.where(own, g(c), PAD))
    lp = jnp.where(before, plp, jnp.where(own, g(clp), 0.0))
    ent = jnp.where(before, pent, jnp.where(own, g(cent), 0.0))
    return tok, (before & pmask) | own, lp, ent, own


def _count(own, budget, used):
    """Budget accounting of units [P,U,T] in generation order, each unit's own tokens in position
    order: (counted [P,U,T], fully counted [P,U], tokens generated so far [P] (uncapped))."""
    length = jnp.sum(own, axis=-1, dtype=jnp.int32)
    before = used[:, None] + jnp.cumsum(length, axis=-1) - length
    rank = jnp.cumsum(own, axis=-1, dtype=jnp.int32) - 1
    counted = own & (before[..., None] + rank < budget)
    return counted, before + length <= budget, used + jnp.sum(length, axis=-1)


def _rows_call(fn, problem, tok, mask):
    """fn(problem repeated per row, tokens, mask) over [P,U,T] rows, reshaped back to [P,U,...]."""
    P, U, T = tok.shape
    out = fn(jnp.repeat(problem, U, axis=0), tok.reshape(P * U, T), mask.reshape(P * U, T))
    return out.reshape((P, U) + out.shape[1:])


def _assemble(tok, mask, lp, ent, own, counted, eot, tail, head, edge_row, row_reward,
              num_nodes: int, depth: int) -> Rollouts:
    """Edge lengths / validity / rewards and row validity from the token maps; rows with no own
    token (never generated) are blanked."""
    P, M, T = tok.shape
    E = tail.shape[-1]
    exists = jnp.any(own, axis=-1, keepdims=True)
    mask = mask & exists
    row_reward = jnp.where(exists[..., 0], row_reward, 0.0)
    tok = jnp.where(mask, tok, PAD).astype(jnp.int32)
    lp = jnp.where(mask, lp, 0.0)
    ent = jnp.where(mask, ent, 0.0)
    eot = jnp.where(own, eot, -1).astype(jnp.int32)
    edge_len = dag.edge_sums(eot, own.astype(jnp.int32), E)
    edge_cnt = dag.edge_sums(eot, counted.astype(jnp.int32), E)
    edge_valid = (edge_len > 0) & (edge_cnt == edge_len)
    terminal = head < 0
    edge_reward = jnp.where(terminal & (edge_len > 0),
                            jnp.take_along_axis(row_reward, edge_row, axis=-1), 0.0)
    done = (terminal & edge_valid).astype(jnp.int32)
    row_valid = dag.edge_sums(edge_row, done, M) > 0
    return Rollouts(
        tokens=tok, completion_mask=mask, log_probs=lp.astype(jnp.float32),
        entropy=ent.astype(jnp.float32), own=own, counted=counted, edge_of_token=eot,
        spent=jnp.sum(counted, axis=(1, 2), dtype=jnp.int32),
        edge_tail=tail.astype(jnp.int32), edge_head=head.astype(jnp.int32),
        edge_reward=edge_reward.astype(jnp.float32), edge_len=edge_len, edge_valid=edge_valid,
        edge_row=edge_row.astype(jnp.int32), row_reward=row_reward.astype(jnp.float32),
        row_valid=row_valid, num_nodes=num_nodes, depth=depth)


def _repeat_prompts(prompts: Prompts, k: int):
    return jnp.repeat(prompts.tokens, k, axis=0), jnp.repeat(prompts.mask, k, axis=0)


# ----------------------------------------------------------------------------- structures


def _chain(spec: ChainSpec, sample_fn, key, prompts, budget, T, reward_fn) -> Rollouts:
    P, G = prompts.tokens.shape[0], spec.group
    c, cm, lp, ent = _sample(sample_fn, key, *_repeat_prompts(prompts, G), T)
    c, cm, lp, ent = (x.reshape(P, G, T) for x in (c, cm, lp, ent))
    counted, _, _ = _count(cm, budget, jnp.zeros(P, jnp.int32))
    reward = _rows_call(reward_fn, prompts.problem, c, cm).astype(jnp.float32)
    rows = jnp.broadcast_to(jnp.arange(G, dtype=jnp.int32), (P, G))
    eot = jnp.broadcast_to(jnp.arange(G, dtype=jnp.int32)[None, :, None], (P, G, T))
    return _assemble(c, cm, lp, ent, cm, counted, eot, jnp.zeros((P, G), jnp.int32),
                     jnp.full((P, G), -1, jnp.int32), rows, reward, 1, 1)


def _tree(spec: TreeSpec, sample_fn, key, prompts, budget, T, eos_id, reward_fn) -> Rollouts:
    P = prompts.tokens.shape[0]
    F, B, Q = spec.forks, spec.branches, spec.rounds
    keys = jax.random.split(key, Q + 1)
    c, cm, lp, ent = _sample(sample_fn, keys[0], *_repeat_prompts(prompts, spec.chains), T)
    tok, mask, lp, ent = (x.reshape(P, spec.chains, T) for x in (c, cm, lp, ent))
    own = mask
    start = jnp.zeros((P, spec.chains), jnp.int32)
    from_node = jnp.full((P, spec.chains), -1, jnp.int32)  # creation index of the fork node
    cut_pos = jnp.full((P, spec.chains, F * Q), T, jnp.int32)  # T = no cut
    cut_node = jnp.full((P, spec.chains, F * Q), -1, jnp.int32)
    node_pos, created = [], 0
    t = jnp.arange(T, dtype=jnp.int32)
    for q in range(Q):
        cur = tok.shape[1]
        is_cut = jnp.any(t[None, None, :, None] == cut_pos[:, :, None, :], axis=-1)
        elig = own & mask & (tok != eos_id) & (t >= start[..., None] + 1) & ~is_cut
        score, pos = jax.lax.top_k(jnp.where(elig, ent, -jnp.inf), F)  # [P,cur,F]
        pos = jnp.where(jnp.isfinite(score), pos, T).astype(jnp.int32)
        ids = (created + jnp.arange(cur * F, dtype=jnp.int32)).reshape(cur, F)
        cut_pos = cut_pos.at[:, :, q * F:(q + 1) * F].set(pos)
        cut_node = cut_node.at[:, :, q * F:(q + 1) * F].set(jnp.broadcast_to(ids, pos.shape))
        node_pos.append(pos.reshape(P, cur * F))
        created += cur * F
        # branches: rows in (parent row, fork, branch) order
        parent = jnp.repeat(jnp.arange(cur), F * B)
        f = jnp.repeat(pos.reshape(P, cur * F), B, axis=1)  # [P, nb]
        nb = cur * F * B
        par = tuple(x[:, parent] for x in (tok, mask, lp, ent))
        pt, pm = _repeat_prompts(prompts, nb)
        cp, cpm = _continue_prompts(pt, pm, par[0].reshape(P * nb, T), f.reshape(-1))
        new = _sample(sample_fn, keys[q + 1], cp, cpm, T)
        out = _compose(tuple(x.reshape(P * nb, T) for x in par), f.reshape(-1), new)
        ntok, nmask, nlp, nent, nown = (x.reshape(P, nb, T) for x in out)
        tok, mask, lp, ent, own = (jnp.concatenate([a, b], axis=1) for a, b in
                                   zip((tok, mask, lp, ent, own), (ntok, nmask, nlp, nent, nown)))
        start = jnp.concatenate([start, f], axis=1)
        from_node = jnp.concatenate(
            [from_node, jnp.broadcast_to(jnp.repeat(ids.reshape(-1), B), (P, nb))], axis=1)
        cut_pos = jnp.concatenate([cut_pos, jnp.full((P, nb, F * Q), T, jnp.int32)], axis=1)
        cut_node = jnp.concatenate([cut_node, jnp.full((P, nb, F * Q), -1, jnp.int32)], axis=1)
    M = tok.shape[1]
    counted, _, _ = _count(own, budget, jnp.zeros(P, jnp.int32))
    reward = _rows_call(reward_fn, prompts.problem, tok, mask).astype(jnp.float32)
    # node ids: 1 + rank by fork position (ancestors sit at strictly smaller positions)
    allpos = jnp.concatenate(node_pos, axis=1)  # [P, N-1] by creation index
    rank = jnp.argsort(jnp.argsort(allpos, axis=-1, stable=True), axis=-1)
    node_id = jnp.concatenate([jnp.zeros((P, 1), jnp.int32), 1 + rank.astype(jnp.int32)], -1)
    def nid(c):  # node id of creation index c (-1 = the root, id 0)
        return jnp.take_along_axis(node_id, c + 1, axis=-1)
    order = jnp.argsort(cut_pos, axis=-1, stable=True)
    cns = jnp.take_along_axis(cut_node, order, axis=-1)
    ncuts = jnp.sum(cut_pos < T, axis=-1)  # [P,M]
    k_tok = jnp.sum(cut_pos[:, :, None, :] <= t[None, None, :, None], axis=-1)  # [P,M,T]
    # static edge layout: row created in round r has 1 + F (Q - r) edge slots
    row_round = np.concatenate([np.full(n, r) for r, n in enumerate(spec._blocks())])
    slots = 1 + F * (Q - row_round)
    offset = np.concatenate([[0], np.cumsum(slots)[:-1]])
    e_row = np.repeat(np.arange(M), slots)
    e_k = np.concatenate([np.arange(s) for s in slots])
    assert e_row.shape[0] == spec.edges and M == spec.rows
    eot = jnp.asarray(offset, jnp.int32)[None, :, None] + k_tok
    kk = jnp.asarray(e_k, jnp.int32)[None]
    rr = jnp.asarray(e_row, jnp.int32)
    prev = jnp.take_along_axis(cns[:, rr], jnp.maximum(kk - 1, 0)[..., None], -1)[..., 0]
    nxt = jnp.take_along_axis(cns[:, rr], jnp.minimum(kk, F * Q - 1)[..., None], -1)[..., 0]
    tail = jnp.where(kk == 0, nid(from_node[:, rr]), nid(prev))
    head = jnp.where(kk < ncuts[:, rr], nid(nxt), -1)
    # a path's nodes sit at strictly increasing positions < T: at most min(N - 1, T - 1) + 1 edges
    return _assemble(tok, mask, lp, ent, own, counted, eot, tail, head,
                     jnp.broadcast_to(rr, (P, rr.shape[0])), reward, spec.num_nodes,
                     min(spec.depth, T))


def _graph(spec: GraphSpec, sample_fn, key, prompts, budget, T, eos_id, stop_ids, reward_fn,
           state_fn) -> Rollouts:
    P = prompts.tokens.shape[0]
    L = spec.levels
    offs = spec.node_offsets()
    keys = jax.random.split(key, L)
    stops = jnp.asarray(list(stop_ids), jnp.int32)
    t = jnp.arange(T, dtype=jnp.int32)
    # the current frontier: which slots exist and their representative rows
    exists = jnp.ones((P, 1), bool)
    rep = tuple(jnp.zeros((P, 1, T), d) for d in (jnp.int32, bool, jnp.float32, jnp.float32))
    rep_len = jnp.zeros((P, 1), jnp.int32)
    used = jnp.zeros(P, jnp.int32)
    levels = []
    for l in range(L):
        Fl, W = spec.frontier[l], spec.widths[l]
        if spec.spread:  # W samples in all, dealt round-robin over the unique states
            n = W
            count = jnp.sum(exists, axis=-1)
            slot = jnp.arange(W)[None, :] % jnp.maximum(count, 1)[:, None]  # [P,W]
        else:  # W samples per frontier slot
            n = Fl * W
            slot = jnp.broadcast_to(jnp.repeat(jnp.arange(Fl), W), (P, n))
        par = tuple(jnp.take_along_axis(x, slot[..., None], axis=1) for x in rep)
        f = jnp.take_along_axis(rep_len, slot, axis=1)
        ex = jnp.take_along_axis(exists, slot, axis=1)
        pt, pm = _repeat_prompts(prompts, n)
        if l > 0:
            pt, pm = _continue_prompts(pt, pm, par[0].reshape(P * n, T), f.reshape(-1))
        new = _sample(sample_fn, keys[l], pt, pm, T)
        out = _compose(tuple(x.reshape(P * n, T) for x in par), f.reshape(-1), new)
        tok, mask, lp, ent, own = (x.reshape(P, n, T) for x in out)
        own = own & ex[..., None]
        last = l == L - 1
        if not last:  # one segment: up to and including the first stop id or eos
            end = own & (jnp.isin(tok, stops) | (tok == eos_id))
            own = own & (jnp.cumsum(end, axis=-1) - end == 0)
        mask = ((t < f[..., None]) | own) & ex[..., None]
        tok = jnp.where(mask, tok, PAD)
        counted, fully, used = _count(own, budget, used)
        seglen = jnp.sum(own, axis=-1)
        valid = fully & (seglen > 0)
        tail = jnp.broadcast_to((0 if l == 0 else offs[l]) + slot, (P, n)).astype(jnp.int32)
        if last:
            terminal = jnp.ones((P, n), bool)
            head = jnp.full((P, n), -1, jnp.int32)
        else:
            ended_eos = jnp.any(own & (tok == eos_id), axis=-1)
            ended_stop = jnp.any(own & jnp.isin(tok, stops), axis=-1)
            if state_fn is None:
                state = jnp.broadcast_to(jnp.arange(n)[None, :, None], (P, n, 1))
            else:
                st = _rows_call(state_fn, prompts.problem, tok, mask)
                if st.ndim != 4 or st.shape[2] < L - 1:
                    raise ValueError(f"state_fn must return [n, S, k] with S >= levels - 1 = "
                                     f"{L - 1}, got {st.shape[1:]}")
                state = st[:, :, l]
            state_ok = jnp.all(state >= 0, axis=-1)
            terminal = ended_eos | (f + seglen >= T) | ~ended_stop | ~state_ok
            cand = valid & ~terminal
            # merge by equal state: first arrivals, in order, are the next level's nodes
            Fn = spec.frontier[l + 1]
            eq = (jnp.all(state[:, :, None] == state[:, None], axis=-1)
                  & cand[:, :, None] & cand[:, None])
            earlier = eq & (jnp.arange(n)[None, :] < jnp.arange(n)[:, None])[None]
            first = cand & ~jnp.any(earlier, axis=-1)
            urank = jnp.cumsum(first, axis=-1) - 1
            first_of = jnp.argmax(eq & first[:, None, :], axis=-1)
            rank = jnp.take_along_axis(urank, first_of, axis=-1)
            nslot = jnp.where(cand & (rank < Fn), rank, Fn)
            head = jnp.where(terminal, -1, offs[l + 1] + nslot).astype(jnp.int32)
            pick = first[:, None, :] & (urank[:, None, :] == jnp.arange(Fn)[None, :, None])
            rep_idx = jnp.argmax(pick, axis=-1)  # [P,Fn]
            exists = jnp.any(pick, axis=-1)
            g = lambda x: jnp.take_along_axis(x, rep_idx[..., None], axis=1)  # noqa: E731
            rep = (g(tok), g(mask), g(lp), g(ent))
            rep_len = jnp.take_along_axis(f + seglen, rep_idx, axis=1)
        levels.append((tok, mask, lp, ent, own, counted, tail, head, terminal))
    if spec.fill:  # the rest of the budget: independent completions from the prompt
        n = spec.fill
        pt, pm = _repeat_prompts(prompts, n)
        c, cm, clp, cent = (x.reshape(P, n, T) for x in _sample(
            sample_fn, jax.random.fold_in(key, L), pt, pm, T))  # the level keys stay as they were
        counted, _, used = _count(cm, budget, used)
        levels.append((jnp.where(cm, c, PAD), cm, clp, cent, cm, counted,
                       jnp.zeros((P, n), jnp.int32), jnp.full((P, n), -1, jnp.int32),
                       jnp.ones((P, n), bool)))
    tok, mask, lp, ent, own, counted, tail, head, terminal = (
        jnp.concatenate(xs, axis=1) for xs in zip(*levels))
    M = tok.shape[1]
    reward = _rows_call(reward_fn, prompts.problem, tok, mask).astype(jnp.float32)
    reward = jnp.where(terminal, reward, 0.0)  # one reward call over all rows
    rows = jnp.arange(M, dtype=jnp.int32)
    eot = jnp.broadcast_to(rows[None, :, None], (P, M, T))
    return _assemble(tok, mask, lp, ent, own, counted, eot, tail, head,
                     jnp.broadcast_to(rows, (P, M)), reward, spec.num_nodes, spec.depth)


def rollout(spec: Spec, sample_fn: SampleFn, key: jax.Array, prompts: Prompts,
            budget: int | jax.Array, T: int, eos_id: int, stop_ids: Sequence[int],
            reward_fn: RewardFn, state_fn: StateFn | None = None) -> Rollouts:
    """The rollouts of `prompts` (P prompts) in structure `spec` under `budget` tokens per prompt
    (see the module docstring). Jit with everything but key, prompts and budget static (budget
    may be traced); vmappable over keys when sample_fn is. Shapes: M = spec.rows, E = spec.edges,
    num_nodes = spec.num_nodes. Keys: chain uses `key`; tree split(key, rounds + 1) (initial
    chains, then one per round); graph split(key, levels)."""
    if not isinstance(T, (int, np.integer)) or isinstance(T, bool) or T < 1:
        raise ValueError(f"rollout: T={T!r} must be a positive int")
    if isinstance(budget, (int, np.integer)) and budget < 0:
        raise ValueError(f"rollout: budget={budget!r} must be >= 0")
    stop_ids = tuple(int(s) for s in stop_ids)
    if isinstance(spec, ChainSpec):
        return _chain(spec, sample_fn, key, prompts, budget, T, reward_fn)
    if isinstance(spec, TreeSpec):
        if spec.forks >= T:
            raise ValueError(f"rollout: TreeSpec.forks={spec.forks} must be < T={T} (fork positions "
                             f"per row)")
        return _tree(spec, sample_fn, key, prompts, budget, T, eos_id, reward_fn)
    if isinstance(spec, GraphSpec):
        if not stop_ids:
            raise ValueError("rollout: a GraphSpec needs stop_ids (segment ends), got none")
        return _graph(spec, sample_fn, key, prompts, budget, T, eos_id, stop_ids, reward_fn,
                      state_fn)
    raise ValueError(f"rollout: unknown structure spec {spec!r}")


# ----------------------------------------------------------------------------- metrics


def structure_advantages(spec: Spec, rollouts: Rollouts, std_scale: float | jax.Array = 1.0,
                         eff_weight: float | jax.Array = 0.1) -> tuple[jax.Array, jax.Array]:
    """(adv [P,E], trainable [P,E]) of the structure's method: GRPO (`dag.chain_advantages`)
    for chains, TreeRL (`dag.tree_advantages`) for trees, GraphPO (`dag.graph_advantages`) for
    graphs."""
    if isinstance(spec, ChainSpec):
        return dag.chain_advantages(rollouts, std_scale)
    if isinstance(spec, TreeSpec):
        return dag.tree_advantages(rollouts, std_scale)
    if isinstance(spec, GraphSpec):
        return dag.graph_advantages(rollouts, std_scale, eff_weight)
    raise ValueError(f"structure_advantages: unknown structure spec {spec!r}")


def first_step_states(rollouts: Rollouts, problem: jax.Array, state_fn: StateFn) -> jax.Array:
    """[P,M,k]: each row's state after its first step (state_fn(...)[:, 0]; negative = invalid),
    the grouping of `dag.first_step_advantage_variance`."""
    return _rows_call(state_fn, problem, rollouts.tokens, rollouts.completion_mask)[:, :, 0]


def rollout_metrics(spec: Spec, rollouts: Rollouts) -> dict[str, jax.Array]:
    """Per prompt [P]: spent (tokens), valid_rows (complete completions within budget),
    merge_saved_frac (`dag.merge_saved_frac`), states (non-root nodes reached by a valid edge);
    for a graph also states_per_level [P, levels-1] (unique states expanded at levels 1..) and
    overflow [P, levels-1] (valid edges into states past the frontier cap)."""
    out = {"spent": rollouts.spent,
           "valid_rows": jnp.sum(rollouts.row_valid, axis=-1),
           "merge_saved_frac": dag.merge_saved_frac(rollouts)}
    reached = dag.edge_sums(jnp.where(rollouts.edge_valid, rollouts.edge_head, -1),
                            jnp.ones_like(rollouts.edge_head), rollouts.num_nodes) > 0
    out["states"] = jnp.sum(reached[:, 1:], axis=-1)
    if isinstance(spec, GraphSpec) and spec.levels > 1:
        offs = spec.node_offsets()
        per, over = [], []
        for l in range(1, spec.levels):
            f = spec.frontier[l]
            per.append(jnp.sum(reached[:, offs[l]:offs[l] + f], axis=-1))
            into = rollouts.edge_valid & (rollouts.edge_head == offs[l] + f)
            over.append(jnp.sum(into, axis=-1))
        out["states_per_level"] = jnp.stack(per, axis=-1)
        out["overflow"] = jnp.stack(over, axis=-1)
    return out
