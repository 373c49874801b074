"""TSP: tour a hidden set of cities, helped by demonstrators who may be seen.

The in-context travelling-salesperson environment of the cultural-accumulation study
(../shared/specs/cultural-accumulation.md). An episode draws ``num_cities`` cities uniformly in
[0, 1]^2 and lasts ``num_trials`` trials on them. Every trial starts at city 0 (the depot), and
each action names the next city. Moving from city ``c`` to a city ``j`` not yet visited in this
trial pays ``(sqrt(2) - dist(c, j)) / sqrt(2)``; the move that completes the tour also pays the
return to the depot, ``(sqrt(2) - dist(j, 0)) / sqrt(2)``, and ends the trial. Naming a city already
visited (the depot included) pays -1 and ends the trial. A full tour takes ``num_cities - 1``
steps, so ``trial_length = num_cities`` bounds a trial. The cities are not observed: the agent
learns them from the rewards, and what it learned in one trial pays in the next.

Beside the agent act ``num_demonstrators`` noisy oracles. Each plays its own trial in lock step
with the agent's (back at the depot whenever the agent starts a trial), choosing its next city by
a softmax over ``-dist(current, j) - sqrt(2) * visited(j)`` at temperature ``U * oracle_temperature``,
``U ~ U(0, 1)`` per episode and oracle, or at ``fixed_temperature`` for all oracles when that is
> 0 (the evaluation's generation-0 oracles use 10, near random); with ``sort_oracles`` the
coolest stands first. An oracle's city for the current
step is shown, including a revisit; after a revisit or a completed tour it is hidden for the rest of
the agent's trial. Visibility follows ``rl.cultural.base``; so do replayed demonstrators, which show
their replayed city at each step of the agent's trial.

Two layouts (``mode``):

- ``in_context``: own last action one-hot (``num_cities``), trial-ended flag, last reward, the
  demonstrators' cities one-hot (``num_demonstrators x num_cities``, zeros when not visible or
  hidden), the visibility flag: 27 numbers for 6 cities and 3 demonstrators.
- ``in_weights``: the demonstrators' cities one-hot and the visibility flag only (31 numbers for 6
  cities and 5 demonstrators); use one trial per episode and a fixed ``task_seed``.

The cities are drawn at every reset, or are those of ``task_seed`` when that is >= 0.
``info["trial_score"]`` is the return of the trial that ended on this step (the sum of its
rewards): higher is better, a shorter tour scores higher.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

from rl.cultural.base import (
    CulturalEnv,
    CulturalParams,
    action_observation,
    action_observation_size,
    register_cultural,
)

SQRT2 = math.sqrt(2.0)


@struct.dataclass
class TSPParams(CulturalParams):
    oracle_temperature: float = 0.5
    """oracle softmax temperature U * oracle_temperature, U ~ U(0, 1) per episode and oracle"""
    fixed_temperature: float = -1.0
    """> 0: every oracle uses this temperature instead"""


@struct.dataclass
class TSPState(environment.EnvState):
    cities: jax.Array  # [num_cities, 2] coordinates
    position: jax.Array  # step of the current trial
    trial: jax.Array  # index of the current trial
    current: jax.Array  # the agent's current city
    visited: jax.Array  # [num_cities] cities the agent visited in this trial (the depot included)
    trial_return: jax.Array  # rewards so far in the current trial
    temperature: jax.Array  # [num_demonstrators] oracle temperatures of this episode
    demo_current: jax.Array  # [num_demonstrators] each oracle's current city
    demo_visited: jax.Array  # [num_demonstrators, num_cities] cities each oracle visited in this trial
    demo_alive: jax.Array  # [num_demonstrators] the oracle's trial goes on (no revisit, tour not complete)
    demo_actions: jax.Array  # [num_demonstrators] the cities the demonstrators play on this step
    demo_shown: jax.Array  # [num_demonstrators] whether each demonstrator plays on this step
    visible: jax.Array  # whether the demonstrators are seen on this step
    last_action: jax.Array  # -1 before the first action of the episode
    last_reward: jax.Array
    trial_ended: jax.Array  # the previous step ended a trial
    time: jax.Array


class TSP(CulturalEnv):
    """TSP with noisy-oracle or replayed demonstrators (see the module docstring)."""

    def __init__(self, mode: str = "in_context", num_cities: int | None = None,
                 num_trials: int | None = None, num_demonstrators: int | None = None):
        super().__init__()
        in_context = mode == "in_context"
        self.mode = mode
        self.num_cities = self.trial_length = num_cities if num_cities is not None else 6
        self.num_trials = num_trials if num_trials is not None else (8 if in_context else 1)
        self.num_demonstrators = num_demonstrators if num_demonstrators is not None else (3 if in_context else 5)
        self.check_sizes(num_cities=2, num_trials=1, num_demonstrators=0)

    @property
    def name(self) -> str:
        return f"TSP-{self.mode}"

    @property
    def default_params(self) -> TSPParams:
        return TSPParams(**self.replay_defaults())

    @property
    def num_actions(self) -> int:
        return self.num_cities

    def action_space(self, params: Any = None) -> spaces.Discrete:
        return spaces.Discrete(self.num_cities)

    @property
    def obs_size(self) -> int:
        return action_observation_size(self.mode, self.num_cities, self.num_demonstrators)

    def observation_space(self, params: Any = None) -> spaces.Box:
        # the last reward of a completed tour (move + return to the depot) can reach 2
        return spaces.Box(-1.0, 2.0, (self.obs_size,), jnp.float32)

    def _closeness(self, cities: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
        """``(sqrt(2) - dist(a, b)) / sqrt(2)``: the pay of a move from city ``a`` to city ``b``."""
        return (SQRT2 - jnp.linalg.norm(cities[a] - cities[b], axis=-1)) / SQRT2

    def _demonstrate(self, key: jax.Array, state: TSPState, params: TSPParams) -> TSPState:
        """Draw the demonstrators' cities and their visibility for the step at ``state.position``."""
        choice_key, visible_key = jax.random.split(key)
        distances = jnp.linalg.norm(state.cities[state.demo_current][:, None] - state.cities[None], axis=-1)
        logits = (-distances - SQRT2 * state.demo_visited) / state.temperature[:, None]
        oracle = jax.random.categorical(choice_key, logits, axis=-1)
        replay, playing = self.replayed(state.position, params)
        return state.replace(
            demo_actions=jnp.where(params.use_replay, replay, oracle).astype(jnp.int32),
            demo_shown=jnp.where(params.use_replay, playing, state.demo_alive),
            visible=self.draw_visible(visible_key, state.trial, params),
        )

    def reset_env(self, key: jax.Array, params: TSPParams) -> tuple[jax.Array, TSPState]:
        temperature_key, demo_key = jax.random.split(key)
        cities = jax.random.uniform(self.task_key(key, params), (self.num_cities, 2))
        drawn = jax.random.uniform(temperature_key, (self.num_demonstrators,)) * params.oracle_temperature
        drawn = jnp.where(params.sort_oracles, jnp.sort(drawn), drawn)  # lowest temperature first
        temperature = jnp.where(params.fixed_temperature > 0, params.fixed_temperature, drawn)
        zero = jnp.zeros((), jnp.int32)
        k = self.num_demonstrators
        depot = jnp.arange(self.num_cities) == 0
        state = TSPState(
            cities=cities, position=zero, trial=zero, current=zero, visited=depot,
            trial_return=jnp.zeros((), jnp.float32),
            temperature=jnp.maximum(temperature, 1e-6).astype(jnp.float32),
            demo_current=jnp.zeros(k, jnp.int32), demo_visited=jnp.tile(depot, (k, 1)),
            demo_alive=jnp.ones(k, bool), demo_actions=jnp.zeros(k, jnp.int32), demo_shown=jnp.ones(k, bool),
            visible=jnp.bool_(False), last_action=zero - 1, last_reward=jnp.zeros((), jnp.float32),
            trial_ended=jnp.bool_(False), time=zero,
        )
        state = self._demonstrate(demo_key, state, params)
        return self.get_obs(state, params), state

    def step_env(self, key: jax.Array, state: TSPState, action: jax.Array, params: TSPParams):
        action = jnp.asarray(action, jnp.int32)
        fresh = ~state.visited[action]
        visited = state.visited | (jnp.arange(self.num_cities) == action)
        complete = fresh & visited.all()
        pay = self._closeness(state.cities, state.current, action)
        pay = pay + jnp.where(complete, self._closeness(state.cities, action, 0), 0.0)
        reward = jnp.where(fresh, pay, -1.0).astype(jnp.float32)
        trial_return = state.trial_return + reward
        trial_over = ~fresh | complete
        trial = state.trial + trial_over.astype(jnp.int32)
        done = trial >= self.num_trials
        info = self.trial_info(trial_return, trial_over, state.trial)

        # the oracles play the cities they showed on this step, or restart at the depot with a new trial
        depot = jnp.arange(self.num_cities) == 0
        demo_fresh = ~jnp.take_along_axis(state.demo_visited, state.demo_actions[:, None], axis=1)[:, 0]
        demo_visited = state.demo_visited | (jnp.arange(self.num_cities) == state.demo_actions[:, None])
        demo_alive = state.demo_alive & demo_fresh & ~demo_visited.all(axis=1)
        state = state.replace(
            position=jnp.where(trial_over, 0, state.position + 1), trial=jnp.minimum(trial, self.num_trials - 1),
            current=jnp.where(trial_over, 0, action), visited=jnp.where(trial_over, depot, visited),
            trial_return=jnp.where(trial_over, 0.0, trial_return),
            demo_current=jnp.where(trial_over, 0, state.demo_actions),
            demo_visited=jnp.where(trial_over, depot, demo_visited), demo_alive=demo_alive | trial_over,
            last_action=action, last_reward=reward, trial_ended=trial_over, time=state.time + 1,
        )
        state = self._demonstrate(key, state, params)
        return self.get_obs(state, params), state, reward, done, info

    def get_obs(self, state: TSPState, params: Any = None, key: Any = None) -> jax.Array:
        return action_observation(self.mode, self.num_cities, state)


register_cultural("tsp", TSP)
