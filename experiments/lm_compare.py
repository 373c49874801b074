"""Every language-model fine-tuning algorithm from one starting checkpoint, in one table.

    python -m experiments.lm_compare --init runs/lm/mul_sft --out runs/lm/compare

Runs ``experiments.lm_rl`` once per ``--algos`` entry from ``--init`` with the same RL settings
(the ``lm_rl`` flags: updates, prompts, group size, learning rate, ...) into ``<out>/<algo>``, and
``sft`` as continued supervised training on as many problems as the RL runs sample completions
(``--continued-sft-lr``, constant after 50 warm-up updates). A finished run (its summary.json
exists) is read, not rerun, so an interrupted table continues where it stopped. Writes
``<out>/table.json`` and ``<out>/table.md``: per algorithm, held-out pass@1 and pass@k before and
after, samples and wall time.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from experiments import lm_rl
from experiments.common import cli, format_table, markdown_table
from rl import records
from rl.errors import ConfigError
from rl.lm.config import ALGOS


@dataclasses.dataclass(frozen=True)
class Args:
    base: lm_rl.Args = lm_rl.Args()
    """settings shared by every run (--init is required)"""
    algos: tuple[str, ...] = ("grpo", "sft", "reinforce", "rloo", "dr_grpo", "dapo", "ppo", "dpo", "sppo")
    """algorithms to run, in this order (sft: continued supervised training)"""
    continued_sft_lr: float = 1e-4
    """learning rate of the continued supervised run"""

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the first invalid field, before anything is compiled."""
        self.base.validate()
        if self.base.init is None:
            raise ConfigError("init", "the comparison starts every algorithm from one checkpoint: give --init")
        if self.base.run.out is None:
            raise ConfigError("out", "give the table's directory with --out")
        unknown = [a for a in self.algos if a not in ALGOS]
        if unknown or not self.algos:
            raise ConfigError("algos", f"unknown {unknown}; known: {', '.join(ALGOS)}")
        rl_samples = self.base.lm.num_updates * self.base.lm.prompts_per_update * self.base.lm.group_size
        if "sft" in self.algos and rl_samples % self.base.sft_batch:
            raise ConfigError("sft_batch", f"must divide the RL runs' {rl_samples} samples")

    def run_args(self, algo: str) -> lm_rl.Args:
        """The ``lm_rl`` arguments of ``algo``'s run."""
        out = str(Path(self.base.run.out) / algo)
        lm = dataclasses.replace(self.base.lm, algo=algo)
        if algo == "sft":
            rl = self.base.lm
            updates = rl.num_updates * rl.prompts_per_update * rl.group_size // self.base.sft_batch
            lm = dataclasses.replace(lm, num_updates=updates, prompts_per_update=self.base.sft_batch, num_minibatches=1,
                                     lr=self.continued_sft_lr, warmup_updates=min(50, updates - 1), cosine_decay=False)
        return dataclasses.replace(self.base, lm=lm, run=dataclasses.replace(self.base.run, out=out))


def row(algo: str, summary: dict[str, Any]) -> dict[str, Any]:
    p1, pk = summary["pass_at_1"], summary["pass_at_k"]
    return {"algo": "sft (continued)" if algo == "sft" else algo, "samples": summary["samples_seen"],
            "pass@1 before": p1["before"], "pass@1 after": p1["after"], "pass@1 change": p1["after"] - p1["before"],
            f"pass@{pk['k']} before": pk["before"], f"pass@{pk['k']} after": pk["after"],
            "wall (s)": summary["wall_seconds"]}


def cell(value: Any) -> str:
    """Fractions as percentages, counts and seconds with thousands separators."""
    if isinstance(value, float) and abs(value) <= 1:
        return f"{value:.1%}"
    return f"{value:,.0f}" if isinstance(value, (int, float)) else str(value)


def main(args: Args) -> list[dict[str, Any]]:
    """Run (or read) every algorithm's run and write the table."""
    args.validate()
    rows = []
    for algo in args.algos:
        run = args.run_args(algo)
        path = Path(run.run.out) / "summary.json"
        if path.exists():
            summary = json.loads(path.read_text())
        else:
            summary = lm_rl.main(dataclasses.replace(run, run=dataclasses.replace(
                run.run, resume=(Path(run.run.out) / "config.json").exists())))
        rows.append(row(algo, summary))
    out = Path(args.base.run.out)
    records.write_json(out / "table.json", rows)
    (out / "table.md").write_text(markdown_table(rows, list(rows[0]), cell) + "\n")
    print(format_table(rows, list(rows[0])))
    return rows


if __name__ == "__main__":
    cli(main, Args, __doc__)
