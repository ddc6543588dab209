"""LLM-style RL on a sequence policy: GRPO-shaped training, every loss of
`rlx.losses.sequence` as a value of its hyper-parameters, in rlx's `Trainer` shape.

One update (`make_train(config).update`):

    prompts      = task.prompts(k, prompts_per_update, "train")          # [P_n, Lp]
    completions  = lm.sample(params, prompts repeated group_size times)  # rollout policy mu:
                   rollout_dtype (bf16: the papers' precision mismatch) + N(0, rollout_noise^2) logit noise
    rewards      = task.reward(...)                                      # exact, in {0, 1}
    advantages   = group_advantages(rewards, group_size, std_scale)      # A_i shared by the tokens of i
    ref_log_prob = log pi_ref(y_t) (the frozen initial policy, for the k3 KL)
    epochs x minibatches optimiser steps (`rlx.algos.onpolicy.sgd`) on
                   sequence_loss(log pi_theta, log mu, A, mask, hparams.loss, ref_log_prob)

Each prompt's forward is computed once for its group (`lm.sample(group_size=G)`,
`lm.group_log_probs`) in sampling, the reference forward and training: minibatches are
whole groups (the batch is `[prompts, G, ...]` and `sgd` splits the prompt axis).

Every minibatch step after the first trains on data from an older policy: the staleness
where trust regions (clip, DPPO's masks, DRPO's quadratic) differ. The trust region is
anchored at the rollout's own log-probabilities mu (as DPPO's recipe says), so under a
precision mismatch the ratio pi/mu carries the mismatch too.

Hyper-parameters (`GRPOHParams`) are traced: the loss (`SequenceLossParams`), the
learning rate and the rollout noise; a sweep over losses x seeds x noise is one vmapped,
sharded program (`rlx.runner.run`). One "env step" is one sampled completion.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp
import optax
from flax import struct

from rlx.algos.onpolicy import sgd
from rlx.lm import model as lm
from rlx.lm import structures as st
from rlx.lm.tasks import TASKS, Task, countdown_states, make_task
from rlx.losses import dag
from rlx.losses import sequence as seq
from rlx.optim import scale_by_global_norm_clip
from rlx.training import Trainer, report

Metrics = dict[str, jax.Array]
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
STRUCTURES = ("chain", "tree", "graph")


@dataclasses.dataclass(frozen=True)
class StructureConfig:
    """How one prompt's rollouts are structured (`rlx.lm.structures`), under a budget of
    generated tokens per prompt. `budget` 0 with kind "chain" is plain GRPO (group_size
    independent completions, no budget: the default, bit-identical to the unstructured trainer).

    chain: `group_size` completions, cut at the budget (GRPO advantages).
    tree: TreeRL's EPTree: `chains` completions, then `rounds` rounds of `branches` continuations
          from each row's `forks` highest-entropy tokens (TreeRL advantages).
    graph: GraphPO: level l (one per Countdown step; the last runs to eos) expands up to
           `frontier[l]` unique canonical states (`countdown_states`) with `widths[l]` one-step
           samples in all, dealt round-robin over them (`GraphSpec(spread=True)`), then `fill`
           independent completions for what paths that died early leave of the budget;
           dual-group advantages, the efficiency term weighted by `eff_weight`.
    """

    kind: str = "chain"
    budget: int = 0
    chains: int = 4
    forks: int = 2
    branches: int = 2
    rounds: int = 1
    widths: tuple[int, ...] = (6, 10)
    frontier: tuple[int, ...] = (1, 6)
    fill: int = 4  # graph: independent completions that spend what dead paths leave
    eff_weight: float = 0.1

    @property
    def structured(self) -> bool:
        """False for plain GRPO (chain without a budget)."""
        return self.kind != "chain" or self.budget > 0

    def spec(self, kind: str | None = None, group_size: int = 1) -> st.Spec:
        """The `rlx.lm.structures` spec of `kind` (default: this config's), a chain of
        `group_size` completions; raises ValueError naming a bad shape."""
        kind = self.kind if kind is None else kind
        if kind == "chain":
            return st.ChainSpec(group=group_size)
        if kind == "tree":
            return st.TreeSpec(chains=self.chains, forks=self.forks, branches=self.branches,
                               rounds=self.rounds)
        return st.GraphSpec(widths=tuple(self.widths), frontier=tuple(self.frontier),
                            spread=True, fill=self.fill)

    def validate(self, task: Task) -> None:
        if self.kind not in STRUCTURES:
            raise ValueError(f"StructureConfig.kind: unknown {self.kind!r}; valid: "
                             f"{', '.join(STRUCTURES)}")
        if isinstance(self.budget, bool) or not isinstance(self.budget, int) or self.budget < 0:
            raise ValueError(f"StructureConfig.budget must be an int >= 0, got {self.budget!r}")
        if self.kind != "chain" and self.budget < 1:
            raise ValueError(f"StructureConfig.budget must be >= 1 for kind {self.kind!r}, got "
                             f"{self.budget}")
        self.spec("tree")  # the tree and graph shapes are checked by their specs
        self.spec("graph")
        if self.kind == "graph":
            if task.name != "countdown":
                raise ValueError(f"StructureConfig.kind='graph' needs the countdown task (its "
                                 f"canonical states), got task {task.name!r}")
            levels = getattr(task, "numbers", 0) - 1
            if len(self.widths) != levels or len(self.frontier) != levels:
                raise ValueError(f"StructureConfig: countdown with {levels + 1} numbers has "
                                 f"{levels} levels (one per step; the last ends at eos): widths="
                                 f"{self.widths} and frontier={self.frontier} must have {levels} "
                                 f"entries each")
        if not (self.eff_weight >= 0):
            raise ValueError(f"StructureConfig.eff_weight must be >= 0, got {self.eff_weight!r}")


@dataclasses.dataclass(frozen=True)
class GRPOConfig:
    """A GRPO-shaped run: task, model, batch shape, schedule (static); see `GRPOHParams` for
    what is traced. `init` names the initial parameters (e.g. the SFT checkpoint's digest) so
    checkpoints of runs from different starts are told apart."""

    task: str = "addition"
    digits: int = 2  # addition
    numbers: int = 3  # countdown
    distractors: int = 0  # long-tailed vocabulary: this many Zipfian distractor tokens
    distractor_rate: float = 1.0
    layers: int = 2
    width: int = 128
    heads: int = 4
    context: int | None = None  # model context (positions); default: prompt + completion length
    prompts_per_update: int = 16
    group_size: int = 8
    epochs: int = 1
    minibatches: int = 4  # optimiser steps per rollout per epoch (staleness)
    lr: float = 1e-4
    max_grad_norm: float = 1.0
    temperature: float = 1.0
    top_k: int = 0
    loss: str = "grpo"  # the default hyper-parameters' loss (rlx.losses.sequence.LOSSES)
    rollout_dtype: str = "float32"  # "bfloat16": rollouts in bf16, training in float32
    rollout_noise: float = 0.0  # std of Gaussian noise on the rollout logits
    updates: int = 200
    num_evals: int = 11
    eval_prompts: int = 256  # held-out prompts per evaluation (the same ones every time)
    eval_samples: int = 4  # sampled completions per held-out prompt
    rare_prob: float = 0.1  # a token is "rare" when mu(y_t) < rare_prob (mask/clip split)
    init: str = ""
    max_new_tokens: int | None = None  # completion length T (default: the task's; must be >= it)
    structure: StructureConfig = StructureConfig()  # rollout structure (default: plain GRPO)

    def task_options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"distractors": self.distractors,
                                "distractor_rate": self.distractor_rate}
        if self.task == "addition":
            opts["digits"] = self.digits
        elif self.task == "countdown":
            opts["numbers"] = self.numbers
        return opts

    def make_task(self) -> Task:
        if self.task not in TASKS:
            raise ValueError(f"GRPOConfig.task: unknown task {self.task!r}; valid: {', '.join(TASKS)}")
        return make_task(self.task, **self.task_options())

    def completion_length(self, task: Task | None = None) -> int:
        """T: `max_new_tokens` if set, else the task's completion length."""
        task = task or self.make_task()
        return task.completion_length if self.max_new_tokens is None else self.max_new_tokens

    def lm_config(self, task: Task | None = None) -> lm.LMConfig:
        task = task or self.make_task()
        need = task.prompt_length + self.completion_length(task)
        if self.context is not None and self.context < need:
            raise ValueError(f"GRPOConfig.context={self.context} is shorter than the {self.task} "
                             f"task's prompt ({task.prompt_length}) + completion "
                             f"({self.completion_length(task)}) = {need} tokens")
        if self.structure.kind in ("tree", "graph"):
            need += self.completion_length(task)  # a continuation's prompt holds a prefix
            if self.context is not None and self.context < need:
                raise ValueError(f"GRPOConfig.context={self.context} is too short for "
                                 f"structure {self.structure.kind!r}: continuations need prompt "
                                 f"+ 2 x completion = {need} tokens")
        return lm.LMConfig(vocab_size=task.vocab.size, context=self.context or need,
                           layers=self.layers, width=self.width, heads=self.heads)

    @property
    def batch_size(self) -> int:
        return self.prompts_per_update * self.group_size

    def validate(self) -> None:
        """Raise `ValueError` naming the offending value, before anything compiles."""
        task = self.make_task()
        if self.max_new_tokens is not None and (
                isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int)
                or self.max_new_tokens < task.completion_length):
            raise ValueError(f"GRPOConfig.max_new_tokens must be an int >= the task's completion "
                             f"length {task.completion_length}, got {self.max_new_tokens!r}")
        self.lm_config(task)
        for name in ("prompts_per_update", "group_size", "epochs", "minibatches", "updates",
                     "eval_prompts", "eval_samples"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"GRPOConfig.{name} must be an int >= 1, got {v!r}")
        if self.group_size < 2:
            raise ValueError(f"GRPOConfig.group_size must be >= 2 (group advantages), got "
                             f"{self.group_size}")
        if self.prompts_per_update % self.minibatches:
            raise ValueError(f"GRPOConfig.minibatches={self.minibatches} does not divide the "
                             f"{self.prompts_per_update} prompts of an update (a minibatch is "
                             f"whole groups of {self.group_size} completions)")
        for name in ("lr", "max_grad_norm", "temperature", "rare_prob"):
            if not getattr(self, name) > 0:
                raise ValueError(f"GRPOConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if self.rollout_noise < 0:
            raise ValueError(f"GRPOConfig.rollout_noise must be >= 0, got {self.rollout_noise}")
        if self.top_k < 0:
            raise ValueError(f"GRPOConfig.top_k must be >= 0, got {self.top_k}")
        if self.rollout_dtype not in DTYPES:
            raise ValueError(f"GRPOConfig.rollout_dtype: unknown {self.rollout_dtype!r}; valid: "
                             f"{', '.join(DTYPES)}")
        if self.num_evals < 2:
            raise ValueError(f"GRPOConfig.num_evals must be >= 2 (first and last), got "
                             f"{self.num_evals}")
        if self.updates % (self.num_evals - 1):
            raise ValueError(f"GRPOConfig.updates={self.updates} is not a multiple of "
                             f"num_evals - 1 = {self.num_evals - 1}")
        seq.loss_params(self.loss)
        self.structure.validate(task)

    def hparams(self, loss: str | seq.SequenceLossParams | None = None,
                rollout_noise: float | None = None, lr: float | None = None) -> "GRPOHParams":
        loss = self.loss if loss is None else loss
        return GRPOHParams(
            loss=seq.loss_params(loss) if isinstance(loss, str) else loss,
            lr=jnp.asarray(self.lr if lr is None else lr, jnp.float32),
            rollout_noise=jnp.asarray(self.rollout_noise if rollout_noise is None
                                      else rollout_noise, jnp.float32))


@struct.dataclass
class GRPOHParams:
    """The traced hyper-parameters of a run (one set per member of a sweep)."""

    loss: seq.SequenceLossParams
    lr: jax.Array
    rollout_noise: jax.Array


@struct.dataclass
class GRPOState:
    params: Any
    opt_state: Any
    ref_params: Any  # the frozen reference policy (the initial parameters)
    key: jax.Array
    eval_key: jax.Array
    update: jax.Array
    hparams: GRPOHParams


@struct.dataclass
class SequenceBatch:
    """One rollout, [B] completions: tokens [B, Lp+T], mask [B, Lp+T] (prompt and completion
    masks), completion_mask [B, T], behaviour_log_prob / ref_log_prob [B, T], advantages [B].
    The update hands it to `sgd` as [prompts, G, ...] (minibatches of whole groups)."""

    tokens: jax.Array
    mask: jax.Array
    completion_mask: jax.Array
    behaviour_log_prob: jax.Array
    ref_log_prob: jax.Array
    advantages: jax.Array
    loss_mask: jax.Array | None = None  # [B, T]: tokens trained (default: completion_mask)


def optimizer(hp: GRPOHParams, max_grad_norm: float) -> optax.GradientTransformation:
    """Global-norm clip, Adam (eps 1e-8), step -lr (lr traced)."""
    return optax.chain(scale_by_global_norm_clip(max_grad_norm), optax.scale_by_adam(eps=1e-8),
                       optax.scale(-hp.lr))


RewardFn = Callable[[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class StructuredRollout:
    """`self(params, key, prompts, hp)` (see `make_structured_rollout`) with what it was built
    from: the `rlx.lm.structures` spec, the segment stop ids and the state function (graph)."""

    fn: Callable
    spec: Any
    stop_ids: tuple[int, ...]
    state_fn: Callable | None

    def __call__(self, params, key, prompts, hp):
        return self.fn(params, key, prompts, hp)


def make_structured_rollout(config: GRPOConfig, draw: Callable[..., lm.Sample]
                            ) -> StructuredRollout:
    """`fn(params, key, prompts: Prompts, hp) -> (rollouts, token_advantages [P,M,T], train
    [P,M,T] bool)` for `config.structure`: `rlx.lm.structures.rollout` under the budget, then the
    structure's advantages (`rlx.losses.dag`: chain GRPO, tree TreeRL, graph GraphPO dual-group,
    divided by the group std when `hp.loss.std_scale` is 1) mapped to the tokens; `train` marks
    the tokens trained (generated in that row, on an edge with a defined advantage).
    `draw(params, key, prompt_tokens, prompt_mask, hp) -> lm.Sample` samples completion tokens."""
    task = config.make_task()
    structure, T = config.structure, config.completion_length(task)
    spec = structure.spec(group_size=config.group_size)
    stop_ids = (task.vocab.id(";"),) if task.name == "countdown" else ()
    state_fn = ((lambda problem, comp, cmask: countdown_states(task, problem, comp, cmask))
                if structure.kind == "graph" else None)
    eos = task.vocab.id("<eos>")

    def fn(params, key, prompts, hp: GRPOHParams):
        def sample_fn(k, toks, tmask):
            s = draw(params, k, toks, tmask, hp)
            return s.completion, s.completion_mask, s.log_probs, s.entropy

        ro = st.rollout(spec, sample_fn, key, prompts, budget=structure.budget, T=T, eos_id=eos,
                        stop_ids=stop_ids,
                        reward_fn=lambda p, c, m: task.reward(p, c, m).astype(jnp.float32),
                        state_fn=state_fn)
        adv_e, ok_e = st.structure_advantages(spec, ro, hp.loss.std_scale, structure.eff_weight)
        return ro, dag.token_advantages(ro, adv_e), dag.token_mask(ro, ok_e)

    return StructuredRollout(fn=fn, spec=spec, stop_ids=stop_ids, state_fn=state_fn)


def make_train(config: GRPOConfig, init_params: Any | None = None,
               on_update: Callable[[jax.Array, jax.Array], None] | None = None,
               reward_fn: RewardFn | None = None,
               score_fns: dict[str, RewardFn] | None = None) -> Trainer:
    """The run as a `Trainer`; `init_params` (e.g. after SFT) start the policy and are the
    reference policy of the KL term (default: a fresh random init from the key).

    `reward_fn(problem [n,K], tokens [n,Lp+T], mask [n,Lp+T], completion [n,T],
    completion_mask [n,T]) -> [n] float32` replaces `task.reward` in the update (e.g. a proxy
    reward model); `score_fns` {name: same signature} are extra scores, logged as the train
    metric `score_<name>` (batch mean) and the eval metric `eval_score_<name>` (mean over the
    held-out prompts' samples). Neither changes anything else.

    `config.structure` (structured: a tree, a graph, or a budgeted chain) replaces the group of
    completions by `rlx.lm.structures.rollout` under its token budget and the group advantages
    by `rlx.losses.dag`'s (chain: GRPO's, tree: TreeRL's, graph: GraphPO's dual-group), mapped to
    per-token advantages; each generated token is trained once, in the row that generated it.
    Extra train metrics: tokens (generated per prompt), valid_rows, trained_tokens, and for
    graphs merge_saved_frac. One "env step" of a structured run is one generated token.

    Train metrics per update: reward (train accuracy), response_length, entropy, kl_ref,
    inactive_frac (tokens whose gradient the clip / mask cut) and its split
    inactive_rare_frac / inactive_common_frac (rare: mu(y_t) < rare_prob), rare_frac,
    ratio_max, loss, grad_norm. Eval metrics: accuracy (mean reward of `eval_samples`
    sampled completions per held-out prompt, temperature as in training), greedy_accuracy,
    eval_response_length, kl_init_seq (mean over those samples of
    sum_t log pi(y_t) - log pi_init(y_t): an unbiased estimate of the sequence-level
    KL(pi || pi_init), pi_init = the initial parameters; Gao et al.'s d = sqrt of it).
    """
    config.validate()
    if config.structure.structured and (reward_fn is not None or score_fns):
        raise ValueError(f"make_train: structure {config.structure.kind!r} with a budget scores "
                         f"rollouts with the task's reward; reward_fn / score_fns are for plain GRPO")
    task = config.make_task()
    cfg = config.lm_config(task)
    Lp, T, G = task.prompt_length, config.completion_length(task), config.group_size
    rollout_dtype = DTYPES[config.rollout_dtype]
    eos, pad = task.vocab.id("<eos>"), task.vocab.id("<pad>")
    if init_params is not None:
        template = jax.eval_shape(lambda: lm.init_params(cfg, jax.random.PRNGKey(0)))
        chex.assert_trees_all_equal_shapes_and_dtypes(template, init_params)

    def draw(params, key, prompts, mask, noise, dtype, top_k, group_size=1):
        return lm.sample(params, cfg, key, prompts, mask, max_new_tokens=T, eos_id=eos,
                         pad_id=pad, temperature=config.temperature, top_k=top_k, dtype=dtype,
                         logit_noise=noise, group_size=group_size)

    def log_probs(params, tokens, mask, completion_mask, rows=G):
        """(log pi(y_t | prefix), entropy) [B, T] of the completion tokens, for rows that come
        in groups of `rows` copies of a prompt (each prompt's forward computed once)."""
        return lm.group_log_probs(params, cfg, tokens[::rows, :Lp], mask[::rows, :Lp],
                                  tokens[:, Lp:], completion_mask, config.temperature)

    def init(key: jax.Array, hp: GRPOHParams) -> GRPOState:
        k_params, k_train, k_eval = jax.random.split(key, 3)
        params = lm.init_params(cfg, k_params) if init_params is None else init_params
        return GRPOState(params=params, opt_state=optimizer(hp, config.max_grad_norm).init(params),
                         ref_params=params, key=k_train, eval_key=k_eval,
                         update=jnp.zeros((), jnp.int32), hparams=hp)

    def loss_fn(params, mb: SequenceBatch, key, hp: GRPOHParams):
        rows = mb.tokens.shape[1]
        mb = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), mb)  # [p, G, ...] -> [p*G, ...]
        lp, ent = log_probs(params, mb.tokens, mb.mask, mb.completion_mask, rows)
        train_mask = mb.completion_mask if mb.loss_mask is None else mb.loss_mask
        loss, m = seq.sequence_loss(lp, mb.behaviour_log_prob, mb.advantages, train_mask,
                                    hp.loss, mb.ref_log_prob, max_length=T)
        valid = train_mask.astype(jnp.float32)
        rare = valid * (mb.behaviour_log_prob < jnp.log(config.rare_prob))
        common = valid - rare
        cut = m.pop("inactive")
        frac = lambda w: jnp.sum(cut * w) / jnp.maximum(jnp.sum(w), 1.0)  # noqa: E731
        return loss, {**m, "entropy": jnp.sum(ent * valid) / jnp.maximum(valid.sum(), 1.0),
                      "inactive_rare_frac": frac(rare), "inactive_common_frac": frac(common),
                      "rare_frac": rare.sum() / jnp.maximum(valid.sum(), 1.0)}

    structure = config.structure
    if structure.structured:
        structured_fn = make_structured_rollout(config, lambda params, k, toks, tmask, hp: draw(
            params, k, toks, tmask, hp.rollout_noise, rollout_dtype, config.top_k))

    def structured_rollout(state: GRPOState, hp: GRPOHParams, k_prompt, k_sample):
        """Rollouts of `config.structure` under its budget: (batch [prompts, M, ...], metrics)."""
        pr = task.prompts(k_prompt, config.prompts_per_update, "train")
        ro, tok_adv, train = structured_fn(state.params, k_sample, pr, hp)
        P, M = ro.tokens.shape[:2]
        flat = lambda x: x.reshape((P * M,) + x.shape[2:])  # noqa: E731
        prompts, pmask = (jnp.repeat(x, M, axis=0) for x in (pr.tokens, pr.mask))
        comp, cmask = flat(ro.tokens), flat(ro.completion_mask)
        tokens = jnp.concatenate([prompts, comp], axis=1)
        mask = jnp.concatenate([pmask, cmask], axis=1)
        ref_lp, _ = log_probs(state.ref_params, tokens, mask, cmask, M)
        batch = SequenceBatch(tokens=tokens, mask=mask, completion_mask=cmask,
                              behaviour_log_prob=flat(ro.log_probs), ref_log_prob=ref_lp,
                              advantages=flat(tok_adv), loss_mask=flat(train))
        rv = ro.row_valid.astype(jnp.float32)
        metrics = {
            "reward": jnp.sum(ro.row_reward * rv) / jnp.maximum(rv.sum(), 1.0),
            "response_length": jnp.sum(ro.completion_mask.sum(-1) * rv) / jnp.maximum(rv.sum(), 1.0),
            "tokens": ro.spent.astype(jnp.float32).mean(),
            "valid_rows": rv.sum(-1).mean(),
            "trained_tokens": train.sum((1, 2)).astype(jnp.float32).mean()}
        rm = st.rollout_metrics(structured_fn.spec, ro)
        metrics["merge_saved_frac"] = jnp.mean(rm["merge_saved_frac"])
        metrics["states"] = jnp.mean(rm["states"].astype(jnp.float32))
        return jax.tree.map(lambda x: x.reshape((P, M) + x.shape[1:]), batch), metrics

    def group_rollout(state: GRPOState, hp: GRPOHParams, k_prompt, k_sample):
        """G completions per prompt, group advantages: (batch [prompts, G, ...], metrics)."""
        pr = task.prompts(k_prompt, config.prompts_per_update, "train")
        prompts, pmask, problem = (jnp.repeat(x, G, axis=0) for x in (pr.tokens, pr.mask,
                                                                     pr.problem))
        s = draw(state.params, k_sample, prompts, pmask, hp.rollout_noise, rollout_dtype,
                 config.top_k, G)
        mask = jnp.concatenate([pmask, s.completion_mask], axis=1)
        if reward_fn is None:
            rewards = task.reward(problem, s.completion, s.completion_mask)
        else:
            rewards = reward_fn(problem, s.tokens, mask, s.completion, s.completion_mask)
            chex.assert_shape(rewards, (s.tokens.shape[0],))
            rewards = rewards.astype(jnp.float32)
        adv = seq.group_advantages(rewards, G, hp.loss.std_scale)
        ref_lp, _ = log_probs(state.ref_params, s.tokens, mask, s.completion_mask)
        batch = SequenceBatch(tokens=s.tokens, mask=mask, completion_mask=s.completion_mask,
                              behaviour_log_prob=s.log_probs, ref_log_prob=ref_lp,
                              advantages=adv)
        metrics = {"reward": rewards.mean(),
                   "response_length": s.completion_mask.sum(1).astype(jnp.float32).mean()}
        for name, fn in (score_fns or {}).items():
            metrics[f"score_{name}"] = jnp.mean(
                fn(problem, s.tokens, mask, s.completion, s.completion_mask))
        return jax.tree.map(lambda x: x.reshape((-1, G) + x.shape[1:]), batch), metrics

    def update(state: GRPOState) -> tuple[GRPOState, Metrics]:
        hp = state.hparams
        key, k_prompt, k_sample, k_sgd = jax.random.split(state.key, 4)
        rollout = structured_rollout if structure.structured else group_rollout
        batch, rollout_metrics = rollout(state, hp, k_prompt, k_sample)
        tx = optimizer(hp, config.max_grad_norm)
        params, opt_state, aux = sgd(lambda p, mb, k: loss_fn(p, mb, k, hp), tx, state.params,
                                     state.opt_state, batch, k_sgd, config.epochs,
                                     0 if config.minibatches == 1 else config.minibatches)
        new = state.replace(params=params, opt_state=opt_state, key=key, update=state.update + 1)
        metrics = {k: v.mean() for k, v in aux.items()}
        metrics.update(rollout_metrics, ratio_max=aux["ratio_max"].max())
        report(on_update, new.update, metrics["reward"], new)
        return new, metrics

    def evaluate(state: GRPOState) -> Metrics:
        k_prompt, k_sample = jax.random.split(state.eval_key)
        pr = task.prompts(k_prompt, config.eval_prompts, "test")  # the same prompts every time
        greedy = draw(state.params, k_sample, pr.tokens, pr.mask, 0.0, jnp.float32, 1)
        n = config.eval_samples
        rep = lambda x: jnp.repeat(x, n, axis=0)  # noqa: E731
        s = draw(state.params, k_sample, rep(pr.tokens), rep(pr.mask), 0.0, jnp.float32, 0, n)
        problem = rep(pr.problem)
        mask = jnp.concatenate([rep(pr.mask), s.completion_mask], axis=1)
        # s.log_probs: log pi(y_t) of the eval draw (float32, no noise, top_k 0, temperature);
        # the initial policy scored at the same temperature, each prompt's forward once
        init_lp = lm.group_log_probs(state.ref_params, cfg, pr.tokens, pr.mask, s.completion,
                                     s.completion_mask, config.temperature)[0]
        out = {"accuracy": task.reward(problem, s.completion, s.completion_mask).mean(),
               "greedy_accuracy": task.reward(pr.problem, greedy.completion,
                                              greedy.completion_mask).mean(),
               "eval_response_length": s.completion_mask.sum(1).astype(jnp.float32).mean(),
               "kl_init_seq": jnp.sum(s.log_probs - init_lp, axis=1).mean()}
        for name, fn in (score_fns or {}).items():
            out[f"eval_score_{name}"] = jnp.mean(
                fn(problem, s.tokens, mask, s.completion, s.completion_mask))
        return out

    return Trainer(init=init, update=update, evaluate=evaluate,
                   default_hparams=config.hparams(), num_evals=config.num_evals,
                   updates_per_eval=config.updates // (config.num_evals - 1),
                   steps_per_update=(config.prompts_per_update * structure.budget
                                     if structure.structured else config.batch_size),
                   config=config)


__all__ = ["GRPOConfig", "GRPOHParams", "StructureConfig", "StructuredRollout",
           "make_structured_rollout", "GRPOState", "SequenceBatch", "make_train", "optimizer",
           "DTYPES", "RewardFn"]
