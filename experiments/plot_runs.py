"""Overlay the curves of several run directories in one plot.

    python -m experiments.plot_runs runs/spo/Pendulum-v1-* --out runs/spo/pendulum.png
    python -m experiments.plot_runs runs/matrix_games/all-* --game rock_paper_scissors --out rps.png

Learner runs (config.json + metrics.jsonl): ``--metric`` against environment steps, mean and 95%
CI over seeds, labelled ``algo (preference)`` for preference runs, otherwise by directory name.
Matrix-game runs (experiments.matrix_games: curves.npz): exploitability (zero-sum) or NashConv of
``--game`` against iterations, average policy and last iterate, one pair per learner; ``--table``
also writes every game's final metric side by side (e.g. the 144 2x2 games for each learner).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import tyro

from experiments.common import cli
from rl import records
from rl.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Args:
    runs: tyro.conf.Positional[tuple[str, ...]]
    """run directories (each with config.json and metrics.jsonl)"""
    out: str = "comparison.png"
    """the plot to write"""
    metric: str = "episode_return"
    """the metrics.jsonl field to plot"""
    title: str = ""
    """plot title (default: the metric or the game)"""
    game: str = "rock_paper_scissors"
    """matrix-game runs: the game whose curves are drawn"""
    table: str | None = None
    """matrix-game runs: also write a markdown table of every game's metric, one column pair per learner"""


def label(run_dir: Path, config: dict) -> str:
    """``algo (preference)`` for preference-learning runs, else the directory's name."""
    algo = config.get("algo")
    if algo is None:
        return run_dir.name
    return algo if algo == "ppo_true_reward" else f"{algo} ({config.get('preference')})"


def plot_matrix_games(args: Args) -> None:
    """Exploitability / NashConv of ``args.game`` against iterations, per learner run."""
    import numpy as np

    plt = records.pyplot()

    fig, ax = plt.subplots(figsize=(7, 4.5))
    metric = "NashConv"
    for run in args.runs:
        curves = np.load(Path(run) / "curves.npz")
        summary = json.loads((Path(run) / "summary.json").read_text())
        if f"{args.game}.iterations" not in curves:
            raise ConfigError("game", f"{run} holds no curves of {args.game!r}")
        metric = summary["games"][args.game]["metric"]
        color = None
        for kind, style in (("average", "-"), ("last", ":")):  # log axes: zeros drawn at 1e-5
            line = ax.plot(curves[f"{args.game}.iterations"], np.maximum(curves[f"{args.game}.{kind}"], 1e-5), style,
                           color=color, label=f"{summary['learner']} ({kind})")
            color = line[0].get_color()
    ax.set(xscale="log", yscale="log", xlabel="iterations", ylabel=metric, title=args.title or args.game)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    plt.close(fig)


def matrix_games_table(runs: tuple[str, ...]) -> str:
    """Markdown: one row per game played in every run, average / last metric per learner."""
    summaries = [json.loads((Path(run) / "summary.json").read_text()) for run in runs]
    games = [g for g in summaries[0]["games"] if all(g in s["games"] for s in summaries)]
    header = "| game | metric | " + " | ".join(f"{s['learner']}: average / last" for s in summaries) + " |"
    lines = [header, "|" + " --- |" * (2 + len(summaries))]
    for game in games:
        entry = summaries[0]["games"][game]
        cells = [f"{s['games'][game][entry['metric']]['average']:.4f} / {s['games'][game][entry['metric']]['last']:.4f}"
                 for s in summaries]
        lines.append(f"| {game} | {entry['metric']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(args: Args) -> None:
    """Read every run's curve and write the overlay."""
    if all((Path(run) / "curves.npz").exists() for run in args.runs):
        plot_matrix_games(args)
        print(f"wrote {args.out}")
        if args.table:
            Path(args.table).write_text(matrix_games_table(args.runs))
            print(f"wrote {args.table}")
        return
    curves = {}
    for run in args.runs:
        run_dir = Path(run)
        if not (run_dir / "metrics.jsonl").exists():
            raise ConfigError("runs", f"{run_dir} has no metrics.jsonl")
        config = json.loads((run_dir / "config.json").read_text())
        rows = records.read_jsonl(run_dir / "metrics.jsonl", 1 << 62)
        if not rows or args.metric not in rows[0]:
            raise ConfigError("metric", f"{run_dir} has no metric {args.metric!r}")
        curves[label(run_dir, config)] = (records.series(rows, "env_steps"), records.series(rows, args.metric))
    records.plot_curves(Path(args.out), curves, args.title or args.metric, args.metric)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    cli(main, Args, __doc__)
