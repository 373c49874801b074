"""PPO self-play on matrix games through the core learner, vectorised over a batch of games.

Each game becomes ``MatrixGameSelfPlay`` (``rl.games.selfplay_env``): one shared policy reads its
seat and plays against its own latest probabilities, or a pool of its past snapshots
(``PPOConfig.opponent_pool``). The games' payoffs are env params, so a batch of same-shaped games
is one ``vmap`` of the core PPO learner's ``init``/``update``, scanned over the iterations (one
iteration = one PPO update). Payoffs are divided by each game's payoff range before training, so
one learning rate and entropy bonus suit every game; the metrics use the game's own payoffs.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rl import envs
from rl.games.learners import SelfPlayResult, record_iterations
from rl.games.matrix import nash_conv
from rl.games.selfplay_env import register_matrix_game
from rl.ppo import PPOConfig, default_hparams, make_learner, make_policy


def self_play_config(num_actions: int, iterations: int, **settings: Any) -> PPOConfig:
    """The PPO config of ``iterations`` updates on n x n games; ``settings`` override the defaults
    (64 one-step games x 8 steps per update, 4 epochs x 4 minibatches, lr 1e-3 annealed, entropy
    bonus 0.1, raw advantages, a 16-unit MLP): chosen on rock-paper-scissors, where plain
    self-play with normalised advantages spirals out to a pure strategy."""
    base = dict(num_envs=64, num_steps=8, update_epochs=4, num_minibatches=4, lr=1e-3, ent_coef=0.1,
                normalize_advantages=False, hidden_sizes=(16,))
    base.update(settings)
    env_id = register_matrix_game(num_actions)
    return PPOConfig(env=env_id, total_timesteps=iterations * base["num_envs"] * base["num_steps"], **base)


def ppo_self_play(payoffs: Any, iterations: int, keys: jax.Array, num_records: int = 200,
                  **settings: Any) -> SelfPlayResult:
    """Train one PPO self-play run per game of ``payoffs`` ``[G, 2, n, n]`` for ``iterations``
    updates (``keys``: ``[G, 2]``), recording both seats' policies after every update."""
    payoffs = np.asarray(payoffs, np.float64)
    n = payoffs.shape[-1]
    if payoffs.shape[-2] != n:
        raise ValueError(f"PPO self-play needs square games, got {payoffs.shape[-2]} x {n}")
    config = self_play_config(n, iterations, **settings)
    learner = make_learner(config)
    env, env_params = envs.make(config.env)
    policy = make_policy(config, env, env_params)
    seats = env.opponent_observations(env_params)
    span = np.maximum(payoffs.max(axis=(1, 2, 3)) - payoffs.min(axis=(1, 2, 3)), 1e-12)
    scaled = jnp.asarray(payoffs / span[:, None, None, None], jnp.float32)

    def run(key: jax.Array, game: jax.Array) -> jax.Array:
        hp = default_hparams(config, env_params=env_params.replace(payoffs=game))
        state = learner.init(key, hp)

        def step(state: Any, _: None) -> tuple[Any, jax.Array]:
            state, _ = learner.update(state, hp)
            return state, policy.probs(state.params, seats)  # [seat, action]

        return jax.lax.scan(step, state, None, learner.num_updates)[1]  # [iterations, seat, action]

    policies = jax.jit(jax.vmap(run))(keys, scaled)
    iters = record_iterations(learner.num_updates, num_records)
    averages = jnp.cumsum(policies, axis=1)[:, iters - 1] / iters[None, :, None, None]
    lasts = policies[:, iters - 1]
    game_axis = jnp.asarray(payoffs)[:, None]
    metric = jax.vmap(jax.vmap(lambda g, p: nash_conv(g, p[0], p[1]), in_axes=(None, 0)))
    return SelfPlayResult(
        last_row=lasts[:, -1, 0], last_col=lasts[:, -1, 1],
        average_row=averages[:, -1, 0], average_col=averages[:, -1, 1],
        nash_conv_average=metric(game_axis[:, 0], averages), nash_conv_last=metric(game_axis[:, 0], lasts),
        iterations=iters,
    )

