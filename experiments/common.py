"""Shared pieces of the experiment entry points: run options, batching, error handling, tables."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import sys
import textwrap
import time
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import jax
import numpy as np

import rl  # noqa: F401  (sets up JAX's CPU backend before it starts)
from experiments import launch
from rl import runner
from rl.errors import ConfigError, RunError
from rl.loggers import check_backends

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class RunArgs:
    """Options of every run directory."""

    out: str | None = None
    """run directory (default runs/<experiment>/<time>)"""
    seed: int = 0
    """base random seed; run i uses jax.random.split(PRNGKey(seed), num_seeds)[i]"""
    num_seeds: int = 4
    """independent runs, vmapped in one compile and sharded over devices"""
    resume: bool = False
    """continue the run in --out from its newest checkpoint"""
    chunk_updates: int = 0
    """updates per compiled chunk between logs and checkpoints (0: about 20 chunks)"""
    checkpoint_seconds: float = 30.0
    """save a checkpoint after a chunk when this many seconds passed since the last one (always at the end)"""
    eval_episodes: int = 16
    """episodes per run played by the final policy for summary.json (0: none)"""
    eval_greedy: bool = True
    """evaluate with the most likely action (else sample actions)"""
    tolerate_failures: bool = False
    """freeze and report runs whose loss turns non-finite instead of stopping all runs"""
    loggers: tuple[str, ...] = ()
    """extra logging backends mirroring metrics.jsonl: tensorboard, wandb (optional extras)"""
    progress: bool = True
    """show a progress bar"""
    coordinator: str | None = None
    """HOST:PORT of process 0: join the hosts with jax.distributed (run the same command on each host)"""
    num_processes: int = 1
    """number of processes (hosts) taking part, with --coordinator"""
    process_id: int = 0
    """this process's index in [0, num_processes), with --coordinator"""

    def start_distributed(self) -> None:
        """Join the multi-host runtime when ``--coordinator`` is given. ``python -m experiments.NAME``
        has joined already (``experiments/__init__.py``); called from Python after JAX's backend
        started, this raises ``RunError`` saying how to launch instead."""
        if self.coordinator is None:
            return
        try:
            launch.join(self.coordinator, self.num_processes, self.process_id)
        except RuntimeError as error:
            raise RunError(
                f"--coordinator: cannot join {self.coordinator} after JAX started its backend ({error}); launch "
                "with python -m experiments.NAME, or call experiments.launch.join before importing the library"
            ) from error

    def validate(self) -> None:
        """Raise ``ConfigError`` for impossible run options."""
        if self.num_seeds < 1:
            raise ConfigError("num_seeds", f"must be at least 1, got {self.num_seeds}")
        if self.chunk_updates < 0:
            raise ConfigError("chunk_updates", f"must be >= 0, got {self.chunk_updates}")
        if self.resume and self.out is None:
            raise ConfigError("resume", "needs --out naming the run to continue")
        if self.coordinator is not None and not 0 <= self.process_id < self.num_processes:
            raise ConfigError("process_id", f"must be in [0, {self.num_processes}), got {self.process_id}")
        if self.coordinator is not None and self.out is None:
            raise ConfigError("out", "multi-host runs need an explicit --out shared by all hosts")
        if self.eval_episodes < 0:
            raise ConfigError("eval_episodes", f"must be >= 0, got {self.eval_episodes}")
        if not self.checkpoint_seconds >= 0:
            raise ConfigError("checkpoint_seconds", f"must be >= 0, got {self.checkpoint_seconds}")
        check_backends(self.loggers)

    def out_dir(self, experiment: str) -> Path:
        """The run directory, defaulting to runs/<experiment>/<time>."""
        return Path(self.out or f"runs/{experiment}/{time.strftime('%Y%m%d-%H%M%S')}")

    def run(
        self, learner: Any, keys: np.ndarray, hparams: Any, out: Path, config: dict[str, Any], snapshot_every: int = 0
    ) -> runner.RunResult:
        """``rl.runner.run`` with these options (``snapshot_every``: see there)."""
        return runner.run(
            learner, keys, hparams, out, config, chunk_updates=self.chunk_updates, resume=self.resume,
            progress=self.progress, tolerate_failures=self.tolerate_failures, eval_episodes=self.eval_episodes,
            eval_greedy=self.eval_greedy, checkpoint_seconds=self.checkpoint_seconds, loggers=self.loggers,
            snapshot_every=snapshot_every,
        )


def seed_keys(seed: int, num: int) -> np.ndarray:
    """``num`` independent PRNG keys (uint32 pairs) derived from ``seed``."""
    return np.asarray(jax.random.split(jax.random.PRNGKey(seed), num))


def repeat_runs(tree: Any, num: int) -> Any:
    """Give every leaf a leading runs axis of size ``num`` (host numpy arrays)."""
    return jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (num, *np.shape(x))).copy(), tree)


def cli(main: Callable[[T], Any], args_type: type[T], description: str) -> None:
    """Parse ``args_type`` from the command line (flat flags), run ``main``, and turn
    configuration and run errors into one line on stderr and exit status 2."""
    import tyro

    args = tyro.cli(args_type, description=description, config=(tyro.conf.OmitArgPrefixes,))
    try:
        main(args)
    except (ConfigError, RunError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


def format_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A plain-text table with aligned columns."""
    cells = [[_fmt(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def markdown_table(rows: list[dict[str, Any]], columns: list[str], cell: Callable[[Any], str] | None = None) -> str:
    """A Markdown table of ``rows`` (``cell(value) -> text``; default: as ``format_table`` prints it)."""
    cell = cell or _fmt
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def mean_std(summary: dict[str, Any], name: str) -> str:
    """``"mean ± std"`` of ``summary[name + "_mean"]`` and ``_std``, or ``-`` when missing."""
    mean, std = summary.get(f"{name}_mean"), summary.get(f"{name}_std")
    return "-" if mean is None else f"{mean:.1f} ± {std:.1f}"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.4g}"
    return str(value)


def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of a dataclass (tyro's help texts)."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    return {
        a.target.id: b.value.value.strip()
        for a, b in zip(body, body[1:], strict=False)
        if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant)
    }


def config_without(cls: type, drop: tuple[str, ...], defaults: dict[str, Any], name: str) -> type:
    """A frozen copy of dataclass ``cls`` without the fields ``drop`` (an experiment sets them
    itself) and with new ``defaults``, keeping the help texts; build ``cls(**asdict(value))``."""
    import tyro

    docs = field_docs(cls)
    types = typing.get_type_hints(cls, include_extras=True)
    fields = [
        (f.name, Annotated[types[f.name], tyro.conf.arg(help=docs.get(f.name, ""))],
         dataclasses.field(default=defaults.get(f.name, f.default)))
        for f in dataclasses.fields(cls) if f.name not in drop
    ]
    derived = dataclasses.make_dataclass(name, fields, frozen=True)
    derived.__doc__ = cls.__doc__
    return derived
