"""PPO must solve the probe environments: each isolates one part of the learner."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.actor_critic import ActorCritic
from rl.ppo import PPOConfig, default_hparams, make_train

SMALL = dict(num_envs=16, num_steps=8, update_epochs=4, num_minibatches=4, hidden_sizes=(32, 32), lr=3e-3)


def train(num_updates: int, **overrides):
    config = PPOConfig(**{**SMALL, "total_timesteps": num_updates * 16 * overrides.get("num_steps", 8), **overrides})
    state, metrics = jax.jit(make_train(config))(jax.random.PRNGKey(0), default_hparams(config))
    return config, state, jax.tree.map(np.asarray, metrics)


def final(metrics, name="episode_return", window=10):
    return float(metrics[name][-window:].mean())


def test_constant_reward_value_learns_one():
    config, state, metrics = train(60, env="ConstantReward-probe", ent_coef=0.0)
    value = ActorCritic(2, hidden_sizes=config.hidden_sizes).apply(state.params, jnp.zeros((1,)), method="value")
    assert abs(float(value) - 1.0) < 0.05
    assert final(metrics, "value_loss") < 1e-3


def test_one_step_bandit_reads_observation():
    _, _, metrics = train(60, env="OneStepBandit-probe")
    assert final(metrics) > 0.95


def test_two_step_credit_assignment():
    _, _, metrics = train(100, env="TwoStepCredit-probe")
    assert final(metrics) > 0.9


def test_masked_bandit_never_takes_illegal_actions():
    # Optimal legal return is 0.75; any illegal pick would cost -1.
    _, _, metrics = train(80, env="MaskedBandit-probe")
    assert final(metrics) > 0.7
    assert metrics["episode_return"].min() >= 0.0, "an illegal action was taken"


def test_continuous_actions_track_a_target():
    _, _, metrics = train(150, env="ContinuousTarget-probe", ent_coef=0.0)
    assert final(metrics) > -0.1  # random actions (std 1) score about -1.3


@pytest.mark.parametrize("recurrent, low, high", [(False, 0.3, 0.7), (True, 0.95, 1.01)])
def test_memory_needs_the_recurrent_policy(recurrent, low, high):
    _, _, metrics = train(150, env="MemoryCue-probe", recurrent=recurrent, gru_size=32, num_steps=16)
    # episodes last 4 steps and pay at most 1: a memoryless policy can only guess the cue
    assert low < final(metrics) < high
