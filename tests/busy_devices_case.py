"""Initialise (and run one update of) 4 PPO learners per device on every CPU device at once: with
JAX's batched CPU QR in the orthogonal initialiser this deadlocked (the test runs it in a
subprocess with a time limit). Usage: busy_devices_case.py NETWORK... (each mlp or gru)"""

import sys

import jax

import rl  # noqa: F401
from experiments.common import repeat_runs, seed_keys
from rl import sharding
from rl.ppo import PPOConfig, default_hparams, make_learner

for network in sys.argv[1:]:
    config = PPOConfig(num_envs=4, num_steps=8, num_minibatches=2, update_epochs=1, total_timesteps=32,
                       recurrent=network == "gru", gru_size=64)
    learner = make_learner(config)
    runs = 4 * jax.device_count()
    mesh = sharding.batch_mesh(runs)
    keys = sharding.shard_runs(seed_keys(0, runs), mesh)
    hparams = sharding.shard_runs(repeat_runs(default_hparams(config), runs), mesh)
    state = sharding.map_over_runs(learner.init, mesh)(keys, hparams)
    state, metrics = sharding.map_over_runs(learner.update, mesh)(state, hparams)
    jax.block_until_ready(metrics)
    print(f"ok {network} {jax.device_count()} {runs}", flush=True)
