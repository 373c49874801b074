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
from conftest import FAST_COMPILE, ROOT, run_cli, run_cli_cases
from flax import struct
from gymnax.environments import environment

from experiments import ppo as ppo_experiment
from experiments.common import RunArgs, repeat_runs, seed_keys
from rl import envs, records, runner
from rl.checkpoint import Checkpoints
from rl.errors import RunError
from rl.ppo import PPOConfig, default_hparams, make_learner
from rl.probe_envs import ConstantReward, MaskedBandit

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
    args = [*TINY, "--total-timesteps", str(64 * 80), "--chunk-updates", "2", "--num-seeds", "2",
            "--checkpoint-seconds", "0"]
    assert run_cli("experiments.ppo", *args, "--out", str(tmp_path / "full")).returncode == 0

    cmd = [sys.executable, "-m", "experiments.ppo", *args, "--out", str(tmp_path / "killed")]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "XLA_FLAGS": FAST_COMPILE}, stdout=subprocess.DEVNULL,
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
    assert final_full["failed"].shape == (2,)
    jax.tree.map(np.testing.assert_array_equal, final_full, final_resumed)
    summary_full = json.loads((tmp_path / "full" / "summary.json").read_text())
    summary_resumed = json.loads((tmp_path / "killed" / "summary.json").read_text())
    assert summary_full["final_return_per_seed"] == summary_resumed["final_return_per_seed"]


BAD_CONFIGS = [
    (["--env", "NoSuchEnv-v0"], "env: unknown environment id 'NoSuchEnv-v0'"),
    (["--num-envs", "4", "--num-steps", "10", "--num-minibatches", "3"],
     "num_minibatches: num_envs * num_steps = 40 is not divisible by num_minibatches = 3"),
    (["--lr", "-0.001"], "lr: must be finite and > 0.0, got -0.001"),
]


@pytest.fixture(scope="module")
def bad_config_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    outs = [root / f"run{i}" for i in range(len(BAD_CONFIGS))]
    existing = root / "existing"  # a run directory that already holds someone's files (the last case)
    existing.mkdir()
    (existing / "notes.txt").write_text("keep me")
    cases = [["--out", str(out), *flags] for out, (flags, _) in zip(outs, BAD_CONFIGS, strict=True)]
    return outs + [existing], run_cli_cases("experiments.ppo", [*cases, [*TINY, "--out", str(existing)]])


@pytest.mark.parametrize("case", range(len(BAD_CONFIGS)))
def test_bad_config_fails_before_compiling_and_writes_nothing(bad_config_runs, case):
    message, out, result = BAD_CONFIGS[case][1], bad_config_runs[0][case], bad_config_runs[1][case]
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


def test_existing_run_directory_is_not_overwritten(bad_config_runs):
    out, result = bad_config_runs[0][-1], bad_config_runs[1][-1]
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
    with pytest.raises(RunError, match=r"non-finite loss at update 6 \(run 0\); .*last good checkpoint \(update 4\)"):
        runner.run(make_learner(config), seed_keys(0, 2), hparams, tmp_path, {"case": "nan"}, chunk_updates=2,
                   progress=False, checkpoint_seconds=3600)
    assert Checkpoints(tmp_path / "checkpoints").latest_step() == 4
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 4


SMALL = PPOConfig(num_envs=4, num_steps=16, num_minibatches=2, update_epochs=2, total_timesteps=64 * 8,
                  hidden_sizes=(16,))


def run_small(out, resume=False, **kwargs):
    hparams = repeat_runs(default_hparams(SMALL), 2)
    return runner.run(make_learner(SMALL), seed_keys(0, 2), hparams, out, {"case": "small"}, chunk_updates=2,
                      resume=resume, progress=False, checkpoint_seconds=0, **kwargs)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    run_small(out)
    return out


def copy_run(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_resume_drops_metrics_past_the_checkpoint_and_a_torn_last_line(finished_run, tmp_path):
    out = copy_run(finished_run, tmp_path / "run")
    shutil_rm(out / "checkpoints" / "8")  # the newest checkpoint is now update 6 ...
    lines = (out / "metrics.jsonl").read_text().splitlines(keepends=True)
    (out / "metrics.jsonl").write_text("".join(lines[:7]) + lines[7][:25])  # ... the log has 7.5 updates
    result = run_small(out, resume=True)
    assert (out / "metrics.jsonl").read_text() == (finished_run / "metrics.jsonl").read_text()
    assert len(result.records) == 8


def test_resume_falls_back_past_a_damaged_checkpoint_and_says_so(finished_run, tmp_path, capsys):
    out = copy_run(finished_run, tmp_path / "run")
    for f in (out / "checkpoints" / "8").rglob("*"):
        if f.is_file():
            f.write_bytes(b"garbage")
    result = run_small(out, resume=True)
    err = capsys.readouterr().err
    assert "warning: checkpoint" in err and "8" in err and "resuming from checkpoint 6 instead" in err
    assert (out / "checkpoints-damaged" / "8").exists() and Checkpoints(out / "checkpoints").latest_step() == 8
    assert (out / "metrics.jsonl").read_text() == (finished_run / "metrics.jsonl").read_text()
    final, _ = Checkpoints(finished_run / "checkpoints").restore(8)
    jax.tree.map(np.testing.assert_array_equal, final["learner"]["params"], result.state.params)


def test_resume_reads_the_checkpoint_before_compiling(finished_run, tmp_path):
    out = copy_run(finished_run, tmp_path / "run")
    for f in (out / "checkpoints").rglob("*"):
        if f.is_file():
            f.write_bytes(b"garbage")
    learner = make_learner(SMALL)

    def update_never_compiled(state, hp):
        raise AssertionError("compiled before the checkpoint was read")

    with pytest.raises(RunError, match="corrupted"):
        runner.run(learner._replace(update=update_never_compiled), seed_keys(0, 2),
                   repeat_runs(default_hparams(SMALL), 2), out, {"case": "small"}, chunk_updates=2, resume=True,
                   progress=False)


def shutil_rm(path):
    import shutil

    shutil.rmtree(path)


@struct.dataclass
class NaNParams(environment.EnvParams):
    nan_after: int = 40


class NaNAfterParamSteps(ConstantReward):
    """Like NaNAfter40Steps, with the step count an env param (so one run of a batch can fail)."""

    @property
    def default_params(self):
        return NaNParams(max_steps_in_episode=1000)

    def step_env(self, key, state, action, params):
        obs, state, _, _, info = super().step_env(key, state, action, params)
        reward = jnp.where(state.cue >= params.nan_after, jnp.nan, 1.0)
        return obs, state.replace(cue=state.cue + 1), reward, jnp.bool_(False), info


envs.register("NaNAfterParamSteps-test", NaNAfterParamSteps)


def test_failed_members_are_frozen_and_reported_while_the_others_go_on(tmp_path):
    config = PPOConfig(env="NaNAfterParamSteps-test", num_envs=2, num_steps=8, num_minibatches=2,
                       total_timesteps=16 * 10, hidden_sizes=(8,))
    hparams = repeat_runs(default_hparams(config), 2)
    hparams = hparams.replace(env_params=hparams.env_params.replace(nan_after=np.array([40, 10_000], np.int32)))
    result = runner.run(make_learner(config), seed_keys(0, 2), hparams, tmp_path / "pop", {"case": "pop"},
                        chunk_updates=2, progress=False, tolerate_failures=True)
    assert result.failed_at.tolist() == [6, 0]
    losses = records.series(result.records, "total_loss")
    assert np.isfinite(losses[:5, 0]).all() and np.isnan(losses[5:, 0]).all() and np.isfinite(losses[:, 1]).all()
    assert runner.summarize(result)["failed_runs"] == {0: 6}
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(result.state.params))  # frozen at its last good state
    # the healthy member is unaffected by its failed neighbour
    alone = runner.run(make_learner(config), seed_keys(0, 2)[1:], jax.tree.map(lambda x: x[1:], hparams),
                       tmp_path / "alone", {"case": "alone"}, chunk_updates=2, progress=False)
    np.testing.assert_allclose(records.series(alone.records, "total_loss")[:, 0], losses[:, 1], rtol=1e-5, atol=1e-6)


class NoLegalActionAfter3Steps(MaskedBandit):
    """MaskedBandit whose episodes never end and whose mask allows nothing from step 3 on."""

    def action_mask(self, state, params):
        return super().action_mask(state, params) & (state.time < 3)

    def step_env(self, key, state, action, params):
        obs, state, reward, _, info = super().step_env(key, state, action, params)
        return obs, state, reward, jnp.bool_(False), info


envs.register("NoLegalAction-test", NoLegalActionAfter3Steps)


def test_a_state_without_legal_actions_stops_the_run(tmp_path):
    config = PPOConfig(env="NoLegalAction-test", num_envs=2, num_steps=2, num_minibatches=1, total_timesteps=4 * 4)
    with pytest.raises(RunError, match=r"no legal action \(all-False action mask\) at update 2 \(run 0\)"):
        runner.run(make_learner(config), seed_keys(0, 1), repeat_runs(default_hparams(config), 1), tmp_path,
                   {"case": "mask"}, chunk_updates=1, progress=False)


def test_runs_that_do_not_divide_the_devices_are_padded(tmp_path):
    """3 runs on 2 devices use both (padded to 4) and match 3 runs on one device."""
    hparams = repeat_runs(default_hparams(SMALL), 3)
    results = [runner.run(make_learner(SMALL), seed_keys(0, 3), hparams, tmp_path / name, {"case": name},
                          progress=False, devices=jax.devices()[:n]) for name, n in (("one", 1), ("two", 2))]
    assert len(results[1].state.update_step.sharding.device_set) == 2 and results[1].state.update_step.shape == (4,)
    assert len(results[1].records[0]["total_loss"]) == 3
    np.testing.assert_allclose(records.series(results[0].records, "total_loss"),
                               records.series(results[1].records, "total_loss"), rtol=1e-4, atol=1e-5)
