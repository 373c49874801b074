"""Self-play learners on the matrix-game suite, with exact exploitability / NashConv.

    python -m experiments.matrix_games --game GAME|all --learner fictitious|hedge|ppo|sppo --iterations N --out DIR

``--game`` takes a game name (``rock_paper_scissors``, ``prisoners_dilemma``, ``rg_017``, ...) or a
group (``all``, ``2x2``, ``symmetric_2x2``, ``zero_sum``, ``symmetric_zero_sum``, ``preference``,
``repeated``); ``--preferences "0.5,0.7;0.3,0.5"`` runs a preference matrix instead (P[i, j]: the
probability that option i beats option j). Games of the same shape run as one vmapped batch. SPPO
plays symmetric zero-sum games (preference matrices ``P = (1 + A/scale) / 2``); the other games are
listed under ``skipped`` with the reason.

Writes to --out: summary.json (per game under ``games``: ``payoffs`` [row_player, column_player],
``average_policy`` and ``last_policy`` [row_strategy, column_strategy], and ``exploitability``
(zero-sum games, NashConv / 2) or ``nash_conv``, each ``{"average": .., "last": ..}``), table.md,
curves.png (the metric against iterations), curves.npz and, with the 2x2 suite, suite_2x2.png.
"""

from __future__ import annotations

import dataclasses
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from experiments.common import cli, format_table, markdown_table
from rl import records
from rl.errors import ConfigError
from rl.games import learners
from rl.games.matrix import SYMMETRIC_2X2, Game, is_symmetric_zero_sum, is_zero_sum, nash_conv, resolve
from rl.games.ppo_selfplay import ppo_self_play
from rl.games.preference import check_preference, preference_from_zero_sum, von_neumann_winner


@dataclasses.dataclass(frozen=True)
class Args:
    game: str = "rock_paper_scissors"
    """a game name, rg_NNN (the 144 ordinal 2x2 games) or a group: all, 2x2, symmetric_2x2, zero_sum, symmetric_zero_sum, preference, repeated"""
    learner: str = "fictitious"
    """fictitious, hedge, ppo or sppo"""
    iterations: int = 10_000
    """learner updates"""
    out: str | None = None
    """output directory (default runs/matrix_games/<time>)"""
    seed: int = 0
    """random seed (SPPO's samples, random initial policies)"""
    init: str = "uniform"
    """initial policies: uniform, or random (Dirichlet(1) per game and player)"""
    num_records: int = 200
    """log-spaced iterations at which the curves are recorded"""
    preferences: str | None = None
    """run this preference matrix instead of --game: rows separated by ';', entries by ','"""
    step_size: float = learners.DEFAULT_HEDGE_STEP
    """Hedge: eta times the game's payoff range (each game's eta is step_size / (max - min payoff))"""
    eta: float = learners.DEFAULT_SPPO_ETA
    """SPPO: eta of the update exp(eta P(y > pi))"""
    sppo_variant: str = "sampled"
    """SPPO: sampled (the learner: K samples, square loss, SGD) or exact (the ideal update)"""
    num_samples: int = 64
    """SPPO sampled: samples K per iteration"""
    inner_steps: int = 10
    """SPPO sampled: SGD steps on the loss per iteration"""
    sppo_lr: float = 1.0
    """SPPO sampled: SGD learning rate"""
    ppo_lr: float = 1e-3
    """PPO: Adam learning rate (annealed to 0), on payoffs divided by the game's payoff range"""
    ppo_ent_coef: float = 0.1
    """PPO: entropy bonus"""
    opponent_pool: int = 0
    """PPO: past snapshots kept as opponents besides the latest policy (fictitious self-play)"""
    pool_interval: int = 10
    """PPO: updates between snapshots"""
    latest_opponent_prob: float = 0.5
    """PPO: probability that the opponent is the latest policy when the pool is not empty"""


LearnerFn = Callable[[np.ndarray, Args, jax.Array], learners.SelfPlayResult]


def game_keys(seed: int, names: list[str]) -> jax.Array:
    """One PRNG key per game ``[G, 2]``, from the seed and the game's name: a game's run does not
    depend on which other games share its batch."""
    base = jax.random.PRNGKey(seed)
    return jnp.stack([jax.random.fold_in(base, zlib.crc32(n.encode())) for n in names])


def initial_policies(args: Args, keys: jax.Array, rows: int, cols: int) -> tuple[Any, Any] | None:
    """The initial policies of a batch (None: the learner's uniform default)."""
    if args.init == "uniform":
        return None
    draw = jax.vmap(lambda k: (jax.random.dirichlet(jax.random.fold_in(k, 1), jnp.ones(rows)),
                               jax.random.dirichlet(jax.random.fold_in(k, 2), jnp.ones(cols))))
    return draw(keys)


def _fictitious(payoffs: np.ndarray, args: Args, keys: jax.Array) -> learners.SelfPlayResult:
    return learners.fictitious_play(payoffs, args.iterations, args.num_records,
                                    initial_policies(args, keys, *payoffs.shape[2:]))


def _hedge(payoffs: np.ndarray, args: Args, keys: jax.Array) -> learners.SelfPlayResult:
    return learners.hedge(payoffs, args.iterations, args.step_size, args.num_records,
                          initial_policies(args, keys, *payoffs.shape[2:]))


def _sppo(payoffs: np.ndarray, args: Args, keys: jax.Array) -> learners.SelfPlayResult:
    """SPPO on symmetric zero-sum games: one policy for both seats, curves rescaled to the game's payoffs."""
    prefs, scales = zip(*(preference_from_zero_sum(a) for a in payoffs[:, 0]), strict=True)
    init = initial_policies(args, keys, *payoffs.shape[2:])
    init = None if init is None else init[0]
    if args.sppo_variant == "exact":
        result = learners.sppo_exact(np.stack(prefs), args.iterations, args.eta, args.num_records, init)
    else:
        result = learners.sppo_sampled(np.stack(prefs), args.iterations, keys, args.eta, args.num_samples,
                                       args.inner_steps, args.sppo_lr, args.num_records, init)
    scale = np.asarray(scales)[:, None]
    return result._replace(nash_conv_average=np.asarray(result.nash_conv_average) * scale,
                           nash_conv_last=np.asarray(result.nash_conv_last) * scale)


def _ppo(payoffs: np.ndarray, args: Args, keys: jax.Array) -> learners.SelfPlayResult:
    """PPO self-play through the core learner: one run per game, all games of a shape in one vmap."""
    return ppo_self_play(payoffs, args.iterations, keys, args.num_records, lr=args.ppo_lr,
                         ent_coef=args.ppo_ent_coef, opponent_pool=args.opponent_pool,
                         pool_interval=args.pool_interval, latest_opponent_prob=args.latest_opponent_prob)


LEARNERS: dict[str, LearnerFn] = {"fictitious": _fictitious, "hedge": _hedge, "ppo": _ppo, "sppo": _sppo}
"""Learner name -> function(payoffs [G, 2, m, n], args, keys [G, 2]) -> SelfPlayResult over the batch."""

SKIP_REASONS: dict[str, Callable[[Game], str | None]] = {
    "ppo": lambda g: None if g.payoffs.shape[-1] == g.payoffs.shape[-2] else
    "PPO self-play shares one policy between the seats, so both need the same number of actions",
    "sppo": lambda g: None if is_symmetric_zero_sum(g.payoffs) else
    "SPPO plays symmetric zero-sum (preference) games; this game is not one (A != -A^T or B != -A)",
}
"""Learner name -> why it cannot play a game (None: it can)."""


def parse_preferences(text: str) -> Game:
    """The game of a preference matrix written ``"p00,p01;p10,p11"``; ``ConfigError`` if malformed."""
    try:
        rows = [[float(v) for v in row.split(",")] for row in text.strip().strip(";").split(";")]
    except ValueError:
        raise ConfigError("preferences", f"expected numbers as 'p00,p01;p10,p11', got {text!r}") from None
    if len({len(r) for r in rows}) != 1:
        raise ConfigError("preferences", f"rows have different lengths {[len(r) for r in rows]}: "
                          "a preference matrix must be square (n x n)")
    p = check_preference(np.array(rows))
    options = tuple(str(i) for i in range(len(p)))
    return Game("custom_preference", np.stack([2 * p - 1, 1 - 2 * p]), "preference matrix from --preferences",
                ("zero_sum", "symmetric_zero_sum", "preference"), options, options)


def validate(args: Args) -> None:
    """Raise ``ConfigError`` for bad options (before anything runs or is written)."""
    if args.learner not in LEARNERS:
        raise ConfigError("learner", f"unknown learner {args.learner!r}; choose from {', '.join(LEARNERS)}")
    if args.iterations < 1 or args.num_records < 1:
        raise ConfigError("iterations", f"iterations and num_records must be >= 1, got {args.iterations}, {args.num_records}")
    if args.init not in ("uniform", "random"):
        raise ConfigError("init", f"must be uniform or random, got {args.init!r}")
    if args.sppo_variant not in ("sampled", "exact"):
        raise ConfigError("sppo_variant", f"must be sampled or exact, got {args.sppo_variant!r}")
    if args.learner == "sppo" and args.sppo_variant == "sampled" and args.num_samples < 2:
        raise ConfigError("num_samples", f"SPPO needs at least 2 samples per iteration, got {args.num_samples}")
    for name in ("step_size", "eta", "sppo_lr"):
        if not getattr(args, name) > 0:
            raise ConfigError(name, f"must be > 0, got {getattr(args, name)}")
    if args.out is not None and (Path(args.out) / "summary.json").exists():
        raise ConfigError("out", f"{args.out} already holds a run (summary.json); choose a new --out")


def game_entry(game: Game, result: learners.SelfPlayResult, i: int) -> dict[str, Any]:
    """summary.json's record of one game: exact metrics (float64) of the final policies."""
    pols = {k: [np.asarray(getattr(result, f"{k}_row")[i], np.float64), np.asarray(getattr(result, f"{k}_col")[i], np.float64)]
            for k in ("average", "last")}
    pols = {k: [p / p.sum() for p in v] for k, v in pols.items()}
    zero_sum = is_zero_sum(game.payoffs)
    metric = "exploitability" if zero_sum else "nash_conv"
    values = {k: float(nash_conv(game.payoffs, *pols[k]) / (2 if zero_sum else 1)) for k in pols}
    entry = {"description": game.description, "shape": list(game.shape), "zero_sum": zero_sum, "metric": metric,
             "payoffs": game.payoffs.tolist(), "average_policy": [p.tolist() for p in pols["average"]],
             "last_policy": [p.tolist() for p in pols["last"]], metric: values}
    if game.index is not None:
        entry["index"] = game.index
    if is_symmetric_zero_sum(game.payoffs):
        winner = von_neumann_winner(preference_from_zero_sum(game.payoffs[0])[0])
        entry["von_neumann_winner"] = winner.tolist()
        entry["l1_to_winner"] = {k: float(np.abs(pols[k][0] - winner).sum()) for k in pols}
    return entry


def main(args: Args) -> dict[str, Any]:
    """Run the learner on the chosen games and write the run directory; returns the summary."""
    start = time.perf_counter()
    validate(args)
    games = [parse_preferences(args.preferences)] if args.preferences is not None else resolve(args.game)
    skip = SKIP_REASONS.get(args.learner, lambda g: None)
    skipped = {g.name: reason for g in games if (reason := skip(g)) is not None}
    playing = [g for g in games if g.name not in skipped]
    if not playing:
        raise ConfigError("game", f"{args.learner} can play none of the chosen games: {next(iter(skipped.values()))}")
    entries: dict[str, Any] = {}
    curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for shape in sorted({g.shape for g in playing}):
        batch = [g for g in playing if g.shape == shape]
        keys = game_keys(args.seed, [g.name for g in batch])
        result = LEARNERS[args.learner](np.stack([g.payoffs for g in batch]), args, keys)
        for i, game in enumerate(batch):
            entries[game.name] = game_entry(game, result, i)
            div = 2.0 if entries[game.name]["zero_sum"] else 1.0
            curves[game.name] = (result.iterations, np.asarray(result.nash_conv_average[i]) / div,
                                 np.asarray(result.nash_conv_last[i]) / div)
    summary = {"learner": args.learner, "game": args.game if args.preferences is None else "custom_preference",
               "settings": dataclasses.asdict(args), "games": entries, "skipped": skipped}
    suite = {n: e for n, e in entries.items() if "index" in e}
    if suite:
        summary["suite_2x2"] = {f"nash_conv_{k}": _stats([e["nash_conv"][k] for e in suite.values()])
                                for k in ("average", "last")} | {"games": len(suite)}
    summary["wall_seconds"] = time.perf_counter() - start
    out = Path(args.out or f"runs/matrix_games/{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    table = write_outputs(out, summary, curves)
    print(table)
    print(f"{args.learner} on {len(entries)} game(s) ({len(skipped)} skipped), {args.iterations} iterations, "
          f"{summary['wall_seconds']:.1f} s; run directory: {out}")
    return summary


def _stats(values: list[float]) -> dict[str, float]:
    v = np.asarray(values)
    return {"mean": float(v.mean()), "median": float(np.median(v)), "max": float(v.max())}


def table_rows(summary: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows of the 2x2-suite table (NashConv per game) and of the other games."""
    names = [name for name, _ in SYMMETRIC_2X2]
    suite, other = [], []
    for name, e in summary["games"].items():
        vals = e[e["metric"]]
        if "index" in e:
            i, j = divmod(e["index"] - 1, 12)
            suite.append({"index": e["index"], "game": name, "row_payoffs_of": names[i], "column_payoffs_of": names[j],
                          "nash_conv_average": vals["average"], "nash_conv_last": vals["last"]})
        else:
            other.append({"game": name, "shape": "x".join(map(str, e["shape"])), "metric": e["metric"],
                          "average": vals["average"], "last": vals["last"]})
    return sorted(suite, key=lambda r: r["index"]), other


def write_outputs(out: Path, summary: dict[str, Any], curves: dict[str, Any]) -> str:
    """summary.json, table.md, curves.npz, curves.png (and suite_2x2.png); returns the printed table."""
    records.write_json(out / "summary.json", summary)
    suite, other = table_rows(summary)
    suite_cols = ["index", "game", "row_payoffs_of", "column_payoffs_of", "nash_conv_average", "nash_conv_last"]
    other_cols = ["game", "shape", "metric", "average", "last"]
    parts, md = [], [f"# {summary['learner']} on {summary['game']}, {summary['settings']['iterations']} iterations\n"]
    for rows, cols, title in ((suite, suite_cols, "Robinson-Goforth 2x2 suite: NashConv"), (other, other_cols, "games")):
        if rows:
            parts.append(f"{title}\n{format_table(rows, cols)}")
            md += [f"## {title}\n", markdown_table(rows, cols, _cell), ""]
    if "suite_2x2" in summary:
        s = summary["suite_2x2"]
        line = (f"2x2 suite ({s['games']} games) NashConv of the average policy: mean {s['nash_conv_average']['mean']:.4g}, "
                f"max {s['nash_conv_average']['max']:.4g}; last iterate: mean {s['nash_conv_last']['mean']:.4g}, "
                f"max {s['nash_conv_last']['max']:.4g}")
        parts.append(line)
        md.append(line + "\n")
    if summary["skipped"]:
        md += ["## skipped\n"] + [f"- {n}: {r}" for n, r in summary["skipped"].items()] + [""]
        parts.append(f"skipped {len(summary['skipped'])} game(s): {next(iter(summary['skipped'].values()))}")
    (out / "table.md").write_text("\n".join(md) + "\n")
    np.savez(out / "curves.npz", **{f"{n}.{k}": v for n, (it, a, la) in curves.items()
                                     for k, v in (("iterations", it), ("average", a), ("last", la))})
    plot_curves(out / "curves.png", summary, curves)
    if len(suite) == 144:
        plot_suite(out / "suite_2x2.png", summary, suite)
    return "\n\n".join(parts)


def _cell(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def plot_curves(path: Path, summary: dict[str, Any], curves: dict[str, Any]) -> None:
    """Exploitability (zero-sum) or NashConv against iterations, average (solid) and last iterate
    (dashed); the 2x2 suite as its mean and max over games."""
    plt = records.pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    suite = [n for n, e in summary["games"].items() if "index" in e]
    lines = {n: c for n, c in curves.items() if n not in suite}
    if suite:
        it = curves[suite[0]][0]
        for k, stat in (("mean", np.mean), ("max", np.max)):
            lines[f"2x2 suite ({len(suite)}) {k} NashConv"] = (
                it, stat([curves[n][1] for n in suite], 0), stat([curves[n][2] for n in suite], 0))
    for n, (it, avg, last) in list(lines.items())[:12]:
        (line,) = ax.plot(it, avg, label=f"{n} (average)")
        ax.plot(it, last, "--", color=line.get_color(), alpha=0.6, linewidth=0.8)
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=1e-4)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("iteration")
    ax.set_ylabel("exploitability (zero-sum) / NashConv")
    ax.set_title(f"{summary['learner']} self-play: average policy (solid), last iterate (dashed)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_suite(path: Path, summary: dict[str, Any], suite: list[dict[str, Any]]) -> None:
    """The 12 x 12 grid of the 2x2 suite (row player's symmetric game x column player's), coloured
    by the NashConv of the average policy and of the last iterate."""
    plt = records.pyplot()
    names = [name for name, _ in SYMMETRIC_2X2]
    fig, axes = plt.subplots(1, 2, figsize=(13, 6))
    for ax, key in zip(axes, ("nash_conv_average", "nash_conv_last"), strict=True):
        grid = np.array([r[key] for r in suite]).reshape(12, 12)
        im = ax.imshow(grid, cmap="viridis")
        ax.set_xticks(range(12), names, rotation=90, fontsize=7)
        ax.set_yticks(range(12), names, fontsize=7)
        ax.set_xlabel("column player's payoffs of")
        ax.set_ylabel("row player's payoffs of")
        ax.set_title(f"{summary['learner']}: {key.replace('_', ' ')}")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    cli(main, Args, __doc__)
