"""Sharding the run axis: 8 fake devices, and the documented launch on 2 processes x 2 devices, match 1 device."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
from conftest import FAST_COMPILE, ROOT
from sharding_case import CONFIG, NUM_RUNS, case_inputs

from rl import records, runner
from rl.ppo import make_learner


def train_on(devices, out):
    keys, hparams = case_inputs()
    result = runner.run(make_learner(CONFIG), keys, hparams, out, {"case": "sharding"}, chunk_updates=3,
                        progress=False, devices=devices)
    leaf = jax.tree.leaves(result.state.params)[0]
    return records.series(result.records, "episode_return"), records.series(result.records, "total_loss"), leaf


def test_eight_devices_match_one(tmp_path):
    assert jax.device_count() == 8
    one = train_on(jax.devices()[:1], tmp_path / "one")
    eight = train_on(jax.devices(), tmp_path / "eight")
    assert len(eight[2].sharding.device_set) == 8 and len(one[2].sharding.device_set) == 1
    assert one[0].shape == (6, NUM_RUNS)
    for a, b in zip(one[:2], eight[:2], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    assert len({tuple(one[0][:, i]) for i in range(NUM_RUNS)}) == NUM_RUNS  # runs really differ


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_several_runs_per_device_do_not_hang():
    """Twice as many devices as cores, so every thread of XLA's CPU pool is busy (this hung with
    a batched QR in the initialiser)."""
    devices = max(4, 2 * len(os.sched_getaffinity(0)))
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices} {FAST_COMPILE}"}
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "busy_devices_case.py"), "mlp", "gru"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split("\n")[:2] == [f"ok mlp {devices} {4 * devices}", f"ok gru {devices} {4 * devices}"], done.stdout


def test_documented_multihost_sweep_command_matches_one_process(tmp_path):
    """The README's multi-host launch, run as written through the CLI on two local processes, with
    a run count (3) that does not divide the 4 devices of the two processes: padded, and equal to
    one process."""
    port = str(free_port())
    sweep = ["-m", "experiments.sweep", "--env", "CartPole-v1", "--lr", "1e-4,1e-3,3e-3", "--num-seeds", "1",
             "--total-timesteps", "640", "--num-envs", "4", "--num-steps", "16", "--num-minibatches", "2",
             "--update-epochs", "1", "--hidden-sizes", "16", "--eval-episodes", "2", "--no-progress"]
    env = {**os.environ, "XLA_FLAGS": FAST_COMPILE, "JAX_NUM_CPU_DEVICES": "2"}
    procs = [
        subprocess.Popen([sys.executable, *sweep, "--out", str(tmp_path / "two"), "--coordinator", f"127.0.0.1:{port}",
                          "--num-processes", "2", "--process-id", str(i)],
                         cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=400)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outputs)
    one = subprocess.run([sys.executable, *sweep, "--out", str(tmp_path / "one")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=400)
    assert one.returncode == 0, one.stderr[-3000:]
    two_metrics = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    one_metrics = [json.loads(line) for line in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    assert len(two_metrics) == len(one_metrics) == 10 and len(two_metrics[0]["total_loss"]) == 3
    for a, b in zip(one_metrics, two_metrics, strict=True):
        np.testing.assert_allclose(a["total_loss"], b["total_loss"], rtol=1e-4, atol=1e-5)
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["num_runs"] == 3 and summary["num_devices"] == 4  # padded to the devices of both processes
