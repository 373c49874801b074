"""Evaluation pieces of self-play: the exact tic-tac-toe solver, the record against perfect play, and
the Bradley-Terry Elo fit."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pgx
import pytest

from rl.selfplay import solver
from rl.selfplay.elo import fit_elo, format_elo_table, win_matrix

# --- solver -------------------------------------------------------------------------------------


@functools.cache
def _env_and_step():
    env = pgx.make("tic_tac_toe")
    return env, jax.jit(jax.vmap(env.step))


def play(*moves: int):
    """The pgx tic-tac-toe State (batch of one) after ``moves`` from the empty board (X moves first)."""
    env, step = _env_and_step()
    state = jax.tree.map(lambda leaf: leaf[None], env.init(jax.random.PRNGKey(0)))
    for move in moves:
        assert not state.terminated[0]
        state = step(state, np.array([move], np.int32))
    return state


def mask(*cells: int) -> np.ndarray:
    out = np.zeros(9, bool)
    out[list(cells)] = True
    return out


def test_reachable_positions():
    assert solver.num_positions() == 5478


def test_solver_matches_independent_minimax():
    """Every reachable position's value equals a plain minimax over absolute X/O boards (X maximises)."""
    lines = [(0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6)]
    seen: dict[str, int] = {}

    def minimax(board: str) -> int:  # board: 9 chars in ".XO"; value for X
        if board not in seen:
            x_to_move = board.count("X") == board.count("O")
            if any(board[a] == board[b] == board[c] != "." for a, b, c in lines):
                seen[board] = -1 if x_to_move else 1  # the side that just moved won
            elif "." not in board:
                seen[board] = 0
            else:
                mark, pick = ("X", max) if x_to_move else ("O", min)
                seen[board] = pick(minimax(board[:a] + mark + board[a + 1 :]) for a in range(9) if board[a] == ".")
        return seen[board]

    minimax("." * 9)
    assert len(seen) == 5478
    tables = solver.tables()
    for board, value_for_x in seen.items():
        x_to_move = board.count("X") == board.count("O")
        mover, opponent = ("X", "O") if x_to_move else ("O", "X")
        key = sum(3**a * (1 if c == mover else 2 if c == opponent else 0) for a, c in enumerate(board))
        assert tables.reachable[key]
        assert tables.value[key] == (value_for_x if x_to_move else -value_for_x), board


def test_empty_board_is_a_draw_and_every_opening_keeps_it():
    state = play()
    assert solver.position_value(state).tolist() == [0]
    assert solver.optimal_actions(state).shape == (1, 9)
    assert solver.optimal_actions(state)[0].all()


@pytest.mark.parametrize(
    "opening, replies",
    [(4, (0, 2, 6, 8)), (0, (4,)), (1, (0, 2, 4, 7))],  # known theory: the only drawing replies of O
)
def test_known_drawing_replies(opening, replies):
    state = play(opening)
    assert solver.position_value(state).tolist() == [0]
    np.testing.assert_array_equal(solver.optimal_actions(state)[0], mask(*replies))


def test_immediate_win():
    state = play(0, 3, 1, 4)  # X: 0 1, O: 3 4; X to move, 2 wins at once (O threatens 5)
    assert solver.position_value(state).tolist() == [1]
    assert solver.optimal_actions(state)[0, 2]
    assert solver.perfect_act(state).tolist() == [2]
    after = play(0, 3, 1, 4, 2)
    assert after.terminated[0]
    assert after.rewards[0, 1 - after.current_player[0]] == 1  # the winner is the player who moved
    assert solver.position_value(after).tolist() == [-1]  # finished: the player "to move" lost
    assert not solver.optimal_actions(after).any()


def test_double_threat_is_lost():
    state = play(4, 1, 0, 8, 6)  # X: 4 0 6 threatens 2 and 3; O (1 8) has no threat of its own
    assert solver.position_value(state).tolist() == [-1]
    np.testing.assert_array_equal(solver.optimal_actions(state)[0], np.asarray(state.legal_action_mask[0]))
    before = play(4, 1, 0, 8)  # X to move: 6 makes the fork
    assert solver.position_value(before).tolist() == [1]
    assert solver.optimal_actions(before)[0, 6]


def test_drawn_final_board():
    state = play(0, 4, 8, 1, 7, 6, 2, 5, 3)
    assert state.terminated[0] and (state.rewards[0] == 0).all()
    assert solver.position_value(state).tolist() == [0]


# --- record against perfect play ----------------------------------------------------------------


@jax.jit
def first_legal(states) -> jax.Array:
    """A jitted agent (as a trained one would be): the lowest-numbered legal move."""
    return jnp.argmax(states.legal_action_mask, axis=-1).astype(jnp.int32)


@pytest.mark.parametrize("seat", [0, 1])
def test_perfect_agent_never_loses(seat):
    record = solver.record_vs_perfect(solver.perfect_act, seat)
    assert record["loss"] == 0 and record["illegal"] == 0
    assert record["draw"] == 1.0  # perfect against perfect is always a draw
    assert record["games"] == record["draws"] > 0


@pytest.mark.parametrize("seat", [0, 1])
def test_first_legal_move_agent_loses_to_perfect_play(seat):
    record = solver.record_vs_perfect(first_legal, seat)
    assert record["losses"] > 0 and record["illegal"] == 0
    assert record["win"] + record["draw"] + record["loss"] == pytest.approx(1.0)
    assert record["wins"] == 0  # nobody beats perfect play


def test_illegal_moves_count_as_losses():
    record = solver.record_vs_perfect(lambda states: np.zeros(len(states.terminated), np.int32), 1)
    assert record["illegal"] == record["losses"] == record["games"] > 0


# --- Elo ----------------------------------------------------------------------------------------


def simulate(true: dict[str, float], games_per_pair: int, seed: int) -> list[tuple[str, str, int, int, int]]:
    """Bradley-Terry results with draws: expected score of i against j is exactly the Elo formula."""
    rng = np.random.default_rng(seed)
    names = list(true)
    records = []
    for a, i in enumerate(names):
        for j in names[a + 1 :]:
            p = 1.0 / (1.0 + 10.0 ** ((true[j] - true[i]) / 400.0))
            draw = 0.5 * min(p, 1.0 - p)  # win p - draw/2, draw, loss 1 - p - draw/2: score p
            outcome = rng.choice(3, size=games_per_pair, p=[p - draw / 2, draw, 1.0 - p - draw / 2])
            records.append((i, j, int((outcome == 0).sum()), int((outcome == 1).sum()), int((outcome == 2).sum())))
    return records


def test_elo_recovers_known_strengths():
    true = {"ckpt_a": 200.0, "random": 0.0, "ckpt_c": 650.0, "ckpt_b": 400.0}  # the anchor is not first
    names = list(true)
    ratings = fit_elo(names, simulate(true, games_per_pair=2000, seed=0))
    assert ratings["random"] == 0.0
    for name, rating in true.items():
        assert abs(ratings[name] - rating) < 40, (name, ratings)
    assert "ckpt_c" in format_elo_table(ratings).splitlines()[2]  # strongest first


def test_elo_inputs_and_prior():
    true = {"random": 0.0, "a": 150.0, "b": 300.0}
    records = simulate(true, games_per_pair=300, seed=1)
    names = list(true)
    by_index = [(names.index(i), names.index(j), *rest) for i, j, *rest in records]
    ratings = fit_elo(names, records)
    assert fit_elo(names, by_index) == pytest.approx(ratings)
    assert fit_elo(names, win_matrix(names, records)) == pytest.approx(ratings)
    flat = fit_elo(names, records, prior_sd=1e6)  # the default prior barely moves determined ratings
    assert all(abs(ratings[n] - flat[n]) < 2 for n in names)
    centred = fit_elo(names, records, anchor=None)
    assert sum(centred.values()) == pytest.approx(0.0, abs=1e-6)
    assert centred["b"] - centred["a"] == pytest.approx(ratings["b"] - ratings["a"])


def test_elo_is_finite_for_unbeaten_and_winless_players():
    names = ["random", "mid", "perfect"]
    ratings = fit_elo(
        names, [("perfect", "random", 100, 0, 0), ("perfect", "mid", 90, 10, 0), ("mid", "random", 60, 0, 40)]
    )
    assert all(np.isfinite(r) for r in ratings.values())
    assert ratings["perfect"] > ratings["mid"] > ratings["random"] == 0.0


def test_elo_bad_input():
    with pytest.raises(ValueError, match="anchor"):
        fit_elo(["a", "b"], [(0, 1, 3, 0, 1)])
    with pytest.raises(ValueError, match="itself"):
        fit_elo(["random", "b"], [(1, 1, 3, 0, 1)])
