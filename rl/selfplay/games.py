"""pgx two-player board games as gymnax environments whose opponent is a policy network.

``make_game(name)`` checks that ``name`` is a two-player pgx game and returns its pgx env.
``BoardGameSelfPlay`` turns it into a single-agent environment for the core learner: every episode
is one game in which the learner sits in a random seat; after each of its moves the opponent moves
(inside ``step``), so the learner always observes the board from its own side, with pgx's legal
moves as its action mask, and its reward is its own (+1 win, -1 loss, 0 draw, at the step that
ended the game, whoever made the last move). Returns and value targets therefore keep the
acting player's sign.

The opponent lives in the env params (``OpponentPolicy``): a policy function (static) and a stack
of candidate parameters with the probability of each (the latest policy and frozen snapshots of a
pool, ``rl.opponents``). Each game draws its opponent when it starts and keeps it to its end, all
inside the compiled loop. ``opening_plies`` (an env param) starts each game after a uniformly drawn
number of uniformly random moves, from 0 to ``opening_plies``, made before the seats are dealt: the
learner then meets every opening followed by strong play, not only the lines its own pool opens
with. (A game that the random moves already ended is a finished episode with reward 0.) The core learner binds the opponent before every rollout
(``rl.envs.is_policy_opponent``). Environment ids are ``pgx/<game>`` (``pgx/tic_tac_toe``,
``pgx/connect_four``, ``pgx/othello``, ``pgx/go_9x9``, ...): any two-player pgx game, no code per game.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

from rl import envs
from rl.errors import ConfigError
from rl.opponents import OpponentPolicy, uniform_act

PREFIX = "pgx/"


def two_player_games() -> list[str]:
    """The pgx game ids with two players (board and card games; not MinAtar or 2048)."""
    import pgx

    names = []
    for name in pgx.available_envs():
        if name.startswith("minatar") or name in ("2048",):
            continue
        names.append(name)
    return names


def make_game(name: str) -> Any:
    """The pgx environment ``name``; ``ConfigError`` (field ``game``) unless it is a two-player game."""
    import pgx

    if name not in pgx.available_envs():
        raise ConfigError("game", f"unknown pgx game {name!r}; two-player games: {', '.join(two_player_games())}")
    if name.startswith("minatar") or name == "2048":
        raise ConfigError("game", f"{name!r} is a one-player pgx game; self-play needs two players "
                          f"({', '.join(two_player_games())})")
    env = pgx.make(name)
    if env.num_players != 2:
        raise ConfigError("game", f"{name!r} has {env.num_players} players; self-play needs two")
    return env


@struct.dataclass
class BoardGameState(environment.EnvState):
    game: Any  # the pgx State
    seat: jax.Array  # the learner's player id (0 or 1)
    opponent: jax.Array  # index into the candidates of OpponentPolicy for this game
    time: int


@struct.dataclass
class BoardGameParams(environment.EnvParams):
    max_steps_in_episode: int = 100_000  # games end by their own rules (pgx truncates long ones)
    opponent: OpponentPolicy | None = None
    opening_plies: int = 0  # at most this many uniformly random moves open each game (number drawn uniformly)


class BoardGameSelfPlay(environment.Environment):
    """One game of a two-player pgx game against ``params.opponent``, from a random seat."""

    def __init__(self, game: str):
        super().__init__()
        self.game_name = game
        self.game = make_game(game)

    @property
    def default_params(self) -> BoardGameParams:
        return BoardGameParams(opponent=OpponentPolicy(jnp.zeros((1,)), jnp.ones((1,)), uniform_act))

    @property
    def name(self) -> str:
        return env_id(self.game_name)

    @property
    def num_actions(self) -> int:
        return self.game.num_actions

    def action_space(self, params: Any = None) -> spaces.Discrete:
        return spaces.Discrete(self.game.num_actions)

    def observation_space(self, params: Any = None) -> spaces.Box:
        return spaces.Box(0.0, 1.0, tuple(self.game.observation_shape), jnp.float32)

    def action_mask(self, state: BoardGameState, params: Any = None) -> jax.Array:
        """pgx's legal moves for the learner (it is always the learner's turn between steps)."""
        return state.game.legal_action_mask

    def get_obs(self, state: BoardGameState, params: Any = None, key: Any = None) -> jax.Array:
        return state.game.observation.astype(jnp.float32)

    def _opponent_moves(self, key: jax.Array, state: BoardGameState, params: BoardGameParams):
        """Let the opponent move if the game is running and it is its turn; returns the new state and
        the learner's reward from that move."""
        game = state.game
        policy = params.opponent
        chosen = jax.tree.map(lambda leaf: leaf[state.opponent], policy.params)
        act_key, step_key = jax.random.split(key)
        action = policy.act(chosen, game.observation.astype(jnp.float32), game.legal_action_mask, act_key)
        moves = jnp.logical_and(~(game.terminated | game.truncated), game.current_player != state.seat)
        after = self.game.step(game, action, step_key)
        game = jax.tree.map(lambda new, old: jnp.where(moves, new, old), after, game)
        reward = jnp.where(moves, after.rewards[state.seat], 0.0)
        return state.replace(game=game), reward

    def _random_opening(self, key: jax.Array, game: Any, max_plies: jax.Array) -> Any:
        """``game`` after a uniformly drawn number (0 to ``max_plies``) of uniformly random legal moves."""
        count_key, moves_key = jax.random.split(key)
        plies = jax.random.randint(count_key, (), 0, max_plies + 1)

        def play(ply: jax.Array, game: Any) -> Any:
            act_key, step_key = jax.random.split(jax.random.fold_in(moves_key, ply))
            action = uniform_act(None, game.observation, game.legal_action_mask, act_key)
            after = self.game.step(game, action, step_key)
            moves = (ply < plies) & ~(game.terminated | game.truncated)
            return jax.tree.map(lambda new, old: jnp.where(moves, new, old), after, game)

        return jax.lax.fori_loop(0, max_plies, play, game)

    def reset_env(self, key: jax.Array, params: BoardGameParams) -> tuple[jax.Array, BoardGameState]:
        game_key, seat_key, pick_key, move_key = jax.random.split(key, 4)
        weights = params.opponent.weights
        game = self._random_opening(jax.random.fold_in(key, 1), self.game.init(game_key), params.opening_plies)
        state = BoardGameState(
            game=game,
            seat=jax.random.bernoulli(seat_key).astype(jnp.int32),
            opponent=jax.random.choice(pick_key, weights.shape[0], p=weights),
            time=jnp.zeros((), jnp.int32),
        )
        state, _ = self._opponent_moves(move_key, state, params)  # the opponent opens when seated first
        return self.get_obs(state), state

    def step_env(self, key: jax.Array, state: BoardGameState, action: jax.Array, params: BoardGameParams):
        step_key, reply_key = jax.random.split(key)
        game = self.game.step(state.game, action, step_key)
        reward = game.rewards[state.seat]
        state, reply_reward = self._opponent_moves(reply_key, state.replace(game=game), params)
        state = state.replace(time=state.time + 1)
        done = state.game.terminated | state.game.truncated
        return self.get_obs(state), state, (reward + reply_reward).astype(jnp.float32), done, {}

    def is_terminal(self, state: BoardGameState, params: Any) -> jax.Array:
        return state.game.terminated | state.game.truncated

    def with_opponent_policy(self, params: BoardGameParams, opponent: OpponentPolicy) -> BoardGameParams:
        """``params`` whose games are played against ``opponent``."""
        return params.replace(opponent=opponent)


def env_id(game: str) -> str:
    """The environment id of pgx game ``game`` (``pgx/<game>``)."""
    return PREFIX + game


def _check(name: str) -> None:
    make_game(name)


envs.register_family(PREFIX, _check, BoardGameSelfPlay)
