"""`EPGConfig`: every knob of an EPG run, validated before anything compiles."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax.numpy as jnp

from rlx.epg.loss_net import FORMS, conv_output_length
from rlx.es.openai_es import OpenAIESParams
from rlx.es.strategies import check_population, validate_strategy
from rlx.envs.tasks import REGIONS, TaskFamily, validate_family
from rlx.networks import ACTIVATIONS


PPO_MIXES = ("add", "convex")


@dataclasses.dataclass(frozen=True)
class EPGConfig:
    """An EPG run: the task family, the inner loop (agent + learned loss), the outer ES.

    CPU defaults are small; `openai_epg()` gives the public code's sizes (buffer
    512, conv (6,5,16)-(4,2,32), dense 32-16-1, 128 inner updates every 64 steps,
    Adam 1e-3 inner, ES sigma 0.01, Adam 1e-2 halved x0.1 mid-way, L2 0.001).
    """

    # task family
    family: str = "point_goal"  # point_goal (CPU) / ant_goal (Brax, GPU) / a MuJoCo Playground task
    episode_length: int | None = None  # None: family default (50 / 1000)
    r_min: float = 0.5
    r_max: float = 1.5
    observe_goal: bool = False
    backend: str = "spring"
    train_region: str = "right"
    test_region: str = "left"
    # inner loop: agent
    num_envs: int = 4  # parallel envs of one inner agent
    buffer_size: int = 64  # steps per env the loss sees (EPG: 512)
    rollout_length: int = 16  # env steps per env between updates (EPG: 64)
    inner_updates: int = 48  # (EPG: 128)
    sgd_steps: int = 2  # Adam steps per update on the whole buffer
    inner_lr: float = 1e-3
    inner_max_grad_norm: float = 1.0
    policy_layers: tuple[int, ...] = (32, 32)
    activation: str = "tanh"
    init_log_std: float = -0.5
    normalize_observations: bool = False
    reward_scale: float = 1.0
    eval_envs: int = 4  # episodes of the final deterministic policy (fitness)
    # learned loss
    loss_form: str = "free"  # free (paper) / pg
    conv: tuple[tuple[int, int, int], ...] = ((6, 5, 8), (4, 2, 16))  # EPG: (6,5,16),(4,2,32)
    dense: tuple[int, ...] = (16, 8)  # EPG: (32, 16)
    memory_size: int = 0  # trainable memory vector fed to the loss (0: off)
    rtg_feature: bool = False  # also feed normalised returns-to-go (an rlx option, not the paper's)
    ppo_coef: float = 1.0  # weight of the PPO-surrogate auxiliary term at generation 0 (0: off)
    ppo_anneal_frac: float = 0.125  # annealed linearly to 0 over this fraction of generations
    ppo_mix: str = "add"  # add: L_phi + alpha L_PPO; convex (openai/EPG): (1-alpha) L_phi + alpha L_PPO
    ppo_clip: float = 0.2
    gamma: float = 0.99
    # outer loop: ES (rlx.es.strategies; default rlx OpenAI-ES: antithetic, centered ranks, Adam)
    strategy: str = "openai_es"  # or any evosax algorithm name (Open_ES, SNES, CMA_ES, ...)
    strategy_kwargs: tuple[tuple[str, Any], ...] = ()  # extra evosax constructor arguments
    population_size: int = 8
    tasks_per_member: int = 2
    generations: int = 20
    sigma: float = 0.01
    outer_lr: float = 0.01
    outer_lr_decay_at: float = 0.5  # x0.1 after this fraction of generations (1: never)
    weight_decay: float = 0.001
    num_evals: int = 5
    eval_tasks: int = 4

    def validate(self) -> None:
        """Raise `ValueError` naming the offending value, before anything compiles."""
        validate_family(self.family)
        for name in ("train_region", "test_region"):
            if getattr(self, name) not in REGIONS:
                raise ValueError(f"EPGConfig.{name}={getattr(self, name)!r} is not a region; "
                                 f"valid: {', '.join(REGIONS)}")
        positive = ("num_envs", "buffer_size", "rollout_length", "inner_updates", "sgd_steps",
                    "inner_lr", "eval_envs", "population_size", "tasks_per_member", "generations",
                    "sigma", "outer_lr", "eval_tasks", "reward_scale")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"EPGConfig.{name} must be > 0, got {getattr(self, name)!r}")
        validate_strategy(self.strategy, self.strategy_kwargs)
        check_population(self.strategy, self.population_size, self.strategy_kwargs,
                         "EPGConfig.population_size")
        if self.rollout_length > self.buffer_size:
            raise ValueError(f"EPGConfig.rollout_length={self.rollout_length} exceeds "
                             f"buffer_size={self.buffer_size}")
        if self.loss_form not in FORMS:
            raise ValueError(f"unknown loss_form {self.loss_form!r}; valid: {', '.join(FORMS)}")
        for layer in self.conv:
            if len(layer) != 3 or min(layer) < 1:
                raise ValueError(f"EPGConfig.conv layers are (kernel, stride, channels) >= 1, "
                                 f"got {layer!r}")
        if conv_output_length(self.buffer_size, self.conv) < 1:
            raise ValueError(f"buffer_size={self.buffer_size} is shorter than the receptive field "
                             f"of conv={self.conv}")
        if any(w < 1 for w in self.dense) or self.memory_size < 0:
            raise ValueError(f"dense widths must be >= 1 and memory_size >= 0, got "
                             f"{self.dense}, {self.memory_size}")
        if self.ppo_mix not in PPO_MIXES:
            raise ValueError(f"unknown ppo_mix {self.ppo_mix!r}; valid: {', '.join(PPO_MIXES)}")
        if self.ppo_mix == "convex" and self.ppo_coef > 1:
            raise ValueError(f"ppo_mix='convex' needs ppo_coef <= 1 (a weight in [0, 1]), got "
                             f"{self.ppo_coef}")
        if self.ppo_coef < 0 or self.ppo_anneal_frac < 0 or not 0 < self.ppo_clip:
            raise ValueError(f"need ppo_coef >= 0, ppo_anneal_frac >= 0, ppo_clip > 0; got "
                             f"{self.ppo_coef}, {self.ppo_anneal_frac}, {self.ppo_clip}")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1], got {self.gamma}")
        if self.weight_decay < 0 or not 0 < self.outer_lr_decay_at <= 1:
            raise ValueError(f"need weight_decay >= 0 and outer_lr_decay_at in (0, 1], got "
                             f"{self.weight_decay}, {self.outer_lr_decay_at}")
        if self.num_evals < 2:
            raise ValueError(f"EPGConfig.num_evals must be >= 2 (first and last), got {self.num_evals}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; valid: {', '.join(ACTIVATIONS)}")
        self.task_family()  # radii

    def hparams(self) -> OpenAIESParams:
        """The outer ES's hyper-parameters a run may sweep (sigma, weight decay)."""
        return OpenAIESParams(sigma=jnp.asarray(self.sigma, jnp.float32),
                              weight_decay=jnp.asarray(self.weight_decay, jnp.float32))

    def task_family(self) -> TaskFamily:
        return TaskFamily(self.family, self.episode_length, self.r_min, self.r_max,
                          self.observe_goal, self.backend)

    @property
    def inner_env_steps(self) -> int:
        """Env steps of one inner-loop lifetime (buffer fill + updates; evaluation not counted)."""
        return self.num_envs * (self.buffer_size + self.inner_updates * self.rollout_length)

    def updates_for_steps(self, steps: int) -> int:
        """Inner updates whose lifetime takes at least `steps` env steps (>= 1)."""
        rest = steps - self.num_envs * self.buffer_size
        return max(1, math.ceil(rest / (self.num_envs * self.rollout_length)))


def openai_epg(**overrides) -> EPGConfig:
    """The public openai/EPG sizes (for a GPU; see REFERENCES.md)."""
    kw = dict(buffer_size=512, rollout_length=64, inner_updates=128, sgd_steps=1, num_envs=1,
              conv=((6, 5, 16), (4, 2, 32)), dense=(32, 16), policy_layers=(64, 64),
              sigma=0.01, outer_lr=0.01, weight_decay=0.001, population_size=256,
              tasks_per_member=1, generations=2000)
    kw.update(overrides)
    return EPGConfig(**kw)


# Tiny sizes (`experiments.epg --quick`, `epg_generalization`/`bench_epg --quick`, the notebook).
QUICK: dict = dict(buffer_size=32, rollout_length=8, inner_updates=8, num_envs=2,
                   conv=((4, 2, 4), (3, 2, 4)), dense=(8,), policy_layers=(16,), population_size=4,
                   tasks_per_member=1, num_evals=2, eval_tasks=2, eval_envs=2)


__all__ = ["EPGConfig", "openai_epg", "QUICK"]
