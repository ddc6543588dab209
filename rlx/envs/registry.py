"""`rlx.envs.make`: one entry point for every supported environment name."""

from __future__ import annotations

import re
from typing import Any

from rlx.envs.base import Env

BRAX_ENVS = ("ant", "halfcheetah", "hopper", "humanoid", "humanoidstandup",
             "inverted_pendulum", "inverted_double_pendulum", "pusher", "reacher",
             "swimmer", "walker2d")
BRAX_BACKENDS = ("spring", "positional", "generalized", "mjx")
# rlx's own envs: Wu et al.'s synthetic task; `multiaction_point_k50` fixes k (d = 2)
NATIVE_ENVS = ("multiaction_point",)
_MULTIACTION = re.compile(r"multiaction_point(?:_k([1-9][0-9]*))?")
# `<env>_x<K>`: K copies of a continuous-control env in lockstep (`rlx.envs.replica`)
_REPLICA = re.compile(r"(.+)_x([^_]*)")
# Gym's `reward_threshold`: the mean episode return at which an env counts as solved
# (only envs that have a standard one).
SOLVED_RETURN = {"CartPole-v1": 475.0, "Acrobot-v1": -100.0, "MountainCar-v0": -110.0,
                 "MountainCarContinuous-v0": 90.0}


# MuJoCo Playground's DM Control Suite tasks (`pip install playground`, an optional extra; its
# locomotion and manipulation tasks download their robot assets on first use, so they are
# not offered here). Kept as a list so that naming one without Playground is a clear error.
PLAYGROUND_ENVS = ("AcrobotSwingup", "AcrobotSwingupSparse", "BallInCup", "CartpoleBalance",
                   "CartpoleBalanceSparse", "CartpoleSwingup", "CartpoleSwingupSparse",
                   "CheetahRun", "FingerSpin", "FingerTurnEasy", "FingerTurnHard", "FishSwim",
                   "HopperHop", "HopperStand", "HumanoidStand", "HumanoidWalk", "HumanoidRun",
                   "PendulumSwingup", "PointMass", "ReacherEasy", "ReacherHard",
                   "SwimmerSwimmer6", "WalkerRun", "WalkerStand", "WalkerWalk")
PLAYGROUND_MISSING = ("needs MuJoCo Playground, which is not installed: pip install "
                      "'rlx[playground]' (or pip install playground)")


def playground_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("mujoco_playground") is not None


def gymnax_envs() -> tuple[str, ...]:
    import gymnax

    return tuple(gymnax.registered_envs)


def list_envs() -> list[str]:
    """Every name `make` accepts (Playground's only where it is installed)."""
    playground = sorted(PLAYGROUND_ENVS) if playground_installed() else []
    return sorted(BRAX_ENVS) + sorted(NATIVE_ENVS) + sorted(gymnax_envs()) + playground


def replica_of(name: str) -> tuple[str, int] | None:
    """(base env, K) for a replica name `<env>_x<K>` (`rlx.envs.replica`), else None; a
    `ValueError` naming the value for a K that is not an integer >= 1."""
    match = _REPLICA.fullmatch(name)
    if match is None:
        return None
    base, k = match.groups()
    if not re.fullmatch(r"[1-9][0-9]*", k):
        raise ValueError(f"environment {name!r}: K in <env>_x<K> (K copies of <env>) must be an "
                         f"integer >= 1, got {k!r}")
    return base, int(k)


def validate_env_name(name: str) -> None:
    """Raise a `ValueError` listing valid names if `name` is unknown."""
    replica = replica_of(name)
    if replica is not None:
        return validate_env_name(replica[0])
    if name in BRAX_ENVS or _MULTIACTION.fullmatch(name):
        return
    if name in gymnax_envs():
        return
    if name in PLAYGROUND_ENVS:
        if not playground_installed():
            raise ValueError(f"environment {name!r} {PLAYGROUND_MISSING}")
        return
    raise ValueError(
        f"unknown environment {name!r}. Brax: {', '.join(sorted(BRAX_ENVS))}; "
        f"rlx: {', '.join(NATIVE_ENVS)} (or multiaction_point_k<K>), <env>_x<K> (K copies); "
        f"gymnax: {', '.join(sorted(gymnax_envs()))}; "
        f"MuJoCo Playground: {', '.join(sorted(PLAYGROUND_ENVS))}")


def _base_name(name: str) -> str:
    """The env a (possibly nested) replica name copies; `name` itself otherwise."""
    replica = replica_of(name)
    return name if replica is None else _base_name(replica[0])


def is_brax(name: str) -> bool:
    return name in BRAX_ENVS


def is_playground(name: str) -> bool:
    """A Playground task (or a replica of one)."""
    return _base_name(name) in PLAYGROUND_ENVS


def is_continuous_control(name: str) -> bool:
    """Brax or Playground (or replicas of them): physics tasks that share rlx's
    continuous-control presets."""
    base = _base_name(name)
    return base in BRAX_ENVS or base in PLAYGROUND_ENVS


def make(name: str, *, backend: str = "spring", episode_length: int | None = None,
         fresh_reset: bool = True, **kwargs: Any) -> Env:
    """Build an environment by name.

    Brax names (`reacher`, `hopper`, `ant`, ...) use `backend` (default `spring`,
    the fastest Brax backend measured on CPU here: reacher 172k steps/s against
    61k for `mjx`) and `episode_length` (default 1000); `fresh_reset` picks how Brax episodes restart
    (see `BraxEnv`). gymnax names
    (`CartPole-v1`, `Breakout-MinAtar`, ...) keep gymnax's own time limits unless
    `episode_length` overrides them. MuJoCo Playground names (`CartpoleBalance`,
    `CheetahRun`, ...) run MJX's JAX physics (`backend` and `fresh_reset` do not apply:
    episodes always restart from a fresh reset; see `PlaygroundEnv`). `multiaction_point`
    (`rlx.envs.multiaction`; kwargs d, k, ...; `multiaction_point_k<K>` sets k) has horizon
    `episode_length` (default 50). `<env>_x<K>` (e.g. `humanoid_x5`) runs K copies of `<env>`
    (built with these arguments) in lockstep as one env (`rlx.envs.replica.ReplicaEnv`).
    """
    validate_env_name(name)
    replica = replica_of(name)
    if replica is not None:
        from rlx.envs.replica import ReplicaEnv

        base = make(replica[0], backend=backend, episode_length=episode_length,
                    fresh_reset=fresh_reset, **kwargs)
        return ReplicaEnv(base, replica[1])
    match = _MULTIACTION.fullmatch(name)
    if match:
        from rlx.envs.multiaction import MultiactionPointEnv

        if match.group(1):
            kwargs["k"] = int(match.group(1))
        return MultiactionPointEnv(horizon=episode_length or 50, **kwargs)
    if is_playground(name):
        from rlx.envs.adapters import PlaygroundEnv

        return PlaygroundEnv(name, episode_length=episode_length, **kwargs)
    if is_brax(name):
        if backend not in BRAX_BACKENDS:
            raise ValueError(f"unknown Brax backend {backend!r}; valid: {', '.join(BRAX_BACKENDS)}")
        from rlx.envs.adapters import BraxEnv

        return BraxEnv(name, backend=backend, episode_length=episode_length or 1000,
                       fresh_reset=fresh_reset, **kwargs)
    from rlx.envs.adapters import GymnaxEnv

    if episode_length is not None:
        kwargs["max_steps_in_episode"] = episode_length
    return GymnaxEnv(name, **kwargs)
