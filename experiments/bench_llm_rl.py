"""LLM-style RL throughput: rlx's GRPO step against TRL's GRPOTrainer; prints ONE JSON line.

    python -m experiments.bench_llm_rl                   # rlx only
    python -m experiments.bench_llm_rl --with-anchor     # rlx, TRL (trl_grpo.sh), rlx again
    python -m experiments.bench_llm_rl --members 2 --threads 2   # 2 vmapped runs on 2 cores

The config is the anchor's: a GPT-2-shaped LM (2 layers, width 128, 4 heads, random init),
2-digit addition ("<bos>ab+cd=", P = 7), 16 prompts x 8 completions of 8 tokens
(`max_new_tokens` 8: rlx's addition task alone would stop at 5), loss "grpo" (clip 0.2, k3 KL
to the frozen initial policy, beta 0.04, per-sequence mean), one Adam step (lr 1e-4) on the
whole batch per rollout (epochs 1, minibatches 1), temperature 1. rlx's vocabulary has 15
tokens (3 specials), TRL's 16 (4), and rlx's position table covers P + T = 15 positions,
TRL's 64: `params` and `anchor_params` differ by those embedding rows only.

Rates. `grpo_steps_per_s`: K updates (`--updates-per-call`) as one jitted
`trainer.run_updates(state, K)` with the state donated, the median time of `--repeats` calls
after a warm-up call, / K; measured before and after the anchor runs (both halves' medians are
in `rlx_steps_per_s_runs`; the headline is the median of all calls). `anchor_grpo_steps_per_s`:
TRL's median step time after warm-up, as the anchor prints it. `ratio` = rlx / TRL.
`sampling_tokens_per_s`: B x T tokens of a jitted `rlx.lm.model.sample` of the B = 128 batch
alone (anchor: `anchor_sampling_tokens_per_s` from its median `model.generate` time);
`update_s` / `sample_s`: one jitted update and the sample alone (the time split).
`first_update_s`: process start (imports included) to the end of the first update (compile
included; JAX's persistent compilation cache may hold it, as rlx runs), against the
anchor's `anchor_first_step_s`.

Threads. rlx runs one XLA CPU device per core and a member on one device, single-threaded
(`rlx_cpu_utilization`, CPU time / wall time of the timed calls, shows it); `--threads N`
runs on N devices with the `--members` (M vmapped independent runs, a multiple of N) sharded
over them, and gives TRL `--threads N`. With M > 1, `grpo_steps_per_s` is the aggregate
(M x the program's updates/s; `grpo_steps_per_s_per_member` too) and `ratio` compares it with
one TRL run on the same N threads.

FLOPs. `flops_per_step` counts the model's matmul FLOPs of one step analytically (the work
TRL's step does too), with w = width, Lyr = layers, V = vocab, B = prompts x group, P prompt
and T completion tokens:

    f(S) = 2 (12 Lyr w^2 + V w) + 4 Lyr w S      one token's forward attending to S key columns
    sample    = B P f(P) + B (T - 1) f(P + T)    prefill, then T - 1 cached decode steps
    reference = B (P + T) f(P + T)               the frozen policy's forward
    train     = 3 B (P + T) f(P + T)             forward + backward (2x forward)
    flops_per_step = sample + reference + train (biases, LayerNorm, softmax, Adam not counted)

`achieved_gflops` = flops_per_step x steps/s / 1e9 (model FLOPs per second, the same
numerator for both: `anchor_achieved_gflops`); rlx executes fewer, as it computes each prompt's
forward once per group of G completions (`lm.sample(group_size=G)`, `lm.group_log_probs`), where
TRL computes it G times: `executed_gflops` = xla_flops_per_step x steps/s / 1e9 (and
`executed_peak_fraction`; `peak_fraction` uses the model FLOPs, so it can exceed 1).
`matmul_peak_gflops`: a jitted float32
1024x1024 @ 1024x1024 matmul on each of the N devices at once (median of several), in the same
run; `peak_fraction` = their ratio. `xla_flops_per_step`: XLA's cost analysis of the compiled
update (every FLOP it executes, elementwise included), corrected for XLA counting a loop body
once: the T - 2 decode steps its count misses are added from the cost analysis of one step.
"""

from __future__ import annotations

import time

_PROCESS_START = time.time()

import dataclasses  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ANCHOR = ROOT.parent / "shared" / "anchors" / "trl_grpo.sh"

# The anchor's configuration as GRPOConfig fields (trl_grpo.py's defaults).
ANCHOR_CONFIG = dict(task="addition", digits=2, layers=2, width=128, heads=4,
                     prompts_per_update=16, group_size=8, epochs=1, minibatches=1, loss="grpo",
                     lr=1e-4, temperature=1.0, max_new_tokens=8)
# GRPOConfig fields that are flags (the anchor gets the same values).
FLAGS = ("layers", "width", "heads", "prompts_per_update", "group_size", "max_new_tokens")


@dataclasses.dataclass
class Args:
    """bench_llm_rl's own flags; --layers/--width/--heads/--prompts-per-update/--group-size/
    --max-new-tokens are GRPOConfig's (the anchor's --n-layer/--n-embd/--n-head/
    --prompts-per-step/--num-generations/--max-completion-length get the same values)."""

    threads: int = 1  # cores (XLA CPU devices) rlx runs on; the anchor's --threads
    members: int = 1  # independent runs vmapped in one program (a multiple of --threads)
    updates_per_call: int = 10  # K updates per timed call of the jitted run_updates
    repeats: int = 5  # timed calls per measurement (after a warm-up call)
    seed: int = 0
    with_anchor: bool = False  # also run TRL's GRPOTrainer (same config), back to back
    anchor_steps: int = 30  # the anchor's --steps (its first 3 are warm-up)
    anchor_path: str = str(ANCHOR)


def parse(argv: list[str] | None):
    """(flags, the benchmarked GRPOConfig); bad values exit with one line."""
    from experiments import common
    from rlx.algos.grpo import GRPOConfig

    a, overrides = common.cli(__doc__.split("\n")[0], argv, Args, GRPOConfig, run=(), only=FLAGS,
                              defaults={k: v for k, v in ANCHOR_CONFIG.items() if k in FLAGS})

    def build():
        for name in ("threads", "members", "updates_per_call", "repeats", "anchor_steps"):
            if getattr(a, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(a, name)}")
        if a.members % a.threads:
            raise ValueError(f"--members {a.members} is not a multiple of --threads {a.threads} "
                             f"(rlx runs a member on one core)")
        if a.threads > (os.cpu_count() or 1):
            raise ValueError(f"--threads {a.threads} exceeds the {os.cpu_count()} cores")
        k = a.updates_per_call
        config = GRPOConfig(**{**ANCHOR_CONFIG, **overrides, "updates": k, "num_evals": 2})
        config.validate()
        return config

    return a, common.exit_on_value_error(build)


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _timed(fn, repeats: int) -> tuple[list[float], float]:
    """(seconds of each of `repeats` calls of fn(), CPU time / wall time over them)."""
    times, c0, w0 = [], _cpu_s(), time.perf_counter()
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times, (_cpu_s() - c0) / (time.perf_counter() - w0)


def run_anchor(a, config) -> dict:
    """TRL's GRPOTrainer on the same config and thread count (a child process); its JSON line."""
    cmd = ["bash", a.anchor_path, "--threads", str(a.threads), "--steps", str(a.anchor_steps),
           "--seed", str(a.seed), "--n-layer", str(config.layers), "--n-embd", str(config.width),
           "--n-head", str(config.heads), "--prompts-per-step", str(config.prompts_per_update),
           "--num-generations", str(config.group_size), "--micro-batch", str(config.batch_size),
           "--max-completion-length", str(config.max_new_tokens), "--beta", "0.04",
           "--loss-type", "grpo", "--lr", str(config.lr), "--temperature", str(config.temperature)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode or not lines:
        raise RuntimeError(f"the anchor failed (exit {out.returncode}): {out.stderr[-2000:]}")
    return json.loads(lines[-1])


class _Rlx:
    """rlx's programs for the benchmark: the K-update program, one update, the sampler."""

    def __init__(self, a, config):
        import jax
        import jax.numpy as jnp

        from rlx import population, runner
        from rlx.algos import grpo
        from rlx.lm import model as lm

        self.jax, self.a, self.config = jax, a, config
        self.trainer = grpo.make_train(config)
        task = config.make_task()
        self.task, self.cfg = task, config.lm_config(task)
        self.T, self.P = config.completion_length(task), task.prompt_length
        self.B = config.batch_size
        K, M = a.updates_per_call, a.members
        key = jax.random.PRNGKey(a.seed)
        tr = self.trainer
        self.mesh = population.make_mesh(a.threads)
        if M == 1:  # one run: plain jit, as a single experiment member runs on its device
            self.init = jax.jit(tr.init)
            self.updates = jax.jit(lambda s: tr.run_updates(s, K), donate_argnums=0)
            self.one_update = jax.jit(tr.update)
            self.state = self.init(key, tr.default_hparams)
        else:  # M runs vmapped, sharded over the devices (how rlx's experiments run)
            hp = runner.broadcast_hparams(tr.default_hparams, M)
            keys = jax.random.split(key, M)
            self.init = population.pmap_population(tr.init, self.mesh)
            self.updates = population.pmap_population(lambda s: tr.run_updates(s, K), self.mesh,
                                                      donate=True)
            self.one_update = population.pmap_population(tr.update, self.mesh)
            self.state = self.init(keys, hp)
        jax.block_until_ready(self.state)

        eos, pad = task.vocab.id("<eos>"), task.vocab.id("<pad>")
        pr = task.prompts(jax.random.PRNGKey(a.seed + 1), config.prompts_per_update, "train")
        self.prompts = jnp.repeat(pr.tokens, config.group_size, axis=0)
        self.pmask = jnp.repeat(pr.mask, config.group_size, axis=0)
        T, cfg = self.T, self.cfg

        def draw(params, k):
            return lm.sample(params, cfg, k, self.prompts, self.pmask, max_new_tokens=T,
                             eos_id=eos, pad_id=pad, temperature=config.temperature)

        def decode_step(params, cache, tokens, key_mask):  # one cached decode step (FLOP count)
            return lm.TransformerLM(cfg).apply({"params": params}, tokens, tokens, key_mask,
                                               cache, self.P)[0]

        self.draw, self.decode_step = draw, decode_step

    def params0(self):
        p = self.state.params
        return p if self.a.members == 1 else self.jax.tree.map(lambda x: x[0], p)

    def first_update(self) -> float:
        """Compile and run one update; seconds since process start."""
        self.jax.block_until_ready(self.one_update(self.state))
        return time.time() - _PROCESS_START

    def warm_up(self) -> float:
        t = time.perf_counter()
        self.state, m = self.updates(self.state)
        self.jax.block_until_ready(m)
        return time.perf_counter() - t

    def measure(self) -> tuple[list[float], float, list[float]]:
        """(seconds per update of each call, CPU utilisation, mean completion tokens per call)."""
        lengths = []

        def call():
            self.state, m = self.updates(self.state)
            self.jax.block_until_ready(m)
            lengths.append(float(m["response_length"].mean()))

        times, util = _timed(call, self.a.repeats)
        return [t / self.a.updates_per_call for t in times], util, lengths

    def split(self) -> tuple[float, float]:
        """(median s of one jitted update, median s of the jitted sample alone), member 0."""
        jax = self.jax
        state = self.state
        one = self.one_update
        jax.block_until_ready(one(state))
        t_up, _ = _timed(lambda: jax.block_until_ready(one(state)), self.a.repeats)
        draw = jax.jit(self.draw)
        params, k = self.params0(), jax.random.PRNGKey(self.a.seed + 2)
        jax.block_until_ready(draw(params, k))
        t_s, _ = _timed(lambda: jax.block_until_ready(draw(params, k)), self.a.repeats)
        return statistics.median(t_up), statistics.median(t_s)

    def xla_flops(self) -> float | None:
        """XLA's FLOPs of one update, plus the T - 2 decode steps its loop count misses."""
        jax, jnp, cfg = self.jax, self.jax.numpy, self.cfg
        try:
            state = self.state if self.a.members == 1 else jax.tree.map(lambda x: x[0], self.state)
            up = (self.one_update if self.a.members == 1 else jax.jit(self.trainer.update)
                  ).lower(state).compile().cost_analysis()["flops"]
            S = self.P + self.T
            shape = (cfg.layers, self.B, S, cfg.heads, cfg.head_dim)
            cache = (jnp.zeros(shape), jnp.zeros(shape))
            step = jax.jit(self.decode_step).lower(
                self.params0(), cache, jnp.zeros((self.B, 1), jnp.int32),
                jnp.ones((self.B, S), bool)).compile().cost_analysis()["flops"]
            return float(up + max(self.T - 2, 0) * step)
        except Exception:  # cost analysis is best effort (backend-dependent)
            return None


def matmul_peak_gflops(mesh, repeats: int = 7, n: int = 1024) -> float:
    """float32 n x n @ n x n on every device of `mesh` at once: median GFLOP/s (all devices)."""
    import jax
    import jax.numpy as jnp

    from rlx import population

    d = mesh.devices.size
    x = population.shard(jnp.ones((d, n, n), jnp.float32) / n, mesh)
    f = jax.jit(lambda x: jnp.einsum("bij,bjk->bik", x, x),
                out_shardings=population.sharding(mesh))
    jax.block_until_ready(f(x))
    times, _ = _timed(lambda: jax.block_until_ready(f(x)), repeats)
    return d * 2 * n**3 / statistics.median(times) / 1e9


def main(argv: list[str] | None = None) -> dict:
    sys.path.insert(0, str(ROOT))
    a, config = parse(argv)
    os.environ["RLX_CPU_DEVICES"] = str(a.threads)
    from experiments import common

    common.setup(multi_process=False)
    import jax
    import jaxlib.version

    from rlx.lm import model as lm

    rlx = _Rlx(a, config)
    first_update_s = rlx.first_update()
    compile_k_s = rlx.warm_up()
    times, utils, lengths, runs = [], [], [], []
    anchor = None
    for half in ("before", "after"):
        if half == "after":
            if not a.with_anchor:
                break
            anchor = run_anchor(a, config)
        t, u, ln = rlx.measure()
        times += t
        utils.append(u)
        lengths += ln
        runs.append(round(1 / statistics.median(t), 3))
    update_s, sample_s = rlx.split()
    peak = matmul_peak_gflops(rlx.mesh)
    xla_flops = rlx.xla_flops()

    M, K = a.members, a.updates_per_call
    program_rate = 1 / statistics.median(times)  # updates/s of the program (each member's)
    steps_per_s = M * program_rate
    flops = lm.grpo_step_flops(config.width, config.layers, rlx.cfg.vocab_size, rlx.B, rlx.P, rlx.T)
    achieved = flops * steps_per_s / 1e9
    res = {
        "bench": "llm_rl", "impl": "rlx GRPO", "task": "addition (2 digits)",
        "model": f"gpt2 L{config.layers} d{config.width} h{config.heads} V{rlx.cfg.vocab_size}",
        "params": lm.num_params(rlx.cfg), "vocab_size": rlx.cfg.vocab_size,
        "prompts_per_step": config.prompts_per_update, "num_generations": config.group_size,
        "max_completion_length": rlx.T, "prompt_length": rlx.P, "loss": config.loss,
        "threads": a.threads, "members": M, "updates_per_call": K, "repeats": a.repeats,
        "grpo_steps_per_s": round(steps_per_s, 3),
        "grpo_steps_per_s_per_member": round(program_rate, 3),
        "rlx_steps_per_s_runs": runs,
        "rlx_cpu_utilization": round(statistics.median(utils), 2),
        "update_s": round(update_s, 4), "sample_s": round(sample_s, 4),
        "rest_s": round(update_s - sample_s, 4),
        "sampling_tokens_per_s": round(rlx.B * rlx.T / sample_s, 1),
        "first_update_s": round(first_update_s, 2),
        "compile_updates_program_s": round(compile_k_s, 2),
        "flops_per_step": flops,
        "xla_flops_per_step": None if xla_flops is None else int(xla_flops),
        "achieved_gflops": round(achieved, 2),
        "matmul_peak_gflops": round(peak, 2),
        "peak_fraction": round(achieved / peak, 3),
        "executed_gflops": None if xla_flops is None else round(xla_flops * steps_per_s / 1e9, 2),
        "executed_peak_fraction": None if xla_flops is None
        else round(xla_flops * steps_per_s / 1e9 / peak, 3),
        "mean_completion_tokens": round(statistics.mean(lengths), 2),
        "versions": {"jax": jax.__version__, "jaxlib": jaxlib.version.__version__}}
    if anchor is not None:
        a_rate = anchor["grpo_steps_per_s"]
        v = re.search(r" V(\d+) ", anchor.get("model", ""))
        a_vocab = int(v.group(1)) if v else rlx.cfg.vocab_size
        a_flops = lm.grpo_step_flops(config.width, config.layers, a_vocab, rlx.B, rlx.P,
                                     anchor["max_completion_length"])
        res.update({
            "anchor_grpo_steps_per_s": a_rate,
            "ratio": round(steps_per_s / a_rate, 2),
            "anchor_threads": anchor.get("threads"),
            "anchor_model": anchor.get("model"),
            "anchor_median_generate_s": anchor.get("median_generate_s"),
            "anchor_sampling_tokens_per_s": round(
                rlx.B * anchor["max_completion_length"] / anchor["median_generate_s"], 1),
            "anchor_median_rollout_s": anchor.get("median_rollout_s"),
            "anchor_median_train_s": anchor.get("median_train_s"),
            "anchor_first_step_s": anchor.get("first_step_s"),
            "anchor_flops_per_step": a_flops,
            "anchor_achieved_gflops": round(a_flops * a_rate / 1e9, 2),
            "anchor_mean_completion_tokens": anchor.get("mean_completion_tokens"),
            "anchor_versions": anchor.get("versions"),
            "anchor": anchor})
    print(json.dumps(res), flush=True)
    return res


if __name__ == "__main__":
    main()
