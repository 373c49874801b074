"""Faster random numbers on CPU: a straight-line lowering of JAX's Threefry-2x32 hash.

JAX lowers its ``threefry2x32`` primitive on CPU as a loop of five iterations (a smaller program
that compiles faster for large models). On the XLA CPU runtime every loop iteration costs a fixed
dispatch overhead, and an RL rollout draws random numbers at every environment step (the
environment's own resets included), so that loop is a sizeable share of a small step: PPO on
CartPole trains about 8% faster and compiles about 1 s sooner with the hash written out in full
(development A/B timings; README: Benchmark).
The hash is the same 20-round Threefry-2x32, so every random number stays bit-identical (tested
against the published known-answer vectors and against JAX's own lowering).

``install()`` registers the lowering for the CPU platform through JAX's public extension API
(``jax.extend.random.threefry2x32_p`` and ``jax.interpreters.mlir``); ``import rl`` calls it.
Other platforms keep JAX's lowering.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.random import threefry2x32_p
from jax.interpreters import mlir

# Rotation distances of Threefry-2x32 (Salmon et al. 2011): the first four rounds of every eight
# use the first group, the next four the second.
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_KEY_PARITY = np.uint32(0x1BD11BDA)


# Hashes of at most this many elements are written out in full. XLA copies an elementwise
# producer into every fusion that reads it, so for large arrays the straight-line hash would be
# recomputed several times; a loop materialises it once.
STRAIGHT_LINE_MAX_ELEMENTS = 512


def _rotate_left(value: jax.Array, distance: jax.Array) -> jax.Array:
    return (value << distance) | (value >> (np.uint32(32) - distance))


def threefry2x32(key0: jax.Array, key1: jax.Array, count0: jax.Array, count1: jax.Array):
    """Threefry-2x32 with 20 rounds: the key ``(key0, key1)`` hashes the counter ``(count0, count1)``.

    All arguments are uint32 arrays that broadcast together; returns the two output words.
    """
    key0, key1 = jnp.broadcast_arrays(key0, key1)  # usually scalars: keep them small
    x0, x1 = jnp.broadcast_arrays(count0, count1, key0)[:2]
    schedule = jnp.stack([key0, key1, key0 ^ key1 ^ _KEY_PARITY])
    rotations = jnp.asarray(_ROTATIONS, jnp.uint32)

    def four_rounds_and_key_injection(block: int | jax.Array, x: tuple[jax.Array, jax.Array]):
        x0, x1 = x
        for distance in rotations[block % 2]:
            x0 = x0 + x1
            x1 = _rotate_left(x1, distance) ^ x0
        return x0 + schedule[(block + 1) % 3], x1 + schedule[(block + 2) % 3] + jnp.uint32(block + 1)

    x = (x0 + schedule[0], x1 + schedule[1])
    if x0.size > STRAIGHT_LINE_MAX_ELEMENTS:
        return jax.lax.fori_loop(0, 5, four_rounds_and_key_injection, x)
    for block in range(5):
        x = four_rounds_and_key_injection(block, x)
    return x


def install() -> None:
    """Lower ``threefry2x32`` on CPU as straight-line code (bit-identical results)."""
    mlir.register_lowering(threefry2x32_p, mlir.lower_fun(threefry2x32, multiple_results=True), platform="cpu")
