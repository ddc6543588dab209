"""Evolved Policy Gradients (Houthooft et al. 2018, arXiv 1802.04821).

- `loss_net`: the learned loss, a temporal convolution over the agent's recent experience.
- `inner`: a Gaussian MLP policy trained by Adam on that loss, one `lax.scan` per lifetime.
- `trainer`: `EPGConfig` + `make_train(config) -> rlx.training.Trainer`, ES (rlx.es
  OpenAI-ES) over the loss parameters, members x tasks sharded over the device mesh.
- `api`: save/load a learned loss, `train_with_loss`, `train_ppo`.

The task families (goal regions, the OOD test) live in `rlx.envs.tasks`; `TaskFamily`
and `REGIONS` are re-exported here.
"""

from rlx.epg.api import load_loss, ppo_config, save_loss, train_ppo, train_with_loss
from rlx.epg.config import QUICK, EPGConfig, openai_epg
from rlx.epg.inner import Inner
from rlx.epg.loss_net import EPGLossNet
from rlx.envs.tasks import REGIONS, TaskFamily
from rlx.epg.trainer import EPGState, loss_params, make_train, ppo_weight

__all__ = ["EPGConfig", "openai_epg", "QUICK", "Inner", "EPGLossNet", "TaskFamily", "REGIONS",
           "EPGState", "make_train", "loss_params", "ppo_weight", "save_loss", "load_loss", "train_with_loss",
           "train_ppo", "ppo_config"]
