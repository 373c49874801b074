"""Hyperparameter grid x seeds as ONE vmapped, sharded computation.

    python -m experiments.sweep --env CartPole-v1 --lr 1e-4,3e-4,1e-3 --ent-coef 0,0.01 --num-seeds 4

Every PPO hyperparameter flag (--lr --gamma --gae-lambda --clip-eps --ent-coef --vf-coef
--max-grad-norm) takes a comma-separated list; the grid is their product. Static settings (env,
sizes, total steps) are single values. Writes results.csv (configurations ranked by final return,
with 95% CIs over seeds), sweep_ranking.png, sweep_curves.png, summary.json and the usual run files.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import typing
from typing import Annotated, Any

import jax
import numpy as np
import tyro

from experiments.common import RunArgs, cli, field_docs, format_table, seed_keys
from rl import records, runner
from rl.errors import ConfigError
from rl.ppo import HPARAM_FIELDS, PPOConfig, check_hparam_values, default_hparams, make_learner


def _grid_fields() -> list[tuple[str, Any, dataclasses.Field]]:
    """PPOConfig's fields, with every hyperparameter turned into a comma-separated string."""
    docs = field_docs(PPOConfig)
    types = typing.get_type_hints(PPOConfig, include_extras=True)
    fields = []
    for f in dataclasses.fields(PPOConfig):
        if f.name in HPARAM_FIELDS:
            help_text = f"{docs.get(f.name, f.name)}; comma-separated values to sweep"
            fields.append((f.name, Annotated[str, tyro.conf.arg(help=help_text)], dataclasses.field(default=str(f.default))))
        else:
            annotated = Annotated[types[f.name], tyro.conf.arg(help=docs.get(f.name, ""))]
            fields.append((f.name, annotated, dataclasses.field(default=f.default)))
    return fields


SweepConfig = dataclasses.make_dataclass("SweepConfig", _grid_fields(), frozen=True)
SweepConfig.__doc__ = "PPO settings; hyperparameters take comma-separated lists."


@dataclasses.dataclass(frozen=True)
class Args:
    run: RunArgs = RunArgs()
    sweep: SweepConfig = SweepConfig()


def parse_grid(sweep: Any) -> tuple[PPOConfig, list[dict[str, float]]]:
    """The static PPO config and the list of hyperparameter points (product of the lists)."""
    values: dict[str, list[float]] = {}
    for name in HPARAM_FIELDS:
        try:
            values[name] = [float(v) for v in str(getattr(sweep, name)).split(",") if v.strip()]
        except ValueError:
            raise ConfigError(name, f"expected comma-separated numbers, got {getattr(sweep, name)!r}") from None
        if not values[name]:
            raise ConfigError(name, "needs at least one value")
        check_hparam_values({name: values[name]})
    static = {f.name: getattr(sweep, f.name) for f in dataclasses.fields(PPOConfig) if f.name not in HPARAM_FIELDS}
    config = PPOConfig(**static, **{name: vals[0] for name, vals in values.items()})
    points = [dict(zip(HPARAM_FIELDS, combo, strict=True)) for combo in itertools.product(*values.values())]
    return config, points


def main(args: Args) -> dict[str, Any]:
    """Run the grid and write the ranking; returns the summary."""
    args.run.validate()
    args.run.start_distributed()
    config, points = parse_grid(args.sweep)
    config.validate()
    swept = [name for name in HPARAM_FIELDS if len({p[name] for p in points}) > 1]
    seeds = args.run.num_seeds
    out = args.run.out_dir("sweep")
    # Run index = point * seeds + seed; every point sees the same seeds.
    per_point = [default_hparams(config, **point) for point in points]
    hp = jax.tree.map(lambda *xs: np.repeat(np.stack([np.asarray(x) for x in xs]), seeds, axis=0), *per_point)
    keys = np.concatenate([seed_keys(args.run.seed, seeds)] * len(points))
    run_config = {**dataclasses.asdict(config), "grid": points, "seed": args.run.seed, "num_seeds": seeds,
                  "chunk_updates": args.run.chunk_updates}
    result = args.run.run(make_learner(config), keys, hp, out, run_config)

    returns = records.series(result.records, "episode_return")  # [updates, points * seeds]
    final = records.final_values(result.records).reshape(len(points), seeds)
    mean, half = records.mean_ci95(final, axis=1)
    order = np.argsort(-np.nan_to_num(mean, nan=-np.inf))
    rows = []
    for rank, i in enumerate(order, start=1):
        rows.append({"rank": rank, **{k: points[i][k] for k in swept}, "final_return_mean": float(mean[i]),
                     "final_return_std": float(final[i].std()), "ci95": float(half[i]),
                     "per_seed": " ".join(f"{x:.1f}" for x in final[i])})
    columns = ["rank", *swept, "final_return_mean", "final_return_std", "ci95", "per_seed"]
    if jax.process_index() == 0:
        with (out / "results.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        label = [", ".join(f"{k}={points[i][k]:g}" for k in swept) or "default" for i in range(len(points))]
        plot_ranking(out / "sweep_ranking.png", [label[i] for i in order], mean[order], half[order], config.env)
        steps = records.series(result.records, "env_steps")
        records.plot_curves(out / "sweep_curves.png",
                            {label[i]: (steps, returns[:, i * seeds:(i + 1) * seeds]) for i in order},
                            f"PPO sweep on {config.env}")
    summary = {"env": config.env, "swept": swept, "best": rows[0], "table": rows, **runner.summarize(result)}
    if jax.process_index() == 0:
        records.write_json(out / "summary.json", summary)
    print(format_table(rows, columns))
    print(f"run directory: {out}")
    return summary


def plot_ranking(path: Any, labels: list[str], mean: np.ndarray, half: np.ndarray, env: str) -> None:
    """Horizontal bars of final return per configuration (best on top) with 95% CIs."""
    plt = records.pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(labels) + 1.5))
    y = np.arange(len(labels))[::-1]
    ax.barh(y, mean, xerr=half, capsize=3, color="tab:blue", alpha=0.8)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel("final episode return (mean, 95% CI over seeds)")
    ax.set_title(f"PPO sweep on {env}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    cli(main, Args, __doc__)
