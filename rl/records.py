"""Run-directory files: config.json, metrics.jsonl, summary.json and the plots."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON (atomically: a partial file never replaces a good one)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n")
    tmp.replace(path)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def metric_records(metrics: dict[str, np.ndarray], first_update: int, steps_per_update: int) -> list[dict[str, Any]]:
    """One record per update from chunk metrics shaped ``[runs, updates]``: each metric as a list
    over runs, plus ``update`` and ``env_steps`` (per run). Missing values (NaN: no episode has
    ended yet, or the run failed earlier) are written as ``null``."""
    num_updates = next(iter(metrics.values())).shape[1]
    records = []
    for i in range(num_updates):
        update = first_update + i
        record: dict[str, Any] = {"update": update + 1, "env_steps": (update + 1) * steps_per_update}
        record.update({name: [_finite_or_none(v) for v in values[:, i]] for name, values in metrics.items()})
        records.append(record)
    return records


def _finite_or_none(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def append_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> None:
    """Append records, one JSON object per line."""
    with path.open("a") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")


def read_jsonl(path: Path, up_to_update: int) -> list[dict[str, Any]]:
    """Records with ``update <= up_to_update`` (the part a checkpoint covers). Lines that do not
    parse (a run killed while appending leaves a torn last line) are dropped."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("update", up_to_update + 1) <= up_to_update:
            records.append(record)
    return records


def write_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> None:
    """Replace the file with exactly ``records``."""
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def final_window(num_updates: int) -> int:
    """How many final updates the ``final_*`` figures average over: the last 5% (at least 1)."""
    return max(1, math.ceil(0.05 * num_updates))


def series(records: Sequence[dict[str, Any]], name: str) -> np.ndarray:
    """Metric ``name`` as an array ``[updates, runs]`` (missing values are NaN)."""
    return np.array([r[name] for r in records], dtype=np.float64)


def mean_ci95(values: np.ndarray, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """Mean and half-width of the 95% Student-t confidence interval along ``axis``."""
    from scipy import stats

    n = values.shape[axis]
    mean = values.mean(axis=axis)
    if n < 2:
        return mean, np.zeros_like(mean)
    sem = values.std(axis=axis, ddof=1) / math.sqrt(n)
    return mean, sem * stats.t.ppf(0.975, n - 1)


def final_values(records: Sequence[dict[str, Any]], name: str = "episode_return") -> np.ndarray:
    """Per run, the mean of metric ``name`` over the last 5% of updates, ignoring missing values
    (NaN for a run with none)."""
    values = series(records, name)
    window = values[-final_window(len(values)):]
    with np.errstate(invalid="ignore"):
        return np.nansum(window, axis=0) / np.where(np.isnan(window), 0, 1).sum(axis=0)


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(path: Path, curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str, ylabel: str = "episode return") -> None:
    """Learning curves, one per label: ``label -> (env_steps [U], values [U, runs])``, drawn as
    the mean over runs with a shaded 95% confidence interval."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, (steps, values) in curves.items():
        mean, half = mean_ci95(values, axis=1)
        ax.plot(steps, mean, label=f"{label} (n={values.shape[1]})")
        ax.fill_between(steps, mean - half, mean + half, alpha=0.25)
    ax.set_xlabel("environment steps per run")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
