"""Generation loops of cultural accumulation (../shared/specs/cultural-accumulation.md).

Two notions of a generation, both built on the core learner (``rl.ppo``) and the study's
environments (``rl.cultural``), whose demonstrators can replay recorded trials:

- **In context** (episodic generations): a trained RL^2 agent plays an episode of ``T`` trials on
  a fixed task beside its demonstrators; the demonstrators of generation ``g`` are the agents of
  generation ``g - 1`` replaying their last trial, sorted by its score (the trial they played from
  their memory at the end of their second-to-last trial, alone: visibility is 0 in the last trial
  of the schedule), or, with ``keep_best``, the best trial seen so far, replaced only by one at
  least as good. Generation 0 sees the environment's noisy oracles.
- **In weights** (train-time generations): a population is trained with PPO while it observes
  the previous generation's trained agents (their greedy trials on the study's fixed task, sorted
  by score) with a visibility annealed from 1 to 0 over the generation's training; generation 0
  observes randomly initialised agents.

A generation's score is its agents' mean score in the last trial of an episode (in weights: in an
episode played alone, the demonstrators never visible). Agents act greedily by default, so an agent
restarted from the same memory plays the same trial, which is why recorded trials stand for the
agents; a player that samples its actions records one draw of the trials its agent plays.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from rl import envs
from rl.ppo import PPOConfig, make_policy


class Trials(NamedTuple):
    """What one episode's trials were: per trial its score, actions and length."""

    scores: jax.Array  # [T] (0 for trials not reached)
    actions: jax.Array  # [T, trial_length] int32
    lengths: jax.Array  # [T] steps each trial lasted


class PlayCarry(NamedTuple):
    """The loop state of ``make_player``'s episode."""

    state: Any  # the environment's
    obs: jax.Array
    hidden: jax.Array | None  # the agent's memory
    trial: jax.Array  # index of the current trial
    step_in_trial: jax.Array
    finished: jax.Array  # the episode has ended (later steps are not recorded)
    trials: Trials


def make_player(config: PPOConfig, env_id: str, greedy: bool = True, copy_demonstrator: bool = False) -> Callable:
    """``play(params, env_params, reset_key, step_key) -> Trials``: one episode of ``env_id`` by
    the policy of ``config`` with network ``params`` (its memory reset only at the episode start).

    ``reset_key`` draws the task (and the oracles), so learners that share it face the same task.
    ``copy_demonstrator`` plays demonstrator 0's action instead, seen or not (the noisy-oracle
    baseline of envs whose demonstrators act as the learner does). Pure and jittable; vmap it over
    learners and episodes."""
    env, default_params = envs.make_single_env(env_id)
    policy = make_policy(config, env, default_params)
    num_trials, trial_length = env.num_trials, env.trial_length

    def play(params: Any, env_params: Any, reset_key: jax.Array, step_key: jax.Array) -> Trials:
        obs, state = env.reset(reset_key, env_params)
        hidden = jnp.zeros((1, config.gru_size)) if config.recurrent else None
        empty = Trials(jnp.zeros(num_trials), jnp.zeros((num_trials, trial_length), jnp.int32),
                       jnp.zeros(num_trials, jnp.int32))

        def step(carry: PlayCarry, inputs: tuple[jax.Array, jax.Array]) -> tuple[PlayCarry, None]:
            state, obs, hidden, trial, step_in_trial, finished, trials = carry
            key, first = inputs
            action_key, env_key = jax.random.split(key)
            hidden, logits, log_std = policy.act(params, hidden, obs[None], first[None])
            action = policy.mode(logits, None) if greedy else policy.sample(action_key, logits, log_std, None)
            action = state.demo_actions[0] if copy_demonstrator else action[0]
            obs, state, _, terminated, truncated, info = env.step(env_key, state, action, env_params)
            playing = ~finished
            ended = info["trial_ended"] & playing
            trials = Trials(
                trials.scores.at[trial].set(jnp.where(ended, info["trial_score"], trials.scores[trial])),
                trials.actions.at[trial, step_in_trial].set(
                    jnp.where(playing, action, trials.actions[trial, step_in_trial])),
                trials.lengths.at[trial].set(jnp.where(ended, step_in_trial + 1, trials.lengths[trial])),
            )
            trial = jnp.minimum(trial + ended, num_trials - 1)
            step_in_trial = jnp.where(ended, 0, jnp.minimum(step_in_trial + playing, trial_length - 1))
            finished = finished | terminated | truncated
            return PlayCarry(state, obs, hidden, trial, step_in_trial, finished, trials), None

        steps = num_trials * trial_length  # every trial lasts at most trial_length steps
        zero = jnp.zeros((), jnp.int32)
        carry = PlayCarry(state, obs, hidden, zero, zero, jnp.bool_(False), empty)
        inputs = (jax.random.split(step_key, steps), jnp.arange(steps) == 0)
        return jax.lax.scan(step, carry, inputs)[0].trials

    return play


def replays_from(trials: Trials, trial: int = -1) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Demonstrator replays from the trials of a generation's learners ``[..., K]``: each
    learner's trial ``trial``, sorted by its score (best first). Returns actions ``[..., K, L]``,
    lengths ``[..., K]`` and the sorted scores."""
    scores = trials.scores[..., trial]
    order = jnp.argsort(-scores, axis=-1)
    actions = jnp.take_along_axis(trials.actions[..., trial, :], order[..., None], axis=-2)
    lengths = jnp.take_along_axis(trials.lengths[..., trial], order, axis=-1)
    return actions, lengths, jnp.take_along_axis(scores, order, axis=-1)


def best_trial(trials: Trials) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per task, the best trial of any learner and any trial of ``trials[tasks, K, T]``: its actions
    ``[tasks, L]``, length and score ``[tasks]``."""
    flat = jax.tree.map(lambda x: x.reshape(x.shape[0], -1, *x.shape[3:]), trials)  # [tasks, K * T, ...]
    top = jnp.argmax(flat.scores, axis=1)
    pick = lambda x: jnp.take_along_axis(x, top.reshape(-1, *([1] * (x.ndim - 1))), axis=1)[:, 0]  # noqa: E731
    return pick(flat.actions), pick(flat.lengths), pick(flat.scores)


def task_keys(key: jax.Array, num_tasks: int) -> jax.Array:
    """The reset keys of the fixed tasks an in-context evaluation with ``key`` plays (baselines use
    them too, so every comparison is on the same tasks)."""
    return jax.random.split(jax.random.fold_in(key, 0), num_tasks)


@functools.lru_cache(maxsize=8)
def generation_fn(play: Callable) -> Callable:
    """One generation, compiled once per player (not per seed or generation):
    ``(params, env_params[tasks], reset_keys[tasks], step_keys[tasks, K]) -> Trials[tasks, K]``."""
    per_task = jax.vmap(play, in_axes=(None, 0, 0, 0))  # episodes (tasks) with their own replays
    return jax.jit(jax.vmap(per_task, in_axes=(None, None, None, 1), out_axes=1))  # K learners per task


def in_context_generations(
    play: Callable, params: Any, env_params: Any, num_generations: int, num_episodes: int, key: jax.Array,
    keep_best: bool = False, random_first: int = 0, progress: bool = False,
) -> np.ndarray:
    """Episodic generations of one trained agent (``params``) on ``num_episodes`` fixed tasks.

    Each generation runs ``K`` learners (the env's ``num_demonstrators``) per task; the next
    generation's demonstrators replay their last trials sorted by score, or (``keep_best``) the
    best trial so far, replaced only by one at least as good. Generation 0 sees the env's noisy
    oracles, or with ``random_first = A > 0`` replays of uniformly random actions in ``[0, A)``.
    Returns the per-trial scores of every generation, ``[generations, episodes, K, T]``."""
    num_demonstrators, length = env_params.replay_actions.shape
    play_key = jax.random.fold_in(key, 1)
    reset_keys = task_keys(key, num_episodes)  # the same tasks in every generation
    generation = generation_fn(play)
    shape = (num_episodes, num_demonstrators)
    replay_actions = jax.random.randint(jax.random.fold_in(key, 2), (*shape, length), 0, max(random_first, 1))
    replay_lengths = jnp.full(shape, length if random_first else 0, jnp.int32)
    best = jnp.full((num_episodes,), -jnp.inf)
    scores = []
    for g in tqdm(range(num_generations), disable=not progress, unit="gen", leave=False):
        batched = jax.tree.map(lambda x: jnp.broadcast_to(x, (num_episodes, *jnp.shape(x))), env_params)
        batched = batched.replace(use_replay=jnp.full((num_episodes,), g > 0 or random_first > 0),
                                  replay_actions=replay_actions,
                                  replay_lengths=replay_lengths)
        step_keys = jax.random.split(jax.random.fold_in(play_key, g), (num_episodes, num_demonstrators))
        trials = generation(params, batched, reset_keys, step_keys)
        scores.append(np.asarray(trials.scores))
        if keep_best:  # the best trial of any learner, if at least as good as the one replayed
            actions, lengths, score = best_trial(trials)
            better = score >= best
            replay_actions = jnp.where(better[:, None, None], actions[:, None], replay_actions)
            replay_lengths = jnp.where(better[:, None], lengths[:, None], replay_lengths)
            best = jnp.where(better, score, best)
        else:
            replay_actions, replay_lengths, _ = replays_from(trials)
    return np.stack(scores)


LAYER_GROUPS = {"torso": "encoder", "gru": "gru", "heads": "actor"}
"""The recurrent actor-critic's layer groups, by flag name, and their parameter names."""


def warm_start(learner: Any, keys: np.ndarray, params: Any, keep: tuple[str, ...]) -> Any:
    """``learner`` whose run ``i`` (started with ``keys[i]``) begins with ``params[i]``'s weights in
    the layer groups ``keep`` (names of ``LAYER_GROUPS``) and freshly initialised weights in the
    others, with a fresh optimiser: a generation that inherits part of its predecessor's network.

    The runner vmaps ``init`` over runs, so each run finds its row of ``params`` by its own key."""
    unknown = sorted(set(keep) - set(LAYER_GROUPS))
    if unknown:
        raise ValueError(f"unknown layer group {unknown[0]!r}; known: {', '.join(LAYER_GROUPS)}")
    run_keys, kept = jnp.asarray(keys), {LAYER_GROUPS[name] for name in keep}

    def init(key: jax.Array, hparams: Any) -> Any:
        state = learner.init(key, hparams)
        row = jnp.argmax(jnp.all(run_keys == key, axis=-1))
        layers = {name: jax.tree.map(lambda x: jnp.asarray(x)[row], params["params"][name]) if name in kept else fresh
                  for name, fresh in state.params["params"].items()}
        return state.replace(params={**state.params, "params": layers})

    return learner._replace(init=init)


def alone(env_params: Any) -> Any:
    """``env_params`` with the demonstrators never visible (an agent's own score)."""
    return env_params.replace(visibility=jnp.zeros_like(env_params.visibility),
                              anneal_visibility=jnp.zeros_like(env_params.anneal_visibility))


def in_weights_generations(
    train: Callable[[int, Any, Any], Any], play: Callable, initial_params: Any, env_params: Any, num_generations: int,
    population: int, key: jax.Array, progress: bool = False,
) -> np.ndarray:
    """Train-time generations of ``S`` independent studies (seeds) with ``P = population`` agents each.

    ``env_params`` are per study ``[S]`` (each with its fixed ``task_seed`` and
    ``anneal_visibility``); ``initial_params`` are ``S * P`` randomly initialised networks (study
    ``s``'s agents at ``s * P + p``), generation 0's demonstrators. ``train(g, env_params[S * P],
    previous)`` trains generation ``g``'s ``S * P`` agents observing the replays in those params
    and returns their network params; ``previous`` are generation ``g - 1``'s (``None`` for
    generation 0), for a training that inherits some layers (``warm_start``). Each generation's
    demonstrators are the previous agents' greedy trials played alone, sorted by score. Returns
    the agents' scores alone, ``[generations, S, P]``."""
    num_studies = jax.tree.leaves(env_params)[0].shape[0]
    per_agent = jax.tree.map(lambda x: jnp.repeat(x, population, axis=0), env_params)
    keys = jax.random.split(key, (2, num_studies * population))
    solo = jax.jit(jax.vmap(play))

    def trials_of(params: Any) -> Trials:
        trials = solo(params, alone(per_agent), keys[0], keys[1])
        return jax.tree.map(lambda x: x.reshape(num_studies, population, *x.shape[1:]), trials)

    trials, scores, previous = trials_of(initial_params), [], None
    for g in tqdm(range(num_generations), disable=not progress, unit="gen"):
        actions, lengths, _ = replays_from(trials)  # [S, P, L] best first
        observed = per_agent.replace(
            use_replay=jnp.ones_like(per_agent.use_replay),
            replay_actions=jnp.repeat(actions, population, axis=0), replay_lengths=jnp.repeat(lengths, population, axis=0),
        )
        previous = train(g, observed, previous)
        trials = trials_of(previous)
        scores.append(np.asarray(trials.scores[..., -1]))
    return np.stack(scores)
