"""The TSP environment of the cultural-accumulation study follows its rules (rl/cultural/tsp.py)."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rl import envs
from rl.cultural.tsp import TSP
from rl.errors import ConfigError


def closeness(cities, a, b):
    return (math.sqrt(2) - np.linalg.norm(cities[a] - cities[b])) / math.sqrt(2)


@functools.partial(jax.jit, static_argnums=(0, 3))
def play_many(env, params, keys, steps):
    """``steps`` steps from a reset for every key, the agent touring 1, 2, ... in order (a full tour
    every trial); returns (obs, state, reward, terminated, info), each [episode, step, ...]."""

    def episode(key):
        def one(carry, key):
            obs, state = carry
            next_obs, next_state, reward, terminated, _, info = env.step(key, state, state.position + 1, params)
            return (next_obs, next_state), (obs, state, reward, terminated, info)

        return jax.lax.scan(one, env.reset(key, params), jax.random.split(jax.random.fold_in(key, 1), steps))[1]

    return jax.vmap(episode)(keys)


@pytest.fixture(scope="module")
def six_cities():
    """The spec's in-context env and ``run(**params)``: 300 episodes of two full tours (10 steps),
    compiled once (params change values, not shapes)."""
    env, params = envs.make("tsp/in_context")
    keys = jax.random.split(jax.random.PRNGKey(0), 300)

    @functools.cache
    def run(**changes):
        return jax.tree_util.tree_map(np.asarray, play_many(env, params.replace(**changes), keys, 10))

    return env, run


@pytest.fixture(scope="module")
def four_cities():
    """A small env (4 cities, 3 trials, 2 demonstrators) with its jitted reset and step."""
    env = TSP("in_context", num_cities=4, num_trials=3, num_demonstrators=2)
    return env, jax.jit(env.reset), jax.jit(env.step)


def oracle_probabilities(states):
    """The oracles' Boltzmann choice over -distance - sqrt(2) * visited: [episode, step, oracle, city]."""
    here = np.take_along_axis(states.cities[:, :, None], states.demo_current[..., None, None], axis=3)
    distance = np.linalg.norm(states.cities[:, :, None] - here, axis=-1)
    logits = (-distance - math.sqrt(2) * states.demo_visited) / states.temperature[..., None]
    logits -= logits.max(axis=-1, keepdims=True)
    return np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True), distance


def test_observation_sizes_and_layout(six_cities):
    env, run = six_cities
    key, params = jax.random.PRNGKey(0), env.default_params
    assert env.observation_space(params).shape == (27,) and env.num_actions == 6 and env.num_trials == 8
    assert jax.eval_shape(env.reset, key, params)[0].shape == (27,)
    in_weights, params_w = envs.make("tsp/in_weights")
    assert in_weights.observation_space(params_w).shape == (31,) and in_weights.num_actions == 6
    assert in_weights.num_trials == 1 and in_weights.num_demonstrators == 5
    assert jax.eval_shape(in_weights.reset, key, params_w)[0].shape == (31,)

    obs, states, rewards, _, _ = run(fixed_temperature=10.0)
    assert not obs[:, 0, :8].any()  # no last action, no trial flag, no reward yet
    np.testing.assert_array_equal(obs[:, 1:, :6], np.eye(6)[states.last_action[:, 1:]])  # own last action
    np.testing.assert_array_equal(obs[:, 1:, 6], states.trial_ended[:, 1:])
    # the reward of the previous step (XLA may fuse the two computations of it apart: equal to float rounding)
    np.testing.assert_allclose(obs[:, 1:, 7], rewards[:, :-1], rtol=1e-6, atol=1e-6)
    shown = (states.demo_shown & states.visible[..., None])[..., None]
    np.testing.assert_array_equal(obs[..., 8:26].reshape(300, 10, 3, 6), np.eye(6)[states.demo_actions] * shown)
    np.testing.assert_array_equal(obs[..., 26], states.visible)
    assert states.visible[:, :5].all() and 0.05 < 1 - states.visible[:, 5:].mean() < 0.25  # trial 1 of 8: p = 6/7


def test_rewards_trials_scores_and_episode_end(four_cities):
    env, reset, step = four_cities
    params = env.default_params
    # trial 0: the full tour 2, 1, 3; trial 1: back to the depot at once; trial 2: 1 then 1 again
    plan = [2, 1, 3, 0, 1, 1]
    obs, state = reset(jax.random.PRNGKey(3), params)
    cities = np.asarray(state.cities)
    expected = [closeness(cities, 0, 2), closeness(cities, 2, 1), closeness(cities, 1, 3) + closeness(cities, 3, 0),
                -1.0, closeness(cities, 0, 1), -1.0]
    rewards, ended, scores, dones, weights = [], [], [], [], []
    for i, action in enumerate(plan):
        np.testing.assert_array_equal(state.cities, cities)  # the same cities in every trial
        obs, state, reward, terminated, _, info = step(jax.random.PRNGKey(i), state, action, params)
        rewards.append(float(reward))
        dones.append(bool(terminated))
        weights.append(float(info["metrics"]["trial_score"][1]))
        if info["trial_ended"]:
            ended.append(int(info["trial"]))
            scores.append(float(info["trial_score"]))
            assert int(state.position) == 0 and (terminated or obs[4] == 1.0)  # a new trial, at the depot
    np.testing.assert_allclose(rewards, expected, rtol=1e-5)
    assert ended == [0, 1, 2]
    np.testing.assert_allclose(scores, [sum(expected[:3]), -1.0, expected[4] - 1.0], rtol=1e-5)
    assert weights == [0.0, 0.0, 1.0, 1.0, 0.0, 1.0]  # the trial-score metric counts exactly the ended trials
    assert dones == [False] * 5 + [True]


def test_cities_fixed_in_an_episode_redrawn_at_resets_and_fixed_by_seed(six_cities):
    _, run = six_cities
    cities = run()[1].cities  # [episode, step, city, 2]
    assert cities.min() >= 0 and cities.max() <= 1
    np.testing.assert_array_equal(cities, np.broadcast_to(cities[:, :1], cities.shape))  # fixed across trials
    assert len({c.tobytes() for c in cities[:, 0]}) == 300  # every reset its own cities
    fixed = run(task_seed=11)[1].cities
    np.testing.assert_array_equal(fixed, np.broadcast_to(fixed[0, 0], fixed.shape))
    assert not np.array_equal(run(task_seed=12)[1].cities[0, 0], fixed[0, 0])


def test_cold_oracles_go_to_the_nearest_unvisited_city(six_cities):
    _, run = six_cities
    _, states, _, terminated, info = run(fixed_temperature=1e-3)
    assert np.allclose(states.temperature, 1e-3)
    _, distance = oracle_probabilities(states)
    nearest = np.argmin(np.where(states.demo_visited, np.inf, distance), axis=-1)
    assert (states.demo_actions == nearest).mean() > 0.99
    chosen = np.take_along_axis(distance, states.demo_actions[..., None], axis=-1)[..., 0]
    assert (chosen - np.take_along_axis(distance, nearest[..., None], axis=-1)[..., 0]).max() < 0.02
    assert states.demo_shown.all()  # no revisits: every oracle tours in lock step with the agent
    assert info["trial_ended"][:, [4, 9]].all() and info["trial_ended"].sum() == 600 and not terminated.any()


@pytest.mark.parametrize("temperature", [10.0, -1.0])
def test_oracles_choose_by_boltzmann(six_cities, temperature):
    _, run = six_cities
    states = run(fixed_temperature=temperature)[1]
    if temperature > 0:
        assert np.all(states.temperature == temperature)
    else:  # U(0, 1) * 0.5 per episode and oracle
        drawn = states.temperature[:, 0]  # [episode, oracle]
        assert drawn.max() <= 0.5 and abs(drawn.mean() - 0.25) < 0.02 and (drawn[:, 0] != drawn[:, 1]).all()
        np.testing.assert_array_equal(states.temperature, np.broadcast_to(drawn[:, None], states.temperature.shape))
    probabilities, _ = oracle_probabilities(states)
    playing = states.demo_shown
    chosen = np.eye(6)[states.demo_actions][playing]
    assert np.abs(chosen.mean(axis=0) - probabilities[playing].mean(axis=0)).max() < 0.02
    if temperature > 0:  # near random: from the depot every city about 1/6 of the time
        first = np.eye(6)[states.demo_actions[:, 0]].reshape(-1, 6)
        assert np.abs(first.mean(axis=0) - 1 / 6).max() < 0.05, first.mean(axis=0)
        assert np.abs(probabilities[:, 0] - 1 / 6).max() < 0.05


def test_sorted_oracles_stand_coolest_first():
    """sort_oracles reorders the same draw, lowest temperature first (as the generations order
    their demonstrators, best first)."""
    env, params = envs.make("tsp/in_context")
    reset = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))
    keys = jax.random.split(jax.random.PRNGKey(3), 64)
    drawn = np.asarray(reset(keys, params)[1].temperature)
    ordered = np.asarray(reset(keys, params.replace(sort_oracles=True))[1].temperature)
    np.testing.assert_array_equal(ordered, np.sort(drawn, axis=1))
    assert (np.diff(drawn, axis=1) < 0).any()  # the plain draw is in no order


def test_oracles_hidden_after_a_revisit_for_the_rest_of_the_trial(six_cities):
    _, run = six_cities
    states = run(fixed_temperature=10.0)[1]
    shown = states.demo_shown
    revisit = np.take_along_axis(states.demo_visited, states.demo_actions[..., None], axis=-1)[..., 0] & shown
    assert 0.1 < revisit[:, 0].mean() < 0.2  # back to the depot at once about 1/6 of the time
    for step in range(9):
        same_trial = (states.position[:, step + 1] > 0)[:, None]
        assert not (revisit[:, step] & same_trial & shown[:, step + 1]).any()
        assert not (~shown[:, step] & same_trial & shown[:, step + 1]).any()  # hidden for the rest of the trial
    assert shown[:, [0, 5]].all() and not shown.all()  # every trial starts with every oracle shown


def test_replayed_demonstrators_show_their_trials(four_cities):
    env, reset, step = four_cities
    params = env.default_params.replace(
        use_replay=True, visibility=1.0,
        replay_actions=jnp.array([[1, 2, 3, 0], [3, 3, 3, 3]], jnp.int32), replay_lengths=jnp.array([3, 1], jnp.int32),
    )
    obs, state = reset(jax.random.PRNGKey(0), params)
    seen = []
    for i, action in enumerate([1, 2, 3, 1]):  # a full tour, then the first step of the next trial
        seen.append(np.asarray(obs[6:14]).reshape(2, 4))
        obs, state, *_ = step(jax.random.PRNGKey(i), state, action, params)
    seen.append(np.asarray(obs[6:14]).reshape(2, 4))
    eye, nothing = np.eye(4), np.zeros(4)
    np.testing.assert_array_equal(np.stack(seen)[:, 0], eye[[1, 2, 3, 1, 2]])  # replayed by position in the trial
    np.testing.assert_array_equal(np.stack(seen)[:, 1], [eye[3], nothing, nothing, eye[3], nothing])


def test_bad_sizes_and_ids():
    with pytest.raises(ConfigError, match="num_cities"):
        TSP(num_cities=1)
    with pytest.raises(ConfigError, match="mode"):
        TSP("in_between")
    env, params = envs.make("tsp/in_context:num_cities=5")
    assert env.num_cities == env.num_actions == 5 and env.observation_space(params).shape == (23,)
    assert jax.eval_shape(env.reset, jax.random.PRNGKey(0), params)[0].shape == (23,)
    with pytest.raises(ConfigError, match="env"):
        envs.check_env_id("tsp/bogus")
