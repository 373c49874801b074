"""Train agents from scratch with a discovered objective beside PPO, over horizons and seeds.

    python -m experiments.evaluate_objective --objective runs/discover/ta_lpo --env Acrobot-v1 \\
        --horizons 65536,262144,1048576 --num-seeds 8 --out runs/eval/ta_lpo_acrobot

For every horizon (env steps per run) the core runner trains ``--num-seeds`` runs with the objective
(a directory written by experiments.discover, or a registered closed form such as ``dpo``) and as
many with PPO's clip, with the same PPO settings otherwise (by default the LPO inner settings the
objective was discovered with). Each is a full run directory under ``DIR/h<N>/``. Writes
summary.json (``table``: final return, as the core's summary defines it, mean and 95% CI over seeds),
returns_by_horizon.png, learning curves per horizon and, for drift objectives, drift.png (the drift
over (r, A) at several n/N).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from experiments.common import RunArgs, cli, config_without, format_table, repeat_runs, seed_keys
from meta.lpo import LPO_INNER_SETTINGS
from rl import records, runner
from rl.errors import ConfigError
from rl.losses import OBJECTIVES
from rl.objectives import DriftParams, lpo_drift, objective_kind, read_info, ta_lpo_drift
from rl.ppo import PPOConfig, default_hparams, make_learner

# PPO settings of both arms: the objective is --objective's, and the defaults are LPO's inner settings.
ArmConfig = config_without(PPOConfig, ("objective", "objective_from"), LPO_INNER_SETTINGS, "ArmConfig")


@dataclasses.dataclass(frozen=True)
class Args:
    objective: str = "dpo"
    """directory of a discovered objective (experiments.discover --out), or a registered objective name"""
    horizons: str = "65536,262144"
    """comma-separated training horizons (env steps per run)"""
    run: RunArgs = RunArgs(num_seeds=8)
    ppo: ArmConfig = ArmConfig()


def parse_horizons(text: str) -> list[int]:
    """``"N1,N2"`` as positive ints; ``ConfigError`` naming ``horizons`` otherwise."""
    try:
        horizons = [int(float(v)) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError("horizons", f"expected comma-separated step counts, got {text!r}") from None
    if not horizons or min(horizons) < 1:
        raise ConfigError("horizons", f"expected positive step counts, got {text!r}")
    return horizons


def objective_config(args: Args) -> PPOConfig:
    """The PPO config that trains with ``args.objective`` (a directory or a registered name)."""
    settings = dataclasses.asdict(args.ppo)
    if args.objective in OBJECTIVES and not Path(args.objective).is_dir():
        return PPOConfig(**settings, objective=args.objective)
    objective_kind(args.objective)  # one clear line if the directory holds no drift objective
    return PPOConfig(**settings, objective_from=str(Path(args.objective).absolute()))


def train_runs(args: Args, config: PPOConfig, out: Path) -> dict[str, Any]:
    """``num_seeds`` runs of ``config`` through the core runner into ``out``; the core summary."""
    learner = make_learner(config)
    hparams = repeat_runs(default_hparams(config), args.run.num_seeds)
    saved = {**dataclasses.asdict(config), "seed": args.run.seed, "num_seeds": args.run.num_seeds}
    # resuming the study resumes the runs that had started; later ones start afresh
    run = dataclasses.replace(args.run, resume=args.run.resume and (out / "config.json").exists())
    result = run.run(learner, seed_keys(args.run.seed, args.run.num_seeds), hparams, out, saved)
    summary = runner.summarize(result)
    summary["curve"] = (records.series(result.records, "env_steps"), records.series(result.records, "episode_return"))
    return summary


def ci_entry(values: list[float | None]) -> dict[str, Any]:
    """Mean and 95% CI half-width over seeds (missing values dropped)."""
    finite = np.array([v for v in values if v is not None], np.float64)
    if finite.size == 0:
        return {"mean": None, "ci95": None, "per_seed": values}
    mean, half = records.mean_ci95(finite)
    return {"mean": float(mean), "ci95": float(half), "per_seed": values}


def main(args: Args) -> dict[str, Any]:
    """Train both objectives at every horizon and write the comparison."""
    args.run.validate()
    args.run.start_distributed()
    horizons = parse_horizons(args.horizons)
    if Path(args.objective).is_dir() and read_info(args.objective)["kind"] in ("lpg", "ta_lpg"):
        return evaluate_lpg_objective(args, horizons)
    with_objective = objective_config(args)
    configs = {h: (dataclasses.replace(with_objective, total_timesteps=h),
                   PPOConfig(**{**dataclasses.asdict(args.ppo), "total_timesteps": h}))
               for h in horizons}
    for pair in configs.values():
        for config in pair:
            config.validate()
    out = args.run.out_dir("evaluate_objective")
    runner.prepare_run_dir(out, {"objective": args.objective, "horizons": horizons, "env": args.ppo.env,
                                 "num_seeds": args.run.num_seeds, "seed": args.run.seed}, args.run.resume)
    label = Path(args.objective).name if Path(args.objective).is_dir() else args.objective
    table = []
    for horizon, (objective_cfg, ppo_cfg) in configs.items():
        found = train_runs(args, objective_cfg, out / f"h{horizon}" / "objective")
        ppo = train_runs(args, ppo_cfg, out / f"h{horizon}" / "ppo")
        table.append({"horizon": horizon, "objective": ci_entry(found["final_return_per_seed"]),
                      "ppo": ci_entry(ppo["final_return_per_seed"]),
                      # the final policy's greedy return (what discovery maximises), with --eval-episodes > 0
                      "objective_eval": ci_entry(found.get("eval_return_per_seed", [])),
                      "ppo_eval": ci_entry(ppo.get("eval_return_per_seed", [])),
                      "seconds": found["train_seconds"] + ppo["train_seconds"]})
        if jax.process_index() == 0:
            records.plot_curves(out / f"h{horizon}" / "curves.png",
                                {f"{label}": found["curve"], "PPO (clip)": ppo["curve"]},
                                f"{args.ppo.env}, {horizon:,} steps")
    summary = {"env": args.ppo.env, "objective": args.objective, "kind": with_objective.policy_objective,
               "num_seeds": args.run.num_seeds, "table": table}
    if jax.process_index() == 0:
        records.write_json(out / "summary.json", summary)
        plot_by_horizon(out / "returns_by_horizon.png", table, label, args.ppo.env)
        if with_objective.objective_from:
            plot_drift(out / "drift.png", with_objective)
    print(format_table(
        [{"horizon": r["horizon"], label: _fmt(r["objective"]), "PPO": _fmt(r["ppo"]), f"{label} eval": _fmt(r["objective_eval"]),
          "PPO eval": _fmt(r["ppo_eval"]), "seconds": r["seconds"]} for r in table],
        ["horizon", label, "PPO", f"{label} eval", "PPO eval", "seconds"]))
    print(f"final return (training episodes, last 5% of updates) and eval return (greedy final policy), mean ± 95% CI "
          f"over {args.run.num_seeds} seeds; run directory: {out}")
    return summary


def evaluate_lpg_objective(args: Args, horizons: list[int]) -> dict[str, Any]:
    """An LPG / TA-LPG network: horizons are lifetimes in agent updates, on held-out random grid
    worlds (one per seed), beside PPO with the same env steps on the same worlds."""
    from experiments import discover_lpg

    out = args.run.out_dir("evaluate_objective")
    runner.prepare_run_dir(out, {"objective": args.objective, "horizons": horizons, "env": "GridWorld-lpg",
                                 "num_seeds": args.run.num_seeds, "seed": args.run.seed}, args.run.resume)
    table = discover_lpg.evaluate_lpg(args.objective, horizons, args.run.num_seeds, args.run.seed, out)
    label = Path(args.objective).name
    summary = {"env": "GridWorld-lpg (held-out random worlds)", "objective": args.objective, "kind": table[0]["kind"],
               "num_seeds": args.run.num_seeds, "horizon_unit": "agent updates", "table": table}
    if jax.process_index() == 0:
        records.write_json(out / "summary.json", summary)
        plot_by_horizon(out / "returns_by_horizon.png", table, label, "held-out grid worlds")
        discover_lpg.plot_targets(out / "lpg_targets.png", args.objective)
    print(format_table([{"lifetime (updates)": r["horizon"], label: _fmt(r["objective"]), "PPO": _fmt(r["ppo"])}
                        for r in table], ["lifetime (updates)", label, "PPO"]))
    print(f"final-policy return on held-out worlds, mean ± 95% CI over {args.run.num_seeds} worlds; run directory: {out}")
    return summary


def _fmt(entry: dict[str, Any]) -> str:
    return "-" if entry["mean"] is None else f"{entry['mean']:.1f} ± {entry['ci95']:.1f}"


def plot_by_horizon(path: Path, table: list[dict[str, Any]], label: str, env: str) -> None:
    """Final return against training horizon, both objectives, with 95% CIs."""
    plt = records.pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    horizons = np.array([r["horizon"] for r in table])
    for key, name in (("objective", label), ("ppo", "PPO (clip)")):
        means = np.array([np.nan if r[key]["mean"] is None else r[key]["mean"] for r in table])
        cis = np.array([0.0 if r[key]["ci95"] is None else r[key]["ci95"] for r in table])
        ax.errorbar(horizons, means, yerr=cis, marker="o", capsize=4, label=name)
    ax.set_xscale("log")
    ax.set_xlabel("training horizon")
    ax.set_ylabel("final return")
    ax.set_title(f"{env}: discovered objective vs PPO", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_drift(path: Path, config: PPOConfig, progress_points: tuple[float, ...] = (0.0, 0.5, 1.0)) -> None:
    """The learned drift over ratio r and advantage A, one panel per training progress n/N (one
    panel for LPO, which does not read it), beside PPO's clip drift."""
    params: DriftParams = default_hparams(config).objective_params
    kind = config.policy_objective
    ratio, advantage = jnp.meshgrid(jnp.linspace(0.5, 1.5, 101), jnp.linspace(-2.0, 2.0, 101))
    panels: list[tuple[str, jax.Array]] = []
    for progress in (progress_points if kind == "ta_lpo" else (0.0,)):
        drift = ta_lpo_drift(ratio, advantage, jnp.asarray(progress), params) if kind == "ta_lpo" \
            else lpo_drift(ratio, advantage, params)
        panels.append((f"{kind} drift, n/N = {progress:g}" if kind == "ta_lpo" else f"{kind} drift", drift))
    clipped = jnp.clip(ratio, 1 - config.clip_eps, 1 + config.clip_eps)
    panels.append((f"PPO clip drift (eps {config.clip_eps:g})", jax.nn.relu((ratio - clipped) * advantage)))
    plt = records.pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.6), squeeze=False)
    top = float(max(np.asarray(d).max() for _, d in panels)) or 1.0
    for ax, (title, drift) in zip(axes[0], panels, strict=True):
        image = ax.contourf(np.asarray(ratio), np.asarray(advantage), np.asarray(drift), levels=np.linspace(0, top, 21))
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("ratio r")
        ax.set_ylabel("advantage A")
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.9)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    cli(main, Args, __doc__)
