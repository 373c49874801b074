"""One lifetime of learning: environments, GAE and losses, learners, and the chunked runner.

Importing ``rl`` sets up JAX's CPU backend for many independent runs; results do not change, and
accelerators are unaffected:

- One CPU device per core (``jax_num_cpu_devices``), unless you chose a number yourself
  (``XLA_FLAGS=--xla_force_host_platform_device_count=N`` or ``JAX_NUM_CPU_DEVICES=N``). Batches of
  runs (seeds, sweep points, population members) shard over devices (``rl.sharding``), so on a
  CPU-only machine they use every core. Import ``rl`` before running any JAX computation.
- JAX's Threefry random-number hash is lowered on CPU as straight-line code instead of a loop
  (``rl.cpu_random``): bit-identical random numbers, ~8% faster PPO on CartPole.
"""

import os

import jax

from rl import cpu_random

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", "") and (
    "JAX_NUM_CPU_DEVICES" not in os.environ
):
    try:
        jax.config.update("jax_num_cpu_devices", len(os.sched_getaffinity(0)))
    except RuntimeError:  # JAX already started its backends: keep what it has
        pass

cpu_random.install()
