"""PPO's settings: the static ``PPOConfig`` (environment, sizes, recurrence, objective; checked by
``validate`` before anything compiles) and the vmappable ``PPOHParams`` (every numeric setting a
sweep, an ES population or an environment distribution may vary, including ``objective_params``
and gymnax ``env_params``), built by ``default_hparams``. The learner is ``rl.ppo``, which
exports these names too."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

import jax
import jax.numpy as jnp
import numpy as np
import tyro
from flax import struct

from models.actor_critic import ACTIVATIONS, TORSOS
from rl import envs
from rl.errors import ConfigError
from rl.losses import OBJECTIVES
from rl.objectives import default_objective_params, load_objective, objective_kind


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """PPO settings. Defaults are the PureJaxRL CartPole settings.

    The numeric fields from ``lr`` to ``max_grad_norm`` are the default hyperparameters: ``rl.ppo``'s
    ``train`` reads them from its ``hparams`` argument (see ``default_hparams``), so they can be swept.
    """

    env: str = "CartPole-v1"
    """environment id (any gymnax id or a project id registered in rl.envs)"""
    total_timesteps: int = 500_000
    """environment steps per training run (per seed)"""
    num_envs: int = 4
    """parallel environments per run"""
    num_steps: int = 128
    """rollout length per environment and update"""
    update_epochs: int = 4
    """passes over each rollout"""
    num_minibatches: int = 4
    """minibatches per epoch"""
    lr: float = 2.5e-4
    """Adam learning rate (start value when annealed)"""
    anneal_lr: bool = True
    """anneal the learning rate linearly to 0 over training"""
    gamma: float = 0.99
    """discount factor"""
    gae_lambda: float = 0.95
    """GAE lambda"""
    clip_eps: float = 0.2
    """ratio clip of the clip objective and of the value loss (one value: hparams.clip_eps)"""
    ent_coef: float = 0.01
    """entropy bonus coefficient"""
    vf_coef: float = 0.5
    """value loss coefficient"""
    max_grad_norm: float = 0.5
    """global gradient-norm clip"""
    clip_value_loss: bool = True
    """clip the value update around the rollout values"""
    normalize_advantages: bool = True
    """normalise advantages per minibatch"""
    objective: str = "clip"
    """policy objective registered in rl.losses.OBJECTIVES (clip, dpo, lpo, ta_lpo, ...)"""
    objective_from: str | None = None
    """directory of a discovered objective (an experiments.discover run): train with it instead of
    --objective"""
    torso: str = "mlp"
    """observation encoder: mlp (flattened observations) or conv (3x3 convolutions over image
    observations, e.g. MinAtar)"""
    conv_channels: tuple[int, ...] = (16,)
    """channels of each conv layer (torso conv)"""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """MLP layer sizes (actor and critic each; heads of the recurrent net)"""
    activation: str = "tanh"
    """activation: tanh, relu or leaky_relu"""
    recurrent: bool = False
    """use the GRU actor-critic; memory resets only at episode boundaries"""
    gru_size: int = 128
    """GRU hidden size (recurrent only)"""
    torso_sizes: tuple[int, ...] = ()
    """dense layers before the GRU (recurrent only); empty: one layer of hidden_sizes[0]. The
    RL^2 agent of the cultural-accumulation study: torso 128 256, gru 256, hidden 128 128, leaky_relu"""
    normalize_obs: bool = False
    """normalise observations with running statistics (continuous control)"""
    normalize_reward: bool = False
    """scale rewards by the running std of the discounted return (continuous control)"""
    group_size: int = 1
    """environments come in groups of this size sharing their random keys (same start states and
    noise), so a trajectory reward can compare the trajectories of a group (SPO)"""
    trajectory_reward: Annotated[Any, tyro.conf.Suppress] = None
    """relabels every rollout's rewards from whole trajectories after the rollout: an object with
    ``init(key, obs, action) -> state`` and ``relabel(state, traj, hparams, key) -> (state,
    reward[T, E], metrics)`` (and optionally ``validate(config)``), e.g. rl.preference's SPO win
    rates or Bradley-Terry reward model; None keeps the environment's reward (set from Python, as
    experiments.spo does: not a command-line flag)"""
    opponent_pool: int = 0
    """self-play environments (rl.envs.is_self_play): frozen past snapshots of the policy kept as
    opponents besides the latest policy (0: the latest policy only)"""
    pool_interval: int = 10
    """updates between two snapshots added to the opponent pool"""
    latest_opponent_prob: float = 0.5
    """probability that a game's opponent is the latest policy rather than a pool snapshot"""
    random_opponent_prob: float = 0.0
    """board games (rl.envs.is_policy_opponent): probability that a game's opponent plays uniformly
    random legal moves instead (an anchor that keeps weak lines of play in the data)"""
    opponent_random_move_prob: float = 0.0
    """board games: probability that any one move of a policy opponent is a uniformly random legal
    move (opponents that play on well from positions their policy would not reach)"""

    @property
    def policy_objective(self) -> str:
        """The objective the learner uses: the kind stored in ``objective_from``, else ``objective``."""
        return objective_kind(self.objective_from) if self.objective_from else self.objective

    @property
    def batch_size(self) -> int:
        """Transitions per update."""
        return self.num_envs * self.num_steps

    @property
    def minibatch_samples(self) -> int:
        """Transitions per minibatch (whole sequences of num_steps for the recurrent learner)."""
        return self.batch_size // self.num_minibatches

    @property
    def num_updates(self) -> int:
        """Updates per training run."""
        return self.total_timesteps // self.batch_size

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the first invalid field; builds and compiles nothing."""
        envs.check_env_id(self.env)
        for name in ("total_timesteps", "num_envs", "num_steps", "update_epochs", "num_minibatches", "gru_size"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be a positive integer, got {getattr(self, name)}")
        if self.batch_size % self.num_minibatches:
            raise ConfigError(
                "num_minibatches",
                f"num_envs * num_steps = {self.batch_size} is not divisible by num_minibatches = {self.num_minibatches}",
            )
        if self.normalize_advantages and self.minibatch_samples < 2:
            raise ConfigError(
                "num_minibatches",
                f"a minibatch would hold {self.minibatch_samples} sample; advantage normalisation makes its "
                "policy gradient zero: use fewer minibatches or more envs/steps",
            )
        if self.recurrent and self.num_envs % self.num_minibatches:
            raise ConfigError(
                "num_minibatches",
                f"the recurrent learner splits environments into minibatches: num_envs = {self.num_envs} "
                f"is not divisible by num_minibatches = {self.num_minibatches}",
            )
        if self.num_updates < 1:
            raise ConfigError("total_timesteps", f"must be at least num_envs * num_steps = {self.batch_size}")
        if self.objective not in OBJECTIVES:
            raise ConfigError("objective", f"unknown objective {self.objective!r}; known: {sorted(OBJECTIVES)}")
        if self.objective_from:
            stored = self.policy_objective  # ConfigError if the directory holds no objective
            if self.objective not in ("clip", stored):
                raise ConfigError("objective", f"{self.objective_from} holds a {stored} objective; "
                                  f"drop --objective {self.objective}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError("activation", f"unknown activation {self.activation!r}; known: {sorted(ACTIVATIONS)}")
        if not self.hidden_sizes or min(self.hidden_sizes) < 1:
            raise ConfigError("hidden_sizes", f"must be non-empty positive sizes, got {self.hidden_sizes}")
        if self.torso_sizes and min(self.torso_sizes) < 1:
            raise ConfigError("torso_sizes", f"must be positive sizes, got {self.torso_sizes}")
        if self.torso not in TORSOS:
            raise ConfigError("torso", f"unknown torso {self.torso!r}; known: {', '.join(TORSOS)}")
        if self.torso == "conv":
            env, env_params = envs.make(self.env)
            shape = env.observation_space(env_params).shape
            if len(shape) != 3:
                raise ConfigError("torso", f"conv needs image observations [H, W, C]; {self.env} has shape {shape}")
            if not self.conv_channels or min(self.conv_channels) < 1:
                raise ConfigError("conv_channels", f"must be non-empty positive sizes, got {self.conv_channels}")
        self._validate_hooks()
        check_hparam_values({name: getattr(self, name) for name in HPARAM_FIELDS})

    def _validate_hooks(self) -> None:
        """Checks of the group, trajectory-reward and self-play fields."""
        if self.group_size < 1 or self.num_envs % self.group_size:
            raise ConfigError("group_size", f"must divide num_envs = {self.num_envs}, got {self.group_size}")
        if self.trajectory_reward is not None:
            if not (hasattr(self.trajectory_reward, "init") and hasattr(self.trajectory_reward, "relabel")):
                raise ConfigError("trajectory_reward", "needs init(key, obs, action) and relabel(state, traj, hp, key)")
            if self.normalize_reward:
                raise ConfigError("normalize_reward", "cannot scale rewards that trajectory_reward relabels")
            if hasattr(self.trajectory_reward, "validate"):
                self.trajectory_reward.validate(self)
        if self.opponent_pool < 0:
            raise ConfigError("opponent_pool", f"must be >= 0, got {self.opponent_pool}")
        if self.pool_interval < 1:
            raise ConfigError("pool_interval", f"must be a positive integer, got {self.pool_interval}")
        if not 0.0 <= self.latest_opponent_prob <= 1.0:
            raise ConfigError("latest_opponent_prob", f"must be in [0, 1], got {self.latest_opponent_prob}")
        if not 0.0 <= self.random_opponent_prob <= 1.0:
            raise ConfigError("random_opponent_prob", f"must be in [0, 1], got {self.random_opponent_prob}")
        if not 0.0 <= self.opponent_random_move_prob <= 1.0:
            raise ConfigError("opponent_random_move_prob", f"must be in [0, 1], got {self.opponent_random_move_prob}")
        env = envs.make(self.env)[0]
        if envs.is_self_play(env) or envs.is_policy_opponent(env):
            if self.recurrent:
                raise ConfigError("recurrent", f"{self.env}'s opponent is the policy without a memory: "
                                  "use a feed-forward policy (memory lives in the observation)")
            if self.normalize_obs:
                raise ConfigError("normalize_obs", f"{self.env}'s opponent sees raw observations")


HPARAM_FIELDS = ("lr", "gamma", "gae_lambda", "clip_eps", "ent_coef", "vf_coef", "max_grad_norm")
_HPARAM_RANGES = {
    "lr": (0.0, np.inf, False),
    "gamma": (0.0, 1.0, True),
    "gae_lambda": (0.0, 1.0, True),
    "clip_eps": (0.0, np.inf, False),
    "ent_coef": (0.0, np.inf, True),
    "vf_coef": (0.0, np.inf, True),
    "max_grad_norm": (0.0, np.inf, False),
}


def check_hparam_values(values: dict[str, Any]) -> None:
    """Raise ``ConfigError`` if a (possibly batched) hyperparameter is non-finite or out of range."""
    for name, value in values.items():
        low, high, low_inclusive = _HPARAM_RANGES[name]
        array = np.asarray(value, dtype=np.float64)
        ok = np.isfinite(array) & (array <= high) & ((array >= low) if low_inclusive else (array > low))
        if not ok.all():
            bad = array.reshape(-1)[~ok.reshape(-1)][0]
            bound = f"{'>=' if low_inclusive else '>'} {low}" + (f" and <= {high}" if np.isfinite(high) else "")
            raise ConfigError(name, f"must be finite and {bound}, got {bad}")


@struct.dataclass
class PPOHParams:
    """Vmappable hyperparameters of one training run (every leaf an array)."""

    lr: jax.Array
    gamma: jax.Array
    gae_lambda: jax.Array
    clip_eps: jax.Array  # the clip objective's epsilon and the value clip's, one leaf
    ent_coef: jax.Array
    vf_coef: jax.Array
    max_grad_norm: jax.Array
    objective_params: Any
    env_params: Any


def default_hparams(config: PPOConfig, env_params: Any = None, objective_params: Any = None, **overrides: float) -> PPOHParams:
    """Hyperparameters from ``config`` (and ``overrides``), the env's default params, and the
    objective's params. The clip objective has none of its own: its epsilon is ``clip_eps``, the
    same leaf the value clip and the ``clip_fraction`` metric read."""
    unknown = sorted(set(overrides) - set(HPARAM_FIELDS))
    if unknown:
        raise ConfigError(unknown[0], f"is not a PPO hyperparameter; known: {', '.join(HPARAM_FIELDS)}")
    values = {name: overrides.get(name, getattr(config, name)) for name in HPARAM_FIELDS}
    check_hparam_values(values)
    if env_params is None:
        env_params = envs.make(config.env)[1]
    objective = config.policy_objective
    if objective_params is not None and objective == "clip":
        raise ConfigError("objective_params", "the clip objective reads clip_eps; set clip_eps instead")
    if objective_params is None and config.objective_from:
        objective_params = load_objective(config.objective_from)[1]
    elif objective_params is None:
        objective_params = default_objective_params(objective, values["clip_eps"])
    leaves = {name: jnp.asarray(value, jnp.float32) for name, value in values.items()}
    return PPOHParams(
        **leaves,
        objective_params=jax.tree.map(jnp.asarray, objective_params),
        env_params=jax.tree.map(jnp.asarray, env_params),
    )
