"""rlx: accelerator-native RL research in JAX."""

import os as _os

__version__ = "0.1.0"

# jaxlib 0.10.2 enables XLA:CPU's YNN fusion path, which can hang or crash some
# CPU kernels (jax-ml/jax#39257). Turn it off unless the user chose; it only
# concerns the CPU backend and must be set before JAX starts it. (The other CPU
# hang seen here, jaxlib's batched LAPACK QR under vmap, is avoided by
# `rlx.networks.orthogonal`.)
_FLAG, _VALUE = "xla_cpu_experimental_ynn_fusion_type", ""
if _FLAG not in _os.environ.get("XLA_FLAGS", ""):
    _os.environ["XLA_FLAGS"] = (_os.environ.get("XLA_FLAGS", "") + f" --{_FLAG}={_VALUE}").strip()
