"""The runner: determinism, resume after a kill, clear errors for bad input, NaN stops."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT, run_cli

from experiments import ppo as ppo_experiment
from experiments.common import RunArgs, repeat_runs, seed_keys
from rl import envs, runner
from rl.checkpoint import Checkpoints
from rl.errors import RunError
from rl.ppo import PPOConfig, default_hparams, make_learner
from rl.probe_envs import ConstantReward

TINY = ["--env", "CartPole-v1", "--num-envs", "4", "--num-steps", "16", "--num-minibatches", "2",
        "--update-epochs", "2", "--no-progress"]


def tree_digest(path: Path) -> str:
    digest = hashlib.sha256()
    for f in sorted(path.rglob("*")):
        if f.is_file():
            digest.update(str(f.relative_to(path)).encode() + f.read_bytes())
    return digest.hexdigest()


def test_same_seed_gives_identical_metrics(tmp_path):
    config = PPOConfig(num_envs=4, num_steps=16, num_minibatches=2, update_epochs=2, total_timesteps=64 * 12)
    outs = []
    for name in ("a", "b"):
        args = ppo_experiment.Args(RunArgs(out=str(tmp_path / name), num_seeds=2, chunk_updates=5, progress=False), config)
        ppo_experiment.main(args)
        outs.append((tmp_path / name / "metrics.jsonl").read_text())
    assert outs[0] == outs[1] and len(outs[0].splitlines()) == 12
    other = ppo_experiment.Args(RunArgs(out=str(tmp_path / "c"), seed=1, num_seeds=2, chunk_updates=5, progress=False), config)
    ppo_experiment.main(other)
    assert (tmp_path / "c" / "metrics.jsonl").read_text() != outs[0]


def test_killed_run_resumes_to_the_same_result(tmp_path):
    args = [*TINY, "--total-timesteps", str(64 * 80), "--chunk-updates", "2", "--num-seeds", "2"]
    assert run_cli("experiments.ppo", *args, "--out", str(tmp_path / "full")).returncode == 0

    cmd = [sys.executable, "-m", "experiments.ppo", *args, "--out", str(tmp_path / "killed")]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "XLA_FLAGS": ""}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    checkpoints = tmp_path / "killed" / "checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline and not any(p.name.isdigit() and int(p.name) >= 10 for p in checkpoints.glob("*")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "summary.json").exists(), "the run finished before it could be killed"

    resumed = run_cli("experiments.ppo", *args, "--out", str(tmp_path / "killed"), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    full_metrics = (tmp_path / "full" / "metrics.jsonl").read_text()
    assert (tmp_path / "killed" / "metrics.jsonl").read_text() == full_metrics
    final_full, _ = Checkpoints(tmp_path / "full" / "checkpoints").restore(80)
    final_resumed, _ = Checkpoints(checkpoints).restore(80)
    jax.tree.map(np.testing.assert_array_equal, final_full, final_resumed)
    summary_full = json.loads((tmp_path / "full" / "summary.json").read_text())
    summary_resumed = json.loads((tmp_path / "killed" / "summary.json").read_text())
    assert summary_full["final_return_per_seed"] == summary_resumed["final_return_per_seed"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--env", "NoSuchEnv-v0"], "env: unknown environment id 'NoSuchEnv-v0'"),
        (["--num-envs", "4", "--num-steps", "10", "--num-minibatches", "3"],
         "num_minibatches: num_envs * num_steps = 40 is not divisible by num_minibatches = 3"),
        (["--lr", "-0.001"], "lr: must be finite and > 0.0, got -0.001"),
    ],
)
def test_bad_config_fails_before_compiling_and_writes_nothing(tmp_path, flags, message):
    out = tmp_path / "run"
    result = run_cli("experiments.ppo", "--out", str(out), *flags)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == f"error: {message}" or message in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_corrupted_checkpoint_is_reported_and_nothing_is_overwritten(tmp_path):
    out = tmp_path / "run"
    args = [*TINY, "--total-timesteps", str(64 * 4), "--chunk-updates", "2", "--num-seeds", "1", "--out", str(out)]
    assert run_cli("experiments.ppo", *args).returncode == 0
    for f in (out / "checkpoints").rglob("*"):
        if f.is_file():
            f.write_bytes(b"garbage")
    before = tree_digest(out)
    result = run_cli("experiments.ppo", *args, "--resume")
    assert result.returncode == 2
    assert "error: checkpoint" in result.stderr and "corrupted" in result.stderr
    assert "Traceback" not in result.stderr
    assert tree_digest(out) == before


def test_existing_run_directory_is_not_overwritten(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    result = run_cli("experiments.ppo", *TINY, "--out", str(out))
    assert result.returncode == 2 and "already holds files" in result.stderr
    assert (out / "notes.txt").read_text() == "keep me" and len(list(out.iterdir())) == 1


class NaNAfter40Steps(ConstantReward):
    """A never-ending episode whose reward turns NaN after 40 steps (``cue`` counts the steps)."""

    def step_env(self, key, state, action, params):
        obs, state, _, _, info = super().step_env(key, state, action, params)
        return obs, state.replace(cue=state.cue + 1), jnp.where(state.cue >= 40, jnp.nan, 1.0), jnp.bool_(False), info


envs.register("NaNAfter40Steps-test", NaNAfter40Steps)


def test_nan_stops_with_the_update_index_and_keeps_the_last_good_checkpoint(tmp_path):
    config = PPOConfig(env="NaNAfter40Steps-test", num_envs=2, num_steps=8, num_minibatches=2, total_timesteps=16 * 10)
    hparams = repeat_runs(default_hparams(config), 2)
    with pytest.raises(RunError, match=r"non-finite loss at update 6; .*last good checkpoint \(update 4\)"):
        runner.run(make_learner(config), seed_keys(0, 2), hparams, tmp_path, {"case": "nan"}, chunk_updates=2,
                   progress=False)
    assert Checkpoints(tmp_path / "checkpoints").latest_step() == 4
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 4
