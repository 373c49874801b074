"""Fitness of a learned drift objective (LPO, TA-LPO): complete PPO lifetimes trained with it.

A member of the ES population is a set of drift-network weights. Its fitness on a task (an
environment and a training horizon, i.e. a ``PPOConfig``) is the mean return of the final policy
of one whole training run of the core PPO learner with that objective, over evaluation episodes.
All tasks of a member run in one function, which ``meta.es.evolve`` vmaps over the population.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from rl.errors import ConfigError
from rl.objectives import LEARNED_OBJECTIVES, DriftParams, drift_params, drift_weights
from rl.ppo import PPOConfig, default_hparams, evaluate, make_train

# The LPO reference's inner PPO: value loss 0.25 * mean((V - target)^2), i.e. unclipped at vf_coef 0.5.
LPO_INNER_SETTINGS = {"clip_value_loss": False, "vf_coef": 0.5}


def inner_configs(objective: str, envs: list[str], horizons: list[int], base: PPOConfig) -> list[PPOConfig]:
    """One PPO config per (environment, training horizon in env steps) task, with ``objective``."""
    if objective not in LEARNED_OBJECTIVES:
        raise ConfigError("objective", f"drift objectives are {LEARNED_OBJECTIVES}, got {objective!r}")
    configs = [dataclasses.replace(base, env=env, total_timesteps=steps, objective=objective)
               for env in envs for steps in horizons]
    for config in configs:
        config.validate()
    return configs


def task_name(config: PPOConfig) -> str:
    """``ENV@STEPS``, the name of a meta-training task."""
    return f"{config.env}@{config.total_timesteps}"


def make_fitness(
    configs: list[PPOConfig], eval_episodes: int, clip_eps: float = 0.2, ppo_init: bool = True
) -> Callable[[dict[str, jax.Array], jax.Array], jax.Array]:
    """``fitness(weights, key) -> [len(configs)]``: for each task, train from scratch with the drift
    network ``weights`` and return the final policy's mean return over ``eval_episodes`` greedy
    episodes. Pure; vmap it over members (weights, keys)."""
    trains = [make_train(config) for config in configs]
    hparams = [default_hparams(config) for config in configs]

    def fitness(weights: dict[str, jax.Array], key: jax.Array) -> jax.Array:
        params = drift_params(weights, clip_eps, ppo_init)
        scores = []
        for config, train, hp in zip(configs, trains, hparams, strict=True):
            key, train_key, eval_key = jax.random.split(key, 3)
            hp = hp.replace(objective_params=params)
            state, _ = train(train_key, hp)
            episodes = evaluate(state.params, config, hp, eval_key, eval_episodes)
            scores.append(episodes["return"].mean())
        return jnp.stack(scores)

    return fitness


def starting_weights(objective: str) -> dict[str, jax.Array]:
    """The ES mean's starting point: the zero drift network (PPO under the PPO initialisation)."""
    return drift_weights(None, temporal=objective == "ta_lpo")


def as_params(weights: dict[str, Any], clip_eps: float = 0.2, ppo_init: bool = True) -> DriftParams:
    """Evolved weights as the objective's params."""
    return drift_params(jax.tree.map(jnp.asarray, weights), clip_eps, ppo_init)
