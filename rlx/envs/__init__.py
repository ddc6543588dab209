"""Jitted environments behind one functional interface (Brax and gymnax)."""

from rlx.envs import normalize
from rlx.envs.base import ActionSpec, Env, EnvState, StepOut
from rlx.envs.registry import BRAX_ENVS, SOLVED_RETURN, list_envs, make, validate_env_name

__all__ = ["ActionSpec", "Env", "EnvState", "StepOut", "BRAX_ENVS", "SOLVED_RETURN", "list_envs",
           "make", "validate_env_name", "normalize"]
