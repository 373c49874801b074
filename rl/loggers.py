"""Optional logging backends that mirror ``metrics.jsonl``: TensorBoard (tensorboardX) and Weights &
Biases. Both are optional extras (``pip install -e ".[tensorboard]"`` / ``".[wandb]"``); the runner
works the same without them.

Every backend receives the records the runner appends to ``metrics.jsonl`` (one per update, each
metric a list over runs) and writes, per metric, the mean over runs (``mean/<metric>``) and each
run's value (``run<i>/<metric>``), at step ``env_steps``.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from rl.errors import ConfigError

BACKENDS = {"tensorboard": ("tensorboardX", "tensorboard"), "wandb": ("wandb", "wandb")}


class Logger(Protocol):
    """What the runner calls: ``log`` after every chunk, ``close`` at the end."""

    def log(self, records: Sequence[dict[str, Any]]) -> None: ...

    def close(self) -> None: ...


def check_backends(names: Sequence[str]) -> None:
    """Raise ``ConfigError`` (field ``loggers``) for an unknown or uninstalled backend."""
    for name in names:
        if name not in BACKENDS:
            raise ConfigError("loggers", f"unknown logger {name!r}; known: {', '.join(BACKENDS)}")
        module, extra = BACKENDS[name]
        if importlib.util.find_spec(module) is None:
            raise ConfigError("loggers", f"{name} needs {module}: pip install -e \".[{extra}]\"")


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """A metrics.jsonl record as flat scalars: ``mean/<metric>`` and ``run<i>/<metric>``
    (missing values are left out)."""
    out = {}
    for name, values in record.items():
        if name in ("update", "env_steps") or not isinstance(values, list):
            continue
        finite = [v for v in values if v is not None]
        if finite:
            out[f"mean/{name}"] = float(np.mean(finite))
        out.update({f"run{i}/{name}": float(v) for i, v in enumerate(values) if v is not None})
    return out


class TensorBoardLogger:
    """Event files under ``<run dir>/tensorboard``."""

    def __init__(self, out: Path, config: dict[str, Any]):
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(str(out / "tensorboard"))
        self.writer.add_text("config", f"```\n{config}\n```")

    def log(self, records: Sequence[dict[str, Any]]) -> None:
        for record in records:
            for tag, value in scalars(record).items():
                self.writer.add_scalar(tag, value, record["env_steps"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    """A Weights & Biases run named after the run directory, files under it (``WANDB_MODE=offline``
    works without a network)."""

    def __init__(self, out: Path, config: dict[str, Any]):
        import wandb

        self.wandb = wandb
        self.run = wandb.init(project="jaxrl-lab", name=out.name, dir=str(out), config=config, resume="allow",
                              id=hashlib.sha1(str(out.absolute()).encode()).hexdigest()[:16])

    def log(self, records: Sequence[dict[str, Any]]) -> None:
        for record in records:
            self.run.log({"env_steps": record["env_steps"], **scalars(record)}, step=record["update"])

    def close(self) -> None:
        self.run.finish()


def make_loggers(names: Sequence[str], out: Path, config: dict[str, Any]) -> list[Logger]:
    """The backends named (``tensorboard``, ``wandb``), writing into run directory ``out``."""
    check_backends(names)
    classes = {"tensorboard": TensorBoardLogger, "wandb": WandbLogger}
    return [classes[name](out, config) for name in names]
