"""Task-parameterised environments: families of jitted envs with per-task parameters (EPG's tasks).

A `TaskFamily` samples task parameters (a goal) from a *region* and builds an
`rlx.envs.Env` for one task: `family.make_env(task)` may be called inside a
traced function with a traced `task`, so a population of (loss member x task)
inner loops is one vmapped program.

Regions are unions of angular sectors of goal directions, so the out-of-distribution
test of Houthooft et al. (2018, GoalAnt) is "train on the right half, test on the left":

    REGIONS["right"] = angles in [-pi/2, pi/2]   (goals with x >= 0)
    REGIONS["left"]  = angles in [pi/2, 3 pi/2]  (goals with x <= 0)
    REGIONS["all"]   = angles in [-pi, pi]
    REGIONS["even_octants"] = [k pi/2, k pi/2 + pi/4], k = 0..3   (interleaved with
    REGIONS["odd_octants"]  = [k pi/2 + pi/4, (k+1) pi/2]          each other)

The octant pair is a split that no single direction separates: a loss that learned
"go towards the training side" gains nothing from it.

- `PointGoal` (CPU): a 2-D point mass with damped velocity that must reach a
  goal sampled at radius [r_min, r_max] in the region's sector. Reward
  -|pos - goal| - ctrl_cost |a|^2 per step; 50-step episodes; by default the goal
  is *not* observed (the agent must find it within its lifetime, as in EPG).
- `AntGoal` (GPU): Brax `ant` whose reward is -|xy - goal| plus Brax's survive and
  control terms (the paper's GoalAnt); terminates when the ant is unhealthy.
- A MuJoCo Playground task name (`CartpoleBalance`, `CheetahRun`, ...; `pip install
  playground`): a one-task family, the task itself whatever goal is drawn (its own
  per-episode randomness aside), so train and test regions are the same task: EPG then
  learns a loss for that task, as in the paper's single-environment experiments.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from rlx.envs.adapters import brax_obs_shape
from rlx.envs.base import ActionSpec, Env

REGIONS: dict[str, tuple[tuple[float, float], ...]] = {
    "right": ((-0.5 * math.pi, 0.5 * math.pi),),
    "left": ((0.5 * math.pi, 1.5 * math.pi),),
    "all": ((-math.pi, math.pi),),
    "even_octants": tuple((k * 0.5 * math.pi, (k + 0.5) * 0.5 * math.pi) for k in range(4)),
    "odd_octants": tuple(((k + 0.5) * 0.5 * math.pi, (k + 1) * 0.5 * math.pi) for k in range(4)),
}
FAMILIES = ("point_goal", "ant_goal")


def validate_family(name: str) -> None:
    """Raise a `ValueError` unless `name` is a family of FAMILIES or a MuJoCo Playground task
    (installed)."""
    from rlx.envs.registry import PLAYGROUND_ENVS, validate_env_name

    if name in PLAYGROUND_ENVS:
        validate_env_name(name)  # names the missing package
    elif name not in FAMILIES:
        raise ValueError(f"unknown task family {name!r}; valid: {', '.join(FAMILIES)}, or a "
                         f"MuJoCo Playground task ({', '.join(PLAYGROUND_ENVS)})")


def validate_region(region: str) -> None:
    if region not in REGIONS:
        raise ValueError(f"unknown task region {region!r}; valid: {', '.join(REGIONS)}")


def sample_goals(key: jax.Array, n: int, region: str, r_min: float, r_max: float) -> jax.Array:
    """[n, 2] goals: angle uniform over the region's sectors, radius uniform in [r_min, r_max]."""
    sectors = REGIONS[region]
    k1, k2 = jax.random.split(key)
    if len(sectors) == 1:  # uniform's own draw: earlier versions' runs get the same goals
        lo, hi = sectors[0]
        angle = jax.random.uniform(k1, (n,), minval=lo, maxval=hi)
    else:  # uniform over the union: a sector by its width, then a point inside it
        lo = jnp.asarray([a for a, _ in sectors], jnp.float32)
        width = jnp.asarray([b - a for a, b in sectors], jnp.float32)
        end = jnp.cumsum(width)
        u = jax.random.uniform(k1, (n,), maxval=end[-1])
        i = jnp.minimum(jnp.searchsorted(end, u, side="right"), len(sectors) - 1)
        angle = lo[i] + (u - (end[i] - width[i]))
    radius = jax.random.uniform(k2, (n,), minval=r_min, maxval=r_max)
    return jnp.stack([radius * jnp.cos(angle), radius * jnp.sin(angle)], -1)


class PointGoalEnv(Env):
    """2-D point mass to a goal (one task). State (pos, vel); action in [-1, 1]^2.

        vel' = damping * vel + accel * a,   pos' = clip(pos + dt * vel', -bound, bound)
        r    = -|pos' - goal| - ctrl_cost * |a|^2
    """

    def __init__(self, goal: jax.Array, episode_length: int = 50, observe_goal: bool = False,
                 dt: float = 0.1, damping: float = 0.8, accel: float = 1.0,
                 ctrl_cost: float = 0.01, bound: float = 3.0, start_noise: float = 0.05):
        self.name = "point_goal"
        self.goal = jnp.asarray(goal, jnp.float32)
        self.observe_goal = observe_goal
        self.obs_shape = (6 if observe_goal else 4,)
        self.action_spec = ActionSpec(discrete=False, size=2)
        self.max_episode_steps = int(episode_length)
        self.dt, self.damping, self.accel = dt, damping, accel
        self.ctrl_cost, self.bound, self.start_noise = ctrl_cost, bound, start_noise

    def _obs(self, pos, vel):
        parts = [pos, vel] + ([self.goal] if self.observe_goal else [])
        return jnp.concatenate(parts).astype(jnp.float32)

    def _reset(self, key):
        pos = self.start_noise * jax.random.normal(key, (2,), jnp.float32)
        vel = jnp.zeros((2,), jnp.float32)
        return (pos, vel), self._obs(pos, vel)

    def _step(self, key, inner, action, time):
        pos, vel = inner
        a = jnp.clip(action, -1.0, 1.0)
        vel = self.damping * vel + self.accel * a
        pos = jnp.clip(pos + self.dt * vel, -self.bound, self.bound)
        reward = -jnp.linalg.norm(pos - self.goal) - self.ctrl_cost * jnp.sum(a * a)
        final_obs = self._obs(pos, vel)
        truncated = time >= self.max_episode_steps
        new_inner, new_obs = self._reset(key)
        new_inner = jax.tree.map(lambda x, y: jnp.where(truncated, x, y), new_inner, (pos, vel))
        obs = jnp.where(truncated, new_obs, final_obs)
        return new_inner, obs, reward, jnp.zeros((), bool), final_obs, truncated


class AntGoalEnv(Env):
    """Brax ant walking to a goal on the floor (the paper's GoalAnt, one task)."""

    def __init__(self, goal: jax.Array, episode_length: int = 1000, backend: str = "spring",
                 observe_goal: bool = False, brax_env=None):
        import brax.envs  # local: importing brax costs seconds

        self.name = "ant_goal"
        self.goal = jnp.asarray(goal, jnp.float32)
        self.observe_goal = observe_goal
        self._env = brax_env or brax.envs.get_environment("ant", backend=backend)
        (n,) = brax_obs_shape(self._env)
        self.obs_shape = (n + 2 if observe_goal else n,)
        self.action_spec = ActionSpec(discrete=False, size=int(self._env.action_size))
        self.max_episode_steps = int(episode_length)

    def _obs(self, s):
        o = s.obs.astype(jnp.float32)
        return jnp.concatenate([o, self.goal]) if self.observe_goal else o

    def _reset(self, key):
        s = self._env.reset(key)
        return s, self._obs(s)

    def _step(self, key, inner, action, time):
        s = self._env.step(inner, action)
        xy = s.pipeline_state.x.pos[0, :2]
        reward = (-jnp.linalg.norm(xy - self.goal) + s.metrics["reward_survive"]
                  + s.metrics["reward_ctrl"])
        terminated = s.done > 0.5
        truncated = time >= self.max_episode_steps
        done = jnp.logical_or(terminated, truncated)
        final_obs = self._obs(s)
        r = self._env.reset(key)
        s_next = jax.tree.map(lambda x, y: jnp.where(done, x, y), r, s)
        s_next = s_next.replace(done=jnp.zeros_like(s.done))
        return s_next, self._obs(s_next), reward, terminated, final_obs, truncated


@dataclasses.dataclass(frozen=True, eq=False)
class TaskFamily:
    """A distribution of goal-reaching tasks; `make_env(goal)` builds one task's Env."""

    name: str = "point_goal"
    episode_length: int | None = None  # None: 50 (point_goal) / 1000 (ant_goal)
    r_min: float = 0.5
    r_max: float = 1.5
    observe_goal: bool = False
    backend: str = "spring"  # ant_goal only

    def __post_init__(self):
        validate_family(self.name)
        if not 0 <= self.r_min <= self.r_max:
            raise ValueError(f"goal radii need 0 <= r_min <= r_max, got {self.r_min}, {self.r_max}")

    @property
    def horizon(self) -> int:
        """Episode steps: `episode_length`, else 50 (point_goal) / 1000 (ant_goal, Playground)."""
        return self.episode_length or (50 if self.name == "point_goal" else 1000)

    def sample(self, key: jax.Array, n: int, region: str) -> jax.Array:
        """[n, 2] task parameters (goals) from `region` (a key of REGIONS)."""
        validate_region(region)
        return sample_goals(key, n, region, self.r_min, self.r_max)

    def make_env(self, task: jax.Array) -> Env:
        if self.name == "point_goal":
            return PointGoalEnv(task, self.horizon, self.observe_goal)
        if self.name != "ant_goal":  # a Playground task: the goal does not change it
            cache = self.__dict__.setdefault("_cache", {})
            if "playground" not in cache:
                from rlx.envs.registry import make

                cache["playground"] = make(self.name, episode_length=self.horizon)
            return cache["playground"]
        return AntGoalEnv(task, self.horizon, self.backend, self.observe_goal,
                          brax_env=self._brax_env())

    def _brax_env(self):
        cache = self.__dict__.setdefault("_cache", {})
        if "brax" not in cache:
            import brax.envs

            cache["brax"] = brax.envs.get_environment("ant", backend=self.backend)
        return cache["brax"]

    def template_env(self) -> Env:
        """An env with a dummy goal (shapes only)."""
        return self.make_env(jnp.zeros((2,), jnp.float32))


__all__ = ["TaskFamily", "PointGoalEnv", "AntGoalEnv", "REGIONS", "FAMILIES", "sample_goals",
           "validate_region", "validate_family"]
