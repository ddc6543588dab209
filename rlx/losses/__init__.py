"""Losses and estimators: small pure functions of arrays, each with its equation."""

from rlx.losses.advantages import gae, normalize
from rlx.losses.policy import (adaptive_kl_beta, approx_kl, clip_fraction, entropy_loss,
                               kl_penalty, ppo_surrogate)
from rlx.losses.value import value_loss

__all__ = ["gae", "normalize", "ppo_surrogate", "kl_penalty", "adaptive_kl_beta", "entropy_loss",
           "clip_fraction", "approx_kl", "value_loss"]
from rlx.losses.soft_q import (boltzmann, entropy_pg_loss, kl_to_reference, n_step_returns,
                               q_from_policy, soft_q_loss)

__all__ += ["n_step_returns", "kl_to_reference", "boltzmann", "q_from_policy", "soft_q_loss",
            "entropy_pg_loss"]
