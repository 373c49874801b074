"""Discover a policy objective by evolution strategies over whole training lifetimes.

    python -m experiments.discover --objective ta_lpo --env CartPole-v1 --population 32 --generations 300

Each ES member is an objective; its fitness on a task (environment x training horizon) is the mean
return of the final policy of a complete training run with it. LPO / TA-LPO evolve a drift network
used by the core PPO learner (starting from PPO: the zero network with PPO initialisation); LPG /
TA-LPG evolve a learned-policy-gradient network that drives a small agent on random grid worlds.
Writes config.json, metrics.jsonl (one line per generation), summary.json (``fitness_history`` and
the path of the discovered objective), fitness.png, the objective itself (``objective.json`` and its
orbax params, loadable with ``--objective-from DIR``) and ES checkpoints (``--resume``).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from experiments.common import cli, format_table
from meta import lpo
from meta.es import ESConfig, EvolutionResult, evolve
from rl import records, runner
from rl.errors import ConfigError
from rl.objectives import save_objective
from rl.ppo import PPOConfig

OBJECTIVES = ("lpo", "ta_lpo", "lpg", "ta_lpg")


@dataclasses.dataclass(frozen=True)
class Args:
    """Objective discovery settings (inner PPO settings are the core's defaults, value loss as LPO's)."""

    objective: str = "ta_lpo"
    """lpo, ta_lpo (drift networks for PPO), lpg or ta_lpg (learned policy gradient)"""
    env: str = "CartPole-v1"
    """comma-separated meta-training environments (lpo/ta_lpo; lpg/ta_lpg train on random grid worlds)"""
    inner_timesteps: tuple[int, ...] = (16384,)
    """training horizons (env steps per inner lifetime) to meta-train over (lpo/ta_lpo)"""
    es: ESConfig = ESConfig(generations=300)
    eval_episodes: int = 8
    """episodes played by each member's final policy for its fitness"""
    meta_gradient_window: int = 0
    """lpg/ta_lpg: > 0 trains the LPG network by truncated meta-gradients through windows of this many
    agent updates instead of ES (the myopic baseline), for as many agent updates as the ES run"""
    meta_gradient_lifetimes: int = 32
    """lpg/ta_lpg meta-gradient baseline: lifetimes run in parallel"""
    meta_gradient_lr: float = 1e-3
    """lpg/ta_lpg meta-gradient baseline: Adam learning rate of the LPG network"""
    lpg_gru_size: int = 32
    """lpg/ta_lpg: units of the reverse GRU (256 in the LPG paper)"""
    lpg_max_updates: int = 50
    """lpg/ta_lpg: longest meta-training lifetime in agent updates, drawn log-uniformly from 10 (250 in the spec)"""
    lpg_worlds: int = 4
    """lpg/ta_lpg: random grid worlds (each with its lifetime) meta-trained on, drawn from --seed"""
    ppo_init: bool = True
    """lpo/ta_lpo: add PPO's clip drift inside the learned drift (the zero network is PPO)"""
    out: str | None = None
    """run directory (default runs/discover/<time>)"""
    seed: int = 0
    """random seed of the ES and of every inner lifetime"""
    resume: bool = False
    """continue the run in --out from its newest ES checkpoint"""
    checkpoint_seconds: float = 60.0
    """save the ES state when this many seconds passed since the last save (always at the end)"""
    progress: bool = True
    """show a progress bar over generations"""
    coordinator: str | None = None
    """HOST:PORT of process 0: join the hosts with jax.distributed (run the same command on each host)"""
    num_processes: int = 1
    """number of processes (hosts) taking part, with --coordinator"""
    process_id: int = 0
    """this process's index in [0, num_processes), with --coordinator"""

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the first invalid field (nothing compiled yet)."""
        if self.objective not in OBJECTIVES:
            raise ConfigError("objective", f"unknown objective {self.objective!r}; known: {', '.join(OBJECTIVES)}")
        self.es.validate()
        if self.eval_episodes < 1:
            raise ConfigError("eval_episodes", f"must be a positive integer, got {self.eval_episodes}")
        if not self.inner_timesteps or min(self.inner_timesteps) < 1:
            raise ConfigError("inner_timesteps", f"must be positive step counts, got {self.inner_timesteps}")
        if self.resume and self.out is None:
            raise ConfigError("resume", "needs --out naming the run to continue")
        if self.meta_gradient_window < 0 or (self.meta_gradient_window and self.objective not in ("lpg", "ta_lpg")):
            raise ConfigError("meta_gradient_window", f"must be 0, or > 0 with --objective lpg/ta_lpg; got "
                              f"{self.meta_gradient_window} with {self.objective}")
        for name in ("lpg_gru_size", "lpg_max_updates", "lpg_worlds"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be a positive integer, got {getattr(self, name)}")
        if self.lpg_max_updates < 10:
            raise ConfigError("lpg_max_updates", f"lifetimes are drawn from [10, max]: must be >= 10, got {self.lpg_max_updates}")
        if self.meta_gradient_lifetimes < 1 or not self.meta_gradient_lr > 0:
            raise ConfigError("meta_gradient_lifetimes", "lifetimes must be >= 1 and the learning rate > 0")
        if self.coordinator is not None and self.out is None:
            raise ConfigError("out", "multi-host runs need an explicit --out shared by all hosts")


def drift_problem(args: Args) -> tuple[Any, Any, list[str], int, Any]:
    """LPO / TA-LPO: (starting weights, fitness function, task names, env steps per member, save)."""
    envs = [e.strip() for e in args.env.split(",") if e.strip()]
    base = PPOConfig(**lpo.LPO_INNER_SETTINGS)
    configs = lpo.inner_configs(args.objective, envs, list(args.inner_timesteps), base)
    fitness = lpo.make_fitness(configs, args.eval_episodes, base.clip_eps, args.ppo_init)
    steps = sum(c.num_updates * c.batch_size for c in configs)

    def save(out: Path, weights: Any, info: dict[str, Any]) -> Path:
        params = lpo.as_params(weights, base.clip_eps, args.ppo_init)
        return save_objective(out, args.objective, params, {**info, "ppo_init": args.ppo_init})

    return lpo.starting_weights(args.objective), fitness, [lpo.task_name(c) for c in configs], steps, save


def main(args: Args) -> dict[str, Any]:
    """Run the discovery and write the run directory; returns the summary."""
    args.validate()
    out = Path(args.out or f"runs/discover/{time.strftime('%Y%m%d-%H%M%S')}")
    if args.objective in ("lpo", "ta_lpo"):
        solution, fitness, tasks, steps_per_member, save = drift_problem(args)
    else:
        from experiments import discover_lpg

        solution, fitness, tasks, steps_per_member, save = discover_lpg.lpg_problem(args)
    config = {**dataclasses.asdict(args), "tasks": tasks}
    runner.prepare_run_dir(out, config, args.resume)
    metrics_path = out / "metrics.jsonl"
    members = args.es.population + 1

    def log(history: list[dict[str, Any]]) -> None:  # the whole history: a resumed run rewrites the file
        if jax.process_index() == 0:
            records.write_jsonl(metrics_path, [{**r, "env_steps": (r["generation"] + 1) * members * steps_per_member}
                                               for r in history])

    if args.meta_gradient_window:
        from experiments import discover_lpg

        result, save = discover_lpg.metagradient_run(args, tasks, log)
    else:
        result = evolve(args.es, solution, fitness, tasks, out, args.seed, args.resume, args.progress,
                        args.checkpoint_seconds, on_generation=log)
    summary = summarize(args, result, tasks, steps_per_member, out)
    path = save(out, result.mean, {"tasks": tasks, "generations": args.es.generations, "seed": args.seed})
    summary["objective_path"] = str(path)
    summary["objective_dir"] = str(out.absolute())
    if jax.process_index() == 0:
        records.write_json(out / "summary.json", summary)
        method = f"truncated meta-gradients (window {args.meta_gradient_window})" if args.meta_gradient_window else "ES"
        plot_fitness(out / "fitness.png", result.history, f"{args.objective} by {method} on {', '.join(tasks)}")
        if args.objective in ("lpg", "ta_lpg"):
            from experiments import discover_lpg

            discover_lpg.plot_targets(out / "lpg_targets.png", str(out))
    rows = [r for r in result.history if r["generation"] % max(1, len(result.history) // 10) == 0 or r is result.history[-1]]
    print(format_table(rows, ["generation", "mean", "best", "es_mean", "seconds"]))
    print(f"fitness (population mean, first/last 10% of generations): {summary['fitness_first_tenth']:.1f} -> "
          f"{summary['fitness_last_tenth']:.1f}; population env steps/s: {summary['population_env_steps_per_second']:,.0f}")
    print(f"run directory: {out}")
    return summary


def summarize(args: Args, result: EvolutionResult, tasks: list[str], steps_per_member: int, out: Path) -> dict[str, Any]:
    """``fitness_history`` as the contract names it, the rise of fitness, and throughput."""
    means = np.array([r["mean"] for r in result.history])
    tenth = max(1, len(means) // 10)
    members = args.es.population + 1
    generations_timed = len(result.history) - 1
    seconds_timed = result.history[-1]["seconds"] - result.history[0]["seconds"] if generations_timed else result.seconds
    return {
        "objective": args.objective,
        "tasks": tasks,
        "fitness_history": [{"generation": r["generation"], "mean": r["mean"], "best": r["best"],
                             "es_mean": r["es_mean"]} for r in result.history],
        "fitness_first_tenth": float(means[:tenth].mean()),
        "fitness_last_tenth": float(means[-tenth:].mean()),
        "es_mean_first_tenth": float(np.mean([r["es_mean"] for r in result.history[:tenth]])),
        "es_mean_last_tenth": float(np.mean([r["es_mean"] for r in result.history[-tenth:]])),
        # every generation after the first (which compiles): members x inner steps / wall time
        "population_env_steps_per_second": members * steps_per_member * max(generations_timed, 1) / max(seconds_timed, 1e-9),
        "wall_seconds": result.seconds,
        "compile_seconds": result.compile_seconds,
        "num_devices": jax.device_count(),
    }


def plot_fitness(path: Path, history: list[dict[str, Any]], title: str) -> None:
    """Population mean and best fitness and the ES mean's fitness per generation (with a moving
    average, since every generation trains with new seeds)."""
    plt = records.pyplot()
    generations = np.array([r["generation"] for r in history])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    window = max(1, len(history) // 20)
    for name, style in (("mean", "-"), ("best", ":"), ("es_mean", "--")):
        values = np.array([r[name] for r in history])
        smooth = np.convolve(values, np.ones(window) / window, mode="valid")
        line, = ax.plot(generations[window - 1:], smooth, style, label=f"{name} (moving average of {window})")
        ax.plot(generations, values, style, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("generation")
    ax.set_ylabel("fitness (final-policy return)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    cli(main, Args, __doc__)
