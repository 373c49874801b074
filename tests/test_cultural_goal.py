"""Goal Sequence follows the spec's rules (../shared/specs/cultural-accumulation.md)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rl import envs
from rl.cultural.goal_sequence import GoalSequence
from rl.errors import ConfigError

LEFT, RIGHT, FORWARD = 0, 1, 2
NORTH, EAST, SOUTH, WEST = 0, 1, 2, 3
ENV = GoalSequence()  # one instance, so its jitted step compiles once for the hand-driven tests
STEP = jax.jit(ENV.step)
QUIET = ENV.default_params.replace(use_replay=True)  # the demonstrator replays nothing: still and hidden


def view(obs):
    return np.asarray(obs[:125]).reshape(5, 5, 5)  # [wall, goal 0, goal 1, goal 2, other agent] x rows x cols


def cells(*positions):
    grid = np.zeros((5, 5))
    for row, col in positions:
        grid[row, col] = 1
    return grid


def drive(state, actions, params=QUIET):
    """Step the learner through ``actions``; returns the rewards and the states after each step."""
    rewards, states = [], []
    for i, action in enumerate(actions):
        _, state, reward, *_ = STEP(jax.random.PRNGKey(i), state, action, params)
        rewards.append(float(reward))
        states.append(state)
    return rewards, states


def test_observation_size_and_layout():
    env, params = envs.make("goal_sequence/in_context")
    assert env.observation_space(params).shape == (136,) and env.num_actions == 3
    in_weights, params_w = envs.make("goal_sequence/in_weights")
    assert in_weights.num_trials == 1 and in_weights.observation_space(params_w).shape == (136,)
    obs, state = ENV.reset(jax.random.PRNGKey(0), QUIET)
    assert obs.shape == (136,)
    np.testing.assert_array_equal(obs[:125], ENV.view(state).reshape(-1))
    np.testing.assert_array_equal(obs[125:129], np.eye(4)[SOUTH])  # starts facing south, into the grid
    np.testing.assert_array_equal(obs[129:133], np.eye(4)[0])  # trial 0
    np.testing.assert_array_equal(obs[133:], [0, 1, 0])  # last reward 0
    assert tuple(state.pos) == (0, 3) and tuple(state.demo_pos[0]) == (0, 3)  # a replay retraces the learner's path
    assert tuple(ENV.reset(jax.random.PRNGKey(0), ENV.default_params)[1].demo_pos[0]) == (1, 3)  # an oracle


def test_egocentric_view_turns_with_the_learner():
    _, state = ENV.reset(jax.random.PRNGKey(0), QUIET)
    state = state.replace(pos=jnp.array([3, 5]), direction=jnp.int32(NORTH),
                          goals=jnp.array([[1, 5], [3, 4], [0, 3]]), demo_pos=jnp.array([[2, 6]]),
                          visible=jnp.bool_(True), demo_shown=jnp.array([True]))
    # the learner is at view cell (4, 2); row 0 is 4 cells ahead, col 4 is 2 cells to the right
    north = np.asarray(ENV.view(state))
    np.testing.assert_array_equal(north[0], np.maximum(cells(*[(0, c) for c in range(5)]), cells(*[(r, 4) for r in range(5)])))
    np.testing.assert_array_equal(north[1:], [cells((2, 2)), cells((4, 1)), cells((1, 0)), cells((3, 3))])
    east = np.asarray(ENV.view(state.replace(direction=jnp.int32(EAST))))
    np.testing.assert_array_equal(east[0], cells(*[(r, c) for r in range(3) for c in range(5)]))  # cols 7.. ahead
    np.testing.assert_array_equal(east[1:], [cells((4, 0)), cells(), cells(), cells((3, 1))])  # goals 1, 2 behind
    south = np.asarray(ENV.view(state.replace(direction=jnp.int32(SOUTH))))
    np.testing.assert_array_equal(south[0], np.maximum(cells(*[(0, c) for c in range(5)]), cells(*[(r, 0) for r in range(5)])))
    np.testing.assert_array_equal(south[1:], [cells(), cells((4, 3)), cells(), cells()])
    hidden = np.asarray(ENV.view(state.replace(visible=jnp.bool_(False))))
    assert not hidden[4].any()
    # turning right through a step gives the east view
    obs, turned, *_ = STEP(jax.random.PRNGKey(0), state, RIGHT, QUIET.replace(visibility=1.0))
    assert int(turned.direction) == EAST and tuple(turned.pos) == (3, 5)
    np.testing.assert_array_equal(view(obs)[:4], east[:4])
    np.testing.assert_array_equal(obs[125:129], np.eye(4)[EAST])


def test_forward_moves_and_turns():
    _, state = ENV.reset(jax.random.PRNGKey(0), QUIET)
    state = state.replace(goals=jnp.array([[6, 0], [6, 1], [6, 2]]))
    _, states = drive(state, [FORWARD, LEFT, FORWARD, RIGHT, RIGHT, FORWARD, RIGHT, FORWARD, FORWARD, LEFT])
    assert [tuple(int(x) for x in s.pos) for s in states] == [
        (1, 3), (1, 3), (1, 4), (1, 4), (1, 4), (1, 3), (1, 3), (0, 3), (0, 3), (0, 3)]
    assert [int(s.direction) for s in states] == [SOUTH, EAST, EAST, SOUTH, WEST, WEST, NORTH, NORTH, NORTH, WEST]
    # forward off the grid stays in place
    edge = state.replace(pos=jnp.array([0, 6]), direction=jnp.int32(NORTH))
    _, states = drive(edge, [FORWARD, RIGHT, FORWARD])
    assert [tuple(int(x) for x in s.pos) for s in states] == [(0, 6), (0, 6), (0, 6)]


def test_rewards_follow_the_sequence():
    _, state = ENV.reset(jax.random.PRNGKey(0), QUIET)
    sequence = jnp.zeros(100, jnp.int32).at[:3].set(jnp.array([1, 0, 1]))
    state = state.replace(goals=jnp.array([[2, 3], [4, 3], [6, 6]]), sequence=sequence)
    # from (0, 3) facing south: pass goal 0 (wrong), reach goal 1 (right), turn on it (nothing),
    # walk back onto goal 0 (right), then on to the top edge and bump it (nothing)
    actions = [FORWARD] * 4 + [LEFT, LEFT] + [FORWARD] * 5
    rewards, states = drive(state, actions)
    assert rewards == [0, -1, 0, 1, 0, 0, 0, 1, 0, 0, 0]
    assert [int(s.index) for s in states] == [0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    assert float(states[-1].trial_return) == 1.0
    # bumping the edge while standing on the next goal does not score; leaving and coming back does
    corner = states[-1].replace(pos=jnp.array([6, 6]), direction=jnp.int32(SOUTH), index=jnp.int32(3),
                                sequence=sequence.at[3].set(2))
    rewards, states = drive(corner, [FORWARD, RIGHT, FORWARD, LEFT, LEFT, FORWARD])
    assert rewards == [0, 0, 0, 0, 0, 1] and int(states[-1].index) == 4


@pytest.fixture(scope="module")
def oracle_episodes():
    """32 in-context episodes (4 trials x 50 steps) of a random learner beside a near-perfect oracle:
    time-major records of 200 steps each, and the state after the last (the auto-reset's)."""
    params = ENV.default_params.replace(oracle_skill=1e6)

    def play(key):
        obs, state = ENV.reset(key, params)

        def one(carry, key):
            obs, state = carry
            action = jax.random.randint(key, (), 0, 3)
            next_obs, next_state, reward, terminated, _, info = ENV.step(key, state, action, params)
            return (next_obs, next_state), (obs, state, reward, terminated, info)

        (_, final), records = jax.lax.scan(one, (obs, state), jax.random.split(jax.random.fold_in(key, 1), 200))
        return records, final

    return jax.jit(jax.vmap(play))(jax.random.split(jax.random.PRNGKey(5), 32))


def test_trials_and_episode_end(oracle_episodes):
    (obs, states, _, terminated, info), final = oracle_episodes
    step, trial = np.asarray(states.step), np.asarray(states.trial)
    np.testing.assert_array_equal(step, np.tile(np.arange(200) % 50, (32, 1)))  # trials of 50 steps
    np.testing.assert_array_equal(trial, np.tile(np.arange(200) // 50, (32, 1)))
    np.testing.assert_array_equal(np.asarray(obs[..., 129:133]), np.eye(4)[trial])  # trial one-hot
    np.testing.assert_array_equal(np.asarray(info["trial_ended"]), step == 49)
    assert np.asarray(terminated)[:, -1].all() and not np.asarray(terminated)[:, :-1].any()
    starts = step == 0  # everyone back at the start cells, facing south, at the start of the sequence
    assert (np.asarray(states.pos)[starts] == [0, 3]).all() and (np.asarray(states.demo_pos)[starts] == [1, 3]).all()
    assert (np.asarray(states.direction)[starts] == SOUTH).all() and not np.asarray(states.index)[starts].any()
    assert (np.asarray(states.pos)[~starts] != [0, 3]).any()
    for field in ("goals", "sequence"):  # fixed across the trials of an episode, redrawn at the auto-reset
        values = np.asarray(getattr(states, field))  # [32, 200, ...]
        assert (values == values[:, :1]).all()
        redrawn = (np.asarray(getattr(final, field)) != values[:, 0]).reshape(32, -1).any(axis=1)
        assert redrawn.all()
    assert not np.asarray(final.trial).any() and not np.asarray(final.step).any()


def test_layout_redrawn_across_resets_and_fixed_by_seed(oracle_episodes):
    (_, states, *_), _ = oracle_episodes
    goals, sequences = np.asarray(states.goals[:, 0]), np.asarray(states.sequence[:, 0])
    flat = goals[..., 0] * 7 + goals[..., 1]  # [32, 3]
    assert all(len(set(f)) == 3 for f in flat)  # distinct cells
    assert not np.isin(flat, [3, 10]).any()  # never on the start cells (0, 3), (1, 3)
    assert len({tuple(f) for f in flat}) >= 30 and len({tuple(s) for s in sequences}) == 32
    assert np.abs(np.bincount(sequences.reshape(-1), minlength=3) / sequences.size - 1 / 3).max() < 0.04
    params = ENV.default_params.replace(task_seed=3)
    a, b = (ENV.reset(jax.random.PRNGKey(k), params)[1] for k in (0, 1))
    np.testing.assert_array_equal(a.goals, b.goals)
    np.testing.assert_array_equal(a.sequence, b.sequence)
    c = ENV.reset(jax.random.PRNGKey(0), params.replace(task_seed=4))[1]
    assert not (np.array_equal(a.goals, c.goals) and np.array_equal(a.sequence, c.sequence))


def test_visibility_and_trial_scores(oracle_episodes):
    (obs, states, rewards, terminated, info), _ = oracle_episodes
    other = np.asarray(obs[..., 100:125]).reshape(32, 200, 5, 5)
    visible, trial = np.asarray(states.visible), np.asarray(states.trial)
    assert not other[~visible].any()
    assert (other.sum(axis=(2, 3)) <= 1).all()
    for k, expected in enumerate([1.0, 2 / 3, 1 / 3, 0.0]):
        assert abs(visible[trial == k].mean() - expected) < 0.05
    starts = np.asarray(states.step) == 0
    assert (other[starts & (trial == 0)][:, 3, 2] == 1).all()  # at a trial start it stands just ahead
    value, weight = (np.asarray(x) for x in info["metrics"]["trial_score"])
    np.testing.assert_array_equal(weight, np.asarray(info["trial_ended"]).astype(np.float32))
    assert weight.sum() == 32 * 4 and (np.asarray(states.step)[weight == 1] == 49).all()
    returns = np.asarray(rewards).reshape(32, 4, 50).sum(axis=-1)  # the score is the trial's return
    np.testing.assert_allclose(value[weight == 1].reshape(32, 4), returns)


def test_oracle_reaches_its_goals(oracle_episodes):
    (_, states, *_), _ = oracle_episodes
    index = np.asarray(states.demo_index)[..., 0]  # [32, 200]
    last = index[:, 49::50]  # the index before the last step of each trial
    assert last.min() >= 3 and last.mean() >= 5
    assert (index[:, 50::50] == 0).all()  # restarted at each trial start


def test_replayed_demonstrator():
    actions = jnp.zeros((1, 50), jnp.int32).at[0, :4].set(jnp.array([FORWARD, FORWARD, RIGHT, FORWARD]))
    params = QUIET.replace(replay_actions=actions, replay_lengths=jnp.array([4]), visibility=1.0)
    obs, state = ENV.reset(jax.random.PRNGKey(0), params)
    positions, shown = [], [bool(view(obs)[4].any())]
    for i in range(52):  # the learner turns on the spot (south, west, ...): the demonstrator stays in view
        obs, state, *_ = STEP(jax.random.PRNGKey(i), state, RIGHT if i % 2 == 0 else LEFT, params)
        positions.append(tuple(int(x) for x in state.demo_pos[0]))
        shown.append(bool(view(obs)[4].any()))
        if not state.demo_shown[0]:
            assert not view(obs)[4].any()
    # from the learner's start (0, 3) facing south: forward, forward, turn right (west), forward; then still
    assert positions[:6] == [(1, 3), (2, 3), (2, 3), (2, 2), (2, 2), (2, 2)]
    assert set(positions[4:49]) == {(2, 2)} and positions[49] == (0, 3)  # back at the start for trial 1
    assert positions[50:] == [(1, 3), (2, 3)]  # and the same replay again
    assert shown[:6] == [True] * 4 + [False] * 2 and shown[50:] == [True] * 3
    assert np.asarray(state.demo_shown).all() and not any(shown[4:50])


def test_bad_sizes_fail_naming_the_field():
    with pytest.raises(ConfigError, match="grid_size"):
        GoalSequence(grid_size=2)
    with pytest.raises(ConfigError, match="num_goals"):
        GoalSequence(num_goals=0)
    with pytest.raises(ConfigError, match="num_goals"):
        GoalSequence(grid_size=3, num_goals=8)
    with pytest.raises(ConfigError, match="trial_length"):
        envs.make("goal_sequence/in_context", trial_length=0)
    with pytest.raises(ConfigError, match="mode"):
        GoalSequence("in_between")


def test_sized_id():
    env, params = envs.make("goal_sequence/in_context:grid_size=5")
    assert env.grid_size == 5
    obs, state = env.reset(jax.random.PRNGKey(0), params)
    assert obs.shape == (136,) and tuple(state.pos) == (0, 2) and (np.asarray(state.goals) < 5).all()
