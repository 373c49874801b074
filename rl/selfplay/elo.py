"""Elo ratings: a maximum-likelihood Bradley-Terry fit of all pairwise results.

Model: player ``i`` beats player ``j`` with probability ``1 / (1 + 10 ** ((r_j - r_i) / 400))``. A
draw counts as half a win for each side (the usual Elo expected-score convention), so the fit only
needs the matrix ``W[i, j]`` of (possibly fractional) wins of ``i`` over ``j``. The log-likelihood
``sum_ij W[i, j] * log p_ij`` is concave in the ratings; we add a Gaussian prior of standard
deviation ``prior_sd`` Elo on every rating (an L2 penalty, centred on the players' mean), which
keeps the fit finite when a player wins or loses every game and changes well-determined ratings by
far less than their sampling error. With the default 1000 Elo, a player that beat its one opponent
in all of 10, 100 or 1000 games is rated about 850, 1200 or 1550 Elo above it: read such ratings as
"much stronger", not as a measured gap. Ratings are then shifted so the anchor player is 0. Pure numpy/scipy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
from scipy.special import expit, log_expit

ELO_PER_NAT = 400.0 / np.log(10.0)  # rating points per unit of logit (natural log odds)

Result = tuple[int | str, int | str, float, float, float]


def win_matrix(names: Sequence[str], results: np.ndarray | Iterable[Result]) -> np.ndarray:
    """The ``[n, n]`` matrix of wins of row over column, draws counted as half a win for each side.

    Args:
        names: the players.
        results: either a 2-D numpy array that already is such a matrix (returned as float), or an
            iterable of records ``(i, j, wins_i, draws, wins_j)`` where ``i`` and ``j`` are indices
            into ``names`` or names; records of the same pair add up.
    """
    n = len(names)
    if isinstance(results, np.ndarray) and results.ndim == 2:
        if results.shape != (n, n):
            raise ValueError(f"a win matrix for {n} players must be {n}x{n}, got {results.shape}")
        wins = results.astype(float)
    else:
        index = {name: k for k, name in enumerate(names)}
        wins = np.zeros((n, n))
        for record in results:
            if len(record) != 5:
                raise ValueError(f"a result is (i, j, wins_i, draws, wins_j), got {record!r}")
            i, j, wins_i, draws, wins_j = record
            i, j = (index[p] if isinstance(p, str) else int(p) for p in (i, j))
            if i == j:
                raise ValueError(f"a player cannot play itself: {record!r}")
            wins[i, j] += wins_i + 0.5 * draws
            wins[j, i] += wins_j + 0.5 * draws
    if (wins < 0).any() or not np.isfinite(wins).all():
        raise ValueError("win counts must be finite and non-negative")
    return wins


def _newton(
    objective: Callable[[np.ndarray], tuple[float, np.ndarray]],
    hessian: Callable[[np.ndarray], np.ndarray],
    theta: np.ndarray,
    max_iter: int = 100,
) -> np.ndarray:
    """Minimise a smooth, strictly convex function by Newton's method with backtracking, to
    float64 round-off (the Newton decrement below 1e-13 of the objective's magnitude)."""
    value, grad = objective(theta)
    for _ in range(max_iter):
        step = np.linalg.solve(hessian(theta), grad)
        decrement = grad @ step  # twice the decrease a full Newton step predicts
        if decrement <= 1e-13 * (1.0 + abs(value)):
            return theta
        t = 1.0
        new_value, new_grad = objective(theta - step)
        while new_value > value - 0.25 * t * decrement and t > 1e-8:
            t *= 0.5
            new_value, new_grad = objective(theta - t * step)
        theta, value, grad = theta - t * step, new_value, new_grad
    raise RuntimeError("Elo fit did not converge")


def fit_elo(
    names: Sequence[str],
    results: np.ndarray | Iterable[Result],
    anchor: str | None = "random",
    prior_sd: float = 1000.0,
) -> dict[str, float]:
    """Maximum-likelihood (with a weak Gaussian prior) Bradley-Terry ratings on the Elo scale.

    Args:
        names: the players, in the order indices in ``results`` refer to.
        results: a win matrix or records ``(i, j, wins_i, draws, wins_j)``; see ``win_matrix``.
        anchor: the player rated 0 (``None``: ratings average 0).
        prior_sd: standard deviation, in Elo, of the Gaussian prior on each rating (see the module
            docstring); it makes the fit finite for unbeaten or winless players. A player with no
            games is rated at the players' mean.

    Returns:
        ``{name: rating}`` in Elo points (400 * log10 odds), ``ratings[anchor] == 0``.
    """
    names = list(names)
    if len(set(names)) != len(names):
        raise ValueError(f"player names must be unique, got {names}")
    if anchor is not None and anchor not in names:
        raise ValueError(f"anchor player {anchor!r} is not among the players {names}")
    if prior_sd <= 0:
        raise ValueError(f"prior_sd must be positive, got {prior_sd}")
    wins = win_matrix(names, results)
    games = wins + wins.T
    precision = (ELO_PER_NAT / prior_sd) ** 2  # prior precision on ratings in logit units

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        diff = theta[:, None] - theta[None, :]
        nll = -(wins * log_expit(diff)).sum() + 0.5 * precision * (theta @ theta)
        # d/dtheta_i: expected minus observed wins of i, over all its games.
        grad = (games * expit(diff)).sum(1) - wins.sum(1) + precision * theta
        return nll, grad

    def hessian(theta: np.ndarray) -> np.ndarray:
        diff = theta[:, None] - theta[None, :]
        weight = games * expit(diff) * expit(-diff)
        return np.diag(weight.sum(1) + precision) - weight

    theta = _newton(objective, hessian, np.zeros(len(names)))
    ratings = theta * ELO_PER_NAT
    ratings -= ratings[names.index(anchor)] if anchor is not None else ratings.mean()
    return {name: float(r) for name, r in zip(names, ratings, strict=True)}


def expected_score(rating_i: float, rating_j: float) -> float:
    """Expected score (win 1, draw 0.5) of a player rated ``rating_i`` against one rated ``rating_j``."""
    return float(1.0 / (1.0 + 10.0 ** ((rating_j - rating_i) / 400.0)))


def format_elo_table(ratings: dict[str, float], games: dict[str, float] | None = None) -> str:
    """A plain-text table of the ratings, strongest first (optionally with each player's game count)."""
    rows = sorted(ratings.items(), key=lambda item: -item[1])
    width = max([len("player"), *(len(name) for name in ratings)])
    header = f"{'rank':>4}  {'player':<{width}}  {'elo':>7}" + ("  games" if games is not None else "")
    lines = [header, "-" * len(header)]
    for rank, (name, rating) in enumerate(rows, 1):
        line = f"{rank:>4}  {name:<{width}}  {rating:>7.0f}"
        if games is not None:
            line += f"  {games.get(name, 0):>5g}"
        lines.append(line)
    return "\n".join(lines)
