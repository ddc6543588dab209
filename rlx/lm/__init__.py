"""Sequence policies for LLM-style RL: a tiny causal transformer LM and its KV-cache sampler."""

from rlx.lm.model import (
    SAMPLE_STATIC,
    LMConfig,
    Sample,
    TransformerLM,
    group_log_probs,
    init_params,
    logits,
    num_params,
    positions_from_mask,
    reference_sample,
    reference_sample_jit,
    sample,
    sample_jit,
    token_log_probs,
)

__all__ = [
    "SAMPLE_STATIC", "LMConfig", "Sample", "TransformerLM", "group_log_probs", "init_params",
    "logits", "num_params",
    "positions_from_mask", "reference_sample", "reference_sample_jit", "sample", "sample_jit",
    "token_log_probs",
]
