"""One lifetime of learning: environments, GAE and losses, learners, and the chunked runner.

Importing ``rl`` adds ``--xla_cpu_enable_concurrency_optimized_scheduler=false`` to ``XLA_FLAGS``
(unless you set that flag yourself) before JAX starts its backend. With jax 0.10.2 the CPU
runtime's concurrent scheduling deadlocks, at random, vmapped PPO training whose actor and critic
run as parallel branches (seen here: 8 vmapped CartPole seeds hang within seconds, every time).
The flag costs about 15% of single-seed CPU speed and prevents the hang. It has no effect on GPU.
Import ``rl`` before running any JAX computation for it to apply.
"""

import os

_SAFE_SCHEDULER = "--xla_cpu_enable_concurrency_optimized_scheduler=false"
if "xla_cpu_enable_concurrency_optimized_scheduler" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_SAFE_SCHEDULER}".strip()
