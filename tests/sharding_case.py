"""The small batched training compared across device layouts (1 device, 8 devices, 2 hosts)."""

import numpy as np

from experiments.common import repeat_runs, seed_keys
from rl.ppo import PPOConfig, default_hparams

CONFIG = PPOConfig(num_envs=4, num_steps=16, num_minibatches=2, update_epochs=2, total_timesteps=64 * 6)
NUM_RUNS = 8


def case_inputs():
    """Keys and hparams for 8 runs; learning rates differ so the runs differ beyond their seeds."""
    hparams = repeat_runs(default_hparams(CONFIG), NUM_RUNS)
    hparams = hparams.replace(lr=np.geomspace(1e-4, 1e-3, NUM_RUNS).astype(np.float32))
    return seed_keys(0, NUM_RUNS), hparams
