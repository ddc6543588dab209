"""Jitted environments behind one functional interface (Brax, gymnax, MuJoCo Playground and
rlx's own: `multiaction_point`, the LQG; `<env>_x<K>`: K copies of an env as one,
`rlx.envs.replica`).

`rlx.envs.tasks`: task-parameterised families (goal regions) for meta-learning (EPG).
"""

from rlx.envs import lqg, normalize
from rlx.envs.base import ActionSpec, Env, EnvState, StepOut
from rlx.envs.lqg import LQGEnv
from rlx.envs.multiaction import MultiactionPointEnv
from rlx.envs.replica import ReplicaEnv
from rlx.envs.random_mdp import MDPArrays, RandomMDP, random_mdp_arrays
from rlx.envs.registry import (BRAX_ENVS, PLAYGROUND_ENVS, SOLVED_RETURN, is_continuous_control,
                                list_envs, make, validate_env_name)

__all__ = ["ActionSpec", "Env", "EnvState", "StepOut", "BRAX_ENVS", "PLAYGROUND_ENVS",
           "is_continuous_control", "SOLVED_RETURN", "list_envs",
           "make", "validate_env_name", "normalize", "MDPArrays", "RandomMDP", "random_mdp_arrays",
           "lqg", "LQGEnv", "MultiactionPointEnv", "ReplicaEnv"]
