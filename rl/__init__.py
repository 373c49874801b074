"""One lifetime of learning: environments, GAE and losses, learners, and the chunked runner.

Importing ``rl`` sets up JAX's CPU backend for many independent runs (accelerators are unaffected):

- One CPU device per core (``jax_num_cpu_devices``), unless you chose a number yourself
  (``XLA_FLAGS=--xla_force_host_platform_device_count=N``, ``JAX_NUM_CPU_DEVICES=N`` or
  ``jax.config``). Batches of runs (seeds, sweep points, population members) shard over the
  largest number of devices that divides their count (``rl.sharding``), so on a CPU-only machine
  they use every core when the count allows. Results match one device to float tolerance (tested),
  except for learners that split one run over several devices (``Learner.data_parallel``), whose
  random numbers are drawn per device.
  Import ``rl`` before running any JAX computation.
- JAX's Threefry random-number hash is lowered on CPU as straight-line code instead of a loop
  (``rl.cpu_random``): bit-identical random numbers, ~8% faster PPO on CartPole (README: Benchmark).
"""

import os
import warnings

import jax

from rl import cpu_random


def _cpu_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


_count_chosen = (
    "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "")
    or "JAX_NUM_CPU_DEVICES" in os.environ
    or jax.config.jax_num_cpu_devices >= 0
)
if not _count_chosen:
    try:
        jax.config.update("jax_num_cpu_devices", _cpu_cores())
    except RuntimeError:
        warnings.warn(
            "import rl after JAX started its backends: CPU runs keep JAX's device count (import rl first "
            "to get one CPU device per core)",
            stacklevel=2,
        )

cpu_random.install()
