"""rlx: accelerator-native RL research in JAX."""

__version__ = "0.1.0"
