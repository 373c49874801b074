"""What every cultural-accumulation environment shares: trials, demonstrator visibility, replayed
demonstrators, per-trial scores for the learner's logs, and ids that carry the env's sizes.

An environment of the study (Memory Sequence, TSP, Goal Sequence) is a gymnax ``Environment``
subclassing ``CulturalEnv``. Its episodes are ``num_trials`` trials of at most ``trial_length``
steps on one task (a sequence, a set of cities, a grid layout) drawn at reset. Beside the learner
act ``num_demonstrators`` demonstrators whose actions (or, in the grid world, position) the learner
sees on a step when they are *visible*.

Demonstrators are of two kinds, chosen by env params, so a population of learners with its
demonstrators stays one vmapped computation through the core learner:

- noisy oracles drawn by the environment (the default; each env defines its oracle);
- replays (``use_replay``): demonstrator ``k`` plays ``replay_actions[k, i]`` at step ``i`` of
  every trial while ``i < replay_lengths[k]``, and is hidden after. A trained agent restarted from
  a fixed memory and acting greedily plays the same trial every time, so the previous
  generation's agents are carried as their trials (``meta.cultural`` records them).

Visibility on a step is drawn with probability ``visibility`` when that is in [0, 1]; with
``anneal_visibility`` it is ``1 - progress / visible_until`` down to 0 (the core sets
``progress``, the fraction of training done, through ``at_progress``); otherwise it follows the
trial schedule ``(T - k - 1) / (T - 1)`` in trial ``k`` of ``T`` (always visible with one trial).

``step`` reports ``info["trial_score"]`` (the score of the trial that ended on this step),
``info["trial_ended"]``, ``info["trial"]`` (its index) and ``info["metrics"]``: per-trial scores as
``{name: (value, weight)}``, which the core learner averages over a rollout into its logs.

Ids: ``<env>/<mode>`` with optional constructor sizes after a colon, for example
``memory_sequence/in_context:seq_len=12,num_digits=4``, so a study changes a size by flag.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment

from rl import envs
from rl.errors import ConfigError, parse_settings

MODES = ("in_context", "in_weights")
MAX_TRIAL_METRICS = 8  # per-trial metrics for the first trials (and always the last one)


@struct.dataclass
class CulturalParams(environment.EnvParams):
    """Settings every cultural env shares (subclasses add their own fields after these)."""

    replay_actions: jax.Array | None = None
    """int32[num_demonstrators, trial_length]: the demonstrators' trials (use_replay)"""
    replay_lengths: jax.Array | None = None
    """int32[num_demonstrators]: steps of each replayed trial; hidden after"""
    use_replay: bool = False
    """the demonstrators replay these trials instead of being the env's noisy oracles"""
    visibility: float = -1.0
    """probability that the demonstrators are visible on a step; < 0: the per-trial schedule"""
    anneal_visibility: bool = False
    """visibility 1 - progress / visible_until, down to 0 (in-weights generations anneal it in each training)"""
    visible_until: float = 1.0
    """with anneal_visibility: the fraction of training at which the visibility reaches 0 (and stays)"""
    progress: float = 0.0
    """fraction of training done (set by the learner through at_progress)"""
    task_seed: int = -1
    """>= 0: the task (sequence, cities, layout) is the one of this seed; < 0: a new task at every reset"""
    sort_oracles: bool = False
    """the noisy oracles of an episode stand best first (as the generations order their demonstrators)"""
    max_steps_in_episode: int = 1_000_000


class CulturalEnv(environment.Environment):
    """Base of the study's envs; subclasses set ``mode``, ``num_trials``, ``trial_length`` and
    ``num_demonstrators`` in ``__init__`` and call ``check_sizes``."""

    mode: str
    num_trials: int
    trial_length: int
    num_demonstrators: int

    def check_sizes(self, **sizes: int) -> None:
        """Raise ``ConfigError`` naming the first size below its minimum; ``sizes`` maps names to minima."""
        if self.mode not in MODES:
            raise ConfigError("mode", f"must be one of {', '.join(MODES)}, got {self.mode!r}")
        for name, minimum in sizes.items():
            if getattr(self, name) < minimum:
                raise ConfigError(name, f"must be >= {minimum}, got {getattr(self, name)}")

    def replay_defaults(self) -> dict[str, jax.Array]:
        """Empty replays of the right shapes for ``default_params``."""
        return {
            "replay_actions": jnp.zeros((self.num_demonstrators, self.trial_length), jnp.int32),
            "replay_lengths": jnp.zeros((self.num_demonstrators,), jnp.int32),
        }

    def at_progress(self, params: CulturalParams, progress: jax.Array) -> CulturalParams:
        """``params`` at a fraction ``progress`` of training (the core learner calls this per rollout)."""
        return params.replace(progress=jnp.asarray(progress, jnp.float32))

    def visibility_probability(self, trial: jax.Array, params: CulturalParams) -> jax.Array:
        """Probability that the demonstrators are seen on a step of ``trial``."""
        if self.num_trials > 1:
            schedule = (self.num_trials - trial - 1) / (self.num_trials - 1)
        else:
            schedule = jnp.ones_like(trial, jnp.float32)
        fixed = jnp.where(params.visibility < 0, schedule, params.visibility)
        annealed = jnp.clip(1.0 - params.progress / params.visible_until, 0.0, 1.0)
        return jnp.where(params.anneal_visibility, annealed, fixed).astype(jnp.float32)

    def draw_visible(self, key: jax.Array, trial: jax.Array, params: CulturalParams) -> jax.Array:
        """Whether the demonstrators are seen on this step."""
        return jax.random.uniform(key) < self.visibility_probability(trial, params)

    def task_key(self, key: jax.Array, params: CulturalParams) -> jax.Array:
        """The key a reset draws its task from: ``key``, or the fixed ``task_seed``'s."""
        fixed = jax.random.PRNGKey(jnp.maximum(params.task_seed, 0))
        return jnp.where(params.task_seed >= 0, fixed, key)

    def replayed(self, step_in_trial: jax.Array, params: CulturalParams) -> tuple[jax.Array, jax.Array]:
        """The replayed demonstrators' actions at ``step_in_trial`` and whether each is still playing."""
        index = jnp.minimum(step_in_trial, self.trial_length - 1)
        return params.replay_actions[:, index], step_in_trial < params.replay_lengths

    @property
    def metric_names(self) -> tuple[str, ...]:
        """The names in ``info["metrics"]`` (the core learner logs them as ``env/<name>``)."""
        return ("trial_score", *(f"trial_{k}_score" for k in self._trials_with_metrics()))

    def _trials_with_metrics(self) -> list[int]:
        return sorted(set(range(min(self.num_trials, MAX_TRIAL_METRICS))) | {self.num_trials - 1})

    def trial_info(self, score: jax.Array, ended: jax.Array, trial: jax.Array) -> dict[str, Any]:
        """The step's ``info``: the score of a trial ending here and per-trial metrics."""
        score = jnp.asarray(score, jnp.float32)
        weight = ended.astype(jnp.float32)
        metrics = {"trial_score": (score, weight)}
        metrics.update({f"trial_{k}_score": (score, weight * (trial == k)) for k in self._trials_with_metrics()})
        return {"trial_score": score, "trial_ended": ended, "trial": trial, "metrics": metrics}


def action_observation_size(mode: str, num_actions: int, num_demonstrators: int) -> int:
    """Size of ``action_observation``'s vector."""
    demos = num_demonstrators * num_actions + 1
    return demos if mode == "in_weights" else num_actions + 2 + demos


def action_observation(mode: str, num_actions: int, state: Any) -> jax.Array:
    """The observation of envs whose demonstrators are seen by their actions (Memory Sequence, TSP).

    ``in_context``: own last action one-hot (zeros before the first), trial-ended flag, last reward,
    the demonstrators' actions one-hot (zeros when not visible or no longer playing), the
    visibility flag. ``in_weights``: the demonstrators' actions and the visibility flag only.
    ``state`` has ``last_action``, ``trial_ended``, ``last_reward``, ``demo_actions``,
    ``demo_shown`` and ``visible``."""
    shown = (state.visible & state.demo_shown)[:, None]
    demos = (jax.nn.one_hot(state.demo_actions, num_actions) * shown).reshape(-1)
    seen = state.visible.astype(jnp.float32)[None]
    if mode == "in_weights":
        return jnp.concatenate([demos, seen])
    own = jax.nn.one_hot(state.last_action, num_actions)
    flags = jnp.stack([state.trial_ended.astype(jnp.float32), state.last_reward])
    return jnp.concatenate([own, flags, demos, seen])


def register_cultural(prefix: str, factory: Any) -> None:
    """Register ids ``prefix/<mode>[:size=value,...]``; ``factory(mode, **sizes)`` builds the env."""

    def parse(name: str) -> tuple[str, dict[str, int]]:
        mode, sizes = parse_settings(name, "env")
        if mode not in MODES:
            raise ConfigError("env", f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        try:
            return mode, {field: int(value) for field, value in sizes.items()}
        except ValueError:
            raise ConfigError("env", f"sizes in {name!r} must be field=integer") from None

    def check(name: str) -> None:
        mode, kwargs = parse(name)
        try:
            factory(mode, **kwargs)
        except TypeError as error:
            raise ConfigError("env", f"unknown size in {name!r}: {error}") from None

    def build(name: str, **kwargs: Any) -> Any:
        mode, sizes = parse(name)
        return factory(mode, **sizes, **kwargs)

    envs.register_family(f"{prefix}/", check, build)


def env_id(prefix: str, mode: str, **sizes: int | None) -> str:
    """The id of ``prefix`` in ``mode`` with the given sizes (None values left at their defaults)."""
    given = ",".join(f"{name}={value}" for name, value in sizes.items() if value is not None)
    return f"{prefix}/{mode}" + (f":{given}" if given else "")
