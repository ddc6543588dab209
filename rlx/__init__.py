"""rlx: accelerator-native RL research in JAX."""

import os as _os

__version__ = "0.1.0"

# XLA:CPU's concurrency-optimised scheduler can deadlock (all threads idle, the
# result never ready) on some vmapped programs here, e.g. a vmapped PPO init
# that builds orthogonally initialised networks and Brax states together
# (jaxlib 0.10.2). Turn it off unless the user chose; CPU only, before JAX
# starts its backend.
_FLAG = "xla_cpu_enable_concurrency_optimized_scheduler"
if _FLAG not in _os.environ.get("XLA_FLAGS", ""):
    _os.environ["XLA_FLAGS"] = (_os.environ.get("XLA_FLAGS", "") + f" --{_FLAG}=false").strip()
