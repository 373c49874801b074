"""Discovered objectives: drift constraints, PPO recovery, TA-LPO = LPO at n/N = 0, DPO by hand,
the ES sign convention and exact resume, sharding of the population, and the CLI contract."""

import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import FAST_COMPILE, ROOT, run_cli, run_cli_cases
from test_sharding import free_port

from meta import lpo
from meta.es import ESConfig, evolve
from rl.errors import ConfigError
from rl.losses import clip_objective
from rl.objectives import (
    default_objective_params,
    dpo_drift,
    dpo_objective,
    drift_params,
    drift_weights,
    load_objective,
    lpo_drift,
    lpo_objective,
    save_objective,
    ta_lpo_drift,
    ta_lpo_objective,
)
from rl.ppo import PPOConfig

RATIO = jnp.exp(0.4 * jax.random.normal(jax.random.PRNGKey(0), (4096,)))
ADVANTAGE = 2.0 * jax.random.normal(jax.random.PRNGKey(1), (4096,))
TINY = PPOConfig(num_envs=4, num_steps=16, num_minibatches=2, update_epochs=1, hidden_sizes=(16,),
                 **lpo.LPO_INNER_SETTINGS)


@pytest.mark.parametrize("temporal", [False, True])
@pytest.mark.parametrize("ppo_init", [False, True])
def test_drift_is_nonnegative_and_zero_and_flat_at_ratio_one(temporal, ppo_init):
    for seed in range(3):
        params = drift_params(drift_weights(jax.random.PRNGKey(seed), temporal, scale=1.0), ppo_init=ppo_init)
        progress = jax.random.uniform(jax.random.PRNGKey(seed + 10), RATIO.shape)

        def drift(r, a=ADVANTAGE, params=params, progress=progress):
            return ta_lpo_drift(r, a, progress, params) if temporal else lpo_drift(r, a, params)

        values = drift(RATIO)
        assert values.min() >= 0.0 and values.max() > 0.1  # non-trivial random networks
        ones = jnp.ones_like(RATIO)
        assert jnp.abs(drift(ones)).max() == 0.0
        slope = jax.vmap(jax.grad(lambda r, a, p: drift(r[None], a[None], progress=p[None])[0]))(ones, ADVANTAGE, progress)
        assert jnp.abs(slope).max() == 0.0


@pytest.mark.parametrize("kind", ["lpo", "ta_lpo"])
def test_zero_network_with_ppo_initialisation_is_ppo(kind):
    """Value and gradient (of the minibatch loss, w.r.t. a linear policy's parameters) within 2e-4."""
    params = default_objective_params(kind)
    objective = lpo_objective if kind == "lpo" else ta_lpo_objective
    features = jax.random.normal(jax.random.PRNGKey(2), (4096, 3))

    def loss(theta, fn, p):
        ratio = RATIO * jnp.exp(features @ theta)
        return fn(ratio, ADVANTAGE, jnp.asarray(0.3), p).mean()

    theta = jnp.array([0.05, -0.02, 0.01])
    learned, ppo = loss(theta, objective, params), loss(theta, clip_objective, 0.2)
    assert abs(learned - ppo) <= 2e-4
    grads = jax.grad(loss)(theta, objective, params), jax.grad(loss)(theta, clip_objective, 0.2)
    np.testing.assert_allclose(grads[0], grads[1], atol=2e-4)
    per_sample = objective(RATIO, ADVANTAGE, 0.3, params) - clip_objective(RATIO, ADVANTAGE, 0.3, 0.2)
    assert jnp.abs(per_sample).max() <= 1.01e-4


def test_ta_lpo_at_progress_zero_is_lpo_on_the_shared_weights():
    temporal = drift_weights(jax.random.PRNGKey(3), temporal=True, scale=1.0)
    shared = {"hidden": temporal["hidden"][:8], "out": temporal["out"]}
    for ppo_init in (False, True):
        ta = ta_lpo_objective(RATIO, ADVANTAGE, jnp.asarray(0.0), drift_params(temporal, ppo_init=ppo_init))
        plain = lpo_objective(RATIO, ADVANTAGE, jnp.asarray(0.0), drift_params(shared, ppo_init=ppo_init))
        np.testing.assert_allclose(ta, plain, rtol=1e-6, atol=1e-6)
    later = ta_lpo_objective(RATIO, ADVANTAGE, jnp.asarray(0.9), drift_params(temporal))
    assert jnp.abs(later - lpo_objective(RATIO, ADVANTAGE, 0.0, drift_params(shared))).max() > 1e-3


def test_dpo_closed_form_by_hand():
    # A >= 0: relu((r-1)A - 2 tanh((r-1)A / 2)); A < 0: relu(log(r) A - 0.6 tanh(log(r) A / 0.6))
    positive = 0.5 * 1.0 - 2.0 * math.tanh(0.25)
    negative = math.log(0.5) * -1.0 - 0.6 * math.tanh(math.log(0.5) * -1.0 / 0.6)
    ratio, advantage = jnp.array([1.5, 0.5, 1.0, 0.7, 3.0]), jnp.array([1.0, -1.0, 5.0, 2.0, -0.5])
    drift = dpo_drift(ratio, advantage)
    third = max(0.0, math.log(3.0) * -0.5 - 0.6 * math.tanh(math.log(3.0) * -0.5 / 0.6))  # 0: inside the well
    np.testing.assert_allclose(drift, [positive, negative, 0.0, 0.0, third], atol=1e-6)
    np.testing.assert_allclose(dpo_objective(ratio, advantage, 0.0, None), -(ratio * advantage - drift), atol=1e-6)


def quadratic_fitness(members, key):
    """Maximised at x = 3 in every coordinate (one task)."""
    del key
    return -jnp.sum((members["x"] - 3.0) ** 2, keepdims=True)


def test_es_maximises_fitness_and_resumes_exactly(tmp_path):
    config = ESConfig(population=16, generations=12, sigma=0.3, sigma_final=0.1, lr=0.3, lr_final=0.1)
    start = {"x": jnp.zeros(4)}
    whole = evolve(config, start, quadratic_fitness, ["quadratic"], tmp_path / "whole", progress=False)
    assert whole.history[-1]["es_mean"] > 0.1 * whole.history[0]["es_mean"]  # -36 -> close to 0
    assert np.all(np.abs(np.asarray(whole.mean["x"]) - 3.0) < 1.0)

    class Interrupt(Exception):
        pass

    def stop_at_five(history):
        if len(history) == 5:
            raise Interrupt

    with pytest.raises(Interrupt):
        evolve(config, start, quadratic_fitness, ["quadratic"], tmp_path / "cut", progress=False,
               checkpoint_seconds=0.0, on_generation=stop_at_five)
    resumed = evolve(config, start, quadratic_fitness, ["quadratic"], tmp_path / "cut", resume=True, progress=False)
    np.testing.assert_array_equal(np.asarray(resumed.mean["x"]), np.asarray(whole.mean["x"]))
    assert [r["mean"] for r in resumed.history] == [r["mean"] for r in whole.history]


def test_es_rejects_bad_settings():
    with pytest.raises(ConfigError, match="strategy: unknown evosax strategy 'Nope'"):
        ESConfig(strategy="Nope").validate()
    with pytest.raises(ConfigError, match="population: antithetic sampling pairs members: must be even"):
        ESConfig(population=7).validate()
    ESConfig(strategy="SNES", population=7).validate()  # other strategies need no pairs


def tiny_lpo_problem():
    configs = lpo.inner_configs("ta_lpo", ["CartPole-v1"], [128], TINY)
    return lpo.starting_weights("ta_lpo"), lpo.make_fitness(configs, eval_episodes=2), [lpo.task_name(configs[0])]


def test_population_sharded_over_eight_devices_matches_one(tmp_path):
    assert jax.device_count() == 8
    solution, fitness, tasks = tiny_lpo_problem()
    config = ESConfig(population=6, generations=2, sigma=0.5)  # 6 members + the mean: padded to 8
    one = evolve(config, solution, fitness, tasks, tmp_path / "one", progress=False, devices=jax.devices()[:1])
    eight = evolve(config, solution, fitness, tasks, tmp_path / "eight", progress=False)
    for a, b in zip(one.history, eight.history, strict=True):
        np.testing.assert_allclose([a["mean"], a["best"], a["es_mean"]], [b["mean"], b["best"], b["es_mean"]], rtol=1e-4)
    np.testing.assert_allclose(np.asarray(one.mean["hidden"]), np.asarray(eight.mean["hidden"]), atol=1e-5)
    assert len({round(r["mean"], 3) for r in one.history}) == 2 or one.history[0]["best"] != one.history[0]["mean"]


DISCOVER = ["experiments.discover", "--objective", "ta_lpo", "--population", "4", "--generations", "2",
            "--inner-timesteps", "1024", "--eval-episodes", "2", "--no-progress"]


def test_discover_on_two_processes_matches_one_and_trains_anywhere(tmp_path):
    """The documented multi-host launch of the discovery, the saved objective, and its use through
    --objective-from and experiments.evaluate_objective."""
    port = str(free_port())
    env = {**os.environ, "XLA_FLAGS": FAST_COMPILE, "JAX_NUM_CPU_DEVICES": "2"}
    procs = [subprocess.Popen([sys.executable, "-m", *DISCOVER, "--out", str(tmp_path / "two"), "--coordinator",
                               f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i)],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    outputs = [p.communicate(timeout=400)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outputs)
    single = run_cli(*DISCOVER, "--out", str(tmp_path / "one"))
    assert single.returncode == 0, single.stderr[-3000:]
    one, two = (json.loads((tmp_path / name / "summary.json").read_text()) for name in ("one", "two"))
    assert [h["generation"] for h in one["fitness_history"]] == [0, 1]
    for a, b in zip(one["fitness_history"], two["fitness_history"], strict=True):
        np.testing.assert_allclose([a["mean"], a["best"]], [b["mean"], b["best"]], rtol=1e-4)
    assert len((tmp_path / "one" / "metrics.jsonl").read_text().splitlines()) == 2
    kind, params = load_objective(tmp_path / "one")
    assert kind == "ta_lpo" and params.weights["hidden"].shape == (16, 128)

    # the settings of evaluate_objective's objective arm at horizon 1024 below (LPO's inner settings:
    # --no-clip-value-loss), so that arm's compiled program comes from the session's compilation cache
    ppo = run_cli("experiments.ppo", "--objective-from", str(tmp_path / "one"), "--env", "Acrobot-v1", "--hidden-sizes",
                  "16", "--no-clip-value-loss", "--total-timesteps", "1024", "--num-seeds", "2", "--eval-episodes", "0",
                  "--no-progress", "--out", str(tmp_path / "ppo"))
    assert ppo.returncode == 0, ppo.stderr[-3000:]
    assert json.loads((tmp_path / "ppo" / "config.json").read_text())["objective_from"] == str(tmp_path / "one")
    evaluated = run_cli("experiments.evaluate_objective", "--objective", str(tmp_path / "one"), "--env", "Acrobot-v1",
                        "--horizons", "512,1024", "--num-seeds", "2", "--hidden-sizes", "16", "--no-progress",
                        "--eval-episodes", "0", "--out", str(tmp_path / "eval"))
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    table = json.loads((tmp_path / "eval" / "summary.json").read_text())["table"]
    assert [row["horizon"] for row in table] == [512, 1024]
    assert all(set(row["objective"]) >= {"mean", "ci95"} and set(row["ppo"]) >= {"mean", "ci95"} for row in table)
    assert (tmp_path / "eval" / "drift.png").exists() and (tmp_path / "eval" / "returns_by_horizon.png").exists()


BAD_INPUT = [
    (["--objective", "nope"], "objective: unknown objective 'nope'"),
    (["--strategy", "Nope"], "strategy: unknown evosax strategy 'Nope'"),
    (["--population", "5"], "population: antithetic sampling pairs members: must be even"),
    (["--objective", "lpg", "--lpg-max-updates", "5"], "lpg_max_updates: lifetimes are drawn"),
    (["--objective", "lpo", "--meta-gradient-window", "3"], "meta_gradient_window"),
]


@pytest.fixture(scope="module")
def bad_input_runs():
    """Every case of BAD_INPUT, then evaluate_objective on a directory without an objective (last),
    in one child process."""
    return run_cli_cases(None, [*(["experiments.discover", *args, "--out", "/tmp/never-written"] for args, _ in BAD_INPUT),
                                ["experiments.evaluate_objective", "--objective", str(ROOT / "tests"), "--out",
                                 "/tmp/never-written"]])


@pytest.mark.parametrize("case", range(len(BAD_INPUT)))
def test_bad_input_gives_one_line(bad_input_runs, case):
    message, done = BAD_INPUT[case][1], bad_input_runs[case]
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), done.stderr[-2000:]
    assert message in done.stderr and not os.path.exists("/tmp/never-written")


def test_evaluating_a_directory_without_an_objective_gives_one_line(bad_input_runs):
    done = bad_input_runs[-1]
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "holds no discovered objective" in lines[0], done.stderr[-2000:]
    assert not os.path.exists("/tmp/never-written")


def test_objective_of_another_kind_is_refused(tmp_path):
    save_objective(tmp_path, "lpo", default_objective_params("lpo"))
    (tmp_path / "objective.json").write_text(json.dumps({"kind": "lpg"}))
    with pytest.raises(ConfigError, match="holds a 'lpg' objective"):
        PPOConfig(objective_from=str(tmp_path)).validate()
    with pytest.raises(ConfigError, match="holds a lpo objective; drop --objective dpo"):
        save_objective(tmp_path, "lpo", default_objective_params("lpo"))
        PPOConfig(objective="dpo", objective_from=str(tmp_path)).validate()


def test_lpg_discovery_metagradient_baseline_and_held_out_evaluation(tmp_path):
    """Smoke runs of the LPG paths: ES, the truncated meta-gradient baseline, and the evaluation on
    held-out worlds beside PPO; an LPG directory is refused where a drift objective is needed."""
    common = ["--population", "2", "--generations", "1", "--eval-episodes", "2", "--no-progress", "--lpg-gru-size", "8",
              "--lpg-max-updates", "12", "--lpg-worlds", "3"]
    es = run_cli("experiments.discover", "--objective", "lpg", *common, "--out", str(tmp_path / "es"))
    assert es.returncode == 0, es.stderr[-3000:]
    settings = json.loads((tmp_path / "es" / "objective.json").read_text())["lpg_config"]
    assert (settings["gru_size"], settings["max_updates"]) == (8, 12)
    assert len(json.loads((tmp_path / "es" / "summary.json").read_text())["tasks"]) == 3
    grad = run_cli("experiments.discover", "--objective", "ta_lpg", *common, "--meta-gradient-window", "2",
                   "--meta-gradient-lifetimes", "2", "--out", str(tmp_path / "grad"))
    assert grad.returncode == 0, grad.stderr[-3000:]
    for name in ("es", "grad"):
        summary = json.loads((tmp_path / name / "summary.json").read_text())
        assert len(summary["fitness_history"]) == 1 and (tmp_path / name / "lpg_targets.png").exists()
    evaluated = run_cli("experiments.evaluate_objective", "--objective", str(tmp_path / "grad"), "--horizons", "3",
                        "--num-seeds", "2", "--no-progress", "--out", str(tmp_path / "eval"))
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    row = json.loads((tmp_path / "eval" / "summary.json").read_text())["table"][0]
    assert row["horizon"] == 3 and row["kind"] == "ta_lpg" and len(row["objective"]["per_seed"]) == 2
    with pytest.raises(ConfigError, match="holds a 'lpg' objective"):  # what experiments.ppo reports in one line
        PPOConfig(objective_from=str(tmp_path / "es")).validate()
