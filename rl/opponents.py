"""Opponents for self-play: the latest policy and a pool of frozen past snapshots of it.

One-step games take the opponent as action probabilities (``mixed_action_probs``); multi-step
games (pgx boards) take it as an ``OpponentPolicy`` that acts inside the environment's ``step``.

The learner keeps an ``OpponentPool`` in its train state (so it is checkpointed and vmapped with
the run), snapshots its parameters every ``pool_interval`` updates into a ring buffer of
``size`` slots, and lets a self-play environment draw each game's opponent from the latest policy
(with probability ``latest_prob``) or uniformly from the filled slots (fictitious self-play).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class OpponentPool:
    """A ring buffer of parameter snapshots: every leaf has a leading ``[size]`` axis."""

    params: Any
    count: jax.Array  # snapshots added so far (the slots filled are min(count, size))

    @classmethod
    def create(cls, params: Any, size: int) -> OpponentPool:
        """An empty pool of ``size`` slots shaped like ``params``."""
        stacked = jax.tree.map(lambda leaf: jnp.broadcast_to(leaf, (size, *leaf.shape)), params)
        return cls(stacked, jnp.zeros((), jnp.int32))

    @property
    def size(self) -> int:
        return jax.tree.leaves(self.params)[0].shape[0]

    def add(self, params: Any) -> OpponentPool:
        """The pool with ``params`` written over its oldest slot."""
        slot = self.count % self.size
        stacked = jax.tree.map(lambda pool, leaf: pool.at[slot].set(leaf), self.params, params)
        return OpponentPool(stacked, self.count + 1)

    def maybe_add(self, params: Any, update_step: jax.Array, interval: int) -> OpponentPool:
        """Add ``params`` when ``update_step`` is a multiple of ``interval``."""
        added = self.add(params)
        return jax.tree.map(lambda new, old: jnp.where(update_step % interval == 0, new, old), added, self)

    def weights(self, latest_prob: float) -> jax.Array:
        """Probabilities of ``[latest, slot_0, ..., slot_{size-1}]`` as the opponent: the latest
        policy gets ``latest_prob`` (all of it while the pool is empty), the filled slots share
        the rest equally."""
        filled = jnp.arange(self.size) < self.count
        n_filled = filled.sum()
        latest = jnp.where(n_filled > 0, latest_prob, 1.0)
        slots = jnp.where(filled, (1.0 - latest) / jnp.maximum(n_filled, 1), 0.0)
        return jnp.concatenate([latest[None], slots])


def mixed_action_probs(
    action_probs: Any, latest_params: Any, pool: OpponentPool | None, latest_prob: float, obs: jax.Array
) -> jax.Array:
    """The opponent's action probabilities at each of ``obs`` (``[S, ...]``): the mixture of the
    latest policy and the pool's snapshots. ``action_probs(params, obs) -> [S, A]``."""
    latest = action_probs(latest_params, obs)
    if pool is None or pool.size == 0:
        return latest
    snapshots = jax.vmap(action_probs, in_axes=(0, None))(pool.params, obs)
    everyone = jnp.concatenate([latest[None], snapshots])
    return jnp.einsum("k,ksa->sa", pool.weights(latest_prob), everyone)


# act(params, observation, legal_mask, key) -> action, for one observation (unbatched)
OpponentAct = Callable[[Any, jax.Array, jax.Array, jax.Array], jax.Array]


@struct.dataclass
class OpponentPolicy:
    """Who the opponent is: ``act`` (static) with one of ``params`` (leaves ``[K, ...]``), drawn with
    probabilities ``weights[K]`` at the start of each game."""

    params: Any
    weights: jax.Array
    act: OpponentAct = struct.field(pytree_node=False)


def uniform_act(params: Any, observation: jax.Array, mask: jax.Array, key: jax.Array) -> jax.Array:
    """A uniformly random legal move (the opponent before the learner binds its policy)."""
    return jax.random.categorical(key, jnp.where(mask, 0.0, -jnp.inf))
