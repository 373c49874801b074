"""Language-model RL: tokenizer, verifiable tasks, the KV-cache sampler, the learner and trained policies."""

from rl.lm.policy import load_policy

__all__ = ["load_policy"]
