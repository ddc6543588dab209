"""Rollout structures under a token budget: chain (GRPO), tree (TreeRL's EPTree), graph (GraphPO).

(Module docstring completed below with the structures.)
"""

from __future__ import annotations

import flax.struct
import jax


@flax.struct.dataclass
class Rollouts:
    """The rollouts of P prompts as a DAG over M rows and E edges (see the module docstring).

    Token fields [P,M,T]: tokens int32, completion_mask bool, log_probs / entropy float32 (of
    the row that generated the token; copied tokens carry their generating row's values), own
    bool (generated in this row), counted bool (own and within budget), edge_of_token int32
    (edge id of own tokens, -1 elsewhere). spent [P] int32 = sum of counted.
    Edge fields [P,E]: edge_tail / edge_head int32 (head -1 = terminal), edge_reward float32,
    edge_len int32 (own tokens), edge_valid bool, edge_row int32.
    Row fields [P,M]: row_reward float32, row_valid bool.
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
