"""The cultural-accumulation environments follow the spec's rules (../shared/specs/cultural-accumulation.md)."""

import jax
import numpy as np
import pytest

from rl import envs
from rl.cultural.memory_sequence import MemorySequence
from rl.errors import ConfigError


def play(env, params, key, policy, steps):
    """Run ``steps`` steps of ``policy(state) -> action`` from a reset; returns time-major records."""
    obs, state = env.reset(key, params)

    def one(carry, key):
        obs, state = carry
        action = policy(state)
        next_obs, next_state, reward, terminated, truncated, info = env.step(key, state, action, params)
        return (next_obs, next_state), (obs, state, action, reward, terminated, info)

    _, records = jax.lax.scan(one, (obs, state), jax.random.split(jax.random.fold_in(key, 1), steps))
    return records


def correct(state):
    return state.sequence[state.position]


def test_observation_sizes_and_layout():
    env, params = envs.make("memory_sequence/in_context")
    assert env.observation_space(params).shape == (15,) and env.num_actions == 3
    in_weights, params_w = envs.make("memory_sequence/in_weights")
    assert in_weights.observation_space(params_w).shape == (51,) and in_weights.num_actions == 10
    assert in_weights.reset(jax.random.PRNGKey(0), params_w)[0].shape == (51,)

    obs, state = env.reset(jax.random.PRNGKey(0), params)
    assert not obs[:5].any()  # no last action, no trial flag, no reward yet
    wrong = (correct(state) + 1) % 3
    obs, state, reward, *_ = env.step(jax.random.PRNGKey(1), state, wrong, params)
    np.testing.assert_array_equal(obs[:3], np.eye(3)[int(wrong)])
    assert obs[3] == 1.0 and obs[4] == -1.0 == reward  # the wrong digit ended the trial
    demos = np.asarray(obs[5:14]).reshape(3, 3)
    if state.visible:
        np.testing.assert_array_equal(demos, np.eye(3)[np.asarray(state.demo_actions)])
    else:
        assert not demos.any()
    assert obs[14] == float(state.visible)


def test_rewards_trials_and_episode_end():
    env = MemorySequence("in_context", seq_len=5, num_trials=3)
    params = env.default_params
    # trial 0: all correct (5 steps); trial 1: wrong at once; trial 2: 2 correct then wrong
    plan = [True] * 5 + [False] + [True, True, False]
    obs, state = env.reset(jax.random.PRNGKey(3), params)
    sequence = np.asarray(state.sequence)
    rewards, ended, scores, dones = [], [], [], []
    for step, right in enumerate(plan):
        np.testing.assert_array_equal(state.sequence, sequence)  # the same sequence in every trial
        action = correct(state) if right else (correct(state) + 1) % 3
        obs, state, reward, terminated, _, info = env.step(jax.random.PRNGKey(step), state, action, params)
        rewards.append(float(reward))
        dones.append(bool(terminated))
        if info["trial_ended"]:
            ended.append(int(info["trial"]))
            scores.append(float(info["trial_score"]))
    assert rewards == [1.0] * 5 + [-1.0] + [1.0, 1.0, -1.0]
    assert ended == [0, 1, 2] and scores == [5.0, 0.0, 2.0]
    assert dones == [False] * 8 + [True]


@pytest.fixture(scope="module")
def many_episodes():
    """400 in-context episodes where the agent always names the correct digit (4 trials x 24 steps)."""
    env, params = envs.make("memory_sequence/in_context")
    keys = jax.random.split(jax.random.PRNGKey(7), 400)
    return env, jax.jit(jax.vmap(lambda k: play(env, params, k, correct, 96)))(keys)


def test_sequence_redrawn_across_episodes_and_fixed_by_seed(many_episodes):
    env, (_, states, *_) = many_episodes
    first = np.asarray(states.sequence[:, 0])
    assert len({tuple(s) for s in first}) == len(first)  # every episode its own sequence
    np.testing.assert_array_equal(states.sequence[:, -1], states.sequence[:, 0])  # fixed within an episode
    params = env.default_params.replace(task_seed=11)
    a = env.reset(jax.random.PRNGKey(0), params)[1].sequence
    b = env.reset(jax.random.PRNGKey(1), params)[1].sequence
    np.testing.assert_array_equal(a, b)


def test_annealed_visibility_falls_linearly_to_zero_at_visible_until():
    env, params = envs.make("memory_sequence/in_weights")
    trial = np.zeros((), np.int32)
    for until, points in [(1.0, {0.0: 1.0, 0.25: 0.75, 0.5: 0.5, 1.0: 0.0}),
                          (0.5, {0.0: 1.0, 0.25: 0.5, 0.5: 0.0, 0.75: 0.0, 1.0: 0.0})]:
        annealed = params.replace(anneal_visibility=True, visible_until=until)
        for progress, expected in points.items():
            probability = env.visibility_probability(trial, env.at_progress(annealed, progress))
            assert float(probability) == pytest.approx(expected), (until, progress)
    # the drawn flags follow it: at progress 0.25 of visible_until 0.5, half the steps are seen
    half = env.at_progress(params.replace(anneal_visibility=True, visible_until=0.5), 0.25)
    seen = jax.vmap(lambda key: env.draw_visible(key, trial, half))(jax.random.split(jax.random.PRNGKey(0), 4000))
    assert abs(float(seen.mean()) - 0.5) < 0.03


def test_visibility_schedule_and_oracle_accuracy(many_episodes):
    _, (obs, states, _, _, terminated, info) = many_episodes
    assert np.all(np.asarray(terminated)[:, -1]) and not np.asarray(terminated)[:, :-1].any()
    trial = np.asarray(states.trial)
    visible = np.asarray(states.visible)
    for k, expected in enumerate([1.0, 2 / 3, 1 / 3, 0.0]):
        assert abs(visible[trial == k].mean() - expected) < 0.02, (k, visible[trial == k].mean())
    # an oracle names the correct digit with p = 1 - 1/(1 + U L), else a uniform digit (right 1/3 of the time)
    accuracy = np.asarray(states.accuracy)[:, 0]  # [episodes, 3]
    hits = np.asarray(states.demo_actions) == np.asarray(jax.vmap(jax.vmap(correct))(states))[..., None]
    expected = accuracy + (1 - accuracy) / 3
    assert abs(hits.mean() - expected.mean()) < 0.01
    assert abs(hits.mean(axis=1) - expected).mean() < 0.06  # per oracle, over its 96 steps
    skill = 1 / (1 - accuracy) - 1  # = U L, uniform on [0, 0.5]
    assert skill.min() >= 0 and skill.max() <= 0.5 and abs(skill.mean() - 0.25) < 0.02
    # perfect play: every trial scores the whole sequence
    scores = np.asarray(info["trial_score"])[np.asarray(info["trial_ended"])]
    assert scores.shape == (1600,) and np.all(scores == 24)


def test_sorted_oracles_stand_most_accurate_first():
    env, params = envs.make("memory_sequence/in_context")
    reset = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))
    keys = jax.random.split(jax.random.PRNGKey(3), 64)
    drawn = np.asarray(reset(keys, params)[1].accuracy)
    ordered = np.asarray(reset(keys, params.replace(sort_oracles=True))[1].accuracy)
    np.testing.assert_array_equal(ordered, -np.sort(-drawn, axis=1))
    assert (np.diff(drawn, axis=1) > 0).any()  # the plain draw is in no order


def test_bad_settings_fail_naming_the_field():
    with pytest.raises(ConfigError, match="mode"):
        MemorySequence("in_between")
    with pytest.raises(ConfigError, match="num_digits"):
        MemorySequence(num_digits=1)
    with pytest.raises(ConfigError, match="seq_len"):
        envs.make("memory_sequence/in_context", seq_len=0)


def test_replayed_demonstrators_and_ids_with_sizes():
    env, params = envs.make("memory_sequence/in_context:seq_len=5,num_digits=4")
    assert env.seq_len == 5 and env.num_actions == 4 and env.obs_size == 4 + 2 + 3 * 4 + 1
    replay = np.array([[0, 1, 2, 3, 0], [3, 3, 3, 3, 3], [1, 1, 1, 1, 1]], np.int32)
    params = params.replace(use_replay=True, replay_actions=replay, replay_lengths=np.array([5, 2, 0], np.int32),
                            visibility=1.0)
    obs, state = env.reset(jax.random.PRNGKey(0), params)
    for step in range(5):
        demos = np.asarray(obs[6:18]).reshape(3, 4)
        np.testing.assert_array_equal(demos[0], np.eye(4)[replay[0, step]])  # plays its whole trial
        np.testing.assert_array_equal(demos[1], np.eye(4)[3] if step < 2 else np.zeros(4))  # hidden after 2 steps
        assert not demos[2].any()  # an empty replay is never shown
        obs, state, *_ = env.step(jax.random.PRNGKey(step), state, correct(state), params)
    with pytest.raises(ConfigError, match="env"):
        envs.check_env_id("memory_sequence/in_context:sequence=3")
    with pytest.raises(ConfigError, match="mode"):
        envs.check_env_id("memory_sequence/sideways")


def test_env_metrics_reach_the_learner():
    """Per-trial scores reported by the env are averaged into the learner's per-update metrics."""
    from rl.ppo import PPOConfig, default_hparams, make_learner

    config = PPOConfig(env="memory_sequence/in_context:seq_len=3,num_trials=2", num_envs=4, num_steps=16,
                       total_timesteps=64, num_minibatches=2, recurrent=True, gru_size=8, hidden_sizes=(8,))
    learner = make_learner(config)
    hp = default_hparams(config)
    _, metrics = jax.jit(learner.update)(learner.init(jax.random.PRNGKey(0), hp), hp)
    assert {"env/trial_score", "env/trial_0_score", "env/trial_1_score"} <= set(metrics)
    for name in ("env/trial_0_score", "env/trial_1_score"):
        assert 0.0 <= float(metrics[name]) <= 3.0
