"""Memory Sequence: repeat a hidden digit sequence, helped by demonstrators who may be seen.

The environment of the cultural-accumulation study (../shared/specs/cultural-accumulation.md). An
episode hides one sequence of ``seq_len`` digits (of ``num_digits`` types) and lasts ``num_trials``
trials. At each step of a trial the agent names the next digit: +1 if it is right, -1 if it is
wrong, and a wrong digit ends the trial. A trial also ends after the whole sequence; the next trial
starts again at the first digit of the same sequence, so what was learned in one trial (in the
recurrent state) pays in the next. The episode ends after its last trial.

Beside the agent act ``num_demonstrators`` noisy oracles. On every step each plays the correct
digit with its accuracy ``p = 1 - 1 / (1 + U * oracle_skill)``, ``U ~ U(0, 1)`` drawn per
episode (so at most ``L / (L + 1)``), and a uniformly random digit otherwise. Their digits for the
current step are in the observation when the demonstrators are *visible*, which is drawn on every
step with probability ``(T - k - 1) / (T - 1)`` in trial ``k`` of ``T`` (1, 2/3, 1/3, 0 for four
trials; always visible for one trial), or with the fixed probability ``visibility`` when it is in
[0, 1].

Two layouts (``mode``):

- ``in_context``: own last action one-hot (``num_digits``), trial-ended flag, last reward, the
  demonstrators' digits one-hot (``num_demonstrators x num_digits``, zeros when not visible), the
  visibility flag: 15 numbers for the spec's 3 digits and 3 demonstrators.
- ``in_weights``: the demonstrators' digits one-hot and the visibility flag only (51 numbers for
  the spec's 10 digits and 5 demonstrators); use one trial per episode and a fixed
  ``sequence_seed``, so the sequence is the same for the whole study.

The sequence is drawn at every reset, or is the one of ``sequence_seed`` when that is >= 0 (the
evaluation's fixed sequence). ``info["trial_score"]`` is the number of correct digits in the trial
that ended on this step, with ``info["trial_ended"]`` and ``info["trial"]`` (its index): the
spec's score, correct steps before the first mistake.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

from rl import envs
from rl.errors import ConfigError

MODES = ("in_context", "in_weights")


@struct.dataclass
class MemorySequenceParams(environment.EnvParams):
    oracle_skill: float = 0.5
    """L: oracle accuracy p = 1 - 1/(1 + U L), U ~ U(0, 1) per episode"""
    visibility: float = -1.0
    """probability that the demonstrators are visible on a step; < 0: the per-trial schedule (T-k-1)/(T-1)"""
    sequence_seed: int = -1
    """>= 0: the sequence is the one of this seed (fixed); < 0: a new sequence at every reset"""
    max_steps_in_episode: int = 1_000_000


@struct.dataclass
class MemorySequenceState(environment.EnvState):
    sequence: jax.Array  # [seq_len] int32
    position: jax.Array  # index of the digit asked for next
    trial: jax.Array  # index of the current trial
    accuracy: jax.Array  # [num_demonstrators] oracle accuracies of this episode
    demo_actions: jax.Array  # [num_demonstrators] the digits the demonstrators play on this step
    visible: jax.Array  # whether the demonstrators are seen on this step
    last_action: jax.Array  # -1 before the first action of the episode
    last_reward: jax.Array
    trial_ended: jax.Array  # the previous step ended a trial
    trial_correct: jax.Array  # correct digits so far in the current trial
    time: jax.Array


class MemorySequence(environment.Environment):
    """Memory Sequence with noisy-oracle demonstrators (see the module docstring)."""

    def __init__(self, mode: str = "in_context", num_digits: int | None = None, seq_len: int = 24,
                 num_trials: int | None = None, num_demonstrators: int | None = None):
        super().__init__()
        if mode not in MODES:
            raise ConfigError("mode", f"must be one of {', '.join(MODES)}, got {mode!r}")
        in_context = mode == "in_context"
        self.mode = mode
        self.num_digits = num_digits if num_digits is not None else (3 if in_context else 10)
        self.seq_len = seq_len
        self.num_trials = num_trials if num_trials is not None else (4 if in_context else 1)
        self.num_demonstrators = num_demonstrators if num_demonstrators is not None else (3 if in_context else 5)
        for name in ("num_digits", "seq_len", "num_trials"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be >= 1, got {getattr(self, name)}")
        if self.num_digits < 2:
            raise ConfigError("num_digits", f"must be >= 2, got {self.num_digits}")
        if self.num_demonstrators < 0:
            raise ConfigError("num_demonstrators", f"must be >= 0, got {self.num_demonstrators}")

    @property
    def name(self) -> str:
        return f"MemorySequence-{self.mode}"

    @property
    def default_params(self) -> MemorySequenceParams:
        return MemorySequenceParams()

    @property
    def num_actions(self) -> int:
        return self.num_digits

    def action_space(self, params: Any = None) -> spaces.Discrete:
        return spaces.Discrete(self.num_digits)

    @property
    def obs_size(self) -> int:
        demos = self.num_demonstrators * self.num_digits + 1
        return demos if self.mode == "in_weights" else self.num_digits + 2 + demos

    def observation_space(self, params: Any = None) -> spaces.Box:
        return spaces.Box(-1.0, 1.0, (self.obs_size,), jnp.float32)

    def visibility_probability(self, trial: jax.Array, params: MemorySequenceParams) -> jax.Array:
        """Probability that the demonstrators are seen on a step of ``trial``."""
        if self.num_trials > 1:
            schedule = (self.num_trials - trial - 1) / (self.num_trials - 1)
        else:
            schedule = jnp.ones_like(trial, jnp.float32)
        return jnp.where(params.visibility < 0, schedule, params.visibility).astype(jnp.float32)

    def _demonstrate(self, key: jax.Array, state: MemorySequenceState, params: MemorySequenceParams) -> MemorySequenceState:
        """Draw the demonstrators' digits and their visibility for the step at ``state.position``."""
        hit_key, digit_key, visible_key = jax.random.split(key, 3)
        correct = state.sequence[state.position]
        hits = jax.random.uniform(hit_key, (self.num_demonstrators,)) < state.accuracy
        guesses = jax.random.randint(digit_key, (self.num_demonstrators,), 0, self.num_digits)
        visible = jax.random.uniform(visible_key) < self.visibility_probability(state.trial, params)
        return state.replace(demo_actions=jnp.where(hits, correct, guesses).astype(jnp.int32), visible=visible)

    def reset_env(self, key: jax.Array, params: MemorySequenceParams) -> tuple[jax.Array, MemorySequenceState]:
        sequence_key, skill_key, demo_key = jax.random.split(key, 3)
        fixed_key = jax.random.PRNGKey(jnp.maximum(params.sequence_seed, 0))
        sequence = jnp.where(params.sequence_seed >= 0,
                             jax.random.randint(fixed_key, (self.seq_len,), 0, self.num_digits),
                             jax.random.randint(sequence_key, (self.seq_len,), 0, self.num_digits))
        skill = jax.random.uniform(skill_key, (self.num_demonstrators,))
        zero = jnp.zeros((), jnp.int32)
        state = MemorySequenceState(
            sequence=sequence.astype(jnp.int32), position=zero, trial=zero,
            accuracy=1.0 - 1.0 / (1.0 + skill * params.oracle_skill),
            demo_actions=jnp.zeros(self.num_demonstrators, jnp.int32), visible=jnp.bool_(False),
            last_action=zero - 1, last_reward=jnp.zeros((), jnp.float32), trial_ended=jnp.bool_(False),
            trial_correct=zero, time=zero,
        )
        state = self._demonstrate(demo_key, state, params)
        return self.get_obs(state, params), state

    def step_env(self, key: jax.Array, state: MemorySequenceState, action: jax.Array, params: MemorySequenceParams):
        action = jnp.asarray(action, jnp.int32)
        correct = action == state.sequence[state.position]
        reward = jnp.where(correct, 1.0, -1.0).astype(jnp.float32)
        trial_correct = state.trial_correct + correct.astype(jnp.int32)
        trial_over = ~correct | (state.position + 1 >= self.seq_len)
        trial = state.trial + trial_over.astype(jnp.int32)
        done = trial >= self.num_trials
        info = {"trial_score": trial_correct.astype(jnp.float32), "trial_ended": trial_over, "trial": state.trial}
        state = state.replace(
            position=jnp.where(trial_over, 0, state.position + 1), trial=jnp.minimum(trial, self.num_trials - 1),
            last_action=action, last_reward=reward, trial_ended=trial_over,
            trial_correct=jnp.where(trial_over, 0, trial_correct), time=state.time + 1,
        )
        state = self._demonstrate(key, state, params)
        return self.get_obs(state, params), state, reward, done, info

    def get_obs(self, state: MemorySequenceState, params: Any = None, key: Any = None) -> jax.Array:
        demos = jax.nn.one_hot(state.demo_actions, self.num_digits).reshape(-1) * state.visible
        seen = state.visible.astype(jnp.float32)[None]
        if self.mode == "in_weights":
            return jnp.concatenate([demos, seen])
        own = jax.nn.one_hot(state.last_action, self.num_digits)  # zeros before the first action
        flags = jnp.stack([state.trial_ended.astype(jnp.float32), state.last_reward])
        return jnp.concatenate([own, flags, demos, seen])


for _mode in MODES:
    envs.register(f"memory_sequence/{_mode}", lambda _mode=_mode, **kwargs: MemorySequence(_mode, **kwargs))
