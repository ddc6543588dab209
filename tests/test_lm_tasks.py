"""rlx.lm.tasks: hand-worked rewards, demonstrations, splits, distractor frequencies, jit/vmap."""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlx.lm.tasks import EOS, PAD, countdown_states, make_task

ADD = make_task("addition")
CD = make_task("countdown")
# the compiled tests run on the distractor variants only (compiles dominate the test time); the
# plain tasks share their code, split and (minus the distractor ids) vocabulary
ADD_D = make_task("addition", distractors=6, distractor_rate=1.5)
CD_D = make_task("countdown", distractors=12, distractor_rate=2.0)
N = 2048  # instances per pipeline call


@functools.partial(jax.jit, static_argnums=0)
def _check(task, problem, completion, mask):
    """(reward, countdown states or None) of hand-written completions."""
    states = countdown_states(task, problem, completion, mask) if task.name == "countdown" else None
    return task.reward(problem, completion, mask), states


@functools.partial(jax.jit, static_argnums=0)
def _pipeline(task, key, noise):
    """Train and test prompts, demonstrations of the train prompts and their rewards."""
    train, test = task.prompts(key, N, "train"), task.prompts(key, N, "test")
    c, m = task.demonstrations(jax.random.fold_in(key, 1), train.problem, noise)
    return train, test, c, m, task.reward(train.problem, c, m)


def _batch(task, texts: list[str]) -> tuple[jax.Array, jax.Array]:
    """Completions [16,T] from texts (pad after them; pad rows) and masks True on the written
    tokens."""
    T = task.completion_length
    ids = [task.vocab.encode(t) for t in texts] + [[]] * (16 - len(texts))
    assert len(ids) == 16 and all(len(i) <= T for i in ids), texts
    toks = np.array([i + [PAD] * (T - len(i)) for i in ids], np.int32)
    mask = np.array([[j < len(i) for j in range(T)] for i in ids])
    return jnp.asarray(toks), jnp.asarray(mask)


def _rewards(task, problem, texts, states=False):
    toks, mask = _batch(task, texts)
    prob = jnp.asarray(np.tile(np.asarray(problem, np.int32), (16, 1)))
    r, s = _check(task, prob, toks, mask)
    r = np.asarray(r)[:len(texts)].tolist()
    return (r, np.asarray(s)[:len(texts)]) if states else r


def test_sizes_and_vocab():
    assert (ADD.prompt_length, ADD.completion_length, ADD.vocab.size) == (7, 5, 15)
    assert (CD.prompt_length, CD.completion_length, CD.vocab.size) == (11, 17, 21)
    assert CD.prompt_length + CD.completion_length <= 32
    assert ADD.vocab.tokens[:3] == ("<pad>", "<bos>", "<eos>")
    assert ADD_D.vocab.size == 15 + 6 and ADD_D.distractor_start == 15
    assert ADD_D.completion_length == 5 + ADD_D.distractor_budget
    assert CD.vocab.decode(CD.vocab.encode("<bos>24:2,3,4=<eos>9")) == "<bos>24:2,3,4="
    assert hash(make_task("addition")) == hash(ADD) and make_task("addition") == ADD


def test_addition_hand_rewards():
    texts = ["46<eos>",      # correct
             "47<eos>",      # wrong digit
             "46",           # missing eos
             "463<eos>",     # extra digit after the answer
             "46=<eos>",     # extra symbol after the answer
             "046<eos>",     # leading zero
             "<eos>",        # empty
             "4<eos>6",      # answer cut by eos (a token after eos never counts)
             "~04~56<eos>",  # distractors are skipped wherever they occur before eos
             "~3~146<eos>",
             "4~06~1~2<eos>",
             "4~07<eos>"]
    assert _rewards(ADD_D, (12, 34), texts) == [1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 0]
    assert _rewards(ADD_D, (99, 99), ["198<eos>", "98<eos>", "1~598<eos>"]) == [1, 0, 1]


def test_countdown_hand_rewards_and_states():
    texts = ["2*3=6;6*4=24;<eos>",    # correct path through an intermediate
             "3*2=6;4*6=24;<eos>",    # operand order is free
             "4*3=12;12*2=24;<eos>",  # another correct path
             "2*3=6;6*4=24;",         # missing eos
             "2*3=6;6*4=24<eos>",     # unfinished step
             "2*3=6;6*4=25;<eos>",    # wrong arithmetic
             "2*3=6;6*6=36;<eos>",    # 6 used twice (one 6 available)
             "2*3=6;<eos>",           # valid but target not reached
             "2*3=6;6*2=12;<eos>",    # 2 already used
             "02*3=6;6*4=24;<eos>",   # leading zero
             "3-4=1;<eos>",           # negative intermediate (3-4 != 1)
             "~02*~13=6;~0~06*4=2~24;~0<eos>",  # distractors interleaved
             "~02*~13=7;6*4=24;<eos>"]
    r, s = _rewards(CD_D, (24, 2, 3, 4), texts, states=True)
    assert r == [1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]
    assert s.shape == (13, 2, 3)
    assert s[0].tolist() == s[3].tolist() == s[11].tolist() == [[4, 6, 0], [24, 0, 0]]
    assert s[2].tolist() == [[2, 12, 0], [24, 0, 0]]
    assert s[6].tolist() == s[8].tolist() == [[4, 6, 0], [-1, -1, -1]]
    assert s[9].tolist() == s[12].tolist() == [[-1] * 3] * 2
    assert _rewards(CD_D, (9, 3, 4, 5), ["3*3=9;<eos>", "4+5=9;<eos>", "5+4=9;<eos>"]) == [0, 1, 1]
    # division must be exact; using fewer numbers is fine; the last result must be the target
    assert _rewards(CD_D, (2, 5, 2, 1), ["5/2=2;<eos>", "2*1=2;<eos>", "2/1=2;<eos>",
                                         "2/1=2;5-2=3;<eos>"]) == [0, 1, 1, 0]
    r, s = _rewards(CD_D, (4, 6, 2, 3), ["6/3=2;2*2=4;<eos>", "6/2=3;2+2=4;<eos>", "4-3=1;"],
                    states=True)
    assert r == [1, 0, 0] and s[0].tolist() == [[2, 2, 0], [4, 0, 0]]
    assert s[2].tolist() == [[-1] * 3] * 2  # 4 is not among the numbers


@pytest.mark.parametrize("task", [ADD_D, CD_D], ids=["addition", "countdown"])
def test_demonstrations(task):
    key = jax.random.key(0)
    train, _, c, m, r = _pipeline(task, key, 0.0)  # noise-free traces are all correct
    c, m = np.asarray(c), np.asarray(m)
    assert np.all(np.asarray(r) == 1.0)
    assert np.all(m.sum(1) == (c == EOS).argmax(1) + 1) and np.all((c == EOS).any(1))
    assert np.all(c[~m] == PAD)
    for i in range(3):  # without distractors a trace reads as the canonical answer's form
        text = task.vocab.decode([t for t in c[i] if t < task.distractor_start])
        assert _rewards(task, train.problem[i], [text + "<eos>"]) == [1]
    _, _, c, m, r = _pipeline(task, key, 1.0)  # every noisy trace is wrong but still ends in eos
    assert np.all(np.asarray(r) == 0.0) and np.all(np.asarray(c == EOS).any(1))
    _, _, _, _, r = _pipeline(task, jax.random.key(1), 0.3)
    assert abs(float(r.mean()) - 0.7) < 4 * np.sqrt(0.21 / N)


@pytest.mark.parametrize("task", [ADD_D, CD_D], ids=["addition", "countdown"])
def test_splits_are_disjoint_and_prompts_decode(task):
    train, test, _, _, _ = _pipeline(task, jax.random.key(2), 0.0)
    assert not np.asarray(task.is_test(train.problem)).any()
    assert np.asarray(task.is_test(test.problem)).all()

    def canon(p):  # the instances as sets (countdown: target and the multiset of numbers)
        if task.name == "countdown":
            return {(int(x[0]),) + tuple(sorted(x[1:].tolist())) for x in np.asarray(p)}
        return {tuple(x.tolist()) for x in np.asarray(p)}

    assert not canon(train.problem) & canon(test.problem)
    for p in (train, test):
        tok, mask, prob = (np.asarray(x) for x in (p.tokens, p.mask, p.problem))
        assert tok.shape == mask.shape == (N, task.prompt_length)
        assert np.all(mask[:, -1]) and np.all(tok[~mask] == PAD)  # left padding
        assert np.all(tok[np.arange(N), mask.argmax(1)] == 1)  # bos first
        for i in range(8):
            assert task.vocab.decode(tok[i]) == task.problem_text(prob[i])
            assert task.vocab.encode(task.problem_text(prob[i])) == tok[i][mask[i]].tolist()


def test_addition_split_sizes():
    ab = jnp.array([(a, b) for a in range(10, 100) for b in range(10, 100)], jnp.int32)
    test = np.asarray(ADD.is_test(ab))
    assert (len(test), int(test.sum())) == (8100, 1157)  # the documented sizes
    assert np.array_equal(test, np.asarray(ADD_D.is_test(ab)))
    _, te, _, _, _ = _pipeline(ADD_D, jax.random.key(3), 0.0)
    assert len({tuple(x) for x in np.asarray(te.problem)}) > 700  # covers the test split


def test_countdown_instances_are_solvable_with_all_numbers():
    train, test, _, _, _ = _pipeline(CD_D, jax.random.key(4), 0.0)
    p = np.concatenate([np.asarray(train.problem[:100]), np.asarray(test.problem[:100])])
    assert p[:, 1:].min() >= 1 and p[:, 1:].max() <= 9 and 1 <= p[:, 0].min()
    assert p[:, 0].max() <= 729

    def values(xs):  # every value of a valid program using all of xs
        if len(xs) == 1:
            return {xs[0]}
        out = set()
        for i, j in itertools.combinations(range(len(xs)), 2):
            rest = [x for k, x in enumerate(xs) if k not in (i, j)]
            hi, lo = max(xs[i], xs[j]), min(xs[i], xs[j])
            for v in {hi + lo, hi * lo} | ({hi - lo} if hi > lo else set()) | (
                    {hi // lo} if hi % lo == 0 else set()):
                out |= values(rest + [v])
        return out

    assert all(int(row[0]) in values(row[1:].tolist()) for row in p)
    multisets = itertools.combinations_with_replacement(range(1, 10), 3)
    every = np.array([(t,) + xs for xs in multisets for t in sorted(values(list(xs)))], np.int32)
    assert (len(every), int(np.asarray(CD.is_test(every)).sum())) == (2253, 332)  # documented
    assert _rewards(CD_D, p[0], [CD.answer_text(p[0]) + "<eos>"]) == [1]


def test_countdown_four_numbers():
    task = make_task("countdown", numbers=4, max_number=12)
    assert (task.prompt_length, task.completion_length, task.problem_size) == (19, 37, 5)
    r, s = _rewards(task, (24, 1, 2, 3, 4), ["1*2=2;2*3=6;6*4=24;<eos>", "2*3=6;6*4=24;<eos>",
                                             "1*2=2;2*3=6;6*4=24;24*1=24;<eos>"], states=True)
    assert r == [1, 1, 0] and s.shape == (3, 3, 4)
    assert s[0].tolist() == [[2, 3, 4, 0], [4, 6, 0, 0], [24, 0, 0, 0]]
    assert _rewards(task, (98, 3, 7, 9, 12), [task.answer_text((98, 3, 7, 9, 12)) + "<eos>"]) == [1]
    assert task.answer_text((1000, 1, 1, 1, 1)) == ""  # unsolvable


def test_distractor_frequencies_follow_zipf():
    counts, traces = np.zeros(ADD_D.distractors), 0
    for seed in range(4):
        _, _, c, m, _ = _pipeline(ADD_D, jax.random.key(10 + seed), 0.0)
        c, m = np.asarray(c), np.asarray(m)
        d = c[m & (c >= ADD_D.distractor_start)] - ADD_D.distractor_start
        counts += np.bincount(d, minlength=ADD_D.distractors)
        traces += len(c)
    assert abs(counts.sum() / traces - ADD_D.distractor_rate) < 0.05  # per trace
    law = np.arange(1, ADD_D.distractors + 1) ** -ADD_D.zipf
    np.testing.assert_allclose(counts / counts.sum(), law / law.sum(), rtol=0.1)
    slope = np.polyfit(np.log(np.arange(1, ADD_D.distractors + 1)), np.log(counts), 1)[0]
    assert abs(slope + 1.1) < 0.1


def test_reward_jit_vmap():
    train, _, c, m, flat = _pipeline(CD_D, jax.random.key(5), 0.5)
    p, c, m = (x[:64] for x in (train.problem, c, m))
    grouped = jax.jit(jax.vmap(CD_D.reward))(*(x.reshape((4, 16) + x.shape[1:]) for x in (p, c, m)))
    np.testing.assert_array_equal(np.asarray(grouped).reshape(-1), np.asarray(flat[:64]))
    assert flat.dtype == jnp.float32 and set(np.asarray(flat).tolist()) == {0.0, 1.0}
    # vmapped over keys, prompts are still drawn from their split
    keys = jax.random.split(jax.random.key(1), 3)
    ps = jax.jit(jax.vmap(lambda k: ADD_D.prompts(k, 8, "test")))(keys)
    assert ps.tokens.shape == (3, 8, 7) and np.asarray(ADD.is_test(ps.problem.reshape(-1, 2))).all()


@pytest.mark.parametrize("call", [
    lambda: make_task("multiplication"),
    lambda: make_task("addition", digits=0),
    lambda: make_task("addition", digits=2.5),
    lambda: make_task("addition", numbers=3),
    lambda: make_task("countdown", numbers=7),
    lambda: make_task("countdown", max_number=1),
    lambda: make_task("countdown", distractors=-1),
    lambda: make_task("countdown", distractor_rate=float("nan")),
    lambda: make_task("addition", zipf=0),
    lambda: make_task("addition", test_fraction=1.0),
    lambda: ADD.prompts(jax.random.key(0), 4, "valid"),
    lambda: countdown_states(ADD, jnp.zeros((1, 2), jnp.int32), jnp.zeros((1, 5), jnp.int32),
                             jnp.zeros((1, 5), bool)),
])
def test_bad_input_raises_one_line_value_error(call):
    with pytest.raises(ValueError) as e:
        call()
    assert "\n" not in str(e.value)
