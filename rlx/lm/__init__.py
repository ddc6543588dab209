"""Sequence policies for LLM-style RL: a tiny causal transformer LM and its KV-cache sampler;
scalar reward models on the same trunk (`rlx.lm.reward_model`)."""

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
from rlx.lm.reward_model import (
    GOLD_SIZE,
    RM_SIZES,
    RMConfig,
    normalize_head,
    rm_config,
    rm_init,
    rm_num_params,
    rm_score,
)

__all__ = [
    "SAMPLE_STATIC", "LMConfig", "Sample", "TransformerLM", "group_log_probs", "init_params",
    "logits", "num_params",
    "positions_from_mask", "reference_sample", "reference_sample_jit", "sample", "sample_jit",
    "token_log_probs",
    "GOLD_SIZE", "RM_SIZES", "RMConfig", "normalize_head", "rm_config",
    "rm_init", "rm_num_params", "rm_score",
]
