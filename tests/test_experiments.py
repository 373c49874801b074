"""Smoke runs of every experiments/ entry point, and their --help."""

import csv
import json

import pytest
from conftest import run_cli, run_cli_cases

from experiments import bench_ppo, minatar, sweep
from experiments.common import RunArgs
from rl.ppo import HPARAM_FIELDS, PPOConfig

CLI_MODULES = ["experiments.ppo", "experiments.sweep", "experiments.bench_ppo", "experiments.discover",
               "experiments.evaluate_objective", "experiments.minatar", "experiments.matrix_games", "experiments.spo",
               "experiments.plot_runs", "experiments.selfplay", "experiments.bench_selfplay", "experiments.cultural",
               "experiments.bench_cultural", "experiments.lm_rl", "experiments.lm_compare", "experiments.lm_noise",
               "experiments.bench_sampler"]


def test_help_lists_every_field_with_its_default():
    """Every CLI's --help exits 0 and lists its flags (all modules in one child process)."""
    flags = [f.name for f in PPOConfig.__dataclass_fields__.values() if f.name != "trajectory_reward"]
    for module, result in zip(CLI_MODULES, run_cli_cases(None, [[m, "--help"] for m in CLI_MODULES]), strict=True):
        assert result.returncode == 0, (module, result.stderr[-2000:])
        text = " ".join(result.stdout.split())
        assert "--out" in text or module == "experiments.plot_runs", module
        if module in ("experiments.ppo", "experiments.sweep"):
            for field in ["num_seeds", "resume", *flags]:
                assert f"--{field.replace('_', '-')}" in text, (module, field)
            assert "(default: 0.00025)" in text and "(default: CartPole-v1)" in text, module


def test_sweep_ranks_a_small_grid(tmp_path):
    args = sweep.Args(
        RunArgs(out=str(tmp_path), num_seeds=2, progress=False),
        sweep.SweepConfig(total_timesteps=64 * 10, num_envs=4, num_steps=16, num_minibatches=2, lr="1e-4,3e-3",
                          ent_coef="0,0.01"),
    )
    summary = sweep.main(args)
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert len(rows) == 4 and summary["swept"] == ["lr", "ent_coef"]
    means = [float(r["final_return_mean"]) for r in rows]
    assert means == sorted(means, reverse=True)
    assert (tmp_path / "sweep_ranking.png").stat().st_size > 0 and (tmp_path / "sweep_curves.png").exists()
    assert len(json.loads((tmp_path / "config.json").read_text())["grid"]) == 4


def test_sweep_rejects_a_bad_list():
    bad = sweep.SweepConfig(lr="1e-4,abc")
    with pytest.raises(ValueError, match="lr: expected comma-separated numbers"):
        sweep.parse_grid(bad)
    assert set(HPARAM_FIELDS) <= set(sweep.SweepConfig.__dataclass_fields__)


def test_bench_runs_small(tmp_path):
    # one seed count (the population part still times a single seed): one PPO compile and one CLI run fewer
    result = bench_ppo.main(bench_ppo.Args(total_timesteps=2048, seeds=(2,), repeats=1, env_only_steps=4096,
                                           population=2, out=str(tmp_path)))
    whats = [row["what"] for row in result["rows"]]
    assert "PPO train, 2 seed(s) on 2 device(s)" in whats and all(row["env_steps_per_second"] > 0 for row in result["rows"])
    assert "CLI experiments.ppo, 2 seed(s)" in whats and "PPO train, 1 seed, timed beside the population" in whats
    assert result["rows"][-1]["what"].startswith("ES population: 2 TA-LPO lifetimes") and result["rows"][-1]["ratio_vs_single_run"] > 0
    assert (tmp_path / "bench.json").exists()


def test_minatar_comparison_runs_small(tmp_path):
    summary = minatar.main(minatar.Args(envs=("Breakout-MinAtar",), total_timesteps=8192, num_seeds=1,
                                        out=str(tmp_path)))
    (row,) = summary["table"]
    assert row["learner"] == "ours (conv torso)" and (tmp_path / "Breakout-MinAtar" / "summary.json").exists()
    ours = summary["results"]["Breakout-MinAtar"]["ours"]
    assert ours["eval_episodes"] == 128 and len(ours["eval_return_per_seed"]) == 1


def test_bench_sampler_smoke(tmp_path):
    """The sampler benchmark's own rows at tiny settings (the transformers peer needs its venv; not here)."""
    from experiments import bench_sampler

    result = bench_sampler.main(bench_sampler.Args(layers=1, d_model=16, heads=2, batch=8, prompt_len=4, new_tokens=4,
                                                   repeats=1, out=str(tmp_path)))
    assert result["kv_cache"]["tokens_per_second"] > 0 and result["recompute"]["tokens_per_second"] > 0
    assert result["kv_cache_sharded"]["tokens_per_second"] > 0 and (tmp_path / "bench.json").exists()


def test_bench_selfplay_smoke(tmp_path):
    """The self-play benchmark's own rows at tiny settings (the peer needs its venv; not here)."""
    done = run_cli("experiments.bench_selfplay", "--game", "tic_tac_toe", "--random-batch", "8", "--random-steps", "64",
                   "--selfplay-games", "4", "--selfplay-steps", "2", "--num-simulations", "2", "--channels", "4",
                   "--blocks", "1", "--devices", "1", "2", "--repeats", "1", "--fresh-roots", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert [row["positions_per_second"] > 0 for row in rows if "positions_per_second" in row] == [True, True]
    assert [row["reuse_gain"] > 0 for row in rows if "positions_per_second" in row] == [True, True]
