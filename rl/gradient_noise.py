"""How much of a minibatch gradient is signal: estimates from independent minibatch gradients at
fixed parameters (the "gradient noise scale" of McCandlish et al., 2018, in its simple form).

With ``g_1 ... g_n`` the gradients of ``n`` independent minibatches of ``B`` samples each, true
gradient ``G`` and per-minibatch covariance ``Sigma_B``: ``E g_i . g_j = |G|^2`` for ``i != j`` and
``E |g_i|^2 = |G|^2 + tr Sigma_B``, so from the running sums ``S = sum g_i`` and ``Q = sum |g_i|^2``

- ``tr Sigma_B = (Q - |S|^2 / n) / (n - 1)`` (the sample covariance's trace),
- ``|G|^2 = (|S|^2 - Q) / (n (n - 1))`` (unbiased; can come out negative when ``G`` is small),
- ``snr = |G|^2 / tr Sigma_B``: signal over noise of one minibatch's gradient,
- ``noise_scale = B tr Sigma_B / |G|^2``: the batch size, in samples, at which noise and signal
  are equal (below it, a step's direction is mostly noise).

Gradient noise is often concentrated in a few directions, and then ``|G|^2`` needs many more
minibatches than its size suggests: the minibatches are dealt into ``groups`` in turn, and
``grad_norm_sq_se`` and ``cosine_se`` are jackknife standard errors over those groups (leaving
one group out at a time). Sums are float64; memory is ``groups + 2`` parameter vectors.
"""

from __future__ import annotations

import dataclasses

import numpy as np


def _signal(total: np.ndarray, sum_sq_norms: float, n: int) -> float:
    return (float(total @ total) - sum_sq_norms) / (n * (n - 1))


def _jackknife_se(left_out: list[float]) -> float:
    """The jackknife standard error from the leave-one-group-out estimates."""
    k = len(left_out)
    return float(np.sqrt(k - 1) * np.std(left_out)) if k > 1 else float("nan")


@dataclasses.dataclass
class GradientNoise:
    """Running sums over independent minibatch gradients (flat vectors) of ``batch_size`` samples."""

    batch_size: int
    groups: int = 8
    group_totals: np.ndarray | None = None
    group_sq_norms: np.ndarray | None = None
    group_counts: np.ndarray | None = None
    unit_total: np.ndarray | None = None
    nonzero: int = 0

    def add(self, grad: np.ndarray) -> None:
        """Add one minibatch's gradient (any shape; flattened)."""
        grad = np.asarray(grad, np.float64).reshape(-1)
        if self.group_totals is None:
            self.group_totals = np.zeros((self.groups, grad.size))
            self.group_sq_norms, self.group_counts = np.zeros(self.groups), np.zeros(self.groups, np.int64)
            self.unit_total = np.zeros_like(grad)
        group = int(self.group_counts.sum()) % self.groups
        norm_sq = float(grad @ grad)
        self.group_totals[group] += grad
        self.group_sq_norms[group] += norm_sq
        self.group_counts[group] += 1
        if norm_sq > 0:  # a zero gradient (no reward difference anywhere) has no direction
            self.unit_total += grad / np.sqrt(norm_sq)
            self.nonzero += 1

    @property
    def count(self) -> int:
        return 0 if self.group_counts is None else int(self.group_counts.sum())

    def _without(self, group: int) -> tuple[np.ndarray, float, int]:
        keep = np.arange(self.groups) != group
        return (self.group_totals[keep].sum(axis=0), float(self.group_sq_norms[keep].sum()),
                int(self.group_counts[keep].sum()))

    def summary(self) -> dict[str, float]:
        """``grad_norm_sq`` (|G|^2) and its standard error ``grad_norm_sq_se``, ``batch_noise``
        (tr Sigma_B), ``snr``, ``noise_scale`` (samples), ``mean_cosine`` (between two minibatches'
        nonzero gradients) and ``batches``; nan where undefined (no noise, fewer than two nonzero
        gradients)."""
        n = self.count
        if n < 2:
            raise ValueError("the noise estimates need at least 2 minibatch gradients")
        total, sum_sq = self.group_totals.sum(axis=0), float(self.group_sq_norms.sum())
        batch_noise = (sum_sq - float(total @ total) / n) / (n - 1)
        signal = _signal(total, sum_sq, n)
        left_out = [_signal(*self._without(k)) for k in range(self.groups) if n - self.group_counts[k] >= 2]
        unit_sq, m = float(self.unit_total @ self.unit_total), self.nonzero
        nan = float("nan")
        return {
            "grad_norm_sq": signal,
            "grad_norm_sq_se": _jackknife_se(left_out),
            "batch_noise": batch_noise,
            "snr": signal / batch_noise if batch_noise > 0 else nan,
            "noise_scale": self.batch_size * batch_noise / signal if signal > 0 else float("inf"),
            "mean_cosine": (unit_sq - m) / (m * (m - 1)) if m >= 2 else nan,
            "batches": n,
        }


def _cosine(total_a: np.ndarray, sq_a: float, n_a: int, total_b: np.ndarray, sq_b: float, n_b: int) -> float:
    signal_a, signal_b = _signal(total_a, sq_a, n_a), _signal(total_b, sq_b, n_b)
    if signal_a <= 0 or signal_b <= 0:
        return float("nan")
    return float((total_a / n_a) @ (total_b / n_b)) / np.sqrt(signal_a * signal_b)


def mean_gradient_cosine(a: GradientNoise, b: GradientNoise) -> tuple[float, float]:
    """The cosine between two estimators' true gradients ``G_a`` and ``G_b`` (from independent
    minibatches: ``mean_a . mean_b`` is unbiased for ``G_a . G_b``), and its jackknife standard
    error (group ``k`` of both left out together); nan unless both ``|G|^2`` estimates are positive."""
    full = _cosine(a.group_totals.sum(axis=0), float(a.group_sq_norms.sum()), a.count,
                   b.group_totals.sum(axis=0), float(b.group_sq_norms.sum()), b.count)
    if a.groups != b.groups or np.isnan(full):
        return full, float("nan")
    left_out = [_cosine(*a._without(k), *b._without(k)) for k in range(a.groups)]
    return full, _jackknife_se(left_out)
