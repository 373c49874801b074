"""Orbax checkpoints of a whole batched training state plus a little JSON metadata."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from rl.errors import ConfigError, RunError


class Checkpoints:
    """Save/restore ``(state, meta)`` pairs under ``directory``, keeping the newest ``keep``.

    Orbax writes each step to a temporary folder and renames it when complete, so a run killed
    while saving leaves the previous checkpoint intact.
    """

    def __init__(self, directory: str | Path, keep: int = 2):
        self.directory = Path(directory).absolute()
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        )

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step (number of updates done), if any."""
        return self._manager.latest_step()

    def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
        """Write ``state`` and ``meta`` as checkpoint ``step`` and wait until it is on disk."""
        self._manager.save(
            step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        )
        self._manager.wait_until_finished()

    def restore(self, step: int, target: Any = None) -> tuple[Any, dict[str, Any]]:
        """Restore checkpoint ``step`` into the shapes/shardings of ``target`` (``None``: as saved,
        on the default device); a damaged or mismatched checkpoint raises ``RunError``."""
        try:
            restored = self._manager.restore(
                step,
                args=ocp.args.Composite(state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()),
            )
        except Exception as error:  # orbax raises many types for unreadable data
            raise RunError(
                f"checkpoint {self.directory / str(step)} is corrupted or does not match this run "
                f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
            ) from error
        return restored["state"], restored["meta"]

    def restore_latest(self, target: Any) -> tuple[int, Any, dict[str, Any]]:
        """Restore the newest readable checkpoint as ``(step, state, meta)``. Damaged newer ones are
        reported on stderr and moved aside to ``<directory>-damaged/`` (so later saves can reuse
        their step numbers); ``RunError`` if none is readable, with nothing moved."""
        try:
            steps = sorted(self._manager.all_steps(), reverse=True)
        except Exception as error:
            raise RunError(f"--resume: cannot read checkpoints in {self.directory}: {error}") from error
        if not steps:
            raise RunError(f"--resume: no complete checkpoint in {self.directory}")
        errors: list[tuple[int, str]] = []
        for step in steps:
            try:
                state, meta = self.restore(step, target)
            except RunError as error:
                errors.append((step, str(error)))
                continue
            for damaged, message in errors:
                print(f"warning: {message}; resuming from checkpoint {step} instead", file=sys.stderr)
                if jax.process_index() == 0:
                    aside = self.directory.with_name(self.directory.name + "-damaged")
                    aside.mkdir(exist_ok=True)
                    shutil.move(str(self.directory / str(damaged)), str(aside / str(damaged)))
            if errors:
                if jax.process_count() > 1:
                    multihost_utils.sync_global_devices("damaged checkpoints moved aside")
                self._manager.reload()
            return step, state, meta
        more = f" (and {len(errors) - 1} older checkpoints)" if len(errors) > 1 else ""
        raise RunError(errors[0][1] + more)

    def close(self) -> None:
        self._manager.close()


def read_snapshot(run_dir: str | Path, update: int | None = None, run: int = 0) -> tuple[int, Any]:
    """``(update, learner state of run ``run``)`` of snapshot ``update`` (default: the last) in
    ``run_dir/snapshots``, or of the final checkpoint when the run kept no snapshots."""
    run_dir = Path(run_dir)
    folder = run_dir / "snapshots" if (run_dir / "snapshots").is_dir() else run_dir / "checkpoints"
    if not folder.is_dir():
        raise ConfigError("run_dir", f"{run_dir} holds no trained agent (no snapshots/ or checkpoints/)")
    store = Checkpoints(folder)
    step = store.latest_step() if update is None else update
    if step is None:
        raise ConfigError("run_dir", f"{folder} holds no complete checkpoint")
    state, _ = store.restore(step)
    store.close()
    state = state.get("learner", state)  # checkpoints hold the runner's carry, snapshots the learner state
    return step, jax.tree.map(lambda leaf: np.asarray(leaf)[run], state)


def snapshot_updates(run_dir: str | Path) -> list[int]:
    """The updates at which ``run_dir`` kept a snapshot, in order."""
    folder = Path(run_dir) / "snapshots"
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []
