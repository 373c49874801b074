"""The generation loops of meta.cultural, and every cultural env and mode through the core learner."""

import jax
import numpy as np
import pytest

from meta import cultural
from rl import envs
from rl.ppo import PPOConfig, default_hparams, make_learner

ENV = "memory_sequence/in_context:seq_len=6,num_trials=3"
CONFIG = PPOConfig(env=ENV, num_envs=4, num_steps=8, total_timesteps=32, num_minibatches=2, recurrent=True,
                   gru_size=8, hidden_sizes=(8,))


@pytest.fixture(scope="module")
def params():
    learner = make_learner(CONFIG)
    return learner.init(jax.random.PRNGKey(0), default_hparams(CONFIG)).params


def test_player_records_every_trial(params):
    env, env_params = envs.make(ENV)
    play = jax.jit(cultural.make_player(CONFIG, ENV, greedy=False))
    trials = play(params, env_params, jax.random.PRNGKey(1), jax.random.PRNGKey(2))
    sequence = np.asarray(env.reset(jax.random.PRNGKey(1), env_params)[1].sequence)
    for k in range(3):
        length, score = int(trials.lengths[k]), int(trials.scores[k])
        actions = np.asarray(trials.actions[k, :length])
        right = actions == sequence[:length]
        assert 1 <= length <= 6 and score == right.sum()
        assert right[:-1].all() and (not right[-1] or length == 6)  # a trial ends at its first mistake


def test_replays_sorted_best_first():
    trials = cultural.Trials(np.array([[[1.0, 3.0], [2.0, 0.0]]]), np.arange(8).reshape(1, 2, 2, 2),
                             np.array([[[1, 4], [3, 1]]]))
    actions, lengths, scores = cultural.replays_from(trials)
    np.testing.assert_array_equal(scores, [[3.0, 0.0]])
    np.testing.assert_array_equal(lengths, [[4, 1]])
    np.testing.assert_array_equal(actions, [[[2, 3], [6, 7]]])


def test_generations_pass_on_the_best_trial(params):
    """A learner that copies demonstrator 0 repeats the previous generation's best last trial: the
    generations' scores can only rise, and each reaches the best of the one before."""
    env, env_params = envs.make(ENV)
    copier = cultural.make_player(CONFIG, ENV, copy_demonstrator=True)
    scores = cultural.in_context_generations(copier, params, env_params, 3, 16, jax.random.PRNGKey(3))
    assert scores.shape == (3, 16, env.num_demonstrators, 3)
    last = scores[..., -1]
    np.testing.assert_array_equal(last[1], np.broadcast_to(last[0].max(axis=1, keepdims=True), last[1].shape))
    np.testing.assert_array_equal(last[2], last[1])
    assert last[1].mean() > last[0].mean()


def test_warm_start_keeps_the_named_layers(params):
    """Each run starts from its own row of the inherited params in the kept groups, fresh elsewhere."""
    learner = make_learner(CONFIG)
    keys = jax.random.split(jax.random.PRNGKey(4), 2)
    hparams = jax.tree.map(lambda x: np.stack([x, x]), default_hparams(CONFIG))
    fresh = jax.vmap(learner.init)(keys, hparams).params["params"]
    inherited = jax.tree.map(lambda x: np.stack([x, x + 1.0]), params)
    warm = jax.jit(jax.vmap(cultural.warm_start(learner, keys, inherited, ("torso", "gru")).init))(keys, hparams)
    layers = warm.params["params"]
    for row in range(2):
        for name in ("encoder", "gru"):
            jax.tree.map(lambda w, p, row=row: np.testing.assert_array_equal(w[row], p[row]),
                         layers[name], inherited["params"][name])
    jax.tree.map(np.testing.assert_array_equal, layers["actor"], fresh["actor"])
    with pytest.raises(ValueError, match="layer group"):
        cultural.warm_start(learner, keys, inherited, ("decoder",))


@pytest.mark.parametrize("env_id", [
    "tsp/in_context:num_cities=4,num_trials=2", "tsp/in_weights:num_cities=4",
    "goal_sequence/in_weights:grid_size=5,trial_length=6",
])
def test_core_learner_and_player_run_every_env(env_id):
    """Smoke run of the env and modes that no study test runs (memory_sequence/in_context runs above;
    test_cultural_experiment runs Memory Sequence in weights and Goal Sequence in context through
    the whole study): a core PPO update with the recurrent net, its per-trial metrics, and an
    episode recorded by the generation player."""
    config = PPOConfig(env=env_id, num_envs=2, num_steps=8, total_timesteps=16, num_minibatches=2, recurrent=True,
                       gru_size=8, hidden_sizes=(8,))
    learner = make_learner(config)
    hp = default_hparams(config)
    state, metrics = jax.jit(learner.update)(learner.init(jax.random.PRNGKey(0), hp), hp)
    assert np.isfinite(float(metrics["total_loss"])) and "env/trial_score" in metrics
    env, env_params = envs.make(env_id)
    trials = jax.jit(cultural.make_player(config, env_id))(state.params, env_params, jax.random.PRNGKey(1),
                                                            jax.random.PRNGKey(2))
    assert trials.scores.shape == (env.num_trials,) and (trials.lengths >= 1).all()
    assert (trials.lengths <= env.trial_length).all()
