"""Trained self-play agents as players of batched pgx games, and loading them from run directories.

A *player* is ``player(state, key) -> actions``: for a pgx ``State`` batched on a leading axis, one
legal action (int32) per game, from the point of view of the player to move (pgx observations
already are). ``load_agent(run_dir)`` returns ``act(state) -> actions`` for a finished run of
``experiments.selfplay``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from models.actor_critic import masked_logits
from rl import envs
from rl.checkpoint import read_snapshot, snapshot_updates  # noqa: F401 (re-exported)
from rl.errors import ConfigError
from rl.selfplay.arena import ParamPlayer, Player


@functools.lru_cache(maxsize=32)
def ppo_act(config: Any, greedy: bool = True) -> Callable[[Any, Any, jax.Array], jax.Array]:
    """``act(params, state, key)``: the PPO policy of ``config`` (an ``rl.ppo.PPOConfig`` on a
    ``pgx/<game>`` env) choosing its most likely legal move (``greedy``) or sampling one. Built once
    per config, so every snapshot of a run shares it (and its compiled matches)."""
    from rl.ppo import make_policy

    vec_env, env_params = envs.make_vec_env(config.env, 1, flatten=config.torso != "conv")
    policy = make_policy(config, vec_env, env_params)
    obs_shape = vec_env.observation_space(env_params).shape

    def act(params: Any, state: Any, key: jax.Array) -> jax.Array:
        obs = state.observation.astype(jnp.float32).reshape(-1, *obs_shape)
        _, logits, _ = policy.act(params, None, obs, jnp.ones(obs.shape[:1], bool))
        logits = masked_logits(logits, state.legal_action_mask)
        chosen = jnp.argmax(logits, axis=-1) if greedy else jax.random.categorical(key, logits)
        return chosen.astype(jnp.int32)

    return act


def ppo_player(config: Any, params: Any, greedy: bool = True) -> ParamPlayer:
    """The PPO policy of ``config`` with ``params`` (one run's) as a player."""
    return ParamPlayer(ppo_act(config, greedy), params)


def run_config(run_dir: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a self-play run directory."""
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise ConfigError("run_dir", f"{run_dir} is not a run directory (no config.json)")
    return json.loads(path.read_text())


def player_from_run(run_dir: str | Path, update: int | None = None, greedy: bool = True) -> Player:
    """The agent of ``run_dir`` (at snapshot ``update``, default the last) as a player."""
    config = run_config(run_dir)
    algo = config.get("algo", "ppo")
    if algo == "ppo":
        from rl.ppo import PPOConfig

        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in config["ppo"].items()}
        ppo_config = PPOConfig(**fields)
        _, state = read_snapshot(run_dir, update)
        return ppo_player(ppo_config, state["params"], greedy)
    if algo == "alphazero":
        from rl.selfplay import alphazero

        return alphazero.player_from_run(run_dir, update)
    raise ConfigError("run_dir", f"{run_dir}: unknown algo {algo!r} in config.json")


def load_agent(run_dir: str | Path) -> Callable[[Any], jax.Array]:
    """``act(state) -> actions`` of the final agent of an ``experiments.selfplay`` run: for a pgx
    ``State`` of its game batched on a leading axis, the agent's legal move in each game (int32).
    PPO agents play their most likely legal move; AlphaZero agents search with their network."""
    player = player_from_run(run_dir)
    key = jax.random.PRNGKey(0)
    compiled = jax.jit(lambda state: player(state, key))

    def act(state: Any) -> jax.Array:
        return compiled(state)

    return act
