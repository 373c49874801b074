"""An exact tic-tac-toe solver, and an agent's record against perfect play over every optimal reply.

Positions are read from pgx's public ``State.observation`` (shape ``[..., 3, 3, 2]``), which is
always from the view of the player to move: plane 0 holds the mover's marks, plane 1 the
opponent's, cells in row-major order (action ``a`` is cell ``a``, row ``a // 3``, column
``a % 3``). The rules are symmetric in the two marks, so the solver works in that mover-relative
encoding: a position is a base-3 key ``sum_a 3**a * c_a`` with ``c_a`` = 0 (empty), 1 (mover), 2
(opponent). The relative encoding is a bijection with absolute X/O boards (the mover is X when both
sides have as many marks, O otherwise), so the 5,478 positions reachable from the empty board
(finished games included) are 5,478 keys here as well.

Negamax over every reachable position, memoised in numpy tables built once per process, gives the
game-theoretic value from the mover's view (+1 win, 0 draw, -1 loss) and the moves that keep it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pgx

NUM_CELLS = 9
NUM_KEYS = 3**NUM_CELLS
_POWERS = 3 ** np.arange(NUM_CELLS, dtype=np.int64)
_LINES = ((0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6))
_EMPTY, _MOVER, _OPPONENT = 0, 1, 2


class Tables(NamedTuple):
    """The solved game, indexed by mover-relative board key (see the module docstring)."""

    value: np.ndarray  # int8 [NUM_KEYS]: value for the player to move (only meaningful where reachable)
    optimal: np.ndarray  # bool [NUM_KEYS, 9]: moves that keep the value (all False at finished games)
    reachable: np.ndarray  # bool [NUM_KEYS]: positions reachable from the empty board


def _has_line(cells: tuple[int, ...], mark: int) -> bool:
    return any(cells[a] == mark and cells[b] == mark and cells[c] == mark for a, b, c in _LINES)


@functools.cache
def tables() -> Tables:
    """Solve tic-tac-toe by memoised negamax from the empty board (about 0.1 s, once per process)."""
    value = np.zeros(NUM_KEYS, np.int8)
    optimal = np.zeros((NUM_KEYS, NUM_CELLS), bool)
    reachable = np.zeros(NUM_KEYS, bool)
    swap = {_EMPTY: _EMPTY, _MOVER: _OPPONENT, _OPPONENT: _MOVER}

    def negamax(cells: tuple[int, ...]) -> int:
        key = int(np.dot(cells, _POWERS))
        if reachable[key]:
            return int(value[key])
        reachable[key] = True
        if _has_line(cells, _OPPONENT):  # the previous mover just completed a line
            best = -1
        elif _EMPTY not in cells:
            best = 0
        else:
            child_values = {}
            for a in range(NUM_CELLS):
                if cells[a] == _EMPTY:
                    child = tuple(swap[c] for c in cells[:a] + (_MOVER,) + cells[a + 1 :])
                    child_values[a] = -negamax(child)  # the child is seen from the opponent's side
            best = max(child_values.values())
            for a, v in child_values.items():
                optimal[key, a] = v == best
        value[key] = best
        return best

    negamax((_EMPTY,) * NUM_CELLS)
    for array in (value, optimal, reachable):
        array.flags.writeable = False
    return Tables(value, optimal, reachable)


def num_positions() -> int:
    """Number of positions reachable from the empty board, finished games included (5,478)."""
    return int(tables().reachable.sum())


def board_keys(observation: Any) -> np.ndarray:
    """Mover-relative base-3 keys of tic-tac-toe observations ``[..., 3, 3, 2]`` -> int64 ``[...]``."""
    obs = np.asarray(observation)
    if obs.shape[-3:] != (3, 3, 2):
        raise ValueError(f"expected tic-tac-toe observations of shape [..., 3, 3, 2], got {obs.shape}")
    cells = obs.reshape(*obs.shape[:-3], NUM_CELLS, 2).astype(np.int64)
    return (cells[..., 0] * _MOVER + cells[..., 1] * _OPPONENT) @ _POWERS


def _lookup_keys(state: Any) -> np.ndarray:
    keys = board_keys(state.observation)
    if not tables().reachable[keys].all():
        raise ValueError("a tic-tac-toe position is not reachable from the empty board (is this a tic-tac-toe State?)")
    return keys


def position_value(state: Any) -> np.ndarray:
    """Game-theoretic value for the player to move, under perfect play by both sides.

    Args:
        state: a pgx tic-tac-toe ``State`` with any leading batch axes (its ``observation`` is read).

    Returns:
        int8 array of the batch shape: +1 (the mover wins), 0 (draw) or -1 (the mover loses). For a
        finished game this is the result from the view of the player who would move next (pgx's
        ``current_player``); a game ended by an illegal move is valued by its board alone.
    """
    return tables().value[_lookup_keys(state)]


def optimal_actions(state: Any) -> np.ndarray:
    """Moves that keep the best outcome the player to move can force.

    Args:
        state: a pgx tic-tac-toe ``State`` with any leading batch axes.

    Returns:
        bool array ``[..., 9]``; a subset of the legal moves, non-empty for every unfinished game and
        all False for finished ones (where pgx's ``legal_action_mask`` is all True).
    """
    mask = tables().optimal[_lookup_keys(state)]
    return mask & ~np.asarray(state.terminated)[..., None]


def perfect_act(state: Any) -> np.ndarray:
    """A deterministic perfect player: the lowest-numbered optimal move of each game (int32 ``[...]``).

    Finished games get action 0 (pgx ignores actions at finished games).
    """
    return np.argmax(optimal_actions(state), axis=-1).astype(np.int32)


@functools.cache
def _env_and_step() -> tuple[pgx.Env, Callable[[Any, Any], Any]]:
    env = pgx.make("tic_tac_toe")
    return env, jax.jit(jax.vmap(env.step))


def _take(states: Any, index: np.ndarray | slice) -> Any:
    return jax.tree.map(lambda leaf: leaf[index], states)


def _in_chunks(fn: Callable[[Any], Any], states: Any, size: int, chunk: int) -> list[Any]:
    """Apply ``fn`` to ``states`` in fixed-size chunks (the last one padded with copies of its first
    game), so a jitted ``fn`` compiles once; return the per-chunk outputs with the padding cut."""
    outputs = []
    for start in range(0, size, chunk):
        index = np.arange(start, min(start + chunk, size))
        padded = np.concatenate([index, np.full(chunk - len(index), index[0])])
        out = jax.device_get(fn(_take(states, padded)))
        outputs.append(_take(jax.tree.map(np.asarray, out), slice(0, len(index))))
    return outputs


def record_vs_perfect(act: Callable[[Any], Any], agent_seat: int, batch_size: int = 128) -> dict[str, Any]:
    """Play a deterministic agent against a perfect player that branches over all its optimal moves.

    The game tree starts at the empty board; at each of the agent's turns every game continues with
    the agent's one move, at each of the perfect player's turns every game forks into one game per
    optimal move. Every leaf (finished game) counts once. Each ply is one batched, jitted pgx
    ``step`` over the whole frontier, in chunks of ``batch_size`` games (padded, so ``act`` and
    ``step`` always see the same batch shape and compile once).

    Args:
        act: ``act(states) -> actions``: for a pgx tic-tac-toe ``State`` batched on a leading axis of
            ``batch_size`` games (jax arrays), one int action per game. It only sees unfinished games.
        agent_seat: 0 if the agent moves first (plays X), 1 if it moves second (plays O).
        batch_size: games per call of ``act`` and ``step``.

    Returns:
        ``{"win", "draw", "loss"}`` as fractions of the leaves, ``"games"`` (number of leaves),
        ``"wins"``, ``"draws"``, ``"losses"`` (counts) and ``"illegal"``: the number of games the
        agent ended with an illegal move (pgx ends the game with a loss for it, counted in losses).
    """
    if agent_seat not in (0, 1):
        raise ValueError(f"agent_seat must be 0 (first) or 1 (second), got {agent_seat!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    env, step = _env_and_step()
    frontier = jax.device_get(jax.tree.map(lambda leaf: leaf[None], env.init(jax.random.PRNGKey(0))))
    counts = {"wins": 0, "draws": 0, "losses": 0, "illegal": 0}
    ply = 0
    while len(frontier.terminated) > 0:
        size = len(frontier.terminated)
        agent_moves = ply % 2 == agent_seat
        if agent_moves:
            chunks = _in_chunks(lambda states: act(jax.tree.map(jnp.asarray, states)), frontier, size, batch_size)
            actions = np.concatenate(chunks).astype(np.int32)
            if actions.shape != (size,):
                raise ValueError(f"act must return one action per game, got shape {actions.shape} for {size} games")
            parents = np.arange(size)
        else:
            parents, actions = np.nonzero(optimal_actions(frontier))
            actions = actions.astype(np.int32)
        children = _take(frontier, parents)
        movers = children.current_player
        illegal = ~children.legal_action_mask[np.arange(len(parents)), np.clip(actions, 0, NUM_CELLS - 1)]
        illegal |= (actions < 0) | (actions >= NUM_CELLS)
        if agent_moves:
            counts["illegal"] += int(illegal.sum())
        elif illegal.any():
            raise AssertionError("the perfect player chose an illegal move")
        children = (children, np.clip(actions, 0, NUM_CELLS - 1))
        stepped = _in_chunks(lambda batch: step(*batch), children, len(parents), batch_size)
        stepped = jax.tree.map(lambda *leaves: np.concatenate(leaves), *stepped)
        # pgx zeroes rewards when a finished game is stepped again: read them at the final step.
        reward = stepped.rewards[np.arange(len(parents)), movers]
        reward = np.where(illegal, -1.0, reward)  # out-of-range actions were clipped; still a loss
        done = stepped.terminated | illegal
        agent_reward = reward[done] if agent_moves else -reward[done]
        counts["wins"] += int((agent_reward > 0).sum())
        counts["draws"] += int((agent_reward == 0).sum())
        counts["losses"] += int((agent_reward < 0).sum())
        frontier = _take(stepped, np.flatnonzero(~done))
        ply += 1
    games = counts["wins"] + counts["draws"] + counts["losses"]
    return {
        "win": counts["wins"] / games,
        "draw": counts["draws"] / games,
        "loss": counts["losses"] / games,
        "games": games,
        **counts,
    }
