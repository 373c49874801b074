"""Memory Sequence: repeat a hidden digit sequence, helped by demonstrators who may be seen.

The environment of the cultural-accumulation study (../shared/specs/cultural-accumulation.md). An
episode hides one sequence of ``seq_len`` digits (of ``num_digits`` types) and lasts ``num_trials``
trials. At each step of a trial the agent names the next digit: +1 if it is right, -1 if it is
wrong, and a wrong digit ends the trial. A trial also ends after the whole sequence; the next trial
starts again at the first digit of the same sequence, so what was learned in one trial (in the
recurrent state) pays in the next. The episode ends after its last trial.

Beside the agent act ``num_demonstrators`` noisy oracles. On every step each plays the correct
digit with its accuracy ``p = 1 - 1 / (1 + U * oracle_skill)``, ``U ~ U(0, 1)`` drawn per
episode (so at most ``L / (L + 1)``; the most accurate first with ``sort_oracles``), and a
uniformly random digit otherwise. Their digits for the
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
  ``task_seed``, so the sequence is the same for the whole study.

The sequence is drawn at every reset, or is the one of ``task_seed`` when that is >= 0 (the
evaluation's fixed sequence). ``info["trial_score"]`` is the number of correct digits in the trial
that ended on this step: the spec's score, correct steps before the first mistake. Replayed
demonstrators (``rl.cultural.base``) show their digit for the learner's position in the sequence.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

from rl.cultural.base import (
    CulturalEnv,
    CulturalParams,
    action_observation,
    action_observation_size,
    register_cultural,
)


@struct.dataclass
class MemorySequenceParams(CulturalParams):
    oracle_skill: float = 0.5
    """L: oracle accuracy p = 1 - 1/(1 + U L), U ~ U(0, 1) per episode"""


@struct.dataclass
class MemorySequenceState(environment.EnvState):
    sequence: jax.Array  # [seq_len] int32
    position: jax.Array  # index of the digit asked for next (the step of the trial)
    trial: jax.Array  # index of the current trial
    accuracy: jax.Array  # [num_demonstrators] oracle accuracies of this episode
    demo_actions: jax.Array  # [num_demonstrators] the digits the demonstrators play on this step
    demo_shown: jax.Array  # [num_demonstrators] whether each demonstrator plays on this step
    visible: jax.Array  # whether the demonstrators are seen on this step
    last_action: jax.Array  # -1 before the first action of the episode
    last_reward: jax.Array
    trial_ended: jax.Array  # the previous step ended a trial
    trial_correct: jax.Array  # correct digits so far in the current trial
    time: jax.Array


class MemorySequence(CulturalEnv):
    """Memory Sequence with noisy-oracle or replayed demonstrators (see the module docstring)."""

    def __init__(self, mode: str = "in_context", num_digits: int | None = None, seq_len: int = 24,
                 num_trials: int | None = None, num_demonstrators: int | None = None):
        super().__init__()
        in_context = mode == "in_context"
        self.mode = mode
        self.num_digits = num_digits if num_digits is not None else (3 if in_context else 10)
        self.seq_len = self.trial_length = seq_len
        self.num_trials = num_trials if num_trials is not None else (4 if in_context else 1)
        self.num_demonstrators = num_demonstrators if num_demonstrators is not None else (3 if in_context else 5)
        self.check_sizes(num_digits=2, seq_len=1, num_trials=1, num_demonstrators=0)

    @property
    def name(self) -> str:
        return f"MemorySequence-{self.mode}"

    @property
    def default_params(self) -> MemorySequenceParams:
        return MemorySequenceParams(**self.replay_defaults())

    @property
    def num_actions(self) -> int:
        return self.num_digits

    def action_space(self, params: Any = None) -> spaces.Discrete:
        return spaces.Discrete(self.num_digits)

    @property
    def obs_size(self) -> int:
        return action_observation_size(self.mode, self.num_digits, self.num_demonstrators)

    def observation_space(self, params: Any = None) -> spaces.Box:
        return spaces.Box(-1.0, 1.0, (self.obs_size,), jnp.float32)

    def _demonstrate(self, key: jax.Array, state: MemorySequenceState, params: MemorySequenceParams) -> MemorySequenceState:
        """Draw the demonstrators' digits and their visibility for the step at ``state.position``."""
        hit_key, digit_key, visible_key = jax.random.split(key, 3)
        correct = state.sequence[state.position]
        hits = jax.random.uniform(hit_key, (self.num_demonstrators,)) < state.accuracy
        guesses = jax.random.randint(digit_key, (self.num_demonstrators,), 0, self.num_digits)
        oracle = jnp.where(hits, correct, guesses)
        replay, playing = self.replayed(state.position, params)
        return state.replace(
            demo_actions=jnp.where(params.use_replay, replay, oracle).astype(jnp.int32),
            demo_shown=jnp.where(params.use_replay, playing, True),
            visible=self.draw_visible(visible_key, state.trial, params),
        )

    def reset_env(self, key: jax.Array, params: MemorySequenceParams) -> tuple[jax.Array, MemorySequenceState]:
        skill_key, demo_key = jax.random.split(key)
        sequence = jax.random.randint(self.task_key(key, params), (self.seq_len,), 0, self.num_digits)
        skill = jax.random.uniform(skill_key, (self.num_demonstrators,))
        skill = jnp.where(params.sort_oracles, -jnp.sort(-skill), skill)  # most accurate first
        zero = jnp.zeros((), jnp.int32)
        state = MemorySequenceState(
            sequence=sequence.astype(jnp.int32), position=zero, trial=zero,
            accuracy=1.0 - 1.0 / (1.0 + skill * params.oracle_skill),
            demo_actions=jnp.zeros(self.num_demonstrators, jnp.int32),
            demo_shown=jnp.ones(self.num_demonstrators, bool), visible=jnp.bool_(False),
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
        info = self.trial_info(trial_correct, trial_over, state.trial)
        state = state.replace(
            position=jnp.where(trial_over, 0, state.position + 1), trial=jnp.minimum(trial, self.num_trials - 1),
            last_action=action, last_reward=reward, trial_ended=trial_over,
            trial_correct=jnp.where(trial_over, 0, trial_correct), time=state.time + 1,
        )
        state = self._demonstrate(key, state, params)
        return self.get_obs(state, params), state, reward, done, info

    def get_obs(self, state: MemorySequenceState, params: Any = None, key: Any = None) -> jax.Array:
        return action_observation(self.mode, self.num_digits, state)


register_cultural("memory_sequence", MemorySequence)
