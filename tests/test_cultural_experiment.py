"""The experiments.cultural contract: both modes, resume, every env's study path, bad flags."""

import json

import pytest

from experiments import cultural as experiment
from rl.errors import ConfigError

SMALL = dict(num_seeds=2, generations=2, num_envs=4, num_steps=8, num_minibatches=2, torso_sizes=(8,), gru_size=8,
             hidden_sizes=(8,), progress=False)


def test_cultural_experiment_in_context_and_in_weights(tmp_path):
    small = dict(SMALL, seq_len=4, sort_oracles=True)  # training oracles best first (TSP's default) on this path
    summary = experiment.main(experiment.Args(out=str(tmp_path / "ic"), total_timesteps=64, eval_tasks=4, **small))
    assert len(summary["generation_scores"]) == 2 == len(summary["generation_ci95"]) and summary["sort_oracles"]
    assert set(summary["baselines"]) == {"rl2_4_trials", "rl2_8_trials", "noisy_oracle"}
    assert summary["num_seeds"] == 2 and summary["env_params"]["seq_len"] == 4
    assert (tmp_path / "ic" / "generations.png").exists()
    assert "env/trial_3_score" in json.loads((tmp_path / "ic" / "agent" / "metrics.jsonl").read_text().splitlines()[0])
    again = experiment.main(experiment.Args(out=str(tmp_path / "ic"), total_timesteps=64, eval_tasks=4, resume=True,
                                            **small))
    assert again["generation_scores"] == summary["generation_scores"]  # resumed: the same study

    small.pop("sort_oracles")
    weights = experiment.main(experiment.Args(out=str(tmp_path / "iw"), mode="in_weights", num_digits=3, population=2,
                                              steps_per_generation=64, **small))
    assert len(weights["generation_scores"]) == 2 and set(weights["baselines"]) == {"single_lifetime", "noisy_oracle"}
    # the warm-started path ran through the runner (test_warm_start_keeps_the_named_layers checks the merge)
    assert json.loads((tmp_path / "iw" / "config.json").read_text())["reset_layers"] == ["heads"]


def test_cultural_experiment_bad_flags():
    with pytest.raises(ConfigError, match="env"):
        experiment.Args(env="maze").validate()
    with pytest.raises(ConfigError, match="seq_len"):
        experiment.Args(env="tsp", seq_len=5).validate()
    with pytest.raises(ConfigError, match="num_digits"):
        experiment.Args(num_digits=1).validate()
    with pytest.raises(ConfigError, match="num_trials"):
        experiment.Args(num_trials=1).validate()
    with pytest.raises(ConfigError, match="generations"):
        experiment.Args(generations=1).validate()
    with pytest.raises(ConfigError, match="sort_oracles"):
        experiment.Args(mode="in_weights", sort_oracles=True).validate()
    with pytest.raises(ConfigError, match="reset_layers"):
        experiment.Args(mode="in_weights", reset_layers=("decoder",)).validate()
    for fraction in (0.0, 1.5):
        with pytest.raises(ConfigError, match="visible_until"):
            experiment.Args(mode="in_weights", visible_until=fraction).validate()


def test_cultural_learning_rate_schedule_by_mode():
    """In context the spec's annealed rate; in weights a constant one unless --anneal-lr says otherwise."""
    assert experiment.Args().ppo().anneal_lr
    assert not experiment.Args(mode="in_weights").ppo().anneal_lr
    assert experiment.Args(mode="in_weights", anneal_lr=True).ppo().anneal_lr
    assert not experiment.Args(anneal_lr=False).ppo().anneal_lr


def test_cultural_experiment_goal_sequence(tmp_path):
    """The grid world's study path: a trial one-hot of fixed width, so the agent plays the long
    baseline's episodes; generation 0 replays random actions; no copying-oracle baseline. Agents
    sample their actions here (--no-greedy)."""
    summary = experiment.main(experiment.Args(env="goal_sequence", out=str(tmp_path / "goal"), grid_size=5,
                                              num_trials=2, total_timesteps=64, eval_tasks=2, greedy=False, **SMALL))
    assert len(summary["generation_scores"]) == 2 and set(summary["baselines"]) == {"rl2_2_trials", "rl2_4_trials"}
