"""SPO and Bradley-Terry trajectory rewards: hand-computed values, the hooks of the core learner,
the cyclic test game, and the entry point's errors."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import run_cli_cases

from experiments import plot_runs
from experiments import spo as spo_experiment
from experiments.common import RunArgs
from rl import envs
from rl.errors import ConfigError
from rl.opponents import OpponentPool
from rl.ppo import PPOConfig, Transition
from rl.preference import (
    BradleyTerryReward,
    SPOReward,
    preference_matrix,
    segments,
    unsegment,
    win_rates,
)


def rollout(reward: np.ndarray, num_steps: int, episode_length: int) -> Transition:
    """A rollout ``[T, E]`` whose envs earn ``reward[e]`` per step and end an episode every L steps."""
    reward = jnp.broadcast_to(jnp.asarray(reward, jnp.float32), (num_steps, len(reward)))
    done = jnp.broadcast_to((jnp.arange(num_steps) % episode_length == episode_length - 1)[:, None], reward.shape)
    zeros = jnp.zeros(reward.shape)
    return Transition(obs=zeros[..., None], action=jnp.zeros(reward.shape, jnp.int32), log_prob=zeros, reward=reward,
                      terminated=done, done=done, mask=None, final_obs=zeros[..., None], hidden=None)


def test_segments_round_trip_and_layout():
    x = jnp.arange(6 * 4).reshape(6, 4)  # T=6, E=4
    seg = segments(x, group_size=2, episode_length=3)  # [G=2, N=2, K=2, L=3]
    assert seg.shape == (2, 2, 2, 3)
    np.testing.assert_array_equal(seg[1, 0, 1], x[3:6, 2])  # group 1, member 0 = env 2; second trajectory
    np.testing.assert_array_equal(unsegment(seg), x)


def test_spo_reward_is_win_rate_against_the_other_samples():
    # one group of N=3 envs, per-step rewards 1, 3, 2 -> returns 2, 6, 4 over L=2 steps
    spo = SPOReward(env="CyclicChoice-probe", episode_length=2, group_size=3)
    _, reward, metrics = spo.relabel(None, rollout(np.array([1.0, 3.0, 2.0]), 4, 2), None, jax.random.PRNGKey(0))
    # wins: env0 beats none (0), env1 beats both (1), env2 beats env0 (1/2); reward w - 1/2 on every step
    np.testing.assert_allclose(reward, np.broadcast_to([-0.5, 0.5, 0.0], (4, 3)))
    assert float(metrics["misaligned_episode_ends"]) == 0
    assert float(metrics["preference_agrees_with_return"]) == 1.0
    noisy = SPOReward(env="CyclicChoice-probe", episode_length=2, group_size=3, preference="noisy", noise=1.0)
    _, _, metrics = noisy.relabel(None, rollout(np.array([1.0, 3.0, 2.0]), 4, 2), None, jax.random.PRNGKey(0))
    assert float(metrics["preference_agrees_with_return"]) == 0.0  # every pair flipped, the diagonal ignored
    last = SPOReward(env="CyclicChoice-probe", episode_length=2, group_size=3, credit="last")
    _, reward, _ = last.relabel(None, rollout(np.array([1.0, 3.0, 2.0]), 4, 2), None, jax.random.PRNGKey(0))
    np.testing.assert_allclose(reward, [[0, 0, 0], [0, 1, 0.5], [0, 0, 0], [0, 1, 0.5]])


def test_win_rate_counts_ties_as_half_and_excludes_itself():
    prefer = preference_matrix("transitive", jnp.array([1.0, 1.0, 0.0, 2.0]), jnp.zeros((4, 3)), None, 0.0)
    np.testing.assert_allclose(win_rates(prefer), [1.5 / 3, 1.5 / 3, 0.0, 1.0])


def test_intransitive_preference_is_a_condorcet_cycle_on_the_test_game():
    env = envs.make("CyclicChoice-probe")[0]
    features = jnp.stack([env.trajectory_features(None, jnp.array([a]), None) for a in range(3)])
    prefer = preference_matrix("intransitive", jnp.zeros(3), features, None, 0.0)
    np.testing.assert_allclose(prefer, [[0.5, 1, 0], [0, 0.5, 1], [1, 0, 0.5]])
    np.testing.assert_allclose(spo_experiment.minimax_winner("CyclicChoice-probe", "intransitive"), [1 / 3] * 3,
                               atol=1e-9)


def test_noisy_preference_flips_pairs_consistently():
    returns = jnp.arange(8.0)
    prefer = preference_matrix("noisy", returns[None].repeat(500, 0), jnp.zeros((500, 8, 3)), jax.random.PRNGKey(1), 0.2)
    np.testing.assert_allclose(prefer + jnp.swapaxes(prefer, -1, -2), 1.0)
    truth = preference_matrix("transitive", returns, jnp.zeros((8, 3)), None, 0.0)
    off = ~np.eye(8, dtype=bool)
    flipped = np.mean(np.asarray(prefer != truth)[:, off])
    assert 0.18 < flipped < 0.22


def test_bradley_terry_model_learns_the_ranking_of_a_transitive_preference():
    bt = BradleyTerryReward(env="CyclicChoice-probe", episode_length=1, group_size=3, fit_steps=200, lr=1e-2)
    traj = rollout(np.array([0.0, 1.0, 2.0]), 1, 1)
    traj = traj._replace(action=jnp.array([[0, 1, 2]]))  # the choice decides the return
    state = bt.init(jax.random.PRNGKey(0), jnp.zeros(1), jnp.int32(0))
    state, reward, metrics = bt.relabel(state, traj, None, jax.random.PRNGKey(0))
    assert float(metrics["reward_model_accuracy"]) == 1.0
    assert reward[0, 0] < reward[0, 1] < reward[0, 2]


def test_trajectory_reward_configs_are_checked_before_compiling():
    spo = SPOReward(env="Pendulum-v1", episode_length=200, group_size=4)
    base = dict(env="Pendulum-v1", num_envs=8, num_steps=200, num_minibatches=4, trajectory_reward=spo)
    PPOConfig(**base, group_size=4).validate()
    for overrides, field in [(dict(group_size=2), "group_size"), (dict(group_size=4, num_steps=150), "num_steps"),
                             (dict(group_size=4, normalize_reward=True), "normalize_reward"),
                             (dict(group_size=3), "group_size")]:
        with pytest.raises(ConfigError, match=field):
            PPOConfig(**{**base, **overrides}).validate()
    with pytest.raises(ConfigError, match="group_size"):
        PPOConfig(**{**base, "group_size": 1, "trajectory_reward": SPOReward("Pendulum-v1", 200, group_size=1)}).validate()


def test_grouped_envs_share_start_states():
    env, params = envs.make_vec_env("Pendulum-v1", 8, group_size=4)
    obs, state = env.reset(jax.random.PRNGKey(0), params)
    np.testing.assert_array_equal(obs[0], obs[3])
    np.testing.assert_array_equal(obs[4], obs[7])
    assert not np.allclose(obs[0], obs[4])


def test_opponent_pool_ring_buffer_and_weights():
    pool = OpponentPool.create({"w": jnp.zeros(2)}, size=2)
    np.testing.assert_allclose(pool.weights(0.25), [1.0, 0.0, 0.0])  # empty: the latest policy only
    pool = pool.maybe_add({"w": jnp.ones(2)}, jnp.int32(3), 3)
    np.testing.assert_allclose(pool.weights(0.25), [0.25, 0.75, 0.0])
    pool = pool.maybe_add({"w": 2 * jnp.ones(2)}, jnp.int32(4), 3)  # not a multiple of 3: unchanged
    assert int(pool.count) == 1
    pool = pool.add({"w": 2 * jnp.ones(2)}).add({"w": 3 * jnp.ones(2)})  # overwrites the oldest slot
    np.testing.assert_allclose(pool.params["w"][:, 0], [3.0, 2.0])
    np.testing.assert_allclose(pool.weights(0.5), [0.5, 0.25, 0.25])


def test_spo_finds_the_minimax_winner_where_bradley_terry_does_not(tmp_path):
    """The decisive check of the spec, through the entry point: on the cyclic test game, SPO's
    final policies are near uniform; the Bradley-Terry reward model, refitted on the current
    policy's samples, pulls PPO away from it."""
    run = RunArgs(num_seeds=2, progress=False, eval_episodes=4)
    results = {}
    for algo in ("spo", "rlhf_bt"):
        args = spo_experiment.Args(run=dataclass_replace(run, out=str(tmp_path / algo)), env="CyclicChoice-probe",
                                   preference="intransitive", algo=algo, total_timesteps=64 * 8 * 400)
        results[algo] = spo_experiment.main(args)["distance_to_minimax_winner"]
    assert results["spo"] < 0.05
    assert results["rlhf_bt"] > 0.15
    plot_runs.main(plot_runs.Args(runs=(str(tmp_path / "spo"), str(tmp_path / "rlhf_bt")), out=str(tmp_path / "c.png")))
    assert (tmp_path / "c.png").stat().st_size > 0


def dataclass_replace(obj, **changes):
    import dataclasses

    return dataclasses.replace(obj, **changes)


def test_cli_bad_input_is_one_line_and_nonzero_exit(tmp_path):
    cases = [["--group-size", "1"], ["--preference", "cyclic"], ["--algo", "dpo"], ["--env", "CartPole-v1"]]
    for extra, done in zip(cases, run_cli_cases("experiments.spo", [["--out", str(tmp_path / "x"), *c] for c in cases]),
                           strict=True):
        assert done.returncode == 2, (extra, done.stderr)
        assert done.stderr.strip().count("\n") == 0 and done.stderr.startswith("error:"), (extra, done.stderr)


def test_episodes_that_do_not_fill_their_segments_stop_the_run(tmp_path):
    """Pendulum's episodes last 200 steps; comparing 100-step segments would compare halves that
    start from different states: the misaligned episode ends stop the run, naming the cause."""
    from experiments.common import repeat_runs, seed_keys
    from rl import runner
    from rl.errors import RunError
    from rl.ppo import default_hparams, make_learner

    spo = SPOReward(env="Pendulum-v1", episode_length=100, group_size=2)
    config = PPOConfig(env="Pendulum-v1", num_envs=4, num_steps=100, num_minibatches=2, update_epochs=1,
                       total_timesteps=400 * 2, group_size=2, trajectory_reward=spo, hidden_sizes=(8,))
    with pytest.raises(RunError, match="trajectory-reward segment"):
        runner.run(make_learner(config), seed_keys(0, 1), repeat_runs(default_hparams(config), 1), tmp_path, {},
                   chunk_updates=1, progress=False, checkpoint_seconds=3600)
    with pytest.raises(ConfigError, match="episode_length"):
        PPOConfig(env="Pendulum-v1", num_envs=4, num_steps=400, num_minibatches=2, group_size=2,
                  trajectory_reward=SPOReward(env="Pendulum-v1", episode_length=400, group_size=2)).validate()
