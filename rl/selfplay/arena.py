"""Matches between two players on a pgx two-player game, all games batched and jitted.

A *player* is a pure, jittable function ``player(state, key) -> actions``: given a pgx ``State``
batched on a leading axis, it returns one legal action (int32) per game. Players see the batch from
the perspective of whoever is to move (``state.current_player``, ``state.observation``).

``play_match(env, player_a, player_b, key, num_games)`` plays half of the games with A moving
first and half with A moving second and reports win/draw/loss fractions from A's point of view,
overall and per seat, plus the number of illegal actions the players attempted (0 for correct
players). The whole match is one ``lax.while_loop``; compiled matches are cached per
``(env, player_a, player_b, num_games, max_steps)``, so reuse the same player objects to avoid
recompiling; a ``ParamPlayer`` is keyed by its ``act`` alone, its params being an argument.
The games are split over this process's devices (``match_devices``: as many as divide the games
into even shares, each share a match of its own with half its games per seat).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pgx
from jax.sharding import Mesh, PartitionSpec

from rl import envs

Player = Callable[[pgx.State, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True, eq=False)
class ParamPlayer:
    """A player whose parameters are data: ``act(params, state, key)`` with ``params``. Matches
    compile once per ``act`` (not per ``params``), so the snapshots of one run share one compiled
    match in a round robin. Callable as a plain player, ``player(state, key)``."""

    act: Callable[[Any, pgx.State, jax.Array], jax.Array]
    params: Any

    def __call__(self, state: pgx.State, key: jax.Array) -> jax.Array:
        return self.act(self.params, state, key)


@functools.lru_cache(maxsize=256)
def _without_params(player: Player) -> Callable[[Any, pgx.State, jax.Array], jax.Array]:
    def act(params: Any, state: pgx.State, key: jax.Array) -> jax.Array:
        return player(state, key)

    return act


def _act_and_params(player: Player) -> tuple[Callable[[Any, pgx.State, jax.Array], jax.Array], Any]:
    if isinstance(player, ParamPlayer):
        return player.act, player.params
    return _without_params(player), None


def random_player(env: pgx.Env) -> Player:
    """The uniform random player: each game's action is drawn uniformly from its legal actions."""
    del env  # the legal-action mask carries everything this player needs

    def player(state: pgx.State, key: jax.Array) -> jax.Array:
        logits = jnp.where(state.legal_action_mask, 0.0, -jnp.inf)
        return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)

    return player


def _take(tree, index: jax.Array):
    return jax.tree.map(lambda x: x[index], tree)


def _seat_turns(player: Player, state: pgx.State, to_move: jax.Array, capacity: int, key: jax.Array):
    """Run ``player`` on (at most ``capacity`` of) the games flagged by ``to_move``.

    Returns the games' indices (out-of-range ``len(to_move)`` for unused slots) and the actions.
    """
    num_games = to_move.shape[0]
    order = jnp.argsort(~to_move, stable=True)[:capacity]  # flagged games first
    actions = player(_take(state, order), key).astype(jnp.int32)
    index = jnp.where(to_move[order], order, num_games)
    return index, actions


def _match_fn(env: pgx.Env, act_a: Callable, act_b: Callable, num_games: int, max_steps: int | None):
    """A jittable ``(key, params_a, params_b) -> (outcome, finished, illegal)``; ``outcome[i]`` is A's
    final reward in game i (the players are ``act(params, state, key)``).

    Games ``[0, num_games // 2)`` have A moving first, the rest B. Each loop iteration gives each
    player one call on a sub-batch of ``num_games // 2`` games: in a game where turns alternate, half
    of the unfinished games have A to move at every ply, so nothing waits and each player does half
    the work of evaluating both players on the whole batch. Games beyond a player's capacity (possible
    in games where a player moves several times in a row) simply wait for the next iteration; games
    are independent, so the results are unaffected.
    """
    half = num_games // 2
    step = jax.vmap(env.step)
    rows = jnp.arange(num_games)

    def run(key: jax.Array, params_a: Any, params_b: Any):
        player_a = functools.partial(act_a, params_a)
        player_b = functools.partial(act_b, params_b)
        init_key, key = jax.random.split(key)
        state = jax.vmap(env.init)(jax.random.split(init_key, num_games))
        a_first = rows < half
        # pgx draws the first mover's player id at random: A takes that id in the first half.
        a_id = jnp.where(a_first, state.current_player, 1 - state.current_player)
        done = state.terminated | state.truncated
        carry = (state, key, done, jnp.zeros(num_games), jnp.zeros(num_games, jnp.int32), jnp.int32(0))

        def cond(carry):
            return ~jnp.all(carry[2])

        def body(carry):
            state, key, done, outcome, plies, illegal = carry
            key, key_a, key_b, key_step = jax.random.split(key, 4)
            a_to_move = (state.current_player == a_id) & ~done
            b_to_move = (state.current_player != a_id) & ~done
            index_a, actions_a = _seat_turns(player_a, state, a_to_move, half, key_a)
            index_b, actions_b = _seat_turns(player_b, state, b_to_move, half, key_b)
            index = jnp.concatenate([index_a, index_b])
            actions = (
                jnp.zeros(num_games, jnp.int32).at[index].set(jnp.concatenate([actions_a, actions_b]), mode="drop")
            )
            moved = jnp.zeros(num_games, bool).at[index].set(True, mode="drop")

            legal = state.legal_action_mask[rows, actions]
            illegal = illegal + jnp.sum(moved & ~legal, dtype=jnp.int32)
            stepped = step(state, actions, jax.random.split(key_step, num_games))
            state = envs.tree_where(moved, stepped, state)

            # pgx zeroes rewards once a finished game is stepped again: read them at the final step.
            ended = moved & (stepped.terminated | stepped.truncated)
            outcome = jnp.where(ended, stepped.rewards[rows, a_id], outcome)
            plies = plies + moved
            done = done | ended
            if max_steps is not None:
                done = done | (plies >= max_steps)
            return state, key, done, outcome, plies, illegal

        state, _, _, outcome, _, illegal = jax.lax.while_loop(cond, body, carry)
        finished = state.terminated | state.truncated
        return outcome, finished, illegal

    return run


def match_devices(num_games: int) -> int:
    """How many of this process's devices a match of ``num_games`` games is split over: the most
    that give every device an even share (half its games per seat)."""
    count = len(jax.local_devices())
    return max(d for d in range(1, count + 1) if num_games % (2 * d) == 0)


@functools.lru_cache(maxsize=64)
def _sharded_match(env: pgx.Env, act_a: Callable, act_b: Callable, num_games: int, max_steps: int | None):
    """``_match_fn`` with the games split over ``match_devices(num_games)`` devices, jitted:
    ``(key, params_a, params_b) -> (outcome, finished, illegal)`` with A's first-seat games first."""
    devices = match_devices(num_games)
    local = _match_fn(env, act_a, act_b, num_games // devices, max_steps)
    if devices == 1:
        return jax.jit(local)
    mesh = Mesh(np.array(jax.local_devices()[:devices]), ("games",))

    def per_device(keys: jax.Array, params_a: Any, params_b: Any):
        outcome, finished, illegal = local(keys[0], params_a, params_b)
        return outcome[None], finished[None], illegal[None]

    split, same = PartitionSpec("games"), PartitionSpec()
    sharded = jax.shard_map(per_device, mesh=mesh, in_specs=(split, same, same), out_specs=split, check_vma=False)

    def run(key: jax.Array, params_a: Any, params_b: Any):
        outcome, finished, illegal = sharded(jax.random.split(key, devices), params_a, params_b)
        share = num_games // devices // 2  # each device's games: A first, then B first
        seat_major = lambda x: jnp.concatenate([x[:, :share].ravel(), x[:, share:].ravel()])  # noqa: E731
        return seat_major(outcome), seat_major(finished), illegal.sum()

    return jax.jit(run)


def _fractions(outcome: jax.Array) -> dict[str, float]:
    n = outcome.shape[0]
    return {
        "win": float(jnp.sum(outcome > 0)) / n,
        "draw": float(jnp.sum(outcome == 0)) / n,
        "loss": float(jnp.sum(outcome < 0)) / n,
    }


def play_match(
    env: pgx.Env,
    player_a: Player,
    player_b: Player,
    key: jax.Array,
    num_games: int,
    max_steps: int | None = None,
) -> dict:
    """Play ``num_games`` games of ``env`` between A and B and score them from A's point of view.

    Half of the games have A moving first, half A moving second. With ``max_steps``, a game still
    running after that many plies stops and counts as a draw (``"unfinished"`` counts them).

    Args:
        env: a two-player pgx environment (``pgx.make(...)``).
        player_a: the player being scored.
        player_b: its opponent.
        key: PRNG key for the initial states, both players and the environment.
        num_games: number of games, even (split equally between the two seats).
        max_steps: optional cap on the plies of each game.

    Returns:
        ``{"win", "draw", "loss", "score"}`` over all games (score = win + draw / 2), ``"first"`` and
        ``"second"`` with ``{"win", "draw", "loss"}`` for the games in which A moved first / second,
        ``"illegal"`` (illegal actions attempted by either player; pgx ends such a game with a loss for
        the offender), ``"unfinished"`` and ``"num_games"``.

    Raises:
        ValueError: if ``num_games`` is not a positive even number, or the game is not two-player.
    """
    if num_games < 2 or num_games % 2:
        raise ValueError(
            f"num_games must be a positive even number (half the games per seat), got num_games={num_games}"
        )
    if env.num_players != 2:
        raise ValueError(f"play_match needs a two-player game, {env.id!r} has {env.num_players} players")
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be at least 1, got max_steps={max_steps}")
    (act_a, params_a), (act_b, params_b) = _act_and_params(player_a), _act_and_params(player_b)
    outcome, finished, illegal = _sharded_match(env, act_a, act_b, num_games, max_steps)(key, params_a, params_b)
    half = num_games // 2
    result: dict = _fractions(outcome)
    result["score"] = result["win"] + 0.5 * result["draw"]
    result["first"] = _fractions(outcome[:half])
    result["second"] = _fractions(outcome[half:])
    result["illegal"] = int(illegal)
    result["unfinished"] = int(jnp.sum(~finished))
    result["num_games"] = num_games
    return result
