"""Networks as pure ``init``/``apply`` pairs (flax linen modules) and the policy distributions."""

from models.actor_critic import (
    ActorCritic,
    RecurrentActorCritic,
    categorical_entropy,
    categorical_log_prob,
    gaussian_entropy,
    gaussian_log_prob,
    masked_logits,
)

__all__ = [
    "ActorCritic",
    "RecurrentActorCritic",
    "categorical_entropy",
    "categorical_log_prob",
    "gaussian_entropy",
    "gaussian_log_prob",
    "masked_logits",
]
