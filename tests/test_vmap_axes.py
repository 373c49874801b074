"""Objective parameters and environment parameters are inputs of train, so they vmap."""

import jax
import jax.numpy as jnp
import numpy as np

from experiments.common import repeat_runs, seed_keys
from rl.losses import clip_objective, register_objective
from rl.ppo import PPOConfig, default_hparams, make_train


def gated_clip(ratio, advantage, progress, params):
    """The clip objective scaled by ``params["gate"]``: gate 0 switches policy learning off."""
    return params["gate"] * clip_objective(ratio, advantage, progress, params["clip_eps"])


register_objective("gated_clip_test", gated_clip)


def test_population_of_objectives_and_environments_in_one_vmap():
    config = PPOConfig(env="CartPole-v1", objective="gated_clip_test", num_envs=8, num_steps=32,
                       total_timesteps=8 * 32 * 40, lr=3e-3, hidden_sizes=(32, 32))
    base = default_hparams(config, objective_params={"gate": 1.0, "clip_eps": 0.2})
    hparams = repeat_runs(base, 4)
    # runs 0, 1: objective switched off / on, 200-step episodes; runs 2, 3: the same with 20-step episodes
    hparams = hparams.replace(
        objective_params={"gate": np.array([0.0, 1.0, 0.0, 1.0], np.float32), "clip_eps": np.full(4, 0.2, np.float32)},
        env_params=hparams.env_params.replace(max_steps_in_episode=np.array([200, 200, 20, 20], np.int32)),
    )
    _, metrics = jax.jit(jax.vmap(make_train(config)))(jnp.asarray(seed_keys(0, 4)), hparams)
    final = np.asarray(metrics["episode_return"][:, -5:].mean(axis=1))
    entropy = np.asarray(metrics["entropy"][:, -5:].mean(axis=1))
    assert final[1] > 2 * final[0] and final[1] > 100  # learning happens only through the objective
    assert entropy[0] > 0.69 - 0.02  # no policy gradient: the policy stays uniform over 2 actions
    assert final[2] <= 20 and final[3] <= 20 and final[3] > 15  # the env params bound episode length
