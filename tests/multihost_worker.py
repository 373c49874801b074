"""One process of the two-process test: joins the JAX distributed runtime on 127.0.0.1 with 4
fake CPU devices, trains 8 runs sharded over all 8 devices of both processes, and (process 0)
saves the per-update returns."""

import os
import sys

process_id, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4 --xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"

import jax  # noqa: E402

import rl  # noqa: E402,F401

jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=process_id)

import numpy as np  # noqa: E402
from sharding_case import CONFIG, NUM_RUNS, case_inputs  # noqa: E402

from rl import records, runner  # noqa: E402
from rl.ppo import make_learner  # noqa: E402

assert jax.device_count() == 8 and jax.local_device_count() == 4
keys, hparams = case_inputs()
result = runner.run(make_learner(CONFIG), keys, hparams, out, {"case": "multihost"}, chunk_updates=3, progress=False)
if process_id == 0:
    np.save(os.path.join(out, "returns.npy"), records.series(result.records, "episode_return"))
    assert records.series(result.records, "episode_return").shape[1] == NUM_RUNS
