"""Verifiable-reward sequence tasks generated in code: multi-digit addition and Countdown.

Each task has a character-level `Vocab` (pad=0 "<pad>", bos=1 "<bos>", eos=2 "<eos>", then the
task symbols, then optional distractor tokens "~0".."~{D-1}"), a prompt generator with a fixed
train/test partition of the instance space, an exact reward in {0, 1} and noisy solution traces
for a supervised warm start. Everything except the `*_text`/`encode`/`decode` host helpers is pure
JAX over fixed-size int32 arrays, so `reward` runs inside the compiled training program.

Token layout (shared with rlx.lm): prompts are LEFT-padded to `prompt_length` P and start with bos;
a completion is `completion_length` T tokens and its mask is True up to and including the first
eos. Distractor tokens carry no meaning: the reward parser skips them wherever they occur (before
eos). Demonstrations insert them at random positions, their identities drawn from a Zipf law
p(~r) ∝ (r+1)^(-zipf), r = 0..D-1, so the vocabulary has a long tail a policy learns to emit.

Train/test split: an instance (addition: (a, b); Countdown: (target, sorted numbers)) is in the
test split iff h(instance) < test_fraction * 2^32, with h a fixed 32-bit integer hash (`is_test`).
`prompts(key, n, split)` draws from the task's instance distribution restricted to the split by
rejection (a `lax.while_loop`), so held-out instances are never trained on. At default options
(test_fraction=0.15): addition (a, b in [10, 99]) has 8100 instances, 6943 train / 1157 test;
Countdown (3 numbers in 1..9) has 2253 (target, multiset) instances, 1921 train / 332 test
(targets 1..729).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from typing import Any, Sequence

import chex
import flax
import jax
import jax.numpy as jnp
import numpy as np

PAD, BOS, EOS = 0, 1, 2
SPECIALS: tuple[str, ...] = ("<pad>", "<bos>", "<eos>")
DIGIT0 = 3  # id of "0"; digits are ids 3..12 in every task vocabulary
TASKS: tuple[str, ...] = ("addition", "countdown")
SPLITS: tuple[str, ...] = ("train", "test")
OPS: tuple[str, ...] = ("+", "-", "*", "/")  # Countdown op index -> symbol
_BIG = np.int32(2**31 - 1)
_MAX_REJECTION_ROUNDS = 10_000


# ----------------------------------------------------------------------------- vocabulary


@dataclasses.dataclass(frozen=True)
class Vocab:
    """Token strings by id: ids 0, 1, 2 are "<pad>", "<bos>", "<eos>"."""

    tokens: tuple[str, ...]

    def __post_init__(self):
        if tuple(self.tokens[:3]) != SPECIALS:
            raise ValueError(f"Vocab: the first tokens must be {SPECIALS}, got {self.tokens[:3]}")
        if len(set(self.tokens)) != len(self.tokens):
            raise ValueError(f"Vocab: duplicate tokens in {self.tokens}")

    @property
    def size(self) -> int:
        return len(self.tokens)

    @functools.cached_property
    def _ids(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.tokens)}

    @functools.cached_property
    def _by_length(self) -> tuple[str, ...]:
        return tuple(sorted(self.tokens, key=len, reverse=True))

    def id(self, token: str) -> int:
        """The id of one token string."""
        if token not in self._ids:
            raise ValueError(f"Vocab: unknown token {token!r}")
        return self._ids[token]

    def encode(self, text: str) -> list[int]:
        """Ids of `text`, read greedily by longest matching token (task symbols are single
        characters; "<bos>", "<eos>", "<pad>" and distractors "~r" are multi-character, so with
        more than 10 distractors "~10" reads as one token, never as "~1" then "0")."""
        out, i = [], 0
        while i < len(text):
            for tok in self._by_length:
                if text.startswith(tok, i):
                    out.append(self._ids[tok])
                    i += len(tok)
                    break
            else:
                raise ValueError(f"Vocab.encode: no token matches {text[i:]!r}")
        return out

    def decode(self, ids: Sequence[int] | np.ndarray | jax.Array) -> str:
        """Host helper for display: the token strings of `ids`, skipping pad, stopping at eos."""
        out = []
        for i in np.asarray(ids).reshape(-1).tolist():
            if i == EOS:
                break
            if i != PAD:
                out.append(self.tokens[i])
        return "".join(out)


# ----------------------------------------------------------------------------- array helpers


@flax.struct.dataclass
class Prompts:
    """A batch of prompts: tokens [n,P] int32 (left-padded, starting with bos), mask [n,P] bool
    (True on real tokens), problem [n,K] int32 (the numbers defining each instance)."""

    tokens: jax.Array
    mask: jax.Array
    problem: jax.Array


def _hash(cols: jax.Array) -> jax.Array:
    """h(x_1..x_K) [...]: uint32 hash of the int32 rows [..., K] (murmur3-finaliser chain)."""

    def mix(h):
        h = h ^ (h >> 16)
        h = h * jnp.uint32(0x7FEB352D)
        h = h ^ (h >> 15)
        h = h * jnp.uint32(0x846CA68B)
        return h ^ (h >> 16)

    x = cols.astype(jnp.uint32)
    h = jnp.full(x.shape[:-1], 0x2545F491, jnp.uint32)
    for i in range(x.shape[-1]):
        h = mix(h ^ mix(x[..., i] + jnp.uint32(0x9E3779B9 * (i + 1) % 2**32)))
    return h


def _powers(width: int) -> np.ndarray:
    """[10^(width-1), ..., 10, 1] (int32 constants)."""
    return (10 ** np.arange(width - 1, -1, -1)).astype(np.int32)


def _ndigits(v: jax.Array, width: int) -> jax.Array:
    """Number of decimal digits of v >= 1 (at most `width`)."""
    return jnp.sum(v[..., None] >= _powers(width)[::-1], axis=-1)


def _render_number(v: jax.Array, width: int) -> tuple[jax.Array, jax.Array]:
    """Digit tokens of v >= 1 right-aligned in `width` slots, and which slots are real digits."""
    pos = np.arange(width)
    toks = DIGIT0 + (v[..., None] // _powers(width)) % 10
    keep = pos >= width - _ndigits(v, width)[..., None]
    return toks.astype(jnp.int32), keep


def _compact(tokens: jax.Array, keep: jax.Array, right: bool = False) -> jax.Array:
    """The kept tokens of each row in order, at the front (the end if `right`); pad elsewhere."""
    order = jnp.argsort(keep if right else ~keep, axis=-1, stable=True)
    toks = jnp.where(keep, tokens, PAD)
    return jnp.take_along_axis(toks, order, axis=-1)


def _index(u: jax.Array, count: jax.Array | int) -> jax.Array:
    """floor(u * count) for u uniform in [0, 1): an index uniform in 0..count-1 (int32)."""
    return jnp.clip(jnp.floor(u * count).astype(jnp.int32), 0, jnp.asarray(count) - 1)


def _first_eos_mask(tokens: jax.Array) -> jax.Array:
    """True up to and including the first eos of each row."""
    is_eos = tokens == EOS
    return jnp.cumsum(is_eos, axis=-1) - is_eos < 1


def _digits(v: int) -> int:
    return len(str(int(v)))


# ----------------------------------------------------------------------------- task base


@dataclasses.dataclass(frozen=True)
class Task:
    """A verifiable-reward task (hashable: usable as a static jit argument).

    vocab: ids 0..V-1, the last `distractors` of which are "~0".."~{D-1}";
    prompt_length P; completion_length T (longest correct or noisy trace, plus the distractor
    budget, plus eos); problem_size K (columns of `Prompts.problem`);
    distractor_rate: expected distractors per demonstration (at most `distractor_budget`);
    zipf: exponent of the distractor frequencies; test_fraction: share of instances held out.
    """

    name: str
    vocab: Vocab
    prompt_length: int
    completion_length: int
    problem_size: int
    distractors: int
    distractor_rate: float
    zipf: float
    test_fraction: float

    # -- shared API

    @property
    def distractor_start(self) -> int:
        """Id of "~0" (every id >= this is a distractor)."""
        return self.vocab.size - self.distractors

    @property
    def distractor_budget(self) -> int:
        """Distractor slots per demonstration: each holds one with probability rate / budget."""
        if self.distractors == 0 or self.distractor_rate == 0:
            return 0
        return max(1, math.ceil(2 * self.distractor_rate))

    def is_test(self, problem: jax.Array) -> jax.Array:
        """[n] bool: instance in the held-out split (a fixed hash of the canonical instance)."""
        threshold = jnp.uint32(min(int(self.test_fraction * 2**32), 2**32 - 1))
        return _hash(self._canonical(problem)) < threshold

    def prompts(self, key: jax.Array, n: int, split: str = "train") -> Prompts:
        """n instances drawn from the task's distribution restricted to `split` ("train"/"test")
        by rejection (at most 10^4 rounds: a row stays unfilled with probability < 0.99^10^4)."""
        if split not in SPLITS:
            raise ValueError(f"prompts: unknown split {split!r}; valid: {', '.join(SPLITS)}")
        want_test = split == "test"

        def cond(carry):
            i, _, _, got = carry
            return (i < _MAX_REJECTION_ROUNDS) & ~jnp.all(got)

        def body(carry):
            i, key, problem, got = carry
            key, sub = jax.random.split(key)
            cand = self._draw(sub, n)
            take = (self.is_test(cand) == want_test) & ~got
            return i + 1, key, jnp.where(take[:, None], cand, problem), got | take

        init = (jnp.int32(0), key, jnp.zeros((n, self.problem_size), jnp.int32),
                jnp.zeros((n,), bool))
        problem = jax.lax.while_loop(cond, body, init)[2]
        tokens, mask = self._prompt_tokens(problem)
        chex.assert_shape([tokens, mask], (n, self.prompt_length))
        return Prompts(tokens=tokens, mask=mask, problem=problem)

    def reward(self, problem: jax.Array, completion: jax.Array,
               completion_mask: jax.Array) -> jax.Array:
        """r [n] float32 in {0, 1}: 1 iff the completion (distractors skipped) is a correct answer
        ending in eos."""
        chex.assert_shape(problem, (None, self.problem_size))
        chex.assert_shape([completion, completion_mask], (problem.shape[0], None))
        return self._reward(problem.astype(jnp.int32), completion.astype(jnp.int32),
                            completion_mask.astype(bool)).astype(jnp.float32)

    def graded_reward(self, problem: jax.Array, completion: jax.Array,
                      completion_mask: jax.Array) -> jax.Array:
        """g [n] float32 in [0, 1], a graded version of `reward` (a task signal for training a
        gold reward model): with the answer's tokens (distractors skipped, before the first eos)
        compared in place with the correct answer's,

            g = 1[eos present] * (#answer tokens equal to the correct one in place)
                / max(#answer tokens, #correct tokens)

        so g = 1 exactly when `reward` = 1, and a near miss scores between 0 and 1."""
        chex.assert_shape(problem, (None, self.problem_size))
        chex.assert_shape([completion, completion_mask], (problem.shape[0], None))
        return self._graded_reward(problem.astype(jnp.int32), completion.astype(jnp.int32),
                                   completion_mask.astype(bool)).astype(jnp.float32)

    def answer_variants(self, key: jax.Array, problem: jax.Array
                        ) -> tuple[jax.Array, jax.Array]:
        """(completion [n,T] int32, completion_mask [n,T] bool): a broad spread of answers around
        the correct one (see the task's `_answer_variants`), no distractors: data on which a
        reward model trained on `graded_reward` sees near misses and far misses alike."""
        chex.assert_shape(problem, (None, self.problem_size))
        return self._answer_variants(key, problem.astype(jnp.int32))

    def demonstrations(self, key: jax.Array, problem: jax.Array,
                       noise: float | jax.Array) -> tuple[jax.Array, jax.Array]:
        """(completion [n,T] int32, completion_mask [n,T] bool): solution traces ending in eos;
        each trace independently carries one injected error with probability `noise` (so its
        reward is 0), and distractors are inserted as described in the module docstring."""
        chex.assert_shape(problem, (None, self.problem_size))
        n, m = problem.shape[0], self._solution_uniforms
        # one uniform draw feeds every random choice (each threefry call costs compile time)
        u = jax.random.uniform(key, (n, 1 + m + 3 * self.distractor_budget))
        wrong = u[:, 0] < jnp.asarray(noise, jnp.float32)
        tokens, keep = self._solution_slots(u[:, 1:1 + m], problem.astype(jnp.int32), wrong)
        seq = _compact(tokens, keep)
        completion = self._insert_distractors(u[:, 1 + m:], seq, jnp.sum(keep, axis=-1))
        mask = _first_eos_mask(completion)
        chex.assert_shape([completion, mask], (n, self.completion_length))
        return completion, mask

    def answer_text(self, problem: Sequence[int] | np.ndarray | jax.Array) -> str:
        """Host helper: a correct completion (without eos) for one instance [K]."""
        raise NotImplementedError

    def problem_text(self, problem: Sequence[int] | np.ndarray | jax.Array) -> str:
        """Host helper: the prompt text for one instance [K] (what `prompts` encodes)."""
        raise NotImplementedError

    # -- helpers shared by the tasks

    def _insert_distractors(self, u: jax.Array, seq: jax.Array, length: jax.Array) -> jax.Array:
        """seq [n,L] (front-aligned, `length` tokens incl. eos) with distractors inserted before
        uniformly random tokens of the trace (never after eos), padded/cropped to T; u [n,3D]
        uniform in [0, 1)."""
        n, L = seq.shape
        D, T = self.distractor_budget, self.completion_length
        if D > 0:
            on = u[:, :D] < self.distractor_rate / D
            pos = _index(u[:, D:2 * D], length[:, None])
            law = np.arange(1, self.distractors + 1, dtype=np.float64) ** -self.zipf
            cdf = jnp.asarray(np.cumsum(law)[:-1] / law.sum(), jnp.float32)
            ids = self.distractor_start + jnp.sum(u[:, 2 * D:, None] >= cdf, axis=-1)
            i = jnp.arange(L, dtype=jnp.int32)
            tok_key = jnp.where(i[None] < length[:, None], 2 * i[None] + 1, _BIG)
            dis_key = jnp.where(on, 2 * pos, _BIG)
            keys = jnp.concatenate([tok_key, dis_key], axis=-1)
            toks = jnp.concatenate([seq, ids.astype(jnp.int32)], axis=-1)
            order = jnp.argsort(keys, axis=-1, stable=True)
            seq = jnp.where(jnp.take_along_axis(keys, order, -1) == _BIG, PAD,
                            jnp.take_along_axis(toks, order, -1))
        width = seq.shape[1]
        if width < T:
            seq = jnp.pad(seq, ((0, 0), (0, T - width)))
        return seq[:, :T]

    def _canonical(self, problem: jax.Array) -> jax.Array:
        raise NotImplementedError

    def _draw(self, key: jax.Array, n: int) -> jax.Array:
        raise NotImplementedError

    def _prompt_tokens(self, problem: jax.Array) -> tuple[jax.Array, jax.Array]:
        raise NotImplementedError

    def _reward(self, problem: jax.Array, completion: jax.Array, mask: jax.Array) -> jax.Array:
        raise NotImplementedError

    def _graded_reward(self, problem: jax.Array, completion: jax.Array,
                       mask: jax.Array) -> jax.Array:
        raise ValueError(f"the {self.name} task has no graded reward (addition has one)")

    def _answer_variants(self, key: jax.Array, problem: jax.Array
                         ) -> tuple[jax.Array, jax.Array]:
        raise ValueError(f"the {self.name} task has no answer variants (addition has them)")

    @property
    def _solution_uniforms(self) -> int:
        """Columns of the uniform array `_solution_slots` consumes."""
        raise NotImplementedError

    def _solution_slots(self, u: jax.Array, problem: jax.Array,
                        wrong: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(tokens, keep) [n,L]: the trace's tokens in slots, `keep` marking the real ones."""
        raise NotImplementedError


# ----------------------------------------------------------------------------- addition


@dataclasses.dataclass(frozen=True)
class AdditionTask(Task):
    """"<bos>a+b=" -> the decimal digits of a+b, then eos; a, b uniform in [10^(d-1), 10^d - 1].

    problem = (a, b) (K=2); P = 2d+3; T = d+3 + distractor budget (the sum has at most d+1
    digits; one spare slot). Reward 1 iff the non-distractor tokens before the first eos are
    exactly the digits of a+b (no leading zero) and an eos is present. Noise: one digit of the
    sum replaced by a different digit.
    """

    digits: int

    def _canonical(self, problem):
        return problem

    def _draw(self, key, n):
        lo, hi = 10 ** (self.digits - 1), 10**self.digits
        return jax.random.randint(key, (n, 2), lo, hi, dtype=jnp.int32)

    def _prompt_tokens(self, problem):
        d, n = self.digits, problem.shape[0]
        a, _ = _render_number(problem[:, 0], d)
        b, _ = _render_number(problem[:, 1], d)
        col = lambda t: jnp.full((n, 1), t, jnp.int32)  # noqa: E731
        tokens = jnp.concatenate([col(BOS), a, col(self.vocab.id("+")), b,
                                  col(self.vocab.id("="))], axis=-1)
        return tokens, jnp.ones_like(tokens, bool)

    def _reward(self, problem, completion, mask):
        want, n_want, body, rank, has_eos = self._answer_body(problem, completion, mask)
        W = want.shape[1]
        expected = jnp.take_along_axis(want, jnp.clip(rank, 0, W - 1), axis=-1)
        good = (rank < W) & (completion == expected)
        return has_eos & jnp.all(good | ~body, axis=-1) & (jnp.sum(body, axis=-1) == n_want)

    def _answer_body(self, problem, completion, mask):
        """(want [n,W] front-aligned digits of a+b, n_want, body [n,T], rank [n,T], has_eos)."""
        W = self.digits + 1
        want, want_keep = _render_number(problem[:, 0] + problem[:, 1], W)
        want = _compact(want, want_keep)
        is_eos = (completion == EOS) & mask
        before = mask & (jnp.cumsum(is_eos, axis=-1) == 0)
        body = before & (completion < self.distractor_start)
        rank = jnp.cumsum(body, axis=-1) - 1
        return want, jnp.sum(want_keep, axis=-1), body, rank, jnp.any(is_eos, axis=-1)

    def _graded_reward(self, problem, completion, mask):
        want, n_want, body, rank, has_eos = self._answer_body(problem, completion, mask)
        W = want.shape[1]
        expected = jnp.take_along_axis(want, jnp.clip(rank, 0, W - 1), axis=-1)
        match = jnp.sum(body & (rank < n_want[:, None]) & (completion == expected), axis=-1)
        n_body = jnp.sum(body, axis=-1)
        return has_eos * match / jnp.maximum(jnp.maximum(n_body, n_want), 1)

    def _answer_variants(self, key, problem):
        """The correct answer (its digits, then eos) with, independently per row: 0, 1 or 2
        random digit replacements (equally likely; a replacement may keep the digit); its
        length changed by -1 or +1 (a digit dropped from or appended at the end) with
        probability 1/5 each; with probability 1/4 instead a uniformly random digit string of
        length 0..T-1; the eos left out with probability 1/10. Padded to T."""
        n, T, W = problem.shape[0], self.completion_length, self.digits + 1
        k = jax.random.split(key, 8)
        want, n_want, *_ = self._answer_body(problem, jnp.zeros((n, 1), jnp.int32),
                                             jnp.zeros((n, 1), bool))
        slots = T - 1
        digits = jnp.pad(want - DIGIT0, ((0, 0), (0, max(slots - W, 0))))[:, :slots]
        digits = jnp.where(jnp.arange(slots) < n_want[:, None], digits,
                           jax.random.randint(k[0], (n, slots), 0, 10))
        errors = jax.random.randint(k[1], (n,), 0, 3)
        for j in range(2):
            at = jax.random.randint(k[2 + j], (n,), 0, jnp.maximum(n_want, 1))
            new = jax.random.randint(k[4 + j], (n,), 0, 10)
            hit = (j < errors)[:, None] & (jnp.arange(slots) == at[:, None])
            digits = jnp.where(hit, new[:, None], digits)
        u = jax.random.uniform(k[6], (n, 4))
        length = n_want + (u[:, 0] < 0.2) * -1 + ((u[:, 0] >= 0.2) & (u[:, 0] < 0.4))
        rand = u[:, 1] < 0.25
        digits = jnp.where(rand[:, None], jax.random.randint(k[7], (n, slots), 0, 10), digits)
        length = jnp.where(rand, _index(u[:, 2], slots + 1), jnp.clip(length, 0, slots))
        eos = u[:, 3] >= 0.1
        pos = jnp.arange(T)
        digit_tok = jnp.pad(digits + DIGIT0, ((0, 0), (0, T - slots)))
        is_digit = pos < length[:, None]
        is_eos = (pos == length[:, None]) & eos[:, None]
        completion = jnp.where(is_digit, digit_tok, jnp.where(is_eos, EOS, PAD))
        return completion.astype(jnp.int32), is_digit | is_eos

    _solution_uniforms = 2

    def _solution_slots(self, u, problem, wrong):
        W = self.digits + 1
        n = problem.shape[0]
        toks, keep = _render_number(problem[:, 0] + problem[:, 1], W)
        nd = jnp.sum(keep, axis=-1)
        at = W - nd + _index(u[:, 0], nd)
        shift = 1 + _index(u[:, 1], 9)
        bad = DIGIT0 + (toks[jnp.arange(n), at] - DIGIT0 + shift) % 10
        toks = toks.at[jnp.arange(n), at].set(jnp.where(wrong, bad, toks[jnp.arange(n), at]))
        eos = jnp.full((n, 1), EOS, jnp.int32)
        return (jnp.concatenate([toks, eos], -1),
                jnp.concatenate([keep, jnp.ones((n, 1), bool)], -1))

    def answer_text(self, problem):
        a, b = (int(x) for x in np.asarray(problem).reshape(-1)[:2])
        return str(a + b)

    def problem_text(self, problem):
        a, b = (int(x) for x in np.asarray(problem).reshape(-1)[:2])
        return f"<bos>{a}+{b}="


# ----------------------------------------------------------------------------- countdown


@functools.lru_cache(maxsize=None)
def _step_programs(k: int) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], ...]:
    """All (k-1)-step programs over a k-item list: per step (i, j, op, rest) [N], [N], [N],
    [N, m-2]: combine items i < j of the current m-item list with op, then the list becomes
    list[rest] + [result]."""
    per_step = []
    for m in range(k, 1, -1):
        per_step.append([(i, j, op, tuple(r for r in range(m) if r not in (i, j)))
                         for i, j in itertools.combinations(range(m), 2) for op in range(4)])
    programs = list(itertools.product(*per_step))
    out = []
    for s in range(k - 1):
        i, j, op, rest = zip(*(p[s] for p in programs))
        out.append((np.array(i, np.int32), np.array(j, np.int32), np.array(op, np.int32),
                    np.array(rest, np.int32).reshape(len(programs), k - s - 2)))
    return tuple(out)


def _run_programs(xs: jax.Array):
    """Every step program on numbers xs [n,k]: (valid [n,N], result [n,N], steps) where steps is
    a list over the k-1 steps of (hi, lo, op, value) [n,N]; the operation is hi op lo with
    hi >= lo (so "-" and "/" are hi-lo and hi/lo); valid = every intermediate positive and
    every division exact."""
    k = xs.shape[-1]
    progs = _step_programs(k)
    N = progs[0][0].shape[0]
    cur = jnp.broadcast_to(xs[:, None, :], (xs.shape[0], N, k))
    valid = jnp.ones(cur.shape[:2], bool)
    steps, program = [], np.arange(N)
    for i, j, op, rest in progs:
        a, b = cur[:, program, i], cur[:, program, j]
        hi, lo = jnp.maximum(a, b), jnp.minimum(a, b)
        safe_lo = jnp.maximum(lo, 1)
        value = jnp.select([op == 0, op == 1, op == 2], [hi + lo, hi - lo, hi * lo],
                           hi // safe_lo)
        ok = jnp.select([op == 1, op == 3], [hi > lo, hi % safe_lo == 0], jnp.ones_like(valid))
        valid = valid & ok
        steps.append((hi, lo, jnp.broadcast_to(op, hi.shape), value))
        cur = jnp.concatenate([cur[:, program[:, None], rest], value[..., None]], axis=-1)
    return valid, cur[..., 0], steps


def _pick(u: jax.Array, allowed: jax.Array) -> jax.Array:
    """[n] index of a uniformly random True entry of each row of allowed [n,N] (0 if none),
    given u [n,N] uniform in [0, 1)."""
    return jnp.argmax(jnp.where(allowed, u, -1.0), axis=-1)


@dataclasses.dataclass(frozen=True)
class CountdownTask(Task):
    """"<bos>target:x1,x2,x3=" -> steps "a*b=c;" then eos, reaching the target.

    Generator: x1..xk iid uniform in [1, max_number]; a step program (k-1 steps, each combining
    two items of the current list with +, -, *, / into one) is drawn uniformly among the valid
    ones (every intermediate positive, every division exact: "-" and "/" are larger op smaller);
    the target is its final value, so every instance is solvable using all numbers.
    problem = (target, x1..xk) (K=k+1, numbers in prompt order); split hash on (target, sorted xs).

    Reward 1 iff the non-distractor tokens before the first eos are one or more steps
    "a op b = c ;" (decimal numbers without leading zero) followed by eos, where every step
    removes a and b from the current multiset (initially {x1..xk}; a, b two distinct items),
    a op b == c exactly (positive c; "/" exact), adds c, and the last step's c is the target.
    Not all numbers need to be used. Noise: one step's written result is off by 1 or 2.
    """

    numbers: int
    max_number: int

    @property
    def max_value(self) -> int:
        """Largest possible intermediate or target: max_number ** numbers."""
        return self.max_number**self.numbers

    @property
    def num_states(self) -> int:
        """S = numbers - 1 steps (rows of `countdown_states`)."""
        return self.numbers - 1

    def _canonical(self, problem):
        return jnp.concatenate([problem[:, :1], jnp.sort(problem[:, 1:], axis=-1)], axis=-1)

    def _draw(self, key, n):
        k = self.numbers
        u = jax.random.uniform(key, (n, k + self._num_programs))
        xs = 1 + _index(u[:, :k], self.max_number)
        valid, result, _ = _run_programs(xs)
        target = jnp.take_along_axis(result, _pick(u[:, k:], valid)[:, None], -1)
        return jnp.concatenate([target, xs], axis=-1)

    def _prompt_tokens(self, problem):
        n, v = problem.shape[0], self.vocab
        col = lambda t: (jnp.full((n, 1), t, jnp.int32), jnp.ones((n, 1), bool))  # noqa: E731
        parts = [col(BOS), _render_number(problem[:, 0], _digits(self.max_value)), col(v.id(":"))]
        for i in range(self.numbers):
            if i:
                parts.append(col(v.id(",")))
            parts.append(_render_number(problem[:, 1 + i], _digits(self.max_number)))
        parts.append(col(v.id("=")))
        toks = jnp.concatenate([p[0] for p in parts], -1)
        keep = jnp.concatenate([p[1] for p in parts], -1)
        return _compact(toks, keep, right=True), jnp.sort(keep, axis=-1)

    @property
    def _num_programs(self) -> int:
        return _step_programs(self.numbers)[0][0].shape[0]

    @property
    def _solution_uniforms(self) -> int:
        return self._num_programs + 3 + self.numbers - 1

    def _solution_slots(self, u, problem, wrong):
        n, k, v, N = problem.shape[0], self.numbers, self.vocab, self._num_programs
        valid, result, steps = _run_programs(problem[:, 1:])
        best = _pick(u[:, :N], valid & (result == problem[:, :1]))[:, None]
        bad_step = _index(u[:, N], k - 1)
        sign = jnp.where(u[:, N + 1] < 0.5, 1, -1)
        delta = sign * (1 + (u[:, N + 2] < 0.5))
        swap = u[:, N + 3:] < 0.5
        width = _digits(self.max_value + 2)
        toks, keep = [], []
        for s, (hi, lo, op, value) in enumerate(steps):
            hi, lo, op, c = (jnp.take_along_axis(x, best, -1)[:, 0] for x in (hi, lo, op, value))
            commutes = (op == 0) | (op == 2)
            first = jnp.where(commutes & swap[:, s], lo, hi)
            second = jnp.where(commutes & swap[:, s], hi, lo)
            c_bad = c + delta
            c_bad = jnp.where((c_bad < 1) | (c_bad >= 10**width), c - delta, c_bad)
            c_bad = jnp.where(c_bad < 1, c + 1, c_bad)
            c = jnp.where(wrong & (bad_step == s), c_bad, c)
            op_tok = v.id("+") + op  # "+", "-", "*", "/" are consecutive ids
            for piece in (_render_number(first, width), (op_tok[:, None], None),
                          _render_number(second, width), (jnp.full((n, 1), v.id("=")), None),
                          _render_number(c, width), (jnp.full((n, 1), v.id(";")), None)):
                t, m = piece
                toks.append(t.astype(jnp.int32))
                keep.append(jnp.ones(t.shape, bool) if m is None else m)
        toks.append(jnp.full((n, 1), EOS, jnp.int32))
        keep.append(jnp.ones((n, 1), bool))
        return jnp.concatenate(toks, -1), jnp.concatenate(keep, -1)

    def _parse(self, problem: jax.Array, completion: jax.Array,
               mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(correct [n] bool, states [n,S,k] int32): a token-level state machine over the trace."""
        k, S, v = self.numbers, self.num_states, self.vocab
        maxd = _digits(self.max_value)
        plus, eq, semi = v.id("+"), v.id("="), v.id(";")
        start = self.distractor_start

        def row(target, xs, toks, m):
            def step(carry, tm):
                t, on = tm
                phase, nd, vals, op, ms, ok, done, steps, last, states = carry
                active = on & ~done & (t < start)
                is_digit = (t >= DIGIT0) & (t < DIGIT0 + 10)
                is_op = (t >= plus) & (t < plus + 4)
                # digit: extend the current number (no leading zero, at most maxd digits)
                dig = t - DIGIT0
                digit_ok = is_digit & (nd < maxd) & ((nd > 0) | (dig > 0))
                vals_d = vals.at[phase].set(vals[phase] * 10 + dig)
                # ";": check and apply the step a op b = c
                a, b, c = vals[0], vals[1], vals[2]
                ia = jnp.argmax(ms == a)
                has_a = jnp.any(ms == a)
                ms1 = ms.at[ia].set(0)
                ib = jnp.argmax(ms1 == b)
                has_b = jnp.any(ms1 == b)
                ms2 = ms1.at[ib].set(0)
                ms3 = ms2.at[jnp.argmax(ms2 == 0)].set(c)
                sa, sb = jnp.maximum(a, 1), jnp.maximum(b, 1)
                exact = jnp.stack([a + b == c, a - b == c,
                                   (c % sa == 0) & (c // sa == b),
                                   (a % sb == 0) & (a // sb == c)])[op]
                semi_ok = (t == semi) & (phase == 2) & (nd > 0) & has_a & has_b & exact
                srt = jnp.sort(jnp.where(ms3 == 0, _BIG, ms3))
                srt = jnp.where(srt == _BIG, 0, srt)
                row_i = jnp.minimum(steps, S - 1)
                states_s = states.at[row_i].set(jnp.where(ok & (steps < S), srt, states[row_i]))
                legal = (digit_ok
                         | (is_op & (phase == 0) & (nd > 0))
                         | ((t == eq) & (phase == 1) & (nd > 0))
                         | semi_ok
                         | ((t == EOS) & (phase == 0) & (nd == 0)))
                new = (
                    jnp.select([is_op, t == eq, t == semi], [1, 2, 0], phase),
                    jnp.where(is_digit, nd + 1, 0),
                    jnp.where(is_digit, vals_d, jnp.where(t == semi, 0, vals)),
                    jnp.where(is_op, t - plus, op),
                    jnp.where(semi_ok, ms3, ms),
                    ok & legal,
                    done | (t == EOS),
                    steps + semi_ok,
                    jnp.where(semi_ok, c, last),
                    jnp.where(semi_ok, states_s, states),
                )
                carry = jax.tree.map(lambda x, y: jnp.where(active, x, y), new, carry)
                return carry, None

            init = (jnp.int32(0), jnp.int32(0), jnp.zeros(3, jnp.int32), jnp.int32(0), xs,
                    jnp.bool_(True), jnp.bool_(False), jnp.int32(0), jnp.int32(0),
                    jnp.full((S, k), -1, jnp.int32))
            carry, _ = jax.lax.scan(step, init, (toks, m))
            _, _, _, _, _, ok, done, steps, last, states = carry
            return ok & done & (steps > 0) & (last == target), states

        return jax.vmap(row)(problem[:, 0], problem[:, 1:], completion, mask)

    def _reward(self, problem, completion, mask):
        return self._parse(problem, completion, mask)[0]

    def answer_text(self, problem):
        p = jnp.asarray(np.asarray(problem).reshape(1, -1), jnp.int32)
        valid, result, steps = jax.jit(_run_programs)(p[:, 1:])
        ok = np.asarray(valid & (result == p[:, :1]))[0]
        if not ok.any():
            return ""
        best = int(np.argmax(ok))
        out = []
        for hi, lo, op, value in steps:
            out.append(f"{int(hi[0, best])}{OPS[int(op[0, best])]}{int(lo[0, best])}"
                       f"={int(value[0, best])};")
        return "".join(out)

    def problem_text(self, problem):
        t, *xs = (int(x) for x in np.asarray(problem).reshape(-1))
        return f"<bos>{t}:{','.join(map(str, xs))}="


def countdown_states(task: Task, problem: jax.Array, completion: jax.Array,
                     completion_mask: jax.Array) -> jax.Array:
    """[n, S, k] int32 (S = k-1): row s is the state after step s+1 — the multiset of remaining
    numbers sorted ascending, padded with 0 to k — if the trace's first s+1 steps (and every
    token before them) are valid, else all -1. Two rollouts of one prompt with equal rows s have
    reached the same search state after s+1 steps (what GraphPO merges on)."""
    if not isinstance(task, CountdownTask):
        raise ValueError(f"countdown_states: task {getattr(task, 'name', task)!r} is not countdown")
    chex.assert_shape(problem, (None, task.problem_size))
    chex.assert_shape([completion, completion_mask], (problem.shape[0], None))
    return task._parse(problem.astype(jnp.int32), completion.astype(jnp.int32),
                       completion_mask.astype(bool))[1]


# ----------------------------------------------------------------------------- factory


_COMMON = {"distractors": 0, "distractor_rate": 1.0, "zipf": 1.1, "test_fraction": 0.15}
_OPTIONS = {"addition": {"digits": 2, **_COMMON},
            "countdown": {"numbers": 3, "max_number": 9, **_COMMON}}


def _int_option(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise ValueError(f"make_task: {name}={value!r} must be an integer in [{lo}, {hi}]")
    return int(value)


def _float_option(name: str, value: Any, lo: float, hi: float, open_lo: bool = False,
                  open_hi: bool = False) -> float:
    ok = (not isinstance(value, bool) and isinstance(value, (int, float, np.floating))
          and math.isfinite(value)
          and (value > lo if open_lo else value >= lo) and (value < hi if open_hi else value <= hi))
    if not ok:
        raise ValueError(f"make_task: {name}={value!r} must be a number in "
                         f"{'(' if open_lo else '['}{lo}, {hi}{')' if open_hi else ']'}")
    return float(value)


def make_task(name: str, **options: Any) -> Task:
    """The task `name` ("addition" or "countdown") with `options`:
    addition: digits (1..9, default 2); countdown: numbers (2..4, default 3), max_number (2..99,
    default 9); both: distractors (extra tokens "~0".., default 0), distractor_rate (expected
    distractors per demonstration, default 1.0; unused without distractors), zipf (exponent,
    default 1.1), test_fraction (held-out share of instances, 0.01..0.99, default 0.15)."""
    if name not in _OPTIONS:
        raise ValueError(f"make_task: unknown task {name!r}; valid: {', '.join(TASKS)}")
    unknown = sorted(set(options) - set(_OPTIONS[name]))
    if unknown:
        raise ValueError(f"make_task: unknown option {unknown[0]!r} for {name!r}; "
                         f"valid: {', '.join(_OPTIONS[name])}")
    o = {**_OPTIONS[name], **options}
    common = dict(
        distractors=_int_option("distractors", o["distractors"], 0, 100_000),
        distractor_rate=_float_option("distractor_rate", o["distractor_rate"], 0.0, 1000.0),
        zipf=_float_option("zipf", o["zipf"], 0.0, 100.0, open_lo=True),
        test_fraction=_float_option("test_fraction", o["test_fraction"], 0.01, 0.99))
    budget = (0 if common["distractors"] == 0 or common["distractor_rate"] == 0
              else max(1, math.ceil(2 * common["distractor_rate"])))
    extra = tuple(f"~{r}" for r in range(common["distractors"]))
    digits = tuple("0123456789")
    if name == "addition":
        d = _int_option("digits", o["digits"], 1, 9)
        vocab = Vocab(SPECIALS + digits + ("+", "=") + extra)
        return AdditionTask(name=name, vocab=vocab, prompt_length=2 * d + 3,
                            completion_length=d + 3 + budget, problem_size=2, digits=d, **common)
    k = _int_option("numbers", o["numbers"], 2, 4)
    mx = _int_option("max_number", o["max_number"], 2, 99)
    vocab = Vocab(SPECIALS + digits + OPS + ("=", ";", ":", ",") + extra)

    @functools.lru_cache(maxsize=None)
    def written(m: int) -> int:  # most digits written for a sub-tree of m numbers (incl. its own)
        if m == 1:
            return _digits(mx)
        return inner(m) + 2 * _digits(mx**m + 2)

    @functools.lru_cache(maxsize=None)
    def inner(m: int) -> int:  # most digits written by the children of an m-number sub-tree
        return max(written(i) + written(m - i) for i in range(1, m))

    longest = inner(k) + _digits(mx**k + 2) + 3 * (k - 1) + 1  # digits + "op=;" per step + eos
    prompt_length = 1 + _digits(mx**k) + 1 + k * _digits(mx) + (k - 1) + 1
    return CountdownTask(name=name, vocab=vocab, prompt_length=prompt_length,
                         completion_length=longest + budget, problem_size=k + 1, numbers=k,
                         max_number=mx, **common)
