"""Evolution Strategies on rlx environments as `make_train(config) -> rlx.training.Trainer`.

One update is one generation:

    population = strategy.ask(key)                     # keys + signs (rlx) or N x D (evosax)
    fitness    = evaluator(population)                  # sharded over the mesh, returns only
    strategy.tell(population, fitness)                  # rlx: per-device noise sums + all-reduce
    obs_stats  = merge(obs_stats, stats of this generation's observations)

all in one compiled program whose population is sharded over every device of
`trainer.mesh` (multi-host: the same code after `rlx.distributed.initialize`).
The loop itself is `rlx.es.loop.make_trainer` (shared with EPG); this module
configures it with the sharded evaluator as fitness and the observation
statistics as extra state.
At the `rlx.runner` level an ES run is one member (a seed); several seeds are
replicated on the mesh and each seed's population is sharded.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import struct
from jax.sharding import Mesh

from rlx import population as pop_lib
from rlx.envs import is_continuous_control
from rlx.envs import make as make_env
from rlx.envs import normalize as obs_norm
from rlx.envs import validate_env_name
from rlx.envs.base import Env
from rlx.es.evaluate import Evaluator, auto_chunk
from rlx.es.loop import SearchState, SearchTrainer, fitness_metrics, make_trainer, mean_vector
from rlx.es.openai_es import OpenAIESParams
from rlx.es.strategies import check_population, make_strategy, validate_strategy
from rlx.networks import ACTIVATIONS
from rlx.networks import deterministic_policy as make_policy  # re-exported: rlx.es.make_policy


@dataclasses.dataclass(frozen=True)
class ESConfig:
    """An ES run. Defaults follow Salimans et al. (sigma 0.02, Adam 0.01, L2 0.005)
    with the anchor's 32-32 tanh policy on Brax reacher."""

    env: str = "reacher"
    backend: str = "spring"  # Brax physics backend (ignored for gymnax)
    episode_length: int | None = None  # None: the env's own limit (Brax: 1000)
    fresh_reset: bool = False  # Brax restart mode; ES never continues past an episode's end
    strategy: str = "openai_es"  # or any evosax algorithm name (Open_ES, CMA_ES, SNES, xNES, ...)
    strategy_kwargs: tuple[tuple[str, Any], ...] = ()  # extra evosax constructor arguments
    population_size: int = 256
    sigma: float = 0.02
    lr: float = 0.01
    weight_decay: float = 0.005
    episodes_per_member: int = 1
    total_steps: int = 10_000_000  # env steps (upper bound: pop x episodes x episode cap per gen)
    generations: int | None = None  # overrides total_steps when set
    hidden_layers: tuple[int, ...] = (32, 32)
    activation: str = "tanh"
    normalize_observations: bool = True
    obs_clip: float = 5.0
    members_per_chunk: int | None = None  # per device; None: `chunk_size` (CPU: <= 256 envs)
    shared_starts: bool = False  # every member the same episode starts (else per mirrored pair)
    num_evals: int = 11
    eval_episodes: int = 16

    def validate(self) -> None:
        """Raise `ValueError` naming the offending value, before anything compiles."""
        validate_env_name(self.env)
        validate_strategy(self.strategy, self.strategy_kwargs)
        for name in ("population_size", "sigma", "lr", "episodes_per_member", "total_steps",
                     "eval_episodes", "obs_clip"):
            if not getattr(self, name) > 0:
                raise ValueError(f"ESConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if self.weight_decay < 0:
            raise ValueError(f"ESConfig.weight_decay must be >= 0, got {self.weight_decay}")
        check_population(self.strategy, self.population_size, self.strategy_kwargs,
                         "ESConfig.population_size")
        if self.generations is not None and self.generations < 1:
            raise ValueError(f"ESConfig.generations must be >= 1, got {self.generations}")
        if self.num_evals < 2:
            raise ValueError(f"ESConfig.num_evals must be >= 2 (first and last), got {self.num_evals}")
        if self.members_per_chunk is not None and self.members_per_chunk < 1:
            raise ValueError(f"ESConfig.members_per_chunk must be >= 1, got {self.members_per_chunk}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; valid: {', '.join(ACTIVATIONS)}")

    def check_mesh(self, mesh: Mesh | None) -> None:
        """The population must split evenly over the mesh (None: one device) and into member
        chunks."""
        local = pop_lib.local_size(self.population_size, mesh)
        if self.members_per_chunk is not None and local % min(self.members_per_chunk, local):
            raise ValueError(f"members_per_chunk={self.members_per_chunk} does not divide the "
                             f"{local} members per device ({self.population_size} over "
                             f"{1 if mesh is None else mesh.devices.size} devices)")

    def hparams(self) -> OpenAIESParams:
        return OpenAIESParams(sigma=jnp.asarray(self.sigma, jnp.float32),
                              weight_decay=jnp.asarray(self.weight_decay, jnp.float32))



# Per-env-family ESConfig overrides that learn on a CPU budget (`experiments.es`, `es_vs_ppo`).
PRESETS: dict[str, dict] = {
    "brax": dict(population_size=256, sigma=0.02, lr=0.01, weight_decay=0.005,
                 hidden_layers=(32, 32), num_evals=11, eval_episodes=32),
    "classic": dict(population_size=64, sigma=0.05, lr=0.05, weight_decay=0.005,
                    hidden_layers=(16,), num_evals=11, eval_episodes=16),
}
# Tiny sizes on top of a preset (`--quick`: tests and smoke runs); Brax episodes shortened.
QUICK: dict = dict(population_size=16, hidden_layers=(8,), num_evals=3, eval_episodes=2)
QUICK_BRAX_EPISODE_LENGTH = 50


def preset(env: str, quick: bool = False) -> dict:
    """The ESConfig overrides for `env`: its family's preset (Brax and MuJoCo Playground, or
    gymnax), plus `QUICK`."""
    brax = is_continuous_control(env)
    kw = dict(PRESETS["brax" if brax else "classic"])
    if quick:
        kw.update(QUICK)
        if brax:
            kw["episode_length"] = QUICK_BRAX_EPISODE_LENGTH
    return kw

@struct.dataclass
class ESState(SearchState):
    """`SearchState` + the running statistics of the observations the members saw."""

    obs_stats: obs_norm.RunningStats


def chunk_size(config: ESConfig, mesh: Mesh | None) -> int:
    """Members evaluated at once per device: `members_per_chunk`, else `auto_chunk`."""
    local = pop_lib.local_size(config.population_size, mesh)
    platform = mesh.devices.flat[0].platform if mesh is not None else jax.default_backend()
    return config.members_per_chunk or auto_chunk(local, config.episodes_per_member, platform)


def build(config: ESConfig, mesh: Mesh | None = None, env: Env | None = None):
    """(env, net, strategy, evaluator, mesh) for `config` on `mesh` (None: one device, not
    sharded); validated before any compile."""
    config.validate()
    config.check_mesh(mesh)
    env = env or make_env(config.env, backend=config.backend, episode_length=config.episode_length,
                          fresh_reset=config.fresh_reset)
    net, act = make_policy(env, config.hidden_layers, config.activation)
    template = net.init(jax.random.PRNGKey(0), jnp.zeros((1, math.prod(env.obs_shape))))
    chunk = chunk_size(config, mesh)
    strategy = make_strategy(config.strategy, config.population_size, template, lr=config.lr,
                             sigma=config.sigma, weight_decay=config.weight_decay, mesh=mesh,
                             chunk_size=chunk, kwargs=dict(config.strategy_kwargs))
    evaluator = Evaluator(env, act, episodes=config.episodes_per_member,
                          members_per_chunk=chunk, mesh=mesh,
                          normalize_observations=config.normalize_observations,
                          obs_clip=config.obs_clip, shared_starts=config.shared_starts)
    return env, net, strategy, evaluator, mesh


def make_train(config: ESConfig, mesh: Mesh | None = None, env: Env | None = None,
               on_update: Callable[[jax.Array, jax.Array], None] | None = None) -> SearchTrainer:
    """ES as a `Trainer` whose population is sharded over `mesh` (None: one device; the
    runner places it on the devices it runs on, `rlx.runner.place`).

    Train metrics per generation: return_mean / return_max / return_min over the
    members with a finite return, nonfinite_members (ranked last), episode_length,
    env_steps (taken this generation), params_norm (+ the strategy's own).
    Eval metrics: the strategy's mean parameters on `eval_episodes` held-out episodes
    (the same starts at every evaluation).
    """
    env, net, strategy, evaluator, mesh = build(config, mesh, env)
    steps_per_gen = config.population_size * config.episodes_per_member * evaluator.steps
    if config.generations is not None:
        gens = config.generations
    else:
        gens = max(1, math.ceil(config.total_steps / steps_per_gen))
    updates_per_eval = max(1, math.ceil(gens / (config.num_evals - 1)))

    def init_params(key: jax.Array) -> Any:
        return net.init(key, jnp.zeros((1, math.prod(env.obs_shape)), jnp.float32))

    def fitness(context: Any, population: Any, key: jax.Array, state: ESState):
        out = evaluator(strategy.decode, context, population, state.obs_stats, key)
        return out.returns, out

    def after_tell(state: ESState, out) -> tuple[ESState, dict]:
        obs_stats = obs_norm.merge(state.obs_stats, out.obs_stats) \
            if config.normalize_observations else state.obs_stats
        return state.replace(obs_stats=obs_stats), {"episode_length": out.lengths.mean(),
                                                    "env_steps": out.env_steps}

    def evaluate_mean(params: Any, state: ESState) -> dict:
        # the same held-out starts at every evaluation: the curve shows the policy, not the
        # difficulty of that evaluation's starts (Brax reacher: random targets)
        return evaluator.evaluate_params(params, state.obs_stats, state.eval_key,
                                         config.eval_episodes)

    return make_trainer(strategy, init_params, fitness, evaluate_mean,
                        default_hparams=config.hparams(), num_evals=config.num_evals,
                        updates_per_eval=updates_per_eval, steps_per_update=steps_per_gen,
                        mesh=mesh, place=lambda m: make_train(config, m, env, on_update),
                        config=config, state_type=ESState,
                        init_extra=lambda: {"obs_stats": obs_norm.init(env.obs_shape)},
                        after_tell=after_tell, on_update=on_update)


def policy_fn(config: ESConfig, env: Env):
    """`act(state, obs) -> env action` of a trained `ESState`'s mean policy (inspection)."""
    _, net, strategy, _, _ = build(config, None, env)
    _, act = make_policy(env, config.hidden_layers, config.activation)

    def act_state(state: ESState, obs: jax.Array) -> jax.Array:
        o = obs_norm.normalize(state.obs_stats, obs, clip=config.obs_clip) \
            if config.normalize_observations else obs
        return act(strategy.mean(state.strategy_state, state.hparams), o)

    return act_state


__all__ = ["ESConfig", "ESState", "PRESETS", "QUICK", "preset", "make_train", "make_policy",
           "build", "fitness_metrics", "policy_fn", "mean_vector"]
