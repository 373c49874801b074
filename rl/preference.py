"""Learning from trajectory preferences with the core PPO learner: SPO and a Bradley-Terry baseline.

Both are ``PPOConfig.trajectory_reward`` plug-ins: after each rollout they replace the
environment's rewards by rewards computed from whole trajectories, and PPO trains on those.
The environments run in groups (``PPOConfig.group_size = N``) that share their random keys, so
the N trajectories of a group start from the same state; episodes have a fixed length L that
divides the rollout, so every env's rollout is K = num_steps / L whole trajectories.

- **SPO** (Swamy et al. 2024, a minimaximalist approach to RLHF): the reward of trajectory i is
  its win rate against the other samples of its group, ``(1/(N-1)) sum_{j != i} P(xi_i > xi_j)``;
  no reward model. It targets the minimax winner of the preference game, which exists for
  intransitive and noisy preferences too.
- **Bradley-Terry RLHF**: a reward model ``r(s, a)`` whose sums over trajectories explain the same
  comparisons through ``P(i > j) = sigmoid(R_i - R_j)``, refitted on every rollout; PPO trains
  on its per-step rewards. It cannot represent an intransitive preference.

Preferences (``PREFERENCES``) compare trajectories by the ground-truth return (``transitive``),
by a majority vote over three features, which can cycle (``intransitive``), or by the transitive
one flipped with probability ``noise`` (``noisy``). The features are the environment's
``trajectory_features(obs, action, reward) -> [3]`` when it defines one (``CyclicChoice-probe``:
a Condorcet cycle over its three actions), otherwise the return over each third of the episode.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from rl import envs
from rl.errors import ConfigError

PREFERENCES = ("transitive", "intransitive", "noisy")
CREDITS = ("spread", "last")


def segments(x: jax.Array, group_size: int, episode_length: int) -> jax.Array:
    """Rollout-major ``[T, E, ...]`` to ``[G, N, K, L, ...]``: G groups of N envs, K trajectories of
    L steps each per env."""
    t, e = x.shape[:2]
    x = x.reshape(t // episode_length, episode_length, e // group_size, group_size, *x.shape[2:])
    return jnp.moveaxis(x, (0, 1), (2, 3))


def unsegment(x: jax.Array) -> jax.Array:
    """Inverse of ``segments``: ``[G, N, K, L, ...]`` to ``[T, E, ...]``."""
    g, n, k, length = x.shape[:4]
    return jnp.moveaxis(x, (2, 3), (0, 1)).reshape(k * length, g * n, *x.shape[4:])


def thirds(reward: jax.Array) -> jax.Array:
    """The return over each third of a trajectory: ``[..., L] -> [..., 3]``."""
    length = reward.shape[-1]
    which = jax.nn.one_hot(jnp.arange(length) * 3 // length, 3)
    return reward @ which


def trajectory_features(env: Any, obs: jax.Array, action: jax.Array, reward: jax.Array) -> jax.Array:
    """Three features per trajectory ``[G, N, K, 3]`` from its ``[G, N, K, L, ...]`` steps."""
    base = envs.base_env(env)
    if hasattr(base, "trajectory_features"):
        one = base.trajectory_features
        return jax.vmap(jax.vmap(jax.vmap(one)))(obs, action, reward)
    return thirds(reward)


def preference_matrix(kind: str, returns: jax.Array, features: jax.Array, key: jax.Array, noise: float) -> jax.Array:
    """``P[..., i, j]`` = probability that trajectory i is preferred to j, among the N of a group.

    ``returns``: ``[..., N]`` ground-truth returns; ``features``: ``[..., N, F]``. Every P has
    ``P + P^T = 1`` and 1/2 on its diagonal."""
    if kind == "intransitive":  # majority vote of the features (a Condorcet cycle is possible)
        votes = jnp.sign(features[..., :, None, :] - features[..., None, :, :]).sum(-1)
        return 0.5 * (1.0 + jnp.sign(votes))
    prefer = 0.5 * (1.0 + jnp.sign(returns[..., :, None] - returns[..., None, :]))
    if kind == "noisy":  # each unordered pair's label flipped with probability `noise`
        n = returns.shape[-1]
        flip = jax.random.bernoulli(key, noise, (*returns.shape[:-1], n, n))
        flip = jnp.triu(flip, 1)
        flip = flip | jnp.swapaxes(flip, -1, -2)
        prefer = jnp.where(flip, 1.0 - prefer, prefer)
    return prefer


def _off_diagonal_mean(x: jax.Array) -> jax.Array:
    """Mean of ``x[..., i, j]`` over the pairs ``i != j``."""
    n = x.shape[-1]
    return jnp.sum(x * (1 - jnp.eye(n))) / (x[..., 0, 0].size * n * (n - 1))


def win_rates(prefer: jax.Array) -> jax.Array:
    """SPO's reward: each sample's mean preference over the other samples, ``[..., N]``."""
    n = prefer.shape[-1]
    return (prefer.sum(-1) - jnp.diagonal(prefer, axis1=-2, axis2=-1)) / (n - 1)


@dataclasses.dataclass(frozen=True)
class _TrajectoryComparisons:
    """What SPO and the Bradley-Terry baseline share: the environment, the grouping of its
    trajectories, and the preference that compares them."""

    env: str
    """environment id (its trajectory features, its action encoding)"""
    episode_length: int
    """fixed length L of every episode; must divide num_steps"""
    preference: str = "transitive"
    """transitive | intransitive | noisy"""
    noise: float = 0.2
    """flip probability of the noisy preference"""
    group_size: int = 4
    """N, the samples per start state (must equal PPOConfig.group_size)"""

    def validate(self, config: Any) -> None:
        """Raise ``ConfigError`` if ``config`` cannot produce comparable trajectory groups."""
        if self.preference not in PREFERENCES:
            raise ConfigError("preference", f"unknown preference {self.preference!r}; known: {', '.join(PREFERENCES)}")
        if config.env != self.env:
            raise ConfigError("env", f"the trajectory reward was built for {self.env}, the config trains {config.env}")
        if self.group_size < 2:
            raise ConfigError("group_size", f"comparisons need at least 2 samples per start state, got {self.group_size}")
        if config.group_size != self.group_size:
            raise ConfigError("group_size", f"the trajectory reward compares {self.group_size} samples per start "
                              f"state, the config groups {config.group_size} envs")
        if self.episode_length < 1 or config.num_steps % self.episode_length:
            raise ConfigError(
                "num_steps", f"must be a multiple of the episode length {self.episode_length}, got {config.num_steps}"
            )
        max_steps = getattr(envs.make(self.env)[1], "max_steps_in_episode", None)
        if max_steps is not None and self.episode_length > max_steps:
            raise ConfigError("episode_length", f"{self.env}'s episodes last at most {max_steps} steps, "
                              f"got episode_length {self.episode_length}")
        if not 0.0 <= self.noise <= 1.0:
            raise ConfigError("noise", f"must be in [0, 1], got {self.noise}")

    def compare(self, traj: Any, key: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """The preference matrices ``[G, K, N, N]`` of a rollout's trajectory groups, and metrics."""
        n = self.group_size
        reward, obs, action = (segments(x, n, self.episode_length) for x in (traj.reward, traj.obs, traj.action))
        returns = reward.sum(-1)  # [G, N, K]
        features = trajectory_features(envs.make(self.env)[0], obs, action, reward)
        returns, features = jnp.swapaxes(returns, 1, 2), jnp.swapaxes(features, 1, 2)  # groups of N last
        prefer = preference_matrix(self.preference, returns, features, key, self.noise)
        truth = preference_matrix("transitive", returns, features, key, 0.0)
        ends = segments(traj.done, n, self.episode_length)
        metrics = {
            "preference_agrees_with_return": _off_diagonal_mean(jnp.abs(prefer - truth) < 0.5),
            # episodes must end exactly at the end of each L-step segment (the runner stops otherwise)
            "misaligned_episode_ends": jnp.sum(ends[..., :-1]) + jnp.sum(~ends[..., -1]),
        }
        return prefer, metrics


@dataclasses.dataclass(frozen=True)
class SPOReward(_TrajectoryComparisons):
    """SPO: every step of trajectory i is rewarded ``w_i - 1/2`` (``credit="spread"``), or its
    last step ``w_i`` (``credit="last"``), where ``w_i`` is its win rate within its group."""

    credit: str = "spread"
    """spread: w - 1/2 on every step; last: w on the last step only"""

    def validate(self, config: Any) -> None:
        super().validate(config)
        if self.credit not in CREDITS:
            raise ConfigError("credit", f"unknown credit {self.credit!r}; known: {', '.join(CREDITS)}")

    def init(self, key: jax.Array, obs: jax.Array, action: jax.Array) -> None:
        return None

    def relabel(self, state: None, traj: Any, hp: Any, key: jax.Array):
        """Rewards ``[T, E]`` from the win rates of the rollout's trajectories."""
        prefer, metrics = self.compare(traj, key)
        wins = jnp.swapaxes(win_rates(prefer), 1, 2)  # [G, N, K]
        shape = (*wins.shape, self.episode_length)
        if self.credit == "spread":
            reward = jnp.broadcast_to((wins - 0.5)[..., None], shape)
        else:
            reward = jnp.zeros(shape).at[..., -1].set(wins)
        return state, unsegment(reward), {**metrics, "win_rate_std": wins.std()}


class StepReward(nn.Module):
    """The Bradley-Terry reward model: an MLP of the observation and the (encoded) action."""

    hidden_sizes: tuple[int, ...] = (64, 64)

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        x = jnp.concatenate([obs.reshape(*obs.shape[:-1], -1), action], -1)
        for size in self.hidden_sizes:
            x = nn.tanh(nn.Dense(size)(x))
        return nn.Dense(1)(x)[..., 0]


@dataclasses.dataclass(frozen=True)
class BradleyTerryReward(_TrajectoryComparisons):
    """RLHF baseline: a reward model fitted to the same comparisons by the Bradley-Terry likelihood
    (``fit_steps`` Adam steps on each rollout's comparisons), whose standardised per-step rewards
    PPO maximises."""

    hidden_sizes: tuple[int, ...] = (64, 64)
    """reward-model MLP"""
    lr: float = 1e-3
    """reward-model Adam learning rate"""
    fit_steps: int = 20
    """reward-model gradient steps per rollout"""

    def _encode(self, action: jax.Array) -> jax.Array:
        """Actions as model inputs: continuous vectors as they are, discrete ones one-hot."""
        env, params = envs.make(self.env)
        if envs.is_continuous(env, params):
            return action.astype(jnp.float32)
        return jax.nn.one_hot(action, envs.action_dim(env, params))

    def init(self, key: jax.Array, obs: jax.Array, action: jax.Array) -> dict[str, Any]:
        params = StepReward(self.hidden_sizes).init(key, obs[None], self._encode(jnp.asarray(action)[None]))
        return {"params": params, "opt_state": optax.adam(self.lr).init(params)}

    def relabel(self, state: dict[str, Any], traj: Any, hp: Any, key: jax.Array):
        """Fit the reward model to this rollout's comparisons, then reward every step by it."""
        prefer, metrics = self.compare(traj, key)
        n = self.group_size
        model, tx = StepReward(self.hidden_sizes), optax.adam(self.lr)
        obs = segments(traj.obs, n, self.episode_length)
        action = segments(self._encode(traj.action), n, self.episode_length)
        off_diagonal = 1.0 - jnp.eye(n)

        def loss_fn(params: Any) -> tuple[jax.Array, jax.Array]:
            returns = jnp.swapaxes(model.apply(params, obs, action).sum(-1), 1, 2)  # [G, K, N]
            logits = returns[..., :, None] - returns[..., None, :]
            nll = -(prefer * jax.nn.log_sigmoid(logits) + (1 - prefer) * jax.nn.log_sigmoid(-logits))
            agree = (logits > 0) == (prefer > 0.5)
            return (nll * off_diagonal).sum() / (off_diagonal.sum() * nll[..., 0, 0].size), agree

        def fit(carry: tuple[Any, Any], _: None):
            params, opt_state = carry
            (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, opt_state), losses = jax.lax.scan(fit, (state["params"], state["opt_state"]), None, self.fit_steps)
        _, agree = loss_fn(params)
        step_reward = model.apply(params, traj.obs, self._encode(traj.action))
        step_reward = (step_reward - step_reward.mean()) / (step_reward.std() + 1e-8)
        strict = (prefer != 0.5) * off_diagonal
        metrics.update(
            reward_model_loss=losses[-1],
            reward_model_accuracy=(agree * strict).sum() / jnp.maximum(strict.sum(), 1.0),
        )
        return {"params": params, "opt_state": opt_state}, step_reward, metrics


def make_trajectory_reward(algo: str, **fields: Any) -> Any:
    """``"spo"`` -> ``SPOReward``, ``"rlhf_bt"`` -> ``BradleyTerryReward`` with ``fields``."""
    kinds = {"spo": SPOReward, "rlhf_bt": BradleyTerryReward}
    if algo not in kinds:
        raise ConfigError("algo", f"unknown preference learner {algo!r}; known: {', '.join(kinds)}")
    return kinds[algo](**fields)
