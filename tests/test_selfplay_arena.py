"""Matches between players on pgx games, and the pure-search baseline built on mctx."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pgx
import pytest

from rl.selfplay.arena import play_match, random_player
from rl.selfplay.search import make_recurrent_fn, pure_search_player, rollout_evaluator, rollout_value, search_policy

# Compiled matches are cached per player object: build each env and player once.


@functools.cache
def env_of(game: str) -> pgx.Env:
    return pgx.make(game)


@functools.cache
def random_of(game: str):
    return random_player(env_of(game))


@functools.cache
def search_of(game: str, num_simulations: int):
    return pure_search_player(env_of(game), num_simulations)


@functools.cache
def _ttt_after():
    env = env_of("tic_tac_toe")

    @functools.partial(jax.jit, static_argnums=1)
    def after(moves: jax.Array, batch: int) -> pgx.State:
        state = jax.vmap(env.init)(jax.random.split(jax.random.key(0), batch))

        def play(state, move):  # -1 pads the move list
            stepped = jax.vmap(env.step)(state, jnp.full(batch, move))
            return jax.tree.map(lambda new, old: jnp.where(move >= 0, new, old), stepped, state), None

        return jax.lax.scan(play, state, moves)[0]

    return after


def ttt_position(moves: list[int], batch: int = 8) -> pgx.State:
    """A batch of tic-tac-toe games after ``moves``; pgx draws the first mover's player id at random,
    so the batch holds both ids in the same position."""
    state = _ttt_after()(jnp.array(moves + [-1] * (9 - len(moves))), batch)
    assert not state.terminated.any()
    assert len(set(np.asarray(state.current_player).tolist())) == 2
    return state


@functools.cache
def random_states(game: str, batch: int, max_plies: int) -> pgx.State:
    """``batch`` games after a random number (0 to max_plies - 1) of random legal moves each."""
    env = env_of(game)
    play = random_of(game)

    @jax.jit
    def run(key):
        init_key, depth_key, key = jax.random.split(key, 3)
        state = jax.vmap(env.init)(jax.random.split(init_key, batch))
        depth = jax.random.randint(depth_key, (batch,), 0, max_plies)

        def body(t, carry):
            state, key = carry
            key, act_key = jax.random.split(key)
            stepped = jax.vmap(env.step)(state, play(state, act_key))
            keep = (t < depth) & ~stepped.terminated
            state = jax.tree.map(
                lambda new, old: jnp.where(keep.reshape((-1,) + (1,) * (old.ndim - 1)), new, old), stepped, state
            )
            return state, key

        return jax.lax.fori_loop(0, max_plies, body, (state, key))[0]

    state = run(jax.random.key(1))
    assert not state.terminated.any()
    return state


def test_random_vs_random_fractions_and_first_player_advantage():
    for game, num_games in [("tic_tac_toe", 1024), ("connect_four", 512)]:
        result = play_match(env_of(game), random_of(game), random_of(game), jax.random.key(0), num_games)
        assert result["illegal"] == 0 and result["unfinished"] == 0
        for part in (result, result["first"], result["second"]):
            assert part["win"] + part["draw"] + part["loss"] == pytest.approx(1.0)
        # The first mover's advantage shows from both seats, and A and B are the same player.
        assert result["first"]["win"] > result["first"]["loss"]
        assert result["second"]["win"] < result["second"]["loss"]
        assert abs(result["win"] - result["loss"]) < 0.1
    # Tic-tac-toe, uniform random play: the first mover wins 58.5%, draws 12.7%, loses 28.8%.
    ttt = play_match(env_of("tic_tac_toe"), random_of("tic_tac_toe"), random_of("tic_tac_toe"), jax.random.key(1), 1024)
    assert ttt["first"]["win"] == pytest.approx(0.585, abs=0.06)
    assert ttt["first"]["draw"] == pytest.approx(0.127, abs=0.05)


def test_play_match_rejects_odd_num_games():
    with pytest.raises(ValueError, match="num_games"):
        play_match(env_of("tic_tac_toe"), random_of("tic_tac_toe"), random_of("tic_tac_toe"), jax.random.key(0), 3)


def test_max_steps_stops_games_as_draws():
    result = play_match(
        env_of("tic_tac_toe"), random_of("tic_tac_toe"), random_of("tic_tac_toe"), jax.random.key(0), 8, max_steps=2
    )
    assert result["unfinished"] == 8 and result["draw"] == 1.0


def test_illegal_actions_are_counted():
    def first_action(state, key):  # plays action 0 even where it is taken
        return jnp.zeros(state.legal_action_mask.shape[0], jnp.int32)

    result = play_match(env_of("tic_tac_toe"), first_action, random_of("tic_tac_toe"), jax.random.key(0), 16)
    assert result["illegal"] > 0
    assert result["loss"] > 0.4  # pgx ends the game as a loss for the player who moved illegally


@pytest.mark.parametrize("game,max_plies", [("tic_tac_toe", 8), ("connect_four", 30), ("othello", 50)])
def test_players_never_choose_illegal_actions(game, max_plies):
    state = random_states(game, 64, max_plies)
    players = {"random": random_of(game), "search": search_of(game, 8)}
    for name, player in players.items():
        for seed in range(3):
            actions = jax.jit(player)(state, jax.random.key(seed))
            legal = state.legal_action_mask[jnp.arange(64), actions]
            assert bool(legal.all()), f"{name} chose an illegal action in {game}"


def test_recurrent_fn_rewards_the_mover_and_stops_at_the_end():
    env = env_of("tic_tac_toe")
    evaluate = rollout_evaluator(env)
    recurrent_fn = jax.jit(make_recurrent_fn(env, evaluate))
    # Cell 2 wins at once for the player to move: X (0, 1 taken), then O (4, 6 taken).
    for moves in ([0, 3, 1, 4], [0, 3, 1, 4, 8, 6, 7]):
        state = ttt_position(moves)
        batch = state.current_player.shape[0]
        out, after = recurrent_fn(None, jax.random.key(0), jnp.full(batch, 2), state)
        assert bool(after.terminated.all())
        np.testing.assert_array_equal(out.reward, 1.0)
        np.testing.assert_array_equal(out.discount, 0.0)
        np.testing.assert_array_equal(out.value, 0.0)
        # A terminal embedding stays terminal, with no further reward.
        out2, after2 = recurrent_fn(None, jax.random.key(1), jnp.zeros(batch, jnp.int32), after)
        assert bool(after2.terminated.all())
        np.testing.assert_array_equal(out2.reward, 0.0)
        np.testing.assert_array_equal(out2.discount, 0.0)
        np.testing.assert_array_equal(out2.value, 0.0)
    # A quiet move: no reward, and the turn passes to the opponent (discount -1).
    state = ttt_position([0, 3, 1, 4])
    out, after = recurrent_fn(None, jax.random.key(0), jnp.full(8, 8), state)
    np.testing.assert_array_equal(out.reward, 0.0)
    np.testing.assert_array_equal(out.discount, -1.0)
    np.testing.assert_array_equal(after.current_player, 1 - state.current_player)
    # Illegal actions get (effectively) zero prior at the new node.
    assert bool((out.prior_logits[~after.legal_action_mask] < -1e30).all())


def test_rollout_value_is_from_the_player_to_move():
    env = env_of("tic_tac_toe")
    # X O X / O X O / O X .  with X to move: the only move, cell 8, wins for X.
    state = ttt_position([0, 1, 2, 3, 4, 5, 7, 6])
    values = jax.jit(functools.partial(rollout_value, env))(state, jax.random.key(0))
    np.testing.assert_array_equal(values, 1.0)
    # O to move in X O . / . X . / . . . : after any rollout, the value is in [-1, 1].
    state = ttt_position([0, 1, 4])
    values = jax.jit(functools.partial(rollout_value, env))(state, jax.random.key(0))
    assert bool(((values >= -1) & (values <= 1)).all())


def test_search_takes_an_immediate_win_from_either_seat():
    env = env_of("tic_tac_toe")
    policy = jax.jit(search_policy(env, rollout_evaluator(env), num_simulations=32, gumbel_scale=0.0))
    for moves in ([0, 3, 1, 4], [8, 0, 7, 3, 4, 1]):  # X wins at 2; after X: 8 7 4, O: 0 3 1, X wins at 6
        state = ttt_position(moves, batch=16)
        out = policy(state, jax.random.key(0))
        expected = 2 if moves[0] == 0 else 6
        np.testing.assert_array_equal(out.action, expected)
        weights = np.asarray(out.action_weights)
        np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
        assert (weights[~np.asarray(state.legal_action_mask)] < 1e-6).all()
        assert (weights.argmax(-1) == expected).all()


def test_pure_search_beats_random():
    ttt = play_match(
        env_of("tic_tac_toe"), search_of("tic_tac_toe", 64), random_of("tic_tac_toe"), jax.random.key(0), 64
    )
    assert ttt["illegal"] == 0
    assert ttt["score"] >= 0.8, ttt
    c4 = play_match(
        env_of("connect_four"), search_of("connect_four", 64), random_of("connect_four"), jax.random.key(0), 32
    )
    assert c4["illegal"] == 0
    assert c4["score"] >= 0.8, c4
