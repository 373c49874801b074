"""Losses shared by the learners, and the registry of pluggable policy objectives.

A policy objective has the shape ``objective(ratio, advantage, progress, params) -> loss`` (per
sample, to be minimised), where ``progress`` in [0, 1] is the fraction of training done (n / N) and
``params`` is any pytree. Learned objectives (LPO, TA-LPO) are registered the same way, and their
``params`` travel in ``PPOHParams.objective_params``, so a population of objectives is a vmap axis.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

Objective = Callable[[jax.Array, jax.Array, jax.Array, object], jax.Array]
OBJECTIVES: dict[str, Objective] = {}


def register_objective(name: str, objective: Objective) -> None:
    """Make ``objective`` selectable by name (``PPOConfig.objective``)."""
    if name in OBJECTIVES:
        raise ValueError(f"objective {name!r} is already registered")
    OBJECTIVES[name] = objective


def clipped_surrogate(ratio: jax.Array, advantage: jax.Array, eps_low: jax.Array, eps_high: jax.Array) -> jax.Array:
    """The clipped surrogate, negated: ``-min(r A, clip(r, 1-eps_low, 1+eps_high) A)`` (asymmetric
    "clip-higher" when ``eps_high > eps_low``)."""
    clipped = jnp.clip(ratio, 1.0 - eps_low, 1.0 + eps_high)
    return -jnp.minimum(ratio * advantage, clipped * advantage)


def clip_objective(ratio: jax.Array, advantage: jax.Array, progress: jax.Array, clip_eps: jax.Array) -> jax.Array:
    """PPO's clipped surrogate, negated: ``-min(r A, clip(r, 1-eps, 1+eps) A)``; params = eps."""
    del progress
    return clipped_surrogate(ratio, advantage, clip_eps, clip_eps)


register_objective("clip", clip_objective)


def clipped_value_loss(
    value: jax.Array, old_value: jax.Array, target: jax.Array, clip_eps: jax.Array, weights: jax.Array | None = None
) -> jax.Array:
    """PPO's value loss with the new value kept within ``clip_eps`` of the rollout value (mean, or
    the ``weights``-weighted mean, e.g. over the real tokens of padded sequences)."""
    value_clipped = old_value + jnp.clip(value - old_value, -clip_eps, clip_eps)
    losses = jnp.maximum((value - target) ** 2, (value_clipped - target) ** 2)
    if weights is None:
        return 0.5 * jnp.mean(losses)
    return 0.5 * (losses * weights).sum() / weights.sum()


def normalize(x: jax.Array, eps: float = 1e-8) -> jax.Array:
    """Zero mean, unit standard deviation (advantage normalisation per minibatch)."""
    return (x - x.mean()) / (x.std() + eps)
