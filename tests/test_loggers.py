"""Logging backends: TensorBoard and Weights & Biases (offline) receive the metrics of metrics.jsonl;
a backend that is unknown or not installed is a configuration error before anything runs."""

import glob
import json
import struct

import numpy as np
import pytest

from experiments.common import RunArgs, repeat_runs, seed_keys
from rl import loggers, runner
from rl.errors import ConfigError
from rl.ppo import PPOConfig, default_hparams, make_learner

CONFIG = PPOConfig(num_envs=4, num_steps=16, num_minibatches=2, update_epochs=1, total_timesteps=64 * 4,
                   hidden_sizes=(8,))


def tensorboard_scalars(directory) -> dict[tuple[str, int], float]:
    """Scalars of the TFRecord event files under ``directory``: (tag, step) -> value."""
    from tensorboardX.proto import event_pb2

    values = {}
    for path in glob.glob(f"{directory}/events.out.tfevents.*"):
        raw, pos = open(path, "rb").read(), 0
        while pos < len(raw):
            (length,) = struct.unpack("<Q", raw[pos:pos + 8])
            event = event_pb2.Event.FromString(raw[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                values[(value.tag, event.step)] = value.simple_value
    return values


def wandb_history(directory) -> list[dict]:
    """History rows of the offline W&B run under ``directory`` (its .wandb file is a LevelDB-style
    log of 32 KiB blocks holding protobuf ``Record`` messages after a 7-byte file header)."""
    from wandb.proto import wandb_internal_pb2

    (path,) = glob.glob(f"{directory}/wandb/offline-run-*/run-*.wandb")
    raw, pos, pending, rows = open(path, "rb").read(), 7, b"", []
    while pos + 7 <= len(raw):
        if 32768 - pos % 32768 < 7:
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos:pos + 7])
        pending += raw[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = wandb_internal_pb2.Record.FromString(pending)
            pending = b""
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
    return rows


def test_both_backends_mirror_metrics_jsonl(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    runner.run(make_learner(CONFIG), seed_keys(0, 2), repeat_runs(default_hparams(CONFIG), 2), out, {"case": "log"},
               chunk_updates=2, progress=False, loggers=("tensorboard", "wandb"))
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    board = tensorboard_scalars(out / "tensorboard")
    history = {row["_step"]: row for row in wandb_history(out)}
    assert len(lines) == 4 and sorted(history) == [1, 2, 3, 4]
    for line in lines:
        for name in ("total_loss", "entropy", "episode_return"):
            mean = float(np.mean(line[name]))
            assert board[(f"mean/{name}", line["env_steps"])] == pytest.approx(mean, rel=1e-6)
            assert board[(f"run1/{name}", line["env_steps"])] == pytest.approx(line[name][1], rel=1e-6)
            assert history[line["update"]][f"mean/{name}"] == pytest.approx(mean, rel=1e-6)
            assert history[line["update"]][f"run0/{name}"] == pytest.approx(line[name][0], rel=1e-6)


def test_missing_or_unknown_backends_are_config_errors(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="loggers: unknown logger 'mlflow'; known: tensorboard, wandb"):
        RunArgs(loggers=("mlflow",)).validate()
    monkeypatch.setitem(loggers.BACKENDS, "tensorboard", ("tensorboardX_not_installed", "tensorboard"))
    with pytest.raises(ConfigError, match=r"loggers: tensorboard needs tensorboardX_not_installed: pip install"):
        runner.run(make_learner(CONFIG), seed_keys(0, 1), repeat_runs(default_hparams(CONFIG), 1), tmp_path / "x",
                   {"case": "x"}, progress=False, loggers=("tensorboard",))
    assert not (tmp_path / "x").exists()  # nothing written
