"""Run a batch of training lifetimes as compiled chunks with logging and checkpoints in between.

``run`` takes any ``Learner`` (pure ``init``/``update``), a batch of keys and hyperparameters (the
leading axis indexes runs: seeds, sweep points, population members) and a run directory. It
compiles ``update`` scanned ``chunk_updates`` times, vmapped over runs and sharded over devices,
then loops: run a chunk, copy its per-update metrics to the host, stop on a non-finite loss,
append ``metrics.jsonl``, save an orbax checkpoint of the full state. ``resume=True`` restores the
newest checkpoint and continues; the resumed run reproduces the uninterrupted one exactly.

The learner's per-update metrics must include ``total_loss`` (checked for NaN/inf) and
``episode_return`` (progress bar and ``summarize``).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from rl import records, sharding
from rl.checkpoint import Checkpoints
from rl.errors import RunError


@dataclasses.dataclass
class RunResult:
    """What a finished run leaves in memory (the files hold the same)."""

    state: Any
    records: list[dict[str, Any]]
    compile_seconds: float
    train_seconds: float
    env_steps_per_run: int
    num_runs: int


def prepare_run_dir(out: Path, config: dict[str, Any], resume: bool) -> None:
    """Create ``out`` with config.json, or check that a resumed run has the same configuration.

    Refuses to touch a directory that already holds another run unless resuming it.
    """
    config_path = out / "config.json"
    if resume:
        if not config_path.exists():
            raise RunError(f"--resume: {out} holds no run to resume (no config.json)")
        saved = json.loads(config_path.read_text())
        current = json.loads(json.dumps(config, default=str))  # as it would be saved
        changed = sorted(k for k in saved.keys() | current.keys() if saved.get(k) != current.get(k))
        if changed:
            raise RunError(f"--resume: the configuration differs from the saved run in {changed}")
        return
    if out.exists() and any(out.iterdir()):
        raise RunError(f"--out: {out} already holds files; pass --resume to continue that run or choose another --out")
    if jax.process_count() > 1:  # every host checks before any host writes (shared file systems)
        multihost_utils.sync_global_devices("run directory checked")
    if jax.process_index() == 0:
        out.mkdir(parents=True, exist_ok=True)
        records.write_json(config_path, config)


def run(
    learner: Any,
    keys: np.ndarray,
    hparams: Any,
    out: str | Path,
    config: dict[str, Any],
    chunk_updates: int = 0,
    resume: bool = False,
    progress: bool = True,
    devices: list[Any] | None = None,
) -> RunResult:
    """Train ``len(keys)`` runs of ``learner`` with batched ``hparams``; see the module docstring.

    ``chunk_updates = 0`` picks about 20 chunks. Raises ``RunError`` on a non-finite loss (the last
    good checkpoint stays), an unreadable checkpoint, or a run directory that is not ours.
    """
    out = Path(out)
    num_runs, total = len(keys), learner.num_updates
    chunk = chunk_updates or max(1, total // 20)
    prepare_run_dir(out, config, resume)
    mesh = sharding.batch_mesh(num_runs, devices)
    keys, hparams = sharding.shard_runs(keys, mesh), sharding.shard_runs(hparams, mesh)
    checkpoints = Checkpoints(out / "checkpoints")

    def run_chunk(length: int):
        def chunk_fn(state: Any, hp: Any):
            return jax.lax.scan(lambda s, _: learner.update(s, hp), state, None, length=length)

        return sharding.map_over_runs(chunk_fn, mesh)

    start_time = time.perf_counter()
    init = sharding.map_over_runs(learner.init, mesh).lower(keys, hparams).compile()
    state = init(keys, hparams)
    executables = {}
    for length in {min(chunk, total), total % chunk} - {0}:
        executables[length] = run_chunk(length).lower(state, hparams).compile()
    compile_seconds = time.perf_counter() - start_time

    done, train_seconds, history = 0, 0.0, []
    metrics_path = out / "metrics.jsonl"
    if resume:
        try:
            done = checkpoints.latest_step()
        except Exception as error:
            raise RunError(f"--resume: cannot read checkpoints in {checkpoints.directory}: {error}") from error
        if done is None:
            raise RunError(f"--resume: no complete checkpoint in {checkpoints.directory}")
        state, meta = checkpoints.restore(done, sharding.abstract_like(state))
        train_seconds = float(meta["train_seconds"])
        history = records.read_jsonl(metrics_path, done)
        if len(history) != done:
            raise RunError(f"--resume: {metrics_path} has {len(history)} updates, the checkpoint {done}")
        if jax.process_index() == 0:
            records.write_jsonl(metrics_path, history)

    bar = tqdm(total=total, initial=done, disable=not progress or jax.process_index() != 0, unit="upd")
    while done < total:
        length = min(chunk, total - done)
        tick = time.perf_counter()
        new_state, metrics = executables[length](state, hparams)
        metrics = sharding.to_host(metrics)
        elapsed = time.perf_counter() - tick
        losses = metrics["total_loss"]
        if not np.isfinite(losses).all():
            bad = int(np.argwhere(~np.isfinite(losses))[:, 1].min()) + done + 1
            raise RunError(
                f"non-finite loss at update {bad}; stopped. The last good checkpoint (update {done}) "
                f"is in {checkpoints.directory}"
            )
        state, train_seconds = new_state, train_seconds + elapsed
        chunk_records = records.metric_records(metrics, done, learner.env_steps_per_update)
        history.extend(chunk_records)
        done += length
        if jax.process_index() == 0:
            records.append_jsonl(metrics_path, chunk_records)
        checkpoints.save(done, state, {"update": done, "train_seconds": train_seconds})
        bar.update(length)
        bar.set_postfix(
            steps_per_s=f"{num_runs * length * learner.env_steps_per_update / elapsed:,.0f}",
            ret=f"{np.mean(chunk_records[-1]['episode_return']):.1f}",
        )
    bar.close()
    checkpoints.close()
    return RunResult(state, history, compile_seconds, train_seconds, total * learner.env_steps_per_update, num_runs)


def summarize(result: RunResult) -> dict[str, Any]:
    """The standard summary: final return (mean over the last 5% of updates) per run, its mean and
    std over runs, throughput (all runs together, compile excluded) and timings."""
    returns = records.series(result.records, "episode_return")
    per_run = returns[-records.final_window(len(returns)):].mean(axis=0)
    total_steps = result.env_steps_per_run * result.num_runs
    return {
        "final_return_mean": float(per_run.mean()),
        "final_return_std": float(per_run.std()),
        "final_return_per_seed": [float(x) for x in per_run],
        "env_steps_per_second": total_steps / max(result.train_seconds, 1e-9),
        "compile_seconds": result.compile_seconds,
        "train_seconds": result.train_seconds,
        "total_env_steps": total_steps,
        "env_steps_per_run": result.env_steps_per_run,
        "num_runs": result.num_runs,
    }
