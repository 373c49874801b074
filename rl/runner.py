"""Run a batch of training lifetimes as compiled chunks with logging and checkpoints in between.

``run`` takes any ``Learner`` (pure ``init``/``update``), a batch of keys and hyperparameters (the
leading axis indexes runs: seeds, sweep points, population members) and a run directory. It
compiles ``update`` scanned ``chunk_updates`` times, vmapped over runs and sharded over devices
(a batch that does not divide the devices is padded with copies of its last run), then loops: run
a chunk, copy its per-update metrics to the host, check for failed runs, append ``metrics.jsonl``
(and any logging backend), and save an orbax checkpoint of the full state when
``checkpoint_seconds`` have passed since the last one (and always at the end).

A run fails when its loss is not finite or when its environment offers no legal action. By
default the first failure stops everything (``RunError`` naming the update; the newest checkpoint
stays good). With ``tolerate_failures`` (populations, ES), a failed run is frozen at its last good
state, reported in ``RunResult.failed_at`` and its later metrics are missing; the others go on.

``resume=True`` restores the newest readable checkpoint before compiling (falling back to the
previous one, with a warning, when the newest is damaged) and continues; the resumed run
reproduces the uninterrupted one exactly.

The learner's per-update metrics must include ``total_loss`` and ``episode_return``; a
``no_legal_action`` count, when present, must stay 0.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec
from tqdm import tqdm

from rl import records, sharding
from rl.checkpoint import Checkpoints
from rl.errors import RunError
from rl.loggers import check_backends, make_loggers


@dataclasses.dataclass
class RunResult:
    """What a finished run leaves in memory (the files hold the same)."""

    state: Any  # batched over runs (padding runs included, on the mesh)
    records: list[dict[str, Any]]
    compile_seconds: float
    train_seconds: float  # wall time of the training loop: chunks, logging, checkpoints (compile apart)
    env_steps_per_run: int
    num_runs: int
    failed_at: np.ndarray  # [runs] the update at which each run failed, 0 if it did not
    evaluation: dict[str, np.ndarray] | None = None  # per run [runs, episodes]: return, length, ...
    eval_seconds: float = 0.0  # compile and play of the final evaluation
    num_devices: int = 1  # devices the runs were sharded over (padded to a multiple of it)


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


FAILURES = {
    "total_loss": "non-finite loss",
    # counters that must stay 0
    "no_legal_action": "no legal action (all-False action mask)",
    "misaligned_episode_ends": "an episode ended inside a trajectory-reward segment (the env's episodes are not "
    "all episode_length steps long)",
}


def failed(metrics: dict[str, jax.Array]) -> jax.Array:
    """Whether an update's metrics show a failure: a non-finite loss, or a failure counter
    (``FAILURES``: a state without legal actions, a misaligned trajectory) above 0."""
    bad = ~jnp.isfinite(metrics["total_loss"])
    for name in FAILURES:
        if name != "total_loss" and name in metrics:
            bad = bad | (metrics[name] > 0)
    return bad


def failure_reason(metrics: dict[str, np.ndarray], run: int, index: int) -> str:
    """Which failure the host copy of a chunk's metrics shows for ``run`` at chunk step ``index``."""
    if not np.isfinite(metrics["total_loss"][run, index]):
        return FAILURES["total_loss"]
    counters = [name for name in FAILURES if name != "total_loss" and name in metrics]
    return next((FAILURES[name] for name in counters if metrics[name][run, index] > 0), "failure")


def default_chunk(total: int) -> int:
    """About 20 chunks; a divisor of ``total`` between 10 and 40 chunks when there is one, so that a
    single chunk length is compiled."""
    divisors = [d for d in range(max(1, total // 40), total // 10 + 1) if total % d == 0]
    return min(divisors, key=lambda d: abs(total // d - 20)) if divisors else max(1, total // 20)


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
    tolerate_failures: bool = False,
    eval_episodes: int = 0,
    eval_greedy: bool = True,
    checkpoint_seconds: float = 30.0,
    loggers: Sequence[str] = (),
    snapshot_every: int = 0,
) -> RunResult:
    """Train ``len(keys)`` runs of ``learner`` with batched ``hparams``; see the module docstring.

    ``chunk_updates = 0`` picks about 20 chunks (``default_chunk``). ``eval_episodes > 0`` plays
    that many episodes per run with the final policy (``learner.evaluate``, greedy or sampled).
    ``loggers`` names logging backends (``rl.loggers``: tensorboard, wandb) that mirror
    metrics.jsonl. ``snapshot_every > 0`` also keeps the state at update 0, every multiple of
    ``snapshot_every`` and the end in ``out/snapshots/<update>`` (all of them, for evaluations
    across training such as Elo tables; chunks are cut so that they end there). Raises ``RunError`` on a failed run (unless ``tolerate_failures``), an
    unreadable checkpoint, or a run directory that is not ours.
    """
    out = Path(out)
    num_runs, total = len(keys), learner.num_updates
    chunk = chunk_updates or default_chunk(total)
    if snapshot_every:
        chunk = math.gcd(chunk, snapshot_every)
    mesh = sharding.batch_mesh(num_runs, devices, getattr(learner, "data_parallel", 1))
    padded = sharding.padded_size(num_runs, mesh)
    keys_on_mesh = sharding.shard_runs(sharding.pad_runs(keys, padded), mesh)
    hparams = sharding.shard_runs(sharding.pad_runs(hparams, padded), mesh)
    run_spec = PartitionSpec(sharding.AXIS)
    carry_specs: Any = run_spec
    if learner.state_specs is not None:  # leaves of the state split over each run's devices
        carry_specs = {"learner": sharding.run_specs(learner.state_specs), "failed": run_spec}
    init = sharding.map_over_runs(lambda key, hp: {"learner": learner.init(key, hp), "failed": jnp.bool_(False)},
                                  mesh, out_specs=carry_specs)

    done, train_seconds, history, failed_at = 0, 0.0, [], np.zeros(num_runs, np.int64)
    check_backends(loggers)
    prepare_run_dir(out, config, resume)
    checkpoints = Checkpoints(out / "checkpoints")
    metrics_path = out / "metrics.jsonl"
    if resume:  # restore before compiling: a damaged run directory costs no compile
        shapes = jax.eval_shape(init, keys_on_mesh, hparams)
        specs = jax.tree.map(lambda _: run_spec, shapes) if learner.state_specs is None else carry_specs
        target = jax.tree.map(lambda x, spec: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=NamedSharding(mesh, spec)),
                              shapes, specs)
        done, carry, meta = checkpoints.restore_latest(target)
        train_seconds = float(meta["train_seconds"])
        failed_at = np.asarray(meta.get("failed_at", failed_at), np.int64)
        history = records.read_jsonl(metrics_path, done)
        if len(history) != done:
            raise RunError(f"--resume: {metrics_path} has {len(history)} updates, the checkpoint {done}")
        if jax.process_index() == 0:
            records.write_jsonl(metrics_path, history)

    def chunk_fn(length: int):
        def body(carry: dict[str, Any], hp: Any):
            def step(carry, _):
                state, was_failed = carry["learner"], carry["failed"]
                new_state, metrics = learner.update(state, hp)
                bad = failed(metrics)
                if tolerate_failures:  # freeze a failed run at its last good state
                    was_failed = was_failed | bad
                    new_state = jax.tree.map(lambda old, new: jnp.where(was_failed, old, new), state, new_state)
                return {"learner": new_state, "failed": was_failed}, {**metrics, "failed": bad}

            return jax.lax.scan(step, carry, None, length=length)

        return sharding.map_over_runs(body, mesh, (carry_specs, run_spec), (carry_specs, run_spec))

    start_time = time.perf_counter()
    if not resume:
        carry = init(keys_on_mesh, hparams)
    executables = {}
    for length in {min(chunk, total - done), (total - done) % chunk} - {0}:
        executables[length] = chunk_fn(length).lower(carry, hparams).compile()
    compile_seconds = time.perf_counter() - start_time

    def save(update: int) -> None:
        checkpoints.save(update, carry, {"update": update, "train_seconds": train_seconds,
                                         "failed_at": failed_at.tolist()})

    snapshots = Checkpoints(out / "snapshots", keep=None) if snapshot_every else None

    def snapshot(update: int) -> None:
        if snapshots is not None and (update % snapshot_every == 0 or update == total):
            if snapshots.latest_step() is None or update > snapshots.latest_step():
                snapshots.save(update, carry["learner"], {"update": update})

    snapshot(done)

    backends = make_loggers(loggers, out, config) if jax.process_index() == 0 else []
    bar = tqdm(total=total, initial=done, disable=not progress or jax.process_index() != 0, unit="upd")
    loop_start, last_save = time.perf_counter() - train_seconds, time.perf_counter()
    while done < total:
        length = min(chunk, total - done)
        tick = time.perf_counter()
        new_carry, metrics = executables[length](carry, hparams)
        metrics = {name: np.array(value[:num_runs], np.float64) for name, value in sharding.to_host(metrics).items()}
        bad = metrics.pop("failed") > 0
        for r in np.flatnonzero(bad.any(axis=1) & (failed_at == 0)):
            index = int(np.argmax(bad[r]))
            reason, update = failure_reason(metrics, r, index), done + index + 1
            if not tolerate_failures:
                if checkpoints.latest_step() != done:
                    save(done)
                raise RunError(
                    f"{reason} at update {update} (run {r}); stopped. The last good checkpoint (update {done}) "
                    f"is in {checkpoints.directory}"
                )
            failed_at[r] = update
            print(f"run {r} failed at update {update}: {reason}; frozen at its last good state", file=sys.stderr)
        updates = done + 1 + np.arange(length)
        for r in np.flatnonzero(failed_at):  # a failed run's metrics are missing from its failure on
            for values in metrics.values():
                values[r] = np.where(updates >= failed_at[r], np.nan, values[r])
        carry = new_carry
        chunk_records = records.metric_records(metrics, done, learner.env_steps_per_update)
        history.extend(chunk_records)
        done += length
        if jax.process_index() == 0:
            records.append_jsonl(metrics_path, chunk_records)
            for logger in backends:
                logger.log(chunk_records)
        train_seconds = time.perf_counter() - loop_start
        if done == total or time.perf_counter() - last_save >= checkpoint_seconds:
            save(done)
            last_save = time.perf_counter()
        snapshot(done)
        bar.update(length)
        returns = [v for v in chunk_records[-1]["episode_return"] if v is not None]
        bar.set_postfix(
            steps_per_s=f"{num_runs * length * learner.env_steps_per_update / (time.perf_counter() - tick):,.0f}",
            ret=f"{np.mean(returns):.1f}" if returns else "-",
        )
    train_seconds = time.perf_counter() - loop_start
    bar.close()
    if done == total and checkpoints.latest_step() != total:
        save(total)
    checkpoints.close()
    if snapshots is not None:
        snapshots.close()
    for logger in backends:
        logger.close()

    evaluation, eval_seconds = None, 0.0
    if eval_episodes > 0 and learner.evaluate is not None:
        tick = time.perf_counter()
        def play(carry: dict[str, Any], hp: Any, key: jax.Array) -> dict[str, jax.Array]:
            return learner.evaluate(carry["learner"], hp, jax.random.fold_in(key, 1), eval_episodes, eval_greedy)

        played = sharding.map_over_runs(play, mesh, (carry_specs, run_spec, run_spec))(carry, hparams, keys_on_mesh)
        evaluation = {name: value[:num_runs] for name, value in sharding.to_host(played).items()}
        eval_seconds = time.perf_counter() - tick
    return RunResult(carry["learner"], history, compile_seconds, train_seconds, total * learner.env_steps_per_update,
                     num_runs, failed_at, evaluation, eval_seconds, mesh.devices.size)


def _stats(values: np.ndarray) -> tuple[float | None, float | None]:
    finite = values[np.isfinite(values)]
    return (float(finite.mean()), float(finite.std())) if finite.size else (None, None)


def summarize(result: RunResult) -> dict[str, Any]:
    """The standard summary: final return (mean over the last 5% of updates, ignoring missing
    values) per run, its mean and std over runs, throughput (all runs together, the training
    loop's wall time with logging and checkpoints, compile excluded), timings, failed runs and,
    if the run was evaluated, the evaluation returns of the final policies."""
    per_run = records.final_values(result.records, "episode_return")
    total_steps = result.env_steps_per_run * result.num_runs
    mean, std = _stats(per_run)
    summary = {
        "final_return_mean": mean,
        "final_return_std": std,
        "final_return_per_seed": [float(x) if np.isfinite(x) else None for x in per_run],
        "env_steps_per_second": total_steps / max(result.train_seconds, 1e-9),
        "compile_seconds": result.compile_seconds,
        "train_seconds": result.train_seconds,
        "total_env_steps": total_steps,
        "env_steps_per_run": result.env_steps_per_run,
        "num_runs": result.num_runs,
        "num_devices": result.num_devices,
        "failed_runs": {int(r): int(result.failed_at[r]) for r in np.flatnonzero(result.failed_at)},
    }
    if result.evaluation is not None:
        per_run_eval = result.evaluation["return"].mean(axis=1)
        summary["eval_return_mean"], summary["eval_return_std"] = _stats(per_run_eval)
        summary.update(
            eval_return_per_seed=[float(x) for x in per_run_eval],
            eval_length_mean=float(result.evaluation["length"].mean()),
            eval_episodes=int(result.evaluation["return"].shape[1]),
            eval_seconds=result.eval_seconds,
        )
    return summary
