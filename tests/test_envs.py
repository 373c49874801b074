"""The env registry and the wrappers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rl import envs

# MNISTBandit-bsuite downloads MNIST when built; this machine has no network.
OFFLINE_IDS = [i for i in envs.registered_ids() if i != "MNISTBandit-bsuite"]


def test_unknown_id_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown environment id 'NoSuchEnv-v0'.*CartPole-v1"):
        envs.make("NoSuchEnv-v0")


def test_every_id_resets_and_steps_through_the_learner_stack():
    def check(env_id):
        env, params = envs.make_vec_env(env_id, 2)
        obs, state = env.reset(jax.random.PRNGKey(0), params)
        actions = jax.vmap(env.action_space(params).sample)(jax.random.split(jax.random.PRNGKey(1), 2))
        next_obs, _, reward, terminated, truncated, info = env.step(jax.random.PRNGKey(2), state, actions, params)
        assert obs.ndim == 2 and next_obs.shape == obs.shape == info["final_observation"].shape
        assert reward.shape == terminated.shape == truncated.shape == (2,)

    for env_id in OFFLINE_IDS:
        check(env_id)


def test_episode_statistics_and_final_observation_on_truncation():
    env, params = envs.make_vec_env("CartPole-v1", 1)
    params = params.replace(max_steps_in_episode=5)
    obs, state = env.reset(jax.random.PRNGKey(0), params)
    step = jax.jit(env.step)
    for t in range(5):
        next_obs, state, reward, terminated, truncated, info = step(jax.random.PRNGKey(t), state, jnp.array([t % 2]), params)
        if t < 4:
            assert not info["returned_episode"][0]
            np.testing.assert_array_equal(info["final_observation"], next_obs)
    assert truncated[0] and not terminated[0] and info["returned_episode"][0]
    assert info["episode_return"][0] == 5.0 and info["episode_length"][0] == 5
    assert not np.allclose(info["final_observation"], next_obs)  # next_obs is already the reset one


def test_vec_normalizer_shares_statistics_and_normalizes_final_observation():
    env, params = envs.make_vec_env("Pendulum-v1", 8, normalize_obs=True)
    obs, state = env.reset(jax.random.PRNGKey(0), params)

    def body(carry, key):
        state, scale = carry
        obs, state, reward, terminated, truncated, info = env.step(key, state, jnp.zeros((8, 1)), params)
        scale, scaled = envs.scale_reward(scale, reward, terminated | truncated, 0.99)
        return (state, scale), (obs, scaled, info["final_observation"])

    carry = (state, envs.RewardScale.create(8))
    (state, scale), (obs, reward, final_obs) = jax.lax.scan(body, carry, jax.random.split(jax.random.PRNGKey(1), 300))
    assert abs(float(obs.mean())) < 0.5 and 0.3 < float(obs.std()) < 2.0
    # Before the first time limit (200 steps) the final observation is the next observation,
    # normalised with the same statistics.
    np.testing.assert_allclose(final_obs[:199], obs[:199], rtol=1e-6)
    assert not np.allclose(final_obs[199], obs[199])
    assert float(jnp.abs(reward).max()) < 20  # raw Pendulum rewards reach -16 per step; scaled ones stay small
    assert scale.return_stats.count > 2000


def test_reward_scale_discounts_with_the_gamma_it_is_given():
    """Three steps of reward 1: the running discounted return is 1 + g + g^2 for the g passed."""
    for gamma in (0.5, 0.99):
        scale = envs.RewardScale.create(2)
        for _ in range(3):
            scale, _ = envs.scale_reward(scale, jnp.ones(2), jnp.zeros(2, bool), gamma)
        np.testing.assert_allclose(scale.discounted_return, 1 + gamma + gamma**2, rtol=1e-6)


def test_action_mask_reaches_through_wrappers():
    env, params = envs.make_vec_env("MaskedBandit-probe", 64, normalize_obs=True)
    assert envs.has_action_mask(env)
    obs, state = env.reset(jax.random.PRNGKey(0), params)
    mask = env.action_mask(state, params)
    assert mask.shape == (64, 3) and mask[:, 1:].all() and 0 < mask[:, 0].sum() < 64
    assert not envs.has_action_mask(envs.make_vec_env("CartPole-v1", 2)[0])


def test_register_rejects_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        envs.register("CartPole-v1", lambda: None)
