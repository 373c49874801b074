"""Preference matrices: ``P[i, j]`` is the probability that option ``i`` is preferred to option ``j``.

A preference matrix is square with entries in [0, 1] and ``P + P^T = 1`` (so ``P[i, i] = 1/2``).
It defines the symmetric zero-sum game with payoff ``2P - 1`` (win minus loss probability); a
von Neumann (minimax) winner is a mixed option ``x`` that no option beats: ``P(j > x) <= 1/2`` for
every ``j``, i.e. an optimal strategy of that game.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rl.errors import ConfigError


def check_preference(preferences: Any, atol: float = 1e-6, field: str = "preferences") -> np.ndarray:
    """Validate a preference matrix (or a batch ``[..., n, n]``) and return it as float64; raises
    ``ConfigError`` naming the problem: not square, fewer than two options, non-finite or outside
    [0, 1], or ``P[i, j] + P[j, i] != 1``."""
    p = np.asarray(preferences, dtype=np.float64)
    if p.ndim < 2 or p.shape[-1] != p.shape[-2]:
        raise ConfigError(field, f"a preference matrix must be square (n x n), got shape {p.shape}")
    if p.shape[-1] < 2:
        raise ConfigError(field, f"a preference matrix needs at least 2 options, got {p.shape[-1]}")
    if not np.all(np.isfinite(p)):
        raise ConfigError(field, "a preference matrix must be finite")
    if np.any(p < -atol) or np.any(p > 1 + atol):
        raise ConfigError(field, f"preferences are probabilities in [0, 1], got values in [{p.min():g}, {p.max():g}]")
    gap = np.abs(p + np.swapaxes(p, -1, -2) - 1)
    if np.any(gap > atol):
        idx = np.unravel_index(np.argmax(gap), gap.shape)
        i, j = idx[-2], idx[-1]
        total = p[idx] + p[(*idx[:-2], j, i)]
        raise ConfigError(field, f"inconsistent preference matrix: P[{i},{j}] + P[{j},{i}] = {total:g}, must be 1")
    return p


def preference_from_zero_sum(a: Any) -> tuple[np.ndarray, float]:
    """The preference matrix ``P = (1 + A / scale) / 2`` of a symmetric zero-sum game with row
    payoffs ``A = -A^T``, and ``scale = max(1, max |A|)`` (so a game with payoffs in [-1, 1], such as
    rock-paper-scissors, maps to win 1, tie 1/2, loss 0). ``2P - 1 = A / scale``: metrics computed on
    the preference game times ``scale`` are the game's own."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1] or not np.allclose(a, -a.T):
        raise ConfigError("game", f"not a symmetric zero-sum game (need a square A = -A^T), shape {a.shape}")
    scale = float(max(1.0, np.abs(a).max()))
    return (1 + a / scale) / 2, scale


def von_neumann_winner(preferences: Any) -> np.ndarray:
    """A von Neumann winner of preference matrix ``P``: the ``x`` on the simplex maximising
    ``min_j P(x > j)``, solved exactly as a linear programme (scipy's HiGHS). The value is 1/2; when
    several mixed options attain it, one of them is returned."""
    from scipy.optimize import linprog

    p = check_preference(preferences)
    if p.ndim != 2:
        raise ConfigError("preferences", f"von_neumann_winner takes one matrix, got shape {p.shape}")
    n = p.shape[0]
    # variables (x_1..x_n, v): maximise v subject to sum_i x_i P[i, j] >= v for every j, x on the simplex
    cost = np.zeros(n + 1)
    cost[-1] = -1.0
    a_ub = np.hstack([-p.T, np.ones((n, 1))])
    a_eq = np.hstack([np.ones((1, n)), np.zeros((1, 1))])
    result = linprog(cost, A_ub=a_ub, b_ub=np.zeros(n), A_eq=a_eq, b_eq=[1.0],
                     bounds=[(0, None)] * n + [(None, None)], method="highs")
    if not result.success:  # pragma: no cover - a bounded feasible LP always solves
        raise RuntimeError(f"von_neumann_winner: linprog failed: {result.message}")
    x = np.clip(result.x[:n], 0, None)
    return x / x.sum()
