"""Evolution Strategies with device-sharded populations.

- `openai_es`: OpenAI-ES (Salimans et al. 2017) whose members are (key, sign).
- `strategies`: one interface over rlx's OpenAI-ES and every evosax algorithm.
- `evaluate`: the sharded evaluator (returns and observation sums only).
- `loop`: the one generation loop (any strategy, any fitness) behind ES and EPG.
- `trainer`: `ESConfig` + `make_train(config) -> rlx.training.Trainer`.
"""

from rlx.es.evaluate import EvalOut, Evaluator
from rlx.es.openai_es import (Members, OpenAIES, OpenAIESParams, OpenAIESState, antithetic_members,
                              centered_ranks, noise, weighted_noise_sum)
from rlx.es.loop import SearchState, SearchTrainer, make_trainer, mean_vector
from rlx.es.strategies import make_strategy
from rlx.es.trainer import PRESETS, QUICK, ESConfig, ESState, make_policy, make_train, preset

__all__ = ["Evaluator", "EvalOut", "Members", "OpenAIES", "OpenAIESParams", "OpenAIESState",
           "antithetic_members", "centered_ranks", "noise", "weighted_noise_sum", "make_strategy",
           "SearchState", "SearchTrainer", "make_trainer", "mean_vector", "ESConfig", "ESState",
           "PRESETS", "QUICK", "preset", "make_policy", "make_train"]
