"""PPO on any registered environment: ``python -m experiments.ppo --env CartPole-v1 --num-seeds 4``.

Writes config.json, metrics.jsonl (one line per update, every metric per seed), summary.json,
learning_curve.png (mean and 95% CI over seeds) and orbax checkpoints to --out; prints a table.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

from experiments.common import RunArgs, cli, format_table, mean_std, repeat_runs, seed_keys
from rl import records, runner
from rl.ppo import PPOConfig, default_hparams, make_learner


@dataclasses.dataclass(frozen=True)
class Args:
    run: RunArgs = RunArgs()
    ppo: PPOConfig = PPOConfig()


def main(args: Args) -> dict[str, Any]:
    """Train ``num_seeds`` PPO runs and write the run directory; returns the summary."""
    args.run.validate()
    args.run.start_distributed()
    args.ppo.validate()
    out = args.run.out_dir("ppo")
    learner = make_learner(args.ppo)
    hparams = repeat_runs(default_hparams(args.ppo), args.run.num_seeds)
    config = {**dataclasses.asdict(args.ppo), "seed": args.run.seed, "num_seeds": args.run.num_seeds,
              "chunk_updates": args.run.chunk_updates}
    result = args.run.run(learner, seed_keys(args.run.seed, args.run.num_seeds), hparams, out, config)
    summary = {"env": args.ppo.env, **runner.summarize(result)}
    if jax.process_index() == 0:
        records.write_json(out / "summary.json", summary)
        steps = records.series(result.records, "env_steps")
        records.plot_curves(
            out / "learning_curve.png",
            {f"PPO {args.ppo.env}": (steps, records.series(result.records, "episode_return"))},
            f"PPO on {args.ppo.env}",
        )
    print(format_table(
        [{**summary, "seeds": args.run.num_seeds, "final_return": mean_std(summary, "final_return"),
          "eval_return": mean_std(summary, "eval_return")}],
        ["env", "seeds", "final_return", "eval_return", "total_env_steps", "env_steps_per_second", "compile_seconds",
         "train_seconds"],
    ))
    print(f"per-seed final return: {summary['final_return_per_seed']}")
    if summary["failed_runs"]:
        print(f"failed runs (run: update): {summary['failed_runs']}")
    print(f"run directory: {out}")
    return summary


if __name__ == "__main__":
    cli(main, Args, __doc__)
