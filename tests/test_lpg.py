"""LPG / TA-LPG (meta.lpg) and the grid worlds it meta-trains on (rl.gridworld)."""

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from meta.lpg import (
    LPGConfig,
    LPGInputs,
    Task,
    init_lpg_params,
    lpg_targets,
    make_lifetime,
    make_metagradient_trainer,
    make_training,
    sample_task,
)
from rl import envs
from rl.errors import ConfigError
from rl.gridworld import MAX_OBJECTS, GridWorld, GridWorldState, make_world, sample_world

# A 4x4 world with a terminal +1 and a terminal -1: a random policy earns about 0.
WORLD = make_world(4, [(0, 0, 1.0, 1.0, 0.0), (3, 3, -1.0, 1.0, 0.0)], max_steps_in_episode=20)
# These programs are small and run briefly: XLA's cheapest backend optimisation compiles them sooner.
jit = partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})
LEARN = LPGConfig(num_envs=8, num_steps=16, lr=0.1, max_updates=20, eval_episodes=64)


def return_lpg(config: LPGConfig, sign: float = 1.0, discount: float = 0.9, scale: float = 0.1):
    """An LPG net set by hand so that pi_hat = sign * (reward-to-go discounted by ``discount``
    within the episode): GRU unit 0 keeps z = discount and n = tanh(scale * r); other units stay 0."""
    params = jax.tree.map(jnp.zeros_like, init_lpg_params(jax.random.PRNGKey(0), config))
    p = params["params"]
    cell = p["gru"]["cell"]
    cell["iz"]["bias"] = cell["iz"]["bias"].at[0].set(np.log(discount / (1 - discount)))
    cell["in"]["kernel"] = cell["in"]["kernel"].at[0, 0].set(scale)  # input 0 is the reward
    p["pi_hat"]["kernel"] = p["pi_hat"]["kernel"].at[0, 0].set(sign / ((1 - discount) * scale))
    return params


@pytest.fixture(scope="module")
def population():
    """One compiled, vmapped lifetime, run on [return-LPG, negated, return-LPG with N = 0]."""
    lifetime = jit(jax.vmap(make_lifetime(LEARN, with_metrics=True)))
    lpg = jax.tree.map(lambda *x: jnp.stack(x), return_lpg(LEARN), return_lpg(LEARN, -1.0), return_lpg(LEARN))
    worlds = jax.tree.map(lambda x: jnp.stack([x] * 3), WORLD)
    tasks = Task(worlds, jnp.array([LEARN.max_updates, LEARN.max_updates, 0], jnp.int32))
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    fitness, metrics = lifetime(lpg, keys, tasks)
    again, _ = lifetime(lpg, keys, tasks)
    return np.asarray(fitness), jax.tree.map(np.asarray, metrics), np.asarray(again)


def test_lpg_agent_learns_from_return_signal(population):
    fitness, metrics, _ = population
    good, negated, untrained = fitness
    assert good > 0.7, fitness  # the update climbs pi_hat
    assert negated < -0.5, fitness  # flipping the sign of pi_hat must make it worse than random
    assert abs(untrained) < 0.4, fitness  # N = 0: every update masked, the policy stays uniform
    assert metrics["active"].sum(1).tolist() == [LEARN.max_updates, LEARN.max_updates, 0]


def test_population_lifetime_is_vmapped_and_deterministic(population):
    fitness, metrics, again = population
    assert fitness.shape == (3,) and metrics["episode_return"].shape == (3, LEARN.max_updates)
    np.testing.assert_array_equal(fitness, again)


def test_updates_past_the_lifetime_are_masked():
    small = LPGConfig(num_envs=2, num_steps=4, gru_size=8, max_updates=3, min_updates=1)
    lpg = init_lpg_params(jax.random.PRNGKey(0), small)
    key = jax.random.PRNGKey(2)
    exact, _ = jit(make_training(small))(lpg, key, Task(WORLD, jnp.int32(3)))
    longer = jit(make_training(dataclasses.replace(small, max_updates=5)))
    masked, metrics = longer(lpg, key, Task(WORLD, jnp.int32(3)))
    unmasked, _ = longer(lpg, key, Task(WORLD, jnp.int32(5)))
    jax.tree.map(np.testing.assert_array_equal, exact.params, masked.params)
    assert metrics["active"].tolist() == [True, True, True, False, False]
    diff = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), masked.params, unmasked.params)
    assert max(jax.tree.leaves(diff)) > 0


@pytest.mark.parametrize("temporal", [False, True])
def test_reverse_gru_resets_at_episode_end(temporal):
    config = LPGConfig(gru_size=8, temporal=temporal)
    lpg = init_lpg_params(jax.random.PRNGKey(3), config)
    T, B, end = 8, 2, 3
    k = jax.random.split(jax.random.PRNGKey(4), 4)
    y = jax.nn.softmax(jax.random.normal(k[0], (T, B, config.y_dim)))
    done = jnp.zeros((T, B), bool).at[end, 0].set(True)
    inputs = LPGInputs(jax.random.normal(k[1], (T, B)), done, done, jax.random.uniform(k[2], (T, B)), y,
                       jnp.roll(y, -1, 0), jnp.float32(0.3), jnp.log(20.0))
    later = inputs._replace(reward=inputs.reward.at[end + 1:].add(1.0))
    targets = jit(lambda x: lpg_targets(lpg, config, x))
    before, after = targets(inputs), targets(later)
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a[: end + 1, 0], b[: end + 1, 0])  # episode ended: blind to later steps
        assert np.abs(a[:end + 1, 1] - b[:end + 1, 1]).max() > 1e-6  # env 1 has no episode end: it sees them
        assert np.abs(a[end + 1:, 0] - b[end + 1:, 0]).max() > 1e-6


def test_gridworld_rules_on_a_hand_built_world():
    env = GridWorld()
    world = make_world(4, [(0, 1, 0.5, 1.0, 0.0), (1, 0, -0.3, 0.0, 1.0), (3, 3, 0.7, 0.0, 0.0)], max_steps_in_episode=5)
    key = jax.random.PRNGKey(0)
    all_there = jnp.arange(MAX_OBJECTS) < 3
    start = GridWorldState(pos=jnp.array([0, 0]), present=all_there, time=jnp.int32(0))
    # right onto the terminal +0.5 object: reward, removed, episode terminates
    obs, state, reward, terminated, _ = env.step_env(key, start, 3, world)
    assert float(reward) == 0.5 and bool(terminated)
    assert state.present.tolist() == [False, True, True, False, False]
    assert int(np.argmax(obs[:100])) == 1 and obs[100:].tolist() == [0.0, 1.0, 1.0, 0.0, 0.0]
    # down onto the -0.3 object (term prob 0): reward, no termination; it respawns (prob 1) next step
    _, state, reward, terminated, _ = env.step_env(key, start, 1, world)
    assert float(reward) == np.float32(-0.3) and not bool(terminated) and not bool(state.present[1])
    _, state, reward, _, _ = env.step_env(key, state, 0, world)  # back up: respawned, not collected
    assert float(reward) == 0.0 and bool(state.present[1])
    # an absent object with respawn prob 0 stays absent; walls clamp the move; inactive slots stay off
    corner = GridWorldState(pos=jnp.array([3, 3]), present=all_there.at[2].set(False), time=jnp.int32(0))
    _, state, reward, _, _ = env.step_env(key, corner, 1, world)
    assert state.pos.tolist() == [3, 3] and float(reward) == 0.0 and state.present.tolist() == [True, True, False, False, False]
    # truncation at max_steps_in_episode through the gymnax step, with automatic reset
    state = start.replace(pos=jnp.array([2, 2]), time=jnp.int32(4))
    _, _, _, terminated, truncated, info = env.step(key, state, 2, world)
    assert bool(truncated) and not bool(terminated) and int(np.argmax(info["final_observation"][:100])) == 21


def test_sampled_worlds_follow_the_spec():
    worlds = jit(jax.vmap(sample_world))(jax.random.split(jax.random.PRNGKey(5), 64))
    size, pos, active = np.asarray(worlds.size), np.asarray(worlds.object_pos), np.asarray(worlds.object_active)
    assert size.min() >= 4 and size.max() <= 10 and len(set(size)) > 3
    assert active.sum(1).min() >= 1 and active.sum(1).max() <= 5
    assert (pos < size[:, None, None]).all()
    for p, a in zip(pos, active, strict=True):
        assert len({tuple(x) for x in p[a]}) == a.sum()  # distinct cells
    assert np.abs(worlds.object_reward).max() <= 1.0
    steps = np.asarray(worlds.max_steps_in_episode)
    assert steps.min() >= 20 and steps.max() <= 750
    assert envs.make("GridWorld-lpg")[0].observation_space(None).shape == (105,)
    tasks = jax.vmap(lambda k: sample_task(k, LEARN))(jax.random.split(jax.random.PRNGKey(6), 64))
    assert tasks.num_updates.min() >= LEARN.min_updates and tasks.num_updates.max() <= LEARN.max_updates


def test_metagradient_step_gives_finite_gradients_that_move_the_params():
    config = LPGConfig(num_envs=4, num_steps=8, gru_size=8, min_updates=2, max_updates=3)
    trainer = make_metagradient_trainer(config, window=2, meta_lr=1e-2, num_lifetimes=2)
    state = jit(trainer.init)(jax.random.PRNGKey(7))
    step = jit(trainer.step)
    new, metrics = step(state)
    new, metrics2 = step(new)
    assert np.isfinite(float(metrics["grad_norm"])) and float(metrics["grad_norm"]) > 0
    assert np.isfinite(float(metrics2["meta_loss"]))
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(new.lpg_params))
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), state.lpg_params, new.lpg_params)
    assert max(jax.tree.leaves(moved)) > 1e-4
    assert int(metrics["lifetimes_ended"]) + int(metrics2["lifetimes_ended"]) >= 1  # N <= 3: restarts happen


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="optimizer"):
        LPGConfig(optimizer="rmsprop").validate()
    with pytest.raises(ConfigError, match="min_updates"):
        LPGConfig(min_updates=20, max_updates=10).validate()
