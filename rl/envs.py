"""Environments: one registry for gymnax and project environments, and the wrappers learners use.

``make(env_id)`` returns ``(env, env_params)`` for every gymnax id and every id registered with
``register``. Wrappers keep the gymnax >= 1.0 step signature
``step(key, state, action, params) -> (obs, state, reward, terminated, truncated, info)`` with
``info["final_observation"]`` holding the observation before an automatic reset, so learners can
bootstrap truncated episodes. ``VecEnv`` batches a single environment; ``NormalizeVecObservation``
shares its running statistics across that batch, as ``RewardScale`` does for rewards.

An environment with legal-action masks defines ``action_mask(state, params) -> bool[num_actions]``;
every wrapper answers ``action_mask`` by passing its inner state down (``VecEnv`` vmaps it).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import spaces

from rl.errors import ConfigError

EnvFactory = Callable[..., Any]
_PROJECT_ENVS: dict[str, EnvFactory] = {}
# prefix -> (check(name) raising ConfigError for names the family lacks, factory(name, **kwargs) -> env)
_FAMILIES: dict[str, tuple[Callable[[str], None], EnvFactory]] = {}


def register(env_id: str, factory: EnvFactory) -> None:
    """Register ``factory(**kwargs) -> env`` under ``env_id`` so that ``make(env_id)`` builds it."""
    if env_id in _PROJECT_ENVS or env_id in gymnax.registered_envs:
        raise ValueError(f"environment id {env_id!r} is already registered")
    _PROJECT_ENVS[env_id] = factory


def register_family(prefix: str, check: Callable[[str], None], factory: EnvFactory) -> None:
    """Register a family of ids ``prefix + name`` (``pgx/connect_four``): ``check(name)`` raises
    ``ConfigError`` for a name the family does not have, ``factory(name, **kwargs)`` builds the env."""
    if prefix in _FAMILIES:
        raise ValueError(f"environment family {prefix!r} is already registered")
    _FAMILIES[prefix] = (check, factory)


def _family(env_id: str) -> tuple[str, tuple[Callable[[str], None], EnvFactory]] | None:
    for prefix, family in _FAMILIES.items():
        if env_id.startswith(prefix):
            return env_id[len(prefix):], family
    return None


def registered_ids() -> list[str]:
    """All single ids ``make`` accepts: gymnax's and the project's (families, ``pgx/<game>``, apart)."""
    _load_project_envs()
    return sorted(set(gymnax.registered_envs) | set(_PROJECT_ENVS))


def check_env_id(env_id: str) -> None:
    """Raise ``ConfigError`` (field ``env``) naming the known ids if ``env_id`` is unknown."""
    ids = registered_ids()
    family = _family(env_id)
    if family is not None:
        name, (check, _) = family
        try:
            check(name)
        except ConfigError as error:
            raise ConfigError("env", f"{env_id!r}: {error.message}") from None
        return
    if env_id not in ids:
        families = "".join(f", {prefix}<name>" for prefix in _FAMILIES)
        raise ConfigError("env", f"unknown environment id {env_id!r}; known ids: {', '.join(ids)}{families}")


def make(env_id: str, **kwargs: Any) -> tuple[Any, Any]:
    """Build environment ``env_id`` and its default params."""
    check_env_id(env_id)
    family = _family(env_id)
    if family is not None:
        name, (_, factory) = family
        env = factory(name, **kwargs)
        return env, env.default_params
    if env_id in _PROJECT_ENVS:
        env = _PROJECT_ENVS[env_id](**kwargs)
        return env, env.default_params
    return gymnax.make(env_id, **kwargs)


def _load_project_envs() -> None:
    # Project environments register themselves on import; importing here keeps ``make`` complete.
    import rl.cultural  # noqa: F401
    import rl.gridworld  # noqa: F401
    import rl.probe_envs  # noqa: F401
    import rl.selfplay.games  # noqa: F401


def tree_where(cond: jax.Array, new: Any, old: Any) -> Any:
    """``new`` where ``cond`` else ``old``, leaf by leaf: ``cond`` has the leaves' leading shape
    (a batch of envs or games: restart the finished ones); a leaf of ``new`` with a leading axis of
    1 is broadcast over the batch."""
    return jax.tree.map(lambda a, b: jnp.where(cond.reshape(cond.shape + (1,) * (b.ndim - cond.ndim)), a, b), new, old)


def is_continuous(env: Any, params: Any) -> bool:
    """Whether the action space is continuous (a Box)."""
    return isinstance(env.action_space(params), spaces.Box)


def action_dim(env: Any, params: Any) -> int:
    """Number of discrete actions, or the size of a continuous action vector."""
    space = env.action_space(params)
    return int(np.prod(space.shape)) if isinstance(space, spaces.Box) else int(space.n)


def base_env(env: Any) -> Any:
    """The innermost environment under any stack of wrappers."""
    while isinstance(env, Wrapper):
        env = env.env
    return env


def has_action_mask(env: Any) -> bool:
    """Whether the (possibly wrapped) environment provides legal-action masks."""
    return hasattr(base_env(env), "action_mask")


def is_self_play(env: Any) -> bool:
    """Whether the (possibly wrapped) environment plays the learner against its own policy: it
    lists the observations its opponent can see, ``opponent_observations(params) -> [S, ...]``, and
    takes the opponent's action probabilities at them, ``with_opponent(params, probs[S, A]) -> params``
    (one-step games with few observations, such as the matrix games of rl.games; a pool of past
    policies reaches the env as the mixture of their probabilities, which equals drawing one
    opponent per game only when a game is one step long)."""
    env = base_env(env)
    return hasattr(env, "opponent_observations") and hasattr(env, "with_opponent")


def is_policy_opponent(env: Any) -> bool:
    """Whether the (possibly wrapped) environment plays the learner against a policy network that
    acts inside ``step`` (multi-step games such as the pgx boards of ``rl.selfplay.games``):
    ``with_opponent_policy(params, OpponentPolicy) -> params``."""
    return hasattr(base_env(env), "with_opponent_policy")


class Wrapper:
    """Base wrapper: forwards every attribute it does not define to the wrapped environment."""

    def __init__(self, env: Any):
        self.env = env

    def __getattr__(self, name: str) -> Any:
        return getattr(self.env, name)

    def inner_state(self, state: Any) -> Any:
        """The wrapped environment's state inside this wrapper's state."""
        return state

    def action_mask(self, state: Any, params: Any) -> jax.Array:
        """The base environment's legal-action mask (only if it defines one)."""
        return self.env.action_mask(self.inner_state(state), params)


class FlattenObservation(Wrapper):
    """Flatten image-like observations (MinAtar) to vectors for MLP policies."""

    def observation_space(self, params: Any) -> spaces.Box:
        space = self.env.observation_space(params)
        return spaces.Box(space.low, space.high, (int(np.prod(space.shape)),), space.dtype)

    def reset(self, key: jax.Array, params: Any) -> tuple[jax.Array, Any]:
        obs, state = self.env.reset(key, params)
        return obs.reshape(-1), state

    def step(self, key: jax.Array, state: Any, action: jax.Array, params: Any):
        obs, state, reward, terminated, truncated, info = self.env.step(key, state, action, params)
        info = {**info, "final_observation": info["final_observation"].reshape(-1)}
        return obs.reshape(-1), state, reward, terminated, truncated, info


class ClipAction(Wrapper):
    """Clip continuous actions into the action space's bounds before stepping."""

    def step(self, key: jax.Array, state: Any, action: jax.Array, params: Any):
        space = self.env.action_space(params)
        return self.env.step(key, state, jnp.clip(action, space.low, space.high), params)


@struct.dataclass
class EpisodeStatsState:
    """Running return/length of the current episode and of the last finished one."""

    env_state: Any
    episode_return: jax.Array
    episode_length: jax.Array
    returned_episode_return: jax.Array
    returned_episode_length: jax.Array


class EpisodeStatistics(Wrapper):
    """Track undiscounted episode returns and lengths (of the raw, unnormalised reward).

    Adds ``info["returned_episode"]`` (an episode ended on this step) and
    ``info["episode_return"]`` / ``info["episode_length"]`` (of the last finished episode).
    """

    def inner_state(self, state: EpisodeStatsState) -> Any:
        return state.env_state

    def reset(self, key: jax.Array, params: Any) -> tuple[jax.Array, EpisodeStatsState]:
        obs, env_state = self.env.reset(key, params)
        zero = jnp.zeros((), jnp.float32)
        return obs, EpisodeStatsState(env_state, zero, jnp.zeros((), jnp.int32), zero, jnp.zeros((), jnp.int32))

    def step(self, key: jax.Array, state: EpisodeStatsState, action: jax.Array, params: Any):
        obs, env_state, reward, terminated, truncated, info = self.env.step(key, state.env_state, action, params)
        done = jnp.logical_or(terminated, truncated)
        episode_return = state.episode_return + reward
        episode_length = state.episode_length + 1
        state = EpisodeStatsState(
            env_state=env_state,
            episode_return=episode_return * (1 - done),
            episode_length=episode_length * (1 - done),
            returned_episode_return=jnp.where(done, episode_return, state.returned_episode_return),
            returned_episode_length=jnp.where(done, episode_length, state.returned_episode_length),
        )
        info = {
            **info,
            "returned_episode": done,
            "episode_return": state.returned_episode_return,
            "episode_length": state.returned_episode_length,
        }
        return obs, state, reward, terminated, truncated, info


class VecEnv(Wrapper):
    """Run ``num_envs`` copies of a single environment in lock step (vmap); params are shared.

    With ``group_size > 1`` the copies come in consecutive groups that share their random keys:
    a group starts (and, if its episodes end together, restarts) from the same state, and meets
    the same environment noise, so trajectories of a group can be compared (SPO)."""

    def __init__(self, env: Any, num_envs: int, group_size: int = 1):
        super().__init__(env)
        if group_size < 1 or num_envs % group_size:
            raise ConfigError("group_size", f"must divide num_envs = {num_envs}, got {group_size}")
        self.num_envs = num_envs
        self.group_size = group_size

    def _keys(self, key: jax.Array) -> jax.Array:
        keys = jax.random.split(key, self.num_envs // self.group_size)
        return keys if self.group_size == 1 else jnp.repeat(keys, self.group_size, axis=0)

    @partial(jax.jit, static_argnums=0)
    def reset(self, key: jax.Array, params: Any) -> tuple[jax.Array, Any]:
        return jax.vmap(self.env.reset, in_axes=(0, None))(self._keys(key), params)

    @partial(jax.jit, static_argnums=0)
    def step(self, key: jax.Array, state: Any, action: jax.Array, params: Any):
        return jax.vmap(self.env.step, in_axes=(0, 0, 0, None))(self._keys(key), state, action, params)

    def action_mask(self, state: Any, params: Any) -> jax.Array:
        """Masks of every copy, ``bool[num_envs, num_actions]``."""
        return jax.vmap(self.env.action_mask, in_axes=(0, None))(state, params)


@struct.dataclass
class RunningMeanStd:
    """Running mean and variance (parallel Welford update over a batch)."""

    mean: jax.Array
    var: jax.Array
    count: jax.Array

    @classmethod
    def create(cls, shape: tuple[int, ...]) -> RunningMeanStd:
        return cls(jnp.zeros(shape), jnp.ones(shape), jnp.asarray(1e-4))

    def update(self, batch: jax.Array) -> RunningMeanStd:
        batch_mean, batch_var, batch_count = batch.mean(0), batch.var(0), batch.shape[0]
        delta = batch_mean - self.mean
        total = self.count + batch_count
        mean = self.mean + delta * batch_count / total
        m2 = self.var * self.count + batch_var * batch_count + delta**2 * self.count * batch_count / total
        return RunningMeanStd(mean, m2 / total, total)

    def normalize(self, x: jax.Array) -> jax.Array:
        """``x`` shifted and scaled to zero mean and unit variance under these statistics."""
        return (x - self.mean) / jnp.sqrt(self.var + 1e-8)


@struct.dataclass
class NormalizeObsState:
    env_state: Any
    obs_stats: RunningMeanStd


class NormalizeVecObservation(Wrapper):
    """Normalise observations of a ``VecEnv`` with running statistics shared across its envs.

    The statistics live in the env state, so they are checkpointed and resumed with it.
    """

    def inner_state(self, state: NormalizeObsState) -> Any:
        return state.env_state

    def reset(self, key: jax.Array, params: Any) -> tuple[jax.Array, NormalizeObsState]:
        obs, env_state = self.env.reset(key, params)
        stats = RunningMeanStd.create(obs.shape[1:]).update(obs)
        return stats.normalize(obs), NormalizeObsState(env_state, stats)

    def step(self, key: jax.Array, state: NormalizeObsState, action: jax.Array, params: Any):
        obs, env_state, reward, terminated, truncated, info = self.env.step(key, state.env_state, action, params)
        stats = state.obs_stats.update(obs)
        info = {**info, "final_observation": stats.normalize(info["final_observation"])}
        return stats.normalize(obs), NormalizeObsState(env_state, stats), reward, terminated, truncated, info


@struct.dataclass
class RewardScale:
    """Reward scaling by the running std of the discounted return, shared across a batch of
    environments; the learner keeps it in its state and passes its own ``gamma`` to ``scale_reward``,
    so a sweep over gamma scales every point with that point's gamma."""

    discounted_return: jax.Array
    return_stats: RunningMeanStd

    @classmethod
    def create(cls, num_envs: int) -> RewardScale:
        return cls(jnp.zeros(num_envs), RunningMeanStd.create(()))


def scale_reward(
    scale: RewardScale, reward: jax.Array, done: jax.Array, gamma: jax.Array
) -> tuple[RewardScale, jax.Array]:
    """Update the running discounted return with ``reward`` and return the scaled reward."""
    discounted = scale.discounted_return * gamma + reward
    stats = scale.return_stats.update(discounted)
    scaled = reward / jnp.sqrt(stats.var + 1e-8)
    return RewardScale(discounted * (1 - done), stats), scaled


def make_single_env(env_id: str, flatten: bool = True, **env_kwargs: Any) -> tuple[Any, Any]:
    """One environment as policies see it: observations flattened (unless ``flatten=False``, for
    conv torsos) and continuous actions clipped into their bounds."""
    env, params = make(env_id, **env_kwargs)
    if flatten and len(env.observation_space(params).shape) != 1:
        env = FlattenObservation(env)
    if is_continuous(env, params):
        env = ClipAction(env)
    return env, params


def make_vec_env(
    env_id: str, num_envs: int, normalize_obs: bool = False, flatten: bool = True, group_size: int = 1,
    **env_kwargs: Any,
) -> tuple[Any, Any]:
    """The standard learner stack: ``make_single_env``, episode statistics, vectorise (in groups of
    ``group_size`` sharing keys), normalise observations. (Reward scaling needs the run's gamma, so
    learners apply ``scale_reward``.)"""
    env, params = make_single_env(env_id, flatten, **env_kwargs)
    env = VecEnv(EpisodeStatistics(env), num_envs, group_size)
    if normalize_obs:
        env = NormalizeVecObservation(env)
    return env, params
