"""A two-player matrix game as a gymnax environment whose opponent is the learner itself.

Each episode is one play of the game from a random seat: the observation is the seat (one-hot:
row player, column player), the learner picks its action, the opponent's action is drawn from
the opponent's action probabilities at the other seat, and the reward is the learner's payoff.
The opponent's probabilities live in the env params (``opponent_probs[seat]``): the core PPO
learner binds them before every rollout from its latest policy and its pool of past snapshots
(``rl.envs.is_self_play``, ``rl.opponents``), so one shared policy plays both seats, and the
payoffs, also env params, are one more vmap axis (a whole suite of games in one compile).

``register_matrix_game(n)`` registers (once) and returns the id ``MatrixGame{n}x{n}-selfplay``
for n x n games.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

from rl import envs


@struct.dataclass
class MatrixGameState(environment.EnvState):
    seat: jax.Array  # 0: the learner plays the rows, 1: the columns
    time: int


@struct.dataclass
class MatrixGameParams(environment.EnvParams):
    max_steps_in_episode: int = 1
    payoffs: jax.Array | None = None  # [player, row action, column action]
    opponent_probs: jax.Array | None = None  # [seat, action]: the policy's probabilities at that seat


class MatrixGameSelfPlay(environment.Environment):
    """One play of an n x n two-player game against the policy's own probabilities."""

    def __init__(self, num_actions: int):
        super().__init__()
        self.n = num_actions

    @property
    def default_params(self) -> MatrixGameParams:
        return MatrixGameParams(
            payoffs=jnp.zeros((2, self.n, self.n)), opponent_probs=jnp.full((2, self.n), 1.0 / self.n)
        )

    @property
    def num_actions(self) -> int:
        return self.n

    def action_space(self, params: Any = None) -> spaces.Discrete:
        return spaces.Discrete(self.n)

    def observation_space(self, params: Any = None) -> spaces.Box:
        return spaces.Box(0.0, 1.0, (2,), jnp.float32)

    def get_obs(self, state: MatrixGameState, params: Any = None, key: Any = None) -> jax.Array:
        return jax.nn.one_hot(state.seat, 2)

    def reset_env(self, key: jax.Array, params: MatrixGameParams) -> tuple[jax.Array, MatrixGameState]:
        state = MatrixGameState(seat=jax.random.bernoulli(key).astype(jnp.int32), time=jnp.zeros((), jnp.int32))
        return self.get_obs(state), state

    def step_env(self, key: jax.Array, state: MatrixGameState, action: jax.Array, params: MatrixGameParams):
        opponent = jax.random.choice(key, self.n, p=params.opponent_probs[1 - state.seat])
        row, column = jnp.where(state.seat == 0, action, opponent), jnp.where(state.seat == 0, opponent, action)
        reward = params.payoffs[state.seat, row, column]
        state = state.replace(time=state.time + 1)
        return self.get_obs(state), state, reward.astype(jnp.float32), jnp.bool_(True), {}

    def opponent_observations(self, params: MatrixGameParams) -> jax.Array:
        """What the policy sees at each seat: ``[2 seats, 2]``."""
        return jnp.eye(2)

    def with_opponent(self, params: MatrixGameParams, probs: jax.Array) -> MatrixGameParams:
        """``params`` whose opponent plays ``probs[seat]`` at each seat."""
        return params.replace(opponent_probs=probs)


def register_matrix_game(num_actions: int) -> str:
    """The env id of ``num_actions`` x ``num_actions`` self-play matrix games (registered once)."""
    env_id = f"MatrixGame{num_actions}x{num_actions}-selfplay"
    if env_id not in envs.registered_ids():
        envs.register(env_id, lambda: MatrixGameSelfPlay(num_actions))
    return env_id
