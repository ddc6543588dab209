"""rlx: accelerator-native RL research in JAX."""

import os as _os

__version__ = "0.1.0"

# Two XLA:CPU defaults of jaxlib 0.10.2 hang some vmapped programs here (every
# thread idle, the result never ready): the concurrency-optimised scheduler
# (a vmapped PPO init building orthogonally initialised networks and Brax states
# together) and the YNN fusion path (a population of Brax evaluations; see
# jax-ml/jax#39257). Both are turned off unless the user set them; they only
# concern the CPU backend and must be set before JAX starts it.
_CPU_WORKAROUNDS = {"xla_cpu_enable_concurrency_optimized_scheduler": "false",
                    "xla_cpu_experimental_ynn_fusion_type": ""}
for _flag, _value in _CPU_WORKAROUNDS.items():
    if _flag not in _os.environ.get("XLA_FLAGS", ""):
        _os.environ["XLA_FLAGS"] = (_os.environ.get("XLA_FLAGS", "") + f" --{_flag}={_value}").strip()
