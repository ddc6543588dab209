"""Losses and estimators: small pure functions of arrays, each with its equation."""

from rlx.losses.advantages import gae, masked_mean, n_step_returns, n_step_window, normalize
from rlx.losses.policy import (adaptive_kl_beta, approx_kl, clip_fraction, entropy_loss,
                               kl_penalty, ppo_surrogate)
from rlx.losses.value import value_loss

__all__ = ["gae", "n_step_returns", "n_step_window", "masked_mean", "normalize", "ppo_surrogate", "kl_penalty",
           "adaptive_kl_beta", "entropy_loss", "clip_fraction", "approx_kl", "value_loss"]
from rlx.losses.soft_q import (boltzmann, entropy_pg_loss, kl_to_reference, q_from_policy,
                               soft_q_loss)

__all__ += ["kl_to_reference", "boltzmann", "q_from_policy", "soft_q_loss",
            "entropy_pg_loss"]
from rlx.losses.baselines import (factorised_advantages, factorised_surrogate,
                                  fit_linear_baseline, linear_baseline, linear_baseline_features,
                                  next_step_actions, others, pg_loss, state_baseline_advantages,
                                  variance_decomposition)

__all__ += ["state_baseline_advantages", "factorised_advantages", "next_step_actions", "pg_loss",
            "factorised_surrogate", "others", "linear_baseline_features", "fit_linear_baseline",
            "linear_baseline", "variance_decomposition"]
from rlx.losses import sequence  # noqa: E402,F401  (LLM-RL sequence losses: losses.sequence.*)
from rlx.losses.preference import bradley_terry_loss, preference_accuracy, recentre_and_normalise  # noqa: E402,E501
__all__ += ["bradley_terry_loss", "preference_accuracy", "recentre_and_normalise"]
from rlx.losses import best_of_n  # noqa: E402,F401  (best-of-n estimator and KL: losses.best_of_n.*)
from rlx.losses import wpo  # noqa: E402,F401  (WPO actor update: losses.wpo.*)
