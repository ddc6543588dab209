"""Losses and estimators: small pure functions of arrays, each with its equation."""

from rlx.losses.advantages import gae, masked_mean, n_step_returns, normalize
from rlx.losses.policy import (adaptive_kl_beta, approx_kl, clip_fraction, entropy_loss,
                               kl_penalty, ppo_surrogate)
from rlx.losses.value import value_loss

__all__ = ["gae", "n_step_returns", "masked_mean", "normalize", "ppo_surrogate", "kl_penalty",
           "adaptive_kl_beta", "entropy_loss", "clip_fraction", "approx_kl", "value_loss"]
from rlx.losses.soft_q import (boltzmann, entropy_pg_loss, kl_to_reference, q_from_policy,
                               soft_q_loss)

__all__ += ["kl_to_reference", "boltzmann", "q_from_policy", "soft_q_loss",
            "entropy_pg_loss"]
