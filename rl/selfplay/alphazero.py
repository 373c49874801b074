"""AlphaZero-style self-play on pgx games: Gumbel MuZero search (mctx) with a policy-value network.

One update of the learner (a pure function the core runner compiles, checkpoints and resumes):

1. **Self-play**: ``selfplay_steps`` moves in each of ``selfplay_games`` games in parallel; every move
   is the action of ``mctx.gumbel_muzero_policy`` with the network as prior and value and pgx's
   ``step`` as the model (``rl.selfplay.search``: reward of the mover, discount -1 between
   alternating players, 0 at the end). Finished games restart at once; games carry over to the
   next update.
2. **Targets**: the search's ``action_weights`` (the improved policy) and the game's final outcome
   from the view of the player to move at each position, found by a backward pass over the moves
   (positions of games still running at the end of the update get no target and are dropped).
3. **Replay**: positions go into a ring buffer of the last ``replay_positions``.
4. **Training**: ``train_steps`` Adam steps on minibatches drawn uniformly from the replay:
   cross-entropy to the search policy (illegal moves masked) plus the squared value error.

With ``game_shards = d > 1`` one run spreads over ``d`` devices: each plays ``selfplay_games / d``
of the games and draws ``train_batch / d`` of each minibatch, the records are gathered and the
gradients averaged over the devices (``make_learner``).

Each network call evaluates each distinct board of its batch once (``evaluate_distinct``,
``distinct_chunks``): games that start together repeat each other's first positions.

The network (``PolicyValueNet``) is a small residual conv net for board observations ``[H, W, C]``
(``models.actor_critic.conv3x3``: XLA's convolution forward, the patch matmul's gradient) and an MLP for flat
ones. ``player(config, params)`` plays with search (no root noise); ``player_from_run`` loads one.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from models.actor_critic import Conv3x3
from rl import envs, sharding
from rl.errors import ConfigError
from rl.ppo import Learner
from rl.selfplay import games, search


@dataclasses.dataclass(frozen=True)
class AlphaZeroConfig:
    """Static settings of AlphaZero self-play (shapes, sizes, budget)."""

    num_simulations: int = 32
    """search simulations per move, in self-play and when the trained agent acts"""
    max_considered_actions: int = 16
    """actions sampled at the root for Gumbel sequential halving"""
    selfplay_games: int = 256
    """games played in parallel"""
    selfplay_steps: int = 32
    """moves of every game per update"""
    num_updates: int = 200
    """updates (self-play + training rounds)"""
    replay_positions: int = 65_536
    """positions kept in the replay (the most recent)"""
    train_batch: int = 256
    """positions per gradient step"""
    train_steps: int = 32
    """gradient steps per update"""
    az_lr: float = 1e-3
    """Adam learning rate (az_: --lr is PPO's)"""
    channels: int = 32
    """width of the residual conv net (units of the MLP for flat observations)"""
    blocks: int = 3
    """residual blocks (two 3x3 convolutions each)"""
    value_coef: float = 1.0
    """weight of the value loss"""
    game_shards: int = 0
    """devices each run's self-play games are split over (0: all the devices the other runs leave free)"""
    distinct_chunks: int = 8
    """the network evaluates each distinct board of a batch once, in up to this many equal chunks, as
    many as the distinct boards fill (games started together repeat each other's early positions);
    0 or 1: every board, repeats included"""

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the first invalid field."""
        for name in ("num_simulations", "max_considered_actions", "selfplay_games", "selfplay_steps", "num_updates",
                     "replay_positions", "train_batch", "train_steps", "channels", "blocks"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be >= 1, got {getattr(self, name)}")
        if not self.az_lr > 0:
            raise ConfigError("az_lr", f"must be > 0, got {self.az_lr}")
        if self.replay_positions < self.train_batch:
            raise ConfigError("replay_positions", f"must hold at least train_batch = {self.train_batch} positions")
        if self.game_shards < 0:
            raise ConfigError("game_shards", f"must be >= 0 (0: automatic), got {self.game_shards}")
        if self.distinct_chunks < 0:
            raise ConfigError("distinct_chunks", f"must be >= 0 (0: evaluate every board), got {self.distinct_chunks}")
        for field in ("selfplay_games", "train_batch"):
            if self.game_shards and getattr(self, field) % self.game_shards:
                raise ConfigError("game_shards", f"{self.game_shards} devices do not split the {getattr(self, field)} "
                                                 f"{field} evenly")

    def with_game_shards(self, num_runs: int, device_count: int) -> AlphaZeroConfig:
        """This config with ``game_shards`` resolved for ``num_runs`` runs on ``device_count`` devices:
        the given count (which must divide the devices), or the largest count that divides both the
        games and the devices and leaves a device group for every run."""
        if self.game_shards:
            if device_count % self.game_shards:
                raise ConfigError("game_shards", f"{self.game_shards} does not divide the {device_count} devices")
            return self
        free = max(1, device_count // max(1, num_runs))
        shards = max(d for d in range(1, free + 1)
                     if self.selfplay_games % d == 0 and self.train_batch % d == 0 and device_count % d == 0)
        return dataclasses.replace(self, game_shards=shards)


class ResidualBlock(nn.Module):
    channels: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = nn.relu(Conv3x3(self.channels)(x))
        y = Conv3x3(self.channels)(y)
        return nn.relu(x + y)


class PolicyValueNet(nn.Module):
    """``apply(params, obs[B, ...]) -> (logits[B, A], value[B])``, value in [-1, 1] from the view of
    the player to move."""

    num_actions: int
    channels: int = 32
    blocks: int = 3

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = obs.astype(jnp.float32)
        if x.ndim == 4:  # [B, H, W, C] boards: a residual conv net
            x = nn.relu(Conv3x3(self.channels)(x))
            for _ in range(self.blocks):
                x = ResidualBlock(self.channels)(x)
            policy = nn.relu(nn.Dense(2)(x)).reshape(x.shape[0], -1)
            value = nn.relu(nn.Dense(1)(x)).reshape(x.shape[0], -1)
        else:
            x = x.reshape(x.shape[0], -1)
            for _ in range(self.blocks):
                x = nn.relu(nn.Dense(self.channels)(x))
            policy, value = x, x
        logits = nn.Dense(self.num_actions)(policy)
        value = jnp.tanh(nn.Dense(1)(nn.relu(nn.Dense(self.channels)(value))))[:, 0]
        return logits, value


@struct.dataclass
class AlphaZeroHParams:
    """Per-run hyperparameters (vmappable): the learning rate and the value-loss weight."""

    lr: jax.Array
    value_coef: jax.Array


@struct.dataclass
class Replay:
    observation: jax.Array  # [C, *obs_shape]
    policy: jax.Array  # [C, A] search action weights
    value: jax.Array  # [C] final outcome for the player to move
    legal: jax.Array  # [C, A]
    valid: jax.Array  # [C] slot holds a position with a target
    cursor: jax.Array  # next slot to write


@struct.dataclass
class AlphaZeroState:
    params: Any
    opt_state: Any
    games: Any  # batched pgx State, carried across updates
    replay: Replay
    key: jax.Array
    update_step: jax.Array


def default_hparams(config: AlphaZeroConfig) -> AlphaZeroHParams:
    """The hyperparameters of ``config`` as one run's vmappable values."""
    return AlphaZeroHParams(jnp.asarray(config.az_lr, jnp.float32), jnp.asarray(config.value_coef, jnp.float32))


def make_network(game: str, config: AlphaZeroConfig) -> tuple[Any, PolicyValueNet]:
    """The pgx env of ``game`` and the network for it."""
    env = games.make_game(game)
    return env, PolicyValueNet(env.num_actions, config.channels, config.blocks)


def _row_words(obs: jax.Array) -> jax.Array:
    """``obs`` as one row per observation, booleans packed 32 to a uint32 word (fewer sort keys)."""
    rows = obs.reshape(obs.shape[0], -1)
    if rows.dtype != jnp.bool_:
        return rows
    rows = jnp.pad(rows, ((0, 0), (0, -rows.shape[1] % 32))).reshape(rows.shape[0], -1, 32).astype(jnp.uint32)
    return jnp.sum(rows << jnp.arange(32, dtype=jnp.uint32), axis=-1, dtype=jnp.uint32)


def evaluate_distinct(apply: Callable[[jax.Array], Any], chunks: int) -> Callable[[jax.Array], Any]:
    """``apply`` (a function of a batch of observations that treats each row on its own) evaluated
    once per distinct row: the distinct rows (``jnp.unique`` of their packed words) are gathered to
    the front and evaluated a chunk of ``batch / chunks`` rows at a time until all are done (a
    ``while_loop``, so the work follows the number of distinct rows), and every row gets the output
    of its copy. The outputs are ``apply``'s up to float rounding. A batch that ``chunks`` does not divide, and
    ``chunks`` of 0 or 1, go to ``apply`` whole."""

    def evaluate(obs: jax.Array) -> Any:
        batch = obs.shape[0]
        if chunks < 2 or batch % chunks:
            return apply(obs)
        chunk = batch // chunks
        # the distinct rows first (then row 0's again), each row's index among them, how many
        _, first_rows, copy_of, copies = jnp.unique(_row_words(obs), axis=0, size=batch, return_index=True,
                                                      return_inverse=True, return_counts=True)
        distinct, copy_of, count = obs[first_rows], copy_of.reshape(batch), jnp.sum(copies > 0)
        shapes = jax.eval_shape(apply, distinct[:chunk])
        outputs = jax.tree.map(lambda s: jnp.zeros((batch, *s.shape[1:]), s.dtype), shapes)

        def next_chunk(carry: tuple[jax.Array, Any]) -> tuple[jax.Array, Any]:
            i, outputs = carry
            part = apply(jax.lax.dynamic_slice_in_dim(distinct, i * chunk, chunk))
            return i + 1, jax.tree.map(lambda o, p: jax.lax.dynamic_update_slice_in_dim(o, p, i * chunk, 0),
                                       outputs, part)

        _, outputs = jax.lax.while_loop(lambda carry: carry[0] * chunk < count, next_chunk, (jnp.int32(0), outputs))
        return jax.tree.map(lambda o: o[copy_of], outputs)

    return evaluate


def network_evaluator(network: PolicyValueNet, params: Any, distinct_chunks: int = 0) -> search.Evaluator:
    """The network as the search's ``evaluate(state, key) -> (logits, value)``; with
    ``distinct_chunks > 1``, each distinct observation of a batch is evaluated once
    (``evaluate_distinct``)."""
    apply = evaluate_distinct(functools.partial(network.apply, params), distinct_chunks)

    def evaluate(state: Any, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        return apply(state.observation)

    return evaluate


def outcome_targets(current_player: jax.Array, rewards: jax.Array, ended: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Value targets of time-major self-play records ``[T, B]``: for the position at step t, the final
    reward of ``current_player[t]`` in the game that position belongs to (``rewards[t]`` ``[T, B, 2]``
    are read at the step that ``ended`` a game). Returns ``(targets, known)``; positions of games
    that had not ended by step T-1 are not ``known``."""

    def backward(carry, step):
        final, known = carry
        player, reward, end = step
        final = jnp.where(end[:, None], reward, final)
        known = known | end
        return (final, known), (jnp.take_along_axis(final, player[:, None], axis=1)[:, 0], known)

    init = (jnp.zeros_like(rewards[0]), jnp.zeros_like(ended[0]))
    _, (targets, known) = jax.lax.scan(backward, init, (current_player, rewards, ended), reverse=True)
    return targets, known


def constant_start(env: Any, draws: int = 8) -> bool:
    """Whether every game of ``env`` starts from the same position as the player to move sees it
    (the same observation and legal moves for ``draws`` different keys; pgx draws only which
    player moves first, and observations are from the player to move)."""
    starts = jax.vmap(env.init)(jax.random.split(jax.random.PRNGKey(0), draws))
    return all(bool(jnp.all(x == x[:1])) for x in (starts.observation, starts.legal_action_mask))


def make_selfplay(env: Any, network: PolicyValueNet, config: AlphaZeroConfig, reuse_evaluations: bool = True):
    """``selfplay(params, games, key) -> (games, records)``: ``config.selfplay_steps`` searched moves in
    each of the batched pgx ``games`` (finished games restart at once). ``records`` are time-major
    ``[T, B, ...]``: observation, search action weights, legal mask, player to move, rewards after
    the move, whether it ended the game, and the first mover's outcome of a game it ended.

    ``reuse_evaluations`` (for games that always start from the same position, ``constant_start``):
    a search's root takes the network's evaluation of its position from the previous search's tree
    (``search.child_evaluation``) instead of calling the network again. The moves and targets are
    the same up to float rounding, with one network call per move fewer (``num_simulations`` instead
    of ``num_simulations + 1``)."""
    batch = config.selfplay_games
    init_games = jax.vmap(env.init)
    step_games = jax.vmap(env.step)
    reuse = reuse_evaluations and constant_start(env)

    def selfplay(params: Any, game_state: Any, key: jax.Array):
        evaluate = network_evaluator(network, params, config.distinct_chunks)
        policy = search.search_policy(env, evaluate, config.num_simulations, config.max_considered_actions)
        # Each search already evaluated the position its move leads to (the root's child), so the
        # next search takes that evaluation as its root's. Games that ended restart from the start
        # position, the same for every game, evaluated once per call.
        start = evaluate(init_games(jax.random.split(key, 1)), key) if reuse else None

        def move(carry, step_key):
            state, root_evaluation = carry
            search_key, step_key, reset_key = jax.random.split(step_key, 3)
            out = policy(state, search_key, root_evaluation)
            record = (state.observation, out.action_weights, state.legal_action_mask, state.current_player)
            after = step_games(state, out.action, jax.random.split(step_key, batch))
            ended = after.terminated | after.truncated
            mover_reward = after.rewards[jnp.arange(batch), state.current_player]
            # zero-sum: the first mover's outcome is the last mover's when the game had an odd number of moves
            first_mover_outcome = jnp.where(after._step_count % 2 == 1, mover_reward, -mover_reward)
            state = envs.tree_where(ended, init_games(jax.random.split(reset_key, batch)), after)
            if reuse:
                root_evaluation = envs.tree_where(ended, start, search.child_evaluation(out.search_tree, out.action))
            return (state, root_evaluation), (*record, after.rewards, ended, first_mover_outcome)

        first = evaluate(game_state, key) if reuse else None
        (game_state, _), records = jax.lax.scan(move, (game_state, first), jax.random.split(key, config.selfplay_steps))
        return game_state, records

    return selfplay


def make_learner(game: str, config: AlphaZeroConfig) -> Learner:
    """AlphaZero self-play on pgx ``game`` as a core ``Learner`` (for ``rl.runner.run``).

    With ``config.game_shards = d > 1`` (resolve 0 first: ``with_game_shards``) the learner is
    data-parallel (``Learner.data_parallel = d``): on each of its ``d`` devices it plays its share
    of the games (with its own random keys) and the self-play records are gathered over the
    devices, so every device makes the same replay; each training step draws a share of the
    minibatch per device and averages the gradients over the devices, so the state stays the same
    on all of them."""
    config.validate()
    env, network = make_network(game, config)
    num_actions, batch = env.num_actions, config.selfplay_games
    shards = max(1, config.game_shards)
    local_batch = batch // shards
    obs_shape = tuple(env.observation_shape)
    init_games = jax.vmap(env.init)

    def optimizer(lr: jax.Array) -> optax.GradientTransformation:
        return optax.adam(lr)

    def init(key: jax.Array, hp: AlphaZeroHParams) -> AlphaZeroState:
        key, net_key, game_key = jax.random.split(key, 3)
        params = network.init(net_key, jnp.zeros((1, *obs_shape)))
        capacity = config.replay_positions
        replay = Replay(
            observation=jnp.zeros((capacity, *obs_shape), jnp.bool_),
            policy=jnp.zeros((capacity, num_actions)),
            value=jnp.zeros((capacity,)),
            legal=jnp.zeros((capacity, num_actions), jnp.bool_),
            valid=jnp.zeros((capacity,), jnp.bool_),
            cursor=jnp.zeros((), jnp.int32),
        )
        return AlphaZeroState(params, optimizer(hp.lr).init(params), init_games(jax.random.split(game_key, batch)),
                              replay, key, jnp.zeros((), jnp.int32))

    selfplay = make_selfplay(env, network, dataclasses.replace(config, selfplay_games=local_batch))

    def sharded_selfplay(params: Any, game_state: Any, key: jax.Array):
        """Self-play of this device's share of the games; all games' results on every device."""
        if shards == 1:
            return selfplay(params, game_state, key)
        shard = jax.lax.axis_index(sharding.DATA_AXIS)
        mine = jax.tree.map(lambda x: jax.lax.dynamic_slice_in_dim(x, shard * local_batch, local_batch), game_state)
        games_after, records = selfplay(params, mine, jax.random.fold_in(key, shard))
        gather = lambda tree, axis: jax.tree.map(  # noqa: E731
            lambda x: jax.lax.all_gather(x, sharding.DATA_AXIS, axis=axis, tiled=True), tree)
        return gather(games_after, 0), gather(records, 1)

    def loss_fn(params: Any, hp: AlphaZeroHParams, batch_: dict[str, jax.Array]):
        logits, value = network.apply(params, batch_["observation"])
        logits = jnp.where(batch_["legal"], logits, -1e9)
        policy_loss = optax.softmax_cross_entropy(logits, batch_["policy"]).mean()
        value_loss = jnp.mean((value - batch_["value"]) ** 2)
        return policy_loss + hp.value_coef * value_loss, {"policy_loss": policy_loss, "value_loss": value_loss}

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def update(state: AlphaZeroState, hp: AlphaZeroHParams) -> tuple[AlphaZeroState, dict[str, jax.Array]]:
        key, play_key, train_key = jax.random.split(state.key, 3)
        games_after, (obs, weights, legal, player, rewards, ended, first_mover) = sharded_selfplay(
            state.params, state.games, play_key)
        targets, known = outcome_targets(player, rewards, ended)
        positions = config.selfplay_steps * batch
        replay = state.replay
        slots = (replay.cursor + jnp.arange(positions)) % config.replay_positions
        flat = lambda x: x.reshape(positions, *x.shape[2:])  # noqa: E731
        replay = replay.replace(
            observation=replay.observation.at[slots].set(flat(obs)),
            policy=replay.policy.at[slots].set(flat(weights)),
            value=replay.value.at[slots].set(flat(targets)),
            legal=replay.legal.at[slots].set(flat(legal)),
            valid=replay.valid.at[slots].set(flat(known)),
            cursor=(replay.cursor + positions) % config.replay_positions,
        )
        tx = optimizer(hp.lr)
        sample_p = replay.valid / jnp.maximum(replay.valid.sum(), 1)

        def train_step(carry, step_key):
            params, opt_state = carry
            if shards > 1:  # each device draws its share of the minibatch; gradients averaged over devices
                step_key = jax.random.fold_in(step_key, jax.lax.axis_index(sharding.DATA_AXIS))
            index = jax.random.choice(step_key, config.replay_positions, (config.train_batch // shards,), p=sample_p)
            data = {"observation": replay.observation[index], "policy": replay.policy[index],
                    "value": replay.value[index], "legal": replay.legal[index]}
            (total, aux), grads = grad_fn(params, hp, data)
            if shards > 1:
                (total, aux), grads = jax.lax.pmean(((total, aux), grads), sharding.DATA_AXIS)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), {"total_loss": total, **aux}

        (params, opt_state), losses = jax.lax.scan(
            train_step, (state.params, state.opt_state), jax.random.split(train_key, config.train_steps))
        finished = ended.sum()
        metrics = {name: value.mean() for name, value in losses.items()}
        metrics.update(
            games_finished=finished.astype(jnp.float32),
            decisive_fraction=jnp.sum(ended & (rewards.max(-1) > 0)) / jnp.maximum(finished, 1),
            mean_game_length=positions / jnp.maximum(finished, 1),
            replay_positions=replay.valid.sum().astype(jnp.float32),
            # the self-play outcome of the player who moved first (finished games; NaN if none):
            # drifts toward the game's theoretical value (0 for tic-tac-toe) as play improves
            episode_return=jnp.where(finished > 0, jnp.sum(jnp.where(ended, first_mover, 0.0)) / finished, jnp.nan),
        )
        state = AlphaZeroState(params, opt_state, games_after, replay, key, state.update_step + 1)
        return state, metrics

    return Learner(init, update, config.num_updates, config.selfplay_steps * batch, data_parallel=shards)


@functools.lru_cache(maxsize=32)
def search_act(game: str, config: AlphaZeroConfig, num_simulations: int | None = None):
    """``act(params, state, key) -> actions``: the network with ``params`` searching
    ``num_simulations`` (default: the config's) per move, with no root noise. Built once per
    settings, so all snapshots of a run share it (and its compiled matches)."""
    env, network = make_network(game, config)

    def act(params: Any, state: Any, key: jax.Array) -> jax.Array:
        evaluate = network_evaluator(network, params, config.distinct_chunks)
        policy = search.search_policy(env, evaluate, num_simulations or config.num_simulations,
                                      config.max_considered_actions, gumbel_scale=0.0)
        return policy(state, key).action.astype(jnp.int32)

    return act


def player(game: str, config: AlphaZeroConfig, params: Any, num_simulations: int | None = None):
    """The trained network with ``params`` as a searching player (``rl.selfplay.arena.ParamPlayer``)."""
    from rl.selfplay.arena import ParamPlayer

    return ParamPlayer(search_act(game, config, num_simulations), params)


def player_from_run(run_dir: str | Path, update: int | None = None):
    """The AlphaZero agent of an ``experiments.selfplay --algo alphazero`` run directory."""
    from rl.selfplay import agents

    saved = agents.run_config(run_dir)
    config = AlphaZeroConfig(**saved["alphazero"])
    _, state = agents.read_snapshot(run_dir, update)
    return player(saved["game"], config, jax.tree.map(np.asarray, state["params"]))
