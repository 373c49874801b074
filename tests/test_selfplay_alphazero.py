"""AlphaZero self-play on pgx boards: outcome targets, reuse of the search's evaluations, distinct
boards evaluated once, a smoke run of experiments.selfplay with load_agent, and games split over
devices with exact resume."""

import dataclasses
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import run_cli

from rl.errors import ConfigError
from rl.selfplay import agents, games


def test_alphazero_value_targets_are_the_final_outcome_for_the_player_to_move():
    from rl.selfplay.alphazero import outcome_targets

    # two games over 5 steps: game 0 ends at step 2 (player 1 moved and won), then a new game that
    # is still running at the end; game 1 ends at step 4 in a draw
    player = jnp.array([[0, 0], [1, 1], [1, 0], [0, 1], [1, 0]])
    rewards = jnp.zeros((5, 2, 2)).at[2, 0].set(jnp.array([-1.0, 1.0]))
    ended = jnp.zeros((5, 2), bool).at[2, 0].set(True).at[4, 1].set(True)
    targets, known = outcome_targets(player, rewards, ended)
    np.testing.assert_array_equal(np.asarray(known[:, 0]), [True, True, True, False, False])
    np.testing.assert_array_equal(np.asarray(targets[:3, 0]), [-1.0, 1.0, 1.0])
    np.testing.assert_array_equal(np.asarray(known[:, 1]), [True] * 5)
    np.testing.assert_array_equal(np.asarray(targets[:, 1]), [0.0] * 5)


@pytest.mark.parametrize("dtype", [jnp.bool_, jnp.int32, jnp.float32])
def test_evaluate_distinct_calls_the_function_once_per_distinct_row(dtype):
    """Rows with equal observations are evaluated once, in chunks of batch / chunks rows, as many
    chunks as the distinct rows fill; every row gets its own row's output; under vmap each run
    counts its own distinct rows."""
    from rl.selfplay.alphazero import evaluate_distinct

    rows_seen = []

    def apply(obs):
        jax.debug.callback(lambda o: rows_seen.append(o.shape[-4]), obs)
        flat = obs.reshape(obs.shape[0], -1).astype(jnp.float32)
        return {"sum": flat @ jnp.arange(1.0, flat.shape[1] + 1), "first": flat[:, :3]}

    key_rows, key_pick = jax.random.split(jax.random.PRNGKey(0))
    patterns = jax.random.bernoulli(key_rows, 0.5, (5, 3, 3, 2))  # 5 distinct boards (a tiny chance of fewer)
    values = patterns.astype(dtype) * (7 if dtype == jnp.int32 else (-2.5 if dtype == jnp.float32 else 1))
    obs = values[jax.random.randint(key_pick, (16,), 0, 5).at[:5].set(jnp.arange(5))]  # all 5 in 16 rows
    distinct = len(np.unique(np.asarray(obs).reshape(16, -1), axis=0))
    expected = apply(obs)
    rows_seen.clear()
    got = jax.jit(evaluate_distinct(apply, chunks=4))(obs)
    jax.tree.map(lambda g, e: np.testing.assert_allclose(np.asarray(g), np.asarray(e), rtol=1e-6), got, expected)
    assert rows_seen == [4] * -(-distinct // 4)  # chunks of 4 rows, only as many as the distinct rows need
    assert distinct == 5

    # two runs under vmap: the second has every row alike
    runs = jnp.stack([obs, jnp.broadcast_to(obs[:1], obs.shape)])
    got = jax.jit(jax.vmap(evaluate_distinct(apply, chunks=4)))(runs)
    for run in range(2):
        for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(apply(runs[run])), strict=True):
            np.testing.assert_allclose(np.asarray(g[run]), np.asarray(e), rtol=1e-6)
    # no chunking: the function sees the whole batch
    rows_seen.clear()
    jax.jit(evaluate_distinct(apply, chunks=3))(obs)  # 3 does not divide 16
    assert rows_seen == [16]


def test_selfplay_reusing_the_searched_child_evaluation_plays_the_same_games():
    """The root of each search takes its evaluation from the previous search's tree, and each
    distinct board of a network call is evaluated once; the games, targets and restarts are those
    of evaluating every root afresh and every board. Tic-tac-toe ends and restarts games within the
    20 moves; a net whose start-position output is not zero catches a wrong evaluation at a
    restart."""
    from rl.selfplay import alphazero, search

    config = alphazero.AlphaZeroConfig(selfplay_games=8, selfplay_steps=20, num_simulations=6, channels=4, blocks=1,
                                       distinct_chunks=4)
    every_board = dataclasses.replace(config, distinct_chunks=0)
    env, network = alphazero.make_network("tic_tac_toe", config)
    assert alphazero.constant_start(env)
    params = network.init(jax.random.PRNGKey(1), jnp.zeros((1, *env.observation_shape)))
    params = jax.tree.map(lambda x: x + 0.05, params)  # a start-position value and prior far from 0 and uniform
    start = jax.vmap(env.init)(jax.random.split(jax.random.PRNGKey(2), 8))
    played = [jax.jit(alphazero.make_selfplay(env, network, setting, reuse_evaluations=reuse))(
        params, start, jax.random.PRNGKey(3)) for setting, reuse in ((config, True), (every_board, False))]
    (games_reused, records_reused), (games_fresh, records_fresh) = played
    assert int(records_fresh[5].sum()) >= 8  # games ended and restarted
    for reused, fresh in zip(jax.tree.leaves((games_reused, records_reused)),
                             jax.tree.leaves((games_fresh, records_fresh)), strict=True):
        np.testing.assert_allclose(np.asarray(reused), np.asarray(fresh), atol=1e-6)

    # the tree's child evaluation is the network's output on the position after the move
    evaluate = alphazero.network_evaluator(network, params)
    out = search.search_policy(env, evaluate, 6)(start, jax.random.PRNGKey(4))
    after = jax.vmap(env.step)(start, out.action)
    logits, value = search.child_evaluation(out.search_tree, out.action)
    expected_logits, expected_value = evaluate(after, None)
    np.testing.assert_allclose(np.asarray(value), np.asarray(expected_value), atol=1e-6)
    legal = np.asarray(after.legal_action_mask)
    shifted = np.asarray(expected_logits) - np.where(legal, np.asarray(expected_logits), -np.inf).max(1, keepdims=True)
    np.testing.assert_allclose(np.asarray(logits)[legal], shifted[legal], atol=1e-5)


def test_alphazero_smoke_run_and_load_agent(tmp_path):
    tiny = ["--num-updates", "2", "--selfplay-games", "8", "--selfplay-steps", "6", "--num-simulations", "4",
            "--train-steps", "2", "--train-batch", "8", "--replay-positions", "96", "--channels", "4", "--blocks", "1"]
    done = run_cli("experiments.selfplay", "--game", "tic_tac_toe", "--algo", "alphazero", *tiny, "--snapshots", "1",
                   "--search-simulations", "4", "--search-games", "4", "--elo-games", "4", "--eval-games", "8",
                   "--no-progress", "--out", str(tmp_path / "az"), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "az" / "summary.json").read_text())
    assert summary["simulations"] == 4 and set(summary["vs_search"]) == {"4"}
    assert [row["update"] for row in summary["elo"]] == [None, 0, 2]
    act = agents.load_agent(tmp_path / "az")
    env = games.make_game("tic_tac_toe")
    state = jax.vmap(env.init)(jax.random.split(jax.random.PRNGKey(4), 8))
    for _ in range(3):
        action = act(state)
        assert action.dtype == jnp.int32
        assert np.asarray(state.legal_action_mask)[np.arange(8), np.asarray(action)].all()
        state = jax.vmap(env.step)(state, action)


def test_alphazero_games_shard_over_devices_with_one_state_per_run(tmp_path):
    """game_shards = 2: one run on a (runs, data) mesh of 2 devices, each playing half the games;
    both devices keep the same state, and the metrics count every game of the run."""
    from rl import runner
    from rl.selfplay import alphazero

    tiny = alphazero.AlphaZeroConfig(num_updates=2, selfplay_games=8, selfplay_steps=6, num_simulations=4,
                                     train_steps=2, train_batch=8, replay_positions=96, channels=4, blocks=1)
    assert tiny.with_game_shards(1, 8).game_shards == 8
    assert tiny.with_game_shards(2, 8).game_shards == 4
    assert tiny.with_game_shards(3, 2).game_shards == 1
    with pytest.raises(ConfigError, match="game_shards"):
        dataclasses.replace(tiny, game_shards=3).validate()
    config = dataclasses.replace(tiny, game_shards=2)
    learner = alphazero.make_learner("tic_tac_toe", config)
    assert learner.data_parallel == 2
    hparams = jax.tree.map(lambda x: np.asarray(x)[None], alphazero.default_hparams(config))
    keys = np.asarray(jax.random.split(jax.random.PRNGKey(0), 1))
    result = runner.run(learner, keys, hparams, tmp_path / "run", {}, progress=False, devices=jax.devices()[:2],
                        chunk_updates=1, checkpoint_seconds=0)
    assert result.num_devices == 2
    for leaf in jax.tree.leaves(result.state):
        shards = [np.asarray(shard.data) for shard in leaf.addressable_shards]
        assert len(shards) == 2
        np.testing.assert_array_equal(shards[0], shards[1])
    assert int(result.state.update_step[0]) == 2
    # every position of the 8 games x 6 moves is either a known-outcome replay entry or pending
    assert result.records[-1]["replay_positions"][0] <= 2 * 8 * 6
    assert result.records[-1]["mean_game_length"][0] * result.records[-1]["games_finished"][0] == pytest.approx(48)
    # a run cut after update 1 (its last checkpoint and metrics line gone) resumes to the same state
    shutil.copytree(tmp_path / "run", tmp_path / "cut")
    shutil.rmtree(tmp_path / "cut" / "checkpoints" / "2")
    lines = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "cut" / "metrics.jsonl").write_text(lines[0])
    resumed = runner.run(learner, keys, hparams, tmp_path / "cut", {}, progress=False, devices=jax.devices()[:2],
                         chunk_updates=1, checkpoint_seconds=0, resume=True)
    for a, b in zip(jax.tree.leaves(result.state), jax.tree.leaves(resumed.state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert resumed.records == result.records
