"""Regression tests of the PPO learner: one clip epsilon, the run's own gamma for reward scaling,
episode returns from finished episodes only, rejected one-sample minibatches, evaluation of a
frozen policy, and the conv torso."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct
from gymnax.environments import environment, spaces

from experiments.common import repeat_runs, seed_keys
from rl import envs
from rl.errors import ConfigError
from rl.ppo import PPOConfig, default_hparams, evaluate, make_learner, make_train

TINY = dict(num_envs=4, num_steps=8, num_minibatches=2, update_epochs=1, hidden_sizes=(16,))


def run_vmapped(config, hparams, num_runs):
    train = jax.jit(jax.vmap(make_train(config)))
    return train(jnp.asarray(seed_keys(0, num_runs)), hparams)


def test_clip_eps_is_one_leaf_for_the_whole_of_ppo():
    """Only the policy objective depends on clip_eps here (no value clip, no value loss): two runs
    that differ in hparams.clip_eps alone must end with different policies."""
    config = PPOConfig(**TINY, total_timesteps=32 * 6, clip_value_loss=False, vf_coef=0.0, lr=0.05)
    hparams = repeat_runs(default_hparams(config), 2).replace(clip_eps=np.array([1e-4, 10.0], np.float32))
    state, metrics = run_vmapped(config, hparams, 2)
    kernel = state.params["params"]["torsos"]["kernel_0"][:, 0]  # the actor's first kernel per run
    assert not np.allclose(kernel[0], kernel[1])
    assert metrics["clip_fraction"][1].max() == 0.0 < metrics["clip_fraction"][0].max()
    with pytest.raises(ConfigError, match="objective_params: the clip objective reads clip_eps"):
        default_hparams(config, objective_params=0.3)


def test_reward_scaling_uses_each_runs_gamma():
    """CartPole pays 1 per step and lasts more than 4 steps: after a 4-step rollout the scaler's
    discounted return is 1 + g + g^2 + g^3 with each run's own gamma."""
    config = PPOConfig(num_envs=2, num_steps=4, num_minibatches=1, update_epochs=1, total_timesteps=8,
                       normalize_reward=True, hidden_sizes=(8,))
    hparams = repeat_runs(default_hparams(config), 2).replace(gamma=np.array([0.5, 0.99], np.float32))
    state, _ = run_vmapped(config, hparams, 2)
    for run, gamma in enumerate((0.5, 0.99)):
        np.testing.assert_allclose(state.reward_scale.discounted_return[run], sum(gamma**i for i in range(4)), rtol=1e-5)


@struct.dataclass
class CountdownState(environment.EnvState):
    left: jax.Array
    time: int


class LongNegativeEpisodes(environment.Environment):
    """Reward -1 per step; episodes last 30 to 60 steps (drawn at reset), so every finished
    episode returns at most -30."""

    @property
    def default_params(self) -> environment.EnvParams:
        return environment.EnvParams(max_steps_in_episode=1000)

    def reset_env(self, key, params):
        state = CountdownState(left=jax.random.randint(key, (), 30, 61), time=jnp.zeros((), jnp.int32))
        return jnp.zeros((1,)), state

    def step_env(self, key, state, action, params):
        state = state.replace(left=state.left - 1, time=state.time + 1)
        return jnp.zeros((1,)), state, jnp.float32(-1.0), state.left <= 0, {}

    def action_space(self, params=None):
        return spaces.Discrete(2)

    def observation_space(self, params=None):
        return spaces.Box(0.0, 1.0, (1,), jnp.float32)


envs.register("LongNegativeEpisodes-test", LongNegativeEpisodes)


def test_episode_return_reports_finished_episodes_only():
    config = PPOConfig(env="LongNegativeEpisodes-test", **{**TINY, "num_steps": 4}, total_timesteps=16 * 40)
    _, metrics = jax.jit(make_train(config))(jax.random.PRNGKey(0), default_hparams(config))
    returns = np.asarray(metrics["episode_return"])
    assert np.isnan(returns[:7]).all()  # 28 steps: no episode can have ended yet: missing, not 0
    assert np.isfinite(returns[15:]).all()  # 60 steps: every env has finished one
    assert (returns[np.isfinite(returns)] <= -30).all()  # never pulled toward 0 by unfinished envs
    assert (np.asarray(metrics["episodes"])[:7] == 0).all()


def test_one_sample_minibatches_are_rejected():
    with pytest.raises(ConfigError, match="num_minibatches: a minibatch would hold 1 sample"):
        PPOConfig(num_envs=2, num_steps=2, num_minibatches=4).validate()
    PPOConfig(num_envs=2, num_steps=2, num_minibatches=4, normalize_advantages=False).validate()


def test_evaluate_plays_frozen_policies_greedy_and_sampled_and_vmaps():
    config = PPOConfig(env="OneStepBandit-probe", num_envs=16, num_steps=8, num_minibatches=4, lr=3e-3,
                       hidden_sizes=(32, 32), total_timesteps=16 * 8 * 60)
    hparams = default_hparams(config)
    state, _ = jax.jit(make_train(config))(jax.random.PRNGKey(0), hparams)
    play = jax.jit(evaluate, static_argnums=(1, 4, 5))
    greedy = play(state.params, config, hparams, jax.random.PRNGKey(1), 64, True)
    assert greedy["return"].shape == (64,) and bool(greedy["finished"].all())
    assert float(greedy["return"].mean()) == 1.0 and (np.asarray(greedy["length"]) == 1).all()
    # vmapped over runs: the trained policy and a fresh (untrained) one, sampled
    fresh = make_learner(config).init(jax.random.PRNGKey(2), hparams).params
    params = jax.tree.map(lambda a, b: jnp.stack([a, b]), state.params, fresh)
    both = jax.vmap(lambda p, k: evaluate(p, config, hparams, k, 256, greedy=False))(
        params, jax.random.split(jax.random.PRNGKey(3), 2))
    trained, untrained = np.asarray(both["return"]).mean(axis=1)
    assert trained > 0.9 and 0.35 < untrained < 0.65


def test_evaluate_caps_long_episodes_and_counts_masks():
    config = PPOConfig(env="CartPole-v1", **TINY, total_timesteps=64)
    hparams = default_hparams(config)
    params = make_learner(config).init(jax.random.PRNGKey(0), hparams).params
    result = jax.jit(lambda p: evaluate(p, config, hparams, jax.random.PRNGKey(1), 8, max_steps=5))(params)
    assert (np.asarray(result["length"]) <= 5).all() and int(result["no_legal_action"]) == 0
    masked = PPOConfig(env="MaskedBandit-probe", **TINY, total_timesteps=64)
    mask_params = make_learner(masked).init(jax.random.PRNGKey(0), default_hparams(masked)).params
    played = evaluate(mask_params, masked, default_hparams(masked), jax.random.PRNGKey(1), 64, greedy=False)
    assert float(played["return"].min()) >= 0.0  # illegal picks would pay -1


def test_conv_torso_trains_on_minatar_images():
    config = PPOConfig(env="Breakout-MinAtar", torso="conv", conv_channels=(4,), **TINY, total_timesteps=64)
    learner = make_learner(config)
    hparams = default_hparams(config)
    state = learner.init(jax.random.PRNGKey(0), hparams)
    assert state.obs.shape == (4, 10, 10, 4)  # images reach the network unflattened
    assert state.params["params"]["conv"]["Dense_0"]["kernel"].shape == (9 * 4, 4)
    state, metrics = jax.jit(learner.update)(state, hparams)
    assert np.isfinite(float(metrics["total_loss"]))
    with pytest.raises(ConfigError, match="torso: conv needs image observations"):
        PPOConfig(env="CartPole-v1", torso="conv").validate()
    with pytest.raises(ConfigError, match="torso: unknown torso 'resnet'"):
        PPOConfig(torso="resnet").validate()
