"""Self-play on pgx boards through the core learner: the board-game environment (seats, signs,
opponents), legal moves, the experiment's contract, load_agent, resume and bad input."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import run_cli, run_cli_cases

from rl import envs
from rl.errors import ConfigError
from rl.opponents import OpponentPolicy
from rl.ppo import PPOConfig, make_policy
from rl.selfplay import agents, games, solver


def first_legal(params, observation, mask, key):
    """A deterministic opponent: the lowest-numbered legal move."""
    return jnp.argmax(mask)


def scripted_params(env):
    return env.default_params.replace(opponent=OpponentPolicy(jnp.zeros((1,)), jnp.ones((1,)), first_legal))


def test_rewards_keep_the_learners_sign_from_both_seats():
    """Tic-tac-toe against the first-legal-move opponent: the learner's reward is +1 at the step of
    its winning move, -1 at the step whose reply wins for the opponent, from either seat."""
    env, _ = envs.make("pgx/tic_tac_toe")
    params = scripted_params(env)
    step = jax.jit(env.step)
    outcomes = {}
    for seed in range(8):
        obs, state = env.reset(jax.random.PRNGKey(seed), params)
        seat, rewards = int(state.seat), []
        moved_first = int(state.game._step_count) == 0
        for t in range(9):
            assert bool(state.game.current_player == state.seat)  # it is always the learner's turn
            mask = np.asarray(env.action_mask(state, params))
            # the learner plays the highest legal cell: a race the first-legal opponent wins when it
            # moves first (cells 0, 1, 2) and loses when the learner moves first (8, 7, 6)
            action = int(np.flatnonzero(mask)[-1])
            obs, state, reward, terminated, truncated, info = step(jax.random.PRNGKey(100 + t), state, action, params)
            rewards.append(float(reward))
            if terminated:
                break
        outcomes[moved_first] = (rewards[-1], seat)
        assert all(r == 0.0 for r in rewards[:-1])
    assert outcomes[True][0] == 1.0 and outcomes[False][0] == -1.0, outcomes


def test_learner_policy_never_chooses_an_illegal_move_in_random_positions():
    for game in ("tic_tac_toe", "connect_four", "othello"):
        config = PPOConfig(env=games.env_id(game), num_envs=4, num_minibatches=1)
        vec_env, env_params = envs.make_vec_env(config.env, 1)
        policy = make_policy(config, vec_env, env_params)
        params = policy.network.init(jax.random.PRNGKey(0), jnp.zeros(vec_env.observation_space(env_params).shape))
        player = jax.jit(agents.ppo_player(config, params, greedy=False))
        pgx_env = games.make_game(game)
        state = jax.jit(jax.vmap(pgx_env.init))(jax.random.split(jax.random.PRNGKey(1), 64))
        step = jax.jit(jax.vmap(pgx_env.step))
        for t in range(30):
            key = jax.random.PRNGKey(t)
            action = player(state, key)
            legal = np.asarray(state.legal_action_mask)[np.arange(64), np.asarray(action)]
            live = ~np.asarray(state.terminated | state.truncated)
            assert legal[live].all(), (game, t)
            state = step(state, action)


def test_env_draws_each_games_opponent_from_the_pool_weights():
    env, _ = envs.make("pgx/tic_tac_toe")
    weights = jnp.array([0.5, 0.25, 0.25, 0.0])
    params = env.default_params.replace(opponent=OpponentPolicy(jnp.zeros((4,)), weights, first_legal))
    _, states = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(jax.random.PRNGKey(0), 4000), params)
    counts = np.bincount(np.asarray(states.opponent), minlength=4) / 4000
    np.testing.assert_allclose(counts, weights, atol=0.03)
    assert abs(np.asarray(states.seat).mean() - 0.5) < 0.05


def test_random_openings_play_zero_to_max_legal_moves_before_the_seats_are_dealt():
    """``opening_plies=2``: games start after 0, 1 or 2 random moves (each a third of the time),
    then the opponent replies if the learner sits second; it is always the learner's turn."""
    env, _ = envs.make("pgx/tic_tac_toe")
    params = scripted_params(env).replace(opening_plies=jnp.asarray(2))
    _, states = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))(jax.random.split(jax.random.PRNGKey(0), 3000), params)
    marks = np.asarray(states.game._x.board >= 0).sum(axis=1)
    assert (np.asarray(states.game.current_player) == np.asarray(states.seat)).all()
    assert not np.asarray(states.game.terminated).any()
    # k random moves, then one reply when the learner sits second: k or k + 1 marks, half and half
    np.testing.assert_allclose(np.bincount(marks, minlength=4) / len(marks), [1 / 6, 1 / 3, 1 / 3, 1 / 6], atol=0.03)
    openings = {tuple(board) for board in np.asarray(states.game._x.board)[marks == 2]}
    assert len(openings) > 40  # the random moves cover the board (72 boards have one X and one O)
    _, fresh = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(jax.random.PRNGKey(0), 200), scripted_params(env))
    assert np.asarray(fresh.game._x.board >= 0).sum(axis=1).max() <= 1  # no random opening by default


def test_bad_game_ids_fail_with_one_clear_error():
    with pytest.raises(ConfigError, match="one-player pgx game"):
        envs.make("pgx/2048")
    with pytest.raises(ConfigError, match="unknown pgx game 'nope'"):
        envs.check_env_id("pgx/nope")
    with pytest.raises(ConfigError, match="recurrent"):
        PPOConfig(env="pgx/tic_tac_toe", recurrent=True).validate()


@pytest.fixture(scope="module")
def selfplay_run(tmp_path_factory):
    """One tiny experiments.selfplay run, resumed from its middle, beside an uninterrupted one."""
    root = tmp_path_factory.mktemp("selfplay")
    common = ["experiments.selfplay", "--game", "tic_tac_toe", "--algo", "ppo", "--total-timesteps", "8192",
              "--num-envs", "16", "--num-steps", "16", "--snapshots", "2", "--chunk-updates", "8",
              "--search-simulations", "4", "--search-games", "4", "--elo-games", "4", "--eval-games", "8",
              "--checkpoint-seconds", "0", "--no-progress"]
    whole = run_cli(*common, "--out", str(root / "whole"), timeout=600)
    assert whole.returncode == 0, whole.stderr[-3000:]
    return root, common


def test_selfplay_writes_the_contract_and_load_agent_plays_legal_moves(selfplay_run):
    root, _ = selfplay_run
    summary = json.loads((root / "whole" / "summary.json").read_text())
    for key in ("vs_random", "vs_search", "elo", "simulations", "vs_perfect"):
        assert key in summary
    assert set(summary["vs_search"]) == {"4"}
    assert summary["vs_random"]["win"] + summary["vs_random"]["draw"] + summary["vs_random"]["loss"] == pytest.approx(1)
    assert [row["update"] for row in summary["elo"]] == [None, 0, 16, 32]
    assert summary["elo"][0] == {"player": "random", "update": None, "elo": 0.0}
    assert (root / "whole" / "evaluation.png").exists()
    import rl.selfplay

    act = rl.selfplay.load_agent(root / "whole")  # the name for it
    env = games.make_game("tic_tac_toe")
    state = jax.vmap(env.init)(jax.random.split(jax.random.PRNGKey(3), 16))
    for _ in range(4):
        action = act(state)
        assert action.dtype == jnp.int32 and action.shape == (16,)
        assert np.asarray(state.legal_action_mask)[np.arange(16), np.asarray(action)].all()
        state = jax.vmap(env.step)(state, action)
    assert solver.position_value(state).shape == (16,)


def test_selfplay_resume_repeats_the_uninterrupted_run(selfplay_run):
    """A run stopped after update 24 (its newer checkpoint, snapshot and summary removed, as a kill
    leaves it) resumes to the same metrics, snapshots and evaluation as the uninterrupted run."""
    root, common = selfplay_run
    shutil.copytree(root / "whole", root / "resumed")
    (root / "resumed" / "summary.json").unlink()
    for folder in ("checkpoints", "snapshots"):
        shutil.rmtree(root / "resumed" / folder / "32")
    assert (root / "resumed" / "checkpoints" / "24").is_dir()
    resumed = run_cli(*common, "--out", str(root / "resumed"), "--resume", timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = [(root / name / "metrics.jsonl").read_text() for name in ("whole", "resumed")]
    assert metrics[0] == metrics[1]
    summaries = [json.loads((root / name / "summary.json").read_text()) for name in ("whole", "resumed")]
    for key in ("vs_random", "vs_search", "elo", "vs_perfect", "final_return_per_seed"):
        assert summaries[0][key] == summaries[1][key], key


BAD_INPUT = [
    (["--game", "nope"], "game: unknown pgx game 'nope'"),
    (["--game", "2048"], "one-player pgx game"),
    (["--algo", "nope"], "algo: unknown algo 'nope'"),
    (["--search-simulations", "0"], "search_simulations: must be >= 1"),
    (["--eval-games", "7"], "eval_games: must be a positive even number"),
    (["--algo", "alphazero", "--game-shards", "3"], "game_shards: 3 devices do not split the 256"),
    (["--opponent-random-move-prob", "1.5"], "opponent_random_move_prob: must be in [0, 1]"),
]


@pytest.fixture(scope="module")
def bad_input_runs():
    return run_cli_cases("experiments.selfplay", [[*args, "--out", "/tmp/never-written-selfplay"]
                                                  for args, _ in BAD_INPUT])


@pytest.mark.parametrize("case", range(len(BAD_INPUT)))
def test_bad_input_gives_one_line(bad_input_runs, case):
    message, done = BAD_INPUT[case][1], bad_input_runs[case]
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), done.stderr[-2000:]
    assert message in done.stderr


def test_opponent_random_moves_come_with_their_probability():
    """A policy opponent that always wants the centre plays it unless a random move is drawn."""
    from rl.ppo import make_opponent_act

    config = PPOConfig(env="pgx/tic_tac_toe", num_envs=4, num_minibatches=1)
    vec_env, env_params = envs.make_vec_env(config.env, 1)
    policy = make_policy(config, vec_env, env_params)
    obs = jnp.zeros(vec_env.observation_space(env_params).shape)
    params = policy.network.init(jax.random.PRNGKey(0), obs)
    params["params"]["actor_head"]["bias"] = jnp.zeros(9).at[4].set(30.0)
    candidate = {"params": params, "uniform": jnp.bool_(False)}
    mask = jnp.ones(9, bool).at[0].set(False)
    keys = jax.random.split(jax.random.PRNGKey(1), 4000)
    for prob in (0.0, 0.5, 1.0):
        act = jax.jit(jax.vmap(make_opponent_act(policy, obs.shape, prob), in_axes=(None, None, None, 0)))
        counts = np.bincount(np.asarray(act(candidate, obs, mask, keys)), minlength=9) / 4000
        assert counts[0] == 0  # never illegal
        np.testing.assert_allclose(counts[4], (1 - prob) + prob / 8, atol=0.03)
