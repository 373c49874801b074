"""Throughput of the cultural-accumulation environments: ``python -m experiments.bench_cultural``.

For every environment of the study (Memory Sequence, TSP, Goal Sequence; in-context and
in-weights layouts, default sizes): env steps per second of a compiled scan of uniformly random
actions over ``--num-envs`` vmapped copies, with the core's learner stack (episode statistics,
automatic resets), one device; median of ``--repeats`` timed calls after compiling. Writes
``bench.json`` to ``--out`` and prints a table. The agent's training throughput is in the
``training_steps_per_second`` of an ``experiments.cultural`` summary.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from experiments.bench_ppo import time_env_only
from experiments.common import cli, format_table
from rl import records

ENV_IDS = tuple(f"{env}/{mode}" for env in ("memory_sequence", "tsp", "goal_sequence")
                for mode in ("in_context", "in_weights"))


@dataclasses.dataclass(frozen=True)
class Args:
    num_envs: int = 4096
    """vmapped environments"""
    steps: int = 4_000_000
    """environment steps per timed call (over all environments)"""
    repeats: int = 5
    """timed calls per environment (median reported)"""
    out: str = "runs/bench_cultural"
    """where bench.json is written"""


def main(args: Args) -> list[dict[str, Any]]:
    """Time every environment; returns the table's rows."""
    rows = [{"env": env_id, "num_envs": args.num_envs,
             "env_steps_per_second": time_env_only(env_id, args.num_envs, args.steps, args.repeats)}
            for env_id in ENV_IDS]
    Path(args.out).mkdir(parents=True, exist_ok=True)
    records.write_json(Path(args.out) / "bench.json", {"args": dataclasses.asdict(args), "rows": rows})
    print(format_table(rows, ["env", "num_envs", "env_steps_per_second"]))
    return rows


if __name__ == "__main__":
    cli(main, Args, __doc__)
