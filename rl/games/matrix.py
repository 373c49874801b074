"""A suite of two-player normal-form games as data, and their exact metrics in closed form.

Every game is ``payoffs[player, row, column]``: ``payoffs[0]`` is the row player's matrix ``A``,
``payoffs[1]`` the column player's ``B`` (each rows x columns, float64). A profile is a pair of
mixed strategies ``(x, y)``; ``x`` over rows, ``y`` over columns.

Games (``GAMES``, by name; ``group(name)`` lists a group):

- ``rock_paper_scissors``; ``biased_rock_paper_scissors`` (rock beating scissors pays 2; Nash
  equilibrium (1/4, 1/2, 1/4)); ``weighted_rock_paper_scissors`` (paper beats rock by 1, rock beats
  scissors by 2, scissors beats paper by 3; equilibrium (1/2, 1/3, 1/6)); ``matching_pennies``;
  ``intransitive_preference``: the weighted RPS plus a fourth option that loses to every other by
  1, as the preference game ``P = 1/2 + A/8`` (P[i, j]: probability that i beats j), played for
  payoff ``2P - 1`` (win minus loss probability); its von Neumann winner is (1/2, 1/3, 1/6, 0).
- The 144 strictly ordinal 2x2 games of the Robinson-Goforth topology (payoffs 1-4, group ``2x2``).
  Of the 4! x 4! = 576 ordinal games, two are the same game when they differ by swapping the two
  rows and/or the two columns (relabelling a player's strategies): 576 / 4 = 144 classes. (Also
  identifying games that differ by exchanging the players gives Rapoport and Guyer's 78; the
  topology, TMGBench and this suite keep both orientations, so it is not applied.) Each class has
  one representative, oriented so that the row player's payoff 4 is in the left column and the
  column player's 4 in the top row. In that orientation every game is ``(A_i, A_j^T)``: the row
  player has the payoffs of symmetric game ``i`` and the column player those of symmetric game
  ``j`` (Bruns 2015, "Names for games", locates games by this pair; the 12 x 12 grid is the
  topology's). Its index is ``12 (i - 1) + j`` (1 to 144, name ``rg_NNN``), in this order of the
  12 symmetric games, written as the order of the row player's payoffs ``R`` (both play strategy
  0, "cooperate"), ``S`` (she plays 0, the other 1), ``T`` (she plays 1, the other 0) and ``P``
  (both play 1) in the representative:

  1 ``prisoners_dilemma`` T>R>P>S, 2 ``chicken`` T>R>S>P, 3 ``stag_hunt`` R>T>P>S, 4 ``deadlock``
  T>P>R>S, 5 ``leader`` T>S>R>P, 6 ``hero`` S>T>R>P (Rapoport 1967; written T>S>P>R in the
  representative, strategies relabelled), 7 ``sym_rpts`` R>P>T>S (a coordination game, "assurance"
  in some texts, "stag hunt" in others), 8 ``sym_rpst`` R>P>S>T (coordination), 9 ``sym_rtsp``,
  10 ``sym_rspt``, 11 ``sym_rstp`` (dominant strategies reaching (4, 4): the "harmony" family),
  12 ``sym_tpsr`` T>P>S>R.

  The 12 symmetric games (``i == j``) carry these names, the others ``rg_NNN``; every game also
  answers to ``rg_NNN``. Bruns names all 12 symmetric games (Harmony, Concord, Peace, Compromise,
  Battle, ...), but which name belongs to which payoff order could not be checked against his
  paper here, so those six keep the keys of their orders.
- Repeated games with memory-one strategies: ``iterated_prisoners_dilemma`` (stage payoffs
  T, R, P, S = 5, 3, 1, 0) and ``iterated_battle_of_the_sexes`` (stage (3, 2) on the row player's
  venue, (2, 3) on the column player's, 0 apart). A pure memory-one strategy is a first move and a
  move after each of the four joint outcomes (own move first): 2^5 = 32 strategies, labelled
  ``first|after 00, 01, 10, 11`` (tit-for-tat is ``C|CDCD``). The game continues after each round
  with probability ``delta`` = 0.9; a pair's payoff is the expected total payoff divided by the
  expected number of rounds, ``(1 - delta) sum_t delta^t u_t`` (so it is on the stage game's
  scale), computed exactly from the four-state Markov chain as ``(1 - delta) e_0 (I - delta M)^-1 u``.

Metrics (numpy or JAX arrays with any leading batch axes; jit and vmap friendly):
``nash_conv`` = the sum over the players of best-response value minus current value;
``exploitability`` = ``nash_conv / 2`` for two-player zero-sum games (OpenSpiel's convention: the
mean over the players of what a best response gains; for a symmetric zero-sum game at ``x = y``,
it is ``max_i (A x)_i``).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from typing import Any

import numpy as np

from rl.errors import ConfigError

SYMMETRIC_2X2: tuple[tuple[str, tuple[int, int, int, int]], ...] = (
    # name, (R, S, T, P) of the representative (row player's 4 in the left column: R or T is 4)
    ("prisoners_dilemma", (3, 1, 4, 2)),
    ("chicken", (3, 2, 4, 1)),
    ("stag_hunt", (4, 1, 3, 2)),
    ("deadlock", (2, 1, 4, 3)),
    ("leader", (2, 3, 4, 1)),
    ("hero", (1, 3, 4, 2)),
    ("sym_rpts", (4, 1, 2, 3)),
    ("sym_rpst", (4, 2, 1, 3)),
    ("sym_rtsp", (4, 2, 3, 1)),
    ("sym_rspt", (4, 3, 1, 2)),
    ("sym_rstp", (4, 3, 2, 1)),
    ("sym_tpsr", (1, 2, 4, 3)),
)

DELTA = 0.9
"""Continuation probability of the repeated games."""


@dataclasses.dataclass(frozen=True, eq=False)
class Game:
    """A two-player normal-form game: ``payoffs[player, row, column]``."""

    name: str
    payoffs: np.ndarray
    description: str
    groups: tuple[str, ...]
    row_actions: tuple[str, ...]
    column_actions: tuple[str, ...]
    index: int | None = None
    """position in the 144-game Robinson-Goforth suite (1-144), else None"""

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns)."""
        return self.payoffs.shape[1], self.payoffs.shape[2]


# ----------------------------------------------------------------------------- metrics


def best_response_values(payoffs: Any, x: Any, y: Any) -> tuple[Any, Any]:
    """Each player's payoff of every pure strategy against the other's mixed strategy:
    ``(A y [.., rows], x B [.., columns])``."""
    row = (payoffs[..., 0, :, :] @ y[..., :, None])[..., 0]
    col = (x[..., None, :] @ payoffs[..., 1, :, :])[..., 0, :]
    return row, col


def nash_conv(payoffs: Any, x: Any, y: Any) -> Any:
    """Sum over the two players of (best-response value - current value) at profile ``(x, y)``;
    0 exactly at Nash equilibria. Works on numpy (float64) and JAX arrays with leading batch axes."""
    row, col = best_response_values(payoffs, x, y)
    return row.max(-1) - (x * row).sum(-1) + col.max(-1) - (col * y).sum(-1)


def exploitability(payoffs: Any, x: Any, y: Any) -> Any:
    """``nash_conv / 2`` (OpenSpiel's convention), meaningful for two-player zero-sum games."""
    return nash_conv(payoffs, x, y) / 2


def is_zero_sum(payoffs: Any, atol: float = 1e-9) -> bool:
    """Whether ``A + B == 0`` everywhere (to ``atol``)."""
    payoffs = np.asarray(payoffs)
    return bool(np.allclose(payoffs[0] + payoffs[1], 0.0, atol=atol))


def is_symmetric_zero_sum(payoffs: Any, atol: float = 1e-9) -> bool:
    """Whether the game is square with ``A = -A^T`` and ``B = -A``: both players face the same game."""
    payoffs = np.asarray(payoffs)
    a = payoffs[0]
    return a.shape[0] == a.shape[1] and is_zero_sum(payoffs, atol) and bool(np.allclose(a, -a.T, atol=atol))


def equilibria_2x2(payoffs: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every Nash equilibrium ``(x, y)`` of a nondegenerate 2x2 game, in closed form: the pure
    profiles where each strategy is a best response, and the completely mixed one where each
    player's mix makes the other indifferent, if both mixes lie strictly inside (0, 1). Sorted.

    Nondegenerate means each pure strategy has a unique best response (every strictly ordinal
    game, matching pennies); a degenerate game can have a continuum of equilibria and raises
    ``ValueError``."""
    a, b = np.asarray(payoffs, dtype=np.float64)
    if a.shape != (2, 2):
        raise ValueError(f"equilibria_2x2 needs a 2x2 game, got {a.shape[0]}x{a.shape[1]}")
    if np.any(a[0] == a[1]) or np.any(b[:, 0] == b[:, 1]):
        raise ValueError("equilibria_2x2: degenerate game (a pure strategy has two best responses)")
    found = []
    for i, j in itertools.product(range(2), range(2)):
        if a[i, j] > a[1 - i, j] and b[i, j] > b[i, 1 - j]:
            found.append((np.eye(2)[i], np.eye(2)[j]))
    den_row = a[0, 0] - a[0, 1] - a[1, 0] + a[1, 1]  # makes the row player indifferent: column's mix q
    den_col = b[0, 0] - b[0, 1] - b[1, 0] + b[1, 1]  # makes the column player indifferent: row's mix p
    if den_row != 0 and den_col != 0:
        q = (a[1, 1] - a[0, 1]) / den_row
        p = (b[1, 1] - b[1, 0]) / den_col
        if 0 < p < 1 and 0 < q < 1:
            found.append((np.array([p, 1 - p]), np.array([q, 1 - q])))
    return sorted(found, key=lambda e: (*e[0], *e[1]))


# ----------------------------------------------------------------------------- the suite


def _symmetric_row_matrix(rstp: tuple[int, int, int, int]) -> np.ndarray:
    r, s, t, p = rstp
    return np.array([[r, s], [t, p]], dtype=np.float64)


def ordinal_2x2_games() -> list[Game]:
    """The 144 strictly ordinal 2x2 games, index 1-144 (see the module docstring)."""
    games = []
    for (i, (row_name, row_rstp)), (j, (col_name, col_rstp)) in itertools.product(
        enumerate(SYMMETRIC_2X2), enumerate(SYMMETRIC_2X2)
    ):
        index = 12 * i + j + 1
        payoffs = np.stack([_symmetric_row_matrix(row_rstp), _symmetric_row_matrix(col_rstp).T])
        symmetric = i == j
        name = row_name if symmetric else f"rg_{index:03d}"
        what = f"symmetric ordinal game {row_name}" if symmetric else (
            f"ordinal game: row player's payoffs of {row_name}, column player's of {col_name}")
        groups = ("2x2", "symmetric_2x2") if symmetric else ("2x2",)
        games.append(Game(name, payoffs, f"{what} (Robinson-Goforth suite #{index})", groups, ("0", "1"),
                          ("0", "1"), index))
    return games


def memory_one_labels(actions: tuple[str, str]) -> tuple[str, ...]:
    """Labels of the 32 pure memory-one strategies, ``first|after 00, 01, 10, 11`` (own move first)."""
    return tuple(f"{actions[bits[0]]}|{''.join(actions[b] for b in bits[1:])}"
                 for bits in itertools.product(range(2), repeat=5))


def memory_one_game(stage: np.ndarray, delta: float = DELTA) -> np.ndarray:
    """Normal form ``[2, 32, 32]`` of the repeated stage game ``stage[player, row, column]`` between
    pure memory-one strategies, with continuation probability ``delta``: the expected total payoff
    divided by the expected number of rounds, from the Markov chain over the four joint outcomes."""
    tables = np.array(list(itertools.product(range(2), repeat=5)))  # [32, 5]: first move, then after 00..11
    first, respond = tables[:, 0], tables[:, 1:]
    states = np.arange(4)
    own, other = states // 2, states % 2  # state s = 2 * row move + column move
    row_next = respond[:, 2 * own + other]  # [32, 4]: the row strategy's move after state s
    col_next = respond[:, 2 * other + own]  # the column strategy sees (its move, row's move)
    next_state = 2 * row_next[:, None, :] + col_next[None, :, :]  # [32, 32, 4]
    transition = np.eye(4)[next_state]  # [32, 32, 4, 4]
    start = 2 * first[:, None] + first[None, :]  # [32, 32]
    rewards = stage.reshape(2, 4).T  # [4 states, 2 players]
    totals = np.linalg.solve(np.eye(4) - delta * transition, np.broadcast_to(rewards, (32, 32, 4, 2)))
    values = (1 - delta) * np.take_along_axis(totals, start[:, :, None, None], axis=2)[:, :, 0, :]
    return np.moveaxis(values, -1, 0)


def _rps(win_paper_rock: float, win_rock_scissors: float, win_scissors_paper: float) -> np.ndarray:
    a, b, c = win_paper_rock, win_rock_scissors, win_scissors_paper
    return np.array([[0, -a, b], [a, 0, -c], [-b, c, 0]], dtype=np.float64)


def _zero_sum(a: np.ndarray) -> np.ndarray:
    return np.stack([a, -a])


def _intransitive_preference() -> np.ndarray:
    a = np.zeros((4, 4))
    a[:3, :3] = _rps(1, 2, 3)
    a[:3, 3], a[3, :3] = 1, -1
    return 0.5 + a / 8


def _build() -> dict[str, Game]:
    rps = ("rock", "paper", "scissors")
    zs = ("zero_sum", "symmetric_zero_sum")
    pref = _intransitive_preference()
    options = ("rock", "paper", "scissors", "decoy")
    games = [
        Game("rock_paper_scissors", _zero_sum(_rps(1, 1, 1)), "rock-paper-scissors, win 1, lose -1", zs, rps, rps),
        Game("biased_rock_paper_scissors", _zero_sum(_rps(1, 2, 1)),
             "RPS where rock beating scissors pays 2; Nash equilibrium (1/4, 1/2, 1/4)", zs, rps, rps),
        Game("weighted_rock_paper_scissors", _zero_sum(_rps(1, 2, 3)),
             "RPS with wins paper>rock 1, rock>scissors 2, scissors>paper 3; equilibrium (1/2, 1/3, 1/6)", zs, rps, rps),
        Game("matching_pennies", _zero_sum(np.array([[1.0, -1.0], [-1.0, 1.0]])),
             "matching pennies: the row player wins 1 on a match; equilibrium (1/2, 1/2)", ("zero_sum",),
             ("heads", "tails"), ("heads", "tails")),
        Game("intransitive_preference", _zero_sum(2 * pref - 1),
             "preference game P = 1/2 + A/8 (weighted RPS plus a decoy losing to all), payoff 2P - 1; "
             "von Neumann winner (1/2, 1/3, 1/6, 0)", (*zs, "preference"), options, options),
    ]
    games += ordinal_2x2_games()
    pd_stage = np.array([[[3, 0], [5, 1]], [[3, 5], [0, 1]]], dtype=np.float64)
    bos_stage = np.array([[[3, 0], [0, 2]], [[2, 0], [0, 3]]], dtype=np.float64)
    for name, stage, actions, what in (
        ("iterated_prisoners_dilemma", pd_stage, ("C", "D"), "prisoner's dilemma T,R,P,S = 5,3,1,0"),
        ("iterated_battle_of_the_sexes", bos_stage, ("X", "Y"), "battle of the sexes (3,2) / (2,3) / 0"),
    ):
        labels = memory_one_labels(actions)
        games.append(Game(name, memory_one_game(stage), f"repeated {what}, continuation probability {DELTA}, "
                          "pure memory-one strategies, payoff per expected round", ("repeated",), labels, labels))
    return {g.name: g for g in games}


GAMES: dict[str, Game] = _build()
"""Every game of the suite by name."""

_ALIASES: dict[str, str] = {f"rg_{g.index:03d}": g.name for g in GAMES.values() if g.index is not None}


@functools.cache
def groups() -> dict[str, tuple[str, ...]]:
    """Group name -> game names: ``all``, ``2x2`` (the 144 ordinal games), ``symmetric_2x2``,
    ``zero_sum``, ``symmetric_zero_sum``, ``preference``, ``repeated``."""
    out: dict[str, list[str]] = {"all": list(GAMES)}
    for game in GAMES.values():
        for g in game.groups:
            out.setdefault(g, []).append(game.name)
    return {k: tuple(v) for k, v in out.items()}


def group(name: str) -> list[Game]:
    """The games of group ``name``; raises ``ConfigError`` naming the known groups."""
    if name not in groups():
        raise ConfigError("game", f"unknown group {name!r}; groups: {', '.join(groups())}")
    return [GAMES[n] for n in groups()[name]]


def get_game(name: str) -> Game:
    """A game by name (or ``rg_NNN`` index); raises ``ConfigError`` for an unknown one."""
    name = _ALIASES.get(name, name)
    if name not in GAMES:
        named = [n for n in GAMES if not n.startswith("rg_")]
        raise ConfigError("game", f"unknown game {name!r}; games: {', '.join(named)}, rg_001..rg_144, "
                          f"or a group: {', '.join(groups())}")
    return GAMES[name]


def resolve(name: str) -> list[Game]:
    """A group's games, or the single game of that name."""
    return group(name) if name in groups() else [get_game(name)]
