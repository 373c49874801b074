"""Probe environments: tiny tasks with known answers that a correct learner must solve.

Each isolates one piece of the learner: value learning (ConstantReward), policy gradient from
observation (OneStepBandit), credit assignment through bootstrapping (TwoStepCredit),
legal-action masks (MaskedBandit), memory within an episode (MemoryCue) and continuous actions
(ContinuousTarget); CyclicChoice is the test game of intransitive preferences (rl.preference). All
are registered with ``rl.envs`` under ``<Name>-probe``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

from rl import envs


@struct.dataclass
class ProbeState(environment.EnvState):
    cue: jax.Array  # a per-episode random quantity (sign, mask bit, target, first action)
    time: int


@struct.dataclass
class ProbeParams(environment.EnvParams):
    max_steps_in_episode: int = 1000


class _Probe(environment.Environment):
    """Shared plumbing: observation from ``_obs``, episodes end by termination only."""

    obs_size = 1
    actions = 2

    @property
    def default_params(self) -> ProbeParams:
        return ProbeParams()

    @property
    def num_actions(self) -> int:
        return self.actions

    def action_space(self, params: Any = None) -> spaces.Discrete:
        return spaces.Discrete(self.actions)

    def observation_space(self, params: Any = None) -> spaces.Box:
        return spaces.Box(-1.0, 1.0, (self.obs_size,), jnp.float32)

    def get_obs(self, state: ProbeState, params: Any = None, key: Any = None) -> jax.Array:
        return self._obs(state)

    def _draw_cue(self, key: jax.Array) -> jax.Array:
        return jnp.zeros((), jnp.float32)

    def reset_env(self, key: jax.Array, params: Any) -> tuple[jax.Array, ProbeState]:
        state = ProbeState(cue=self._draw_cue(key), time=jnp.zeros((), jnp.int32))
        return self._obs(state), state


class ConstantReward(_Probe):
    """One step, observation 0, reward 1: the value of the only state must become 1."""

    def _obs(self, state: ProbeState) -> jax.Array:
        return jnp.zeros((1,))

    def step_env(self, key, state, action, params):
        state = state.replace(time=state.time + 1)
        return self._obs(state), state, jnp.float32(1.0), jnp.bool_(True), {}


class OneStepBandit(_Probe):
    """One step; observation is a random sign; reward 1 for the action matching it (1 for +1)."""

    def _draw_cue(self, key: jax.Array) -> jax.Array:
        return jnp.where(jax.random.bernoulli(key), 1.0, -1.0)

    def _obs(self, state: ProbeState) -> jax.Array:
        return state.cue[None]

    def step_env(self, key, state, action, params):
        reward = jnp.where(action == (state.cue > 0), 1.0, 0.0)
        state = state.replace(time=state.time + 1)
        return self._obs(state), state, reward, jnp.bool_(True), {}


class TwoStepCredit(_Probe):
    """Two steps, reward only at the end: 1 iff the first action was 1 and the second was 0.

    The second observation shows the first action, so the task is Markov, but the first action's
    credit must travel back through the value of the second state.
    """

    obs_size = 3

    def _obs(self, state: ProbeState) -> jax.Array:
        return jnp.stack([state.time == 0, state.time == 1, state.cue]).astype(jnp.float32)

    def step_env(self, key, state, action, params):
        first = state.time == 0
        reward = jnp.where(first, 0.0, jnp.where((state.cue == 1) & (action == 0), 1.0, 0.0))
        state = state.replace(cue=jnp.where(first, action.astype(jnp.float32), state.cue), time=state.time + 1)
        return self._obs(state), state, reward, state.time >= 2, {}


class MaskedBandit(_Probe):
    """Three arms paying 1, 0.5 and 0 (-1 if illegal); arm 0 is legal only half of the time.

    The observation is the legality of arm 0. The optimal legal policy earns 0.75 on average.
    """

    actions = 3

    def _draw_cue(self, key: jax.Array) -> jax.Array:
        return jax.random.bernoulli(key).astype(jnp.float32)

    def _obs(self, state: ProbeState) -> jax.Array:
        return state.cue[None]

    def action_mask(self, state: ProbeState, params: Any) -> jax.Array:
        """Arm 0 is legal iff the episode's cue is 1; arms 1 and 2 always are."""
        return jnp.stack([state.cue > 0, jnp.bool_(True), jnp.bool_(True)])

    def step_env(self, key, state, action, params):
        legal = self.action_mask(state, params)[action]
        reward = jnp.where(legal, jnp.array([1.0, 0.5, 0.0])[action], -1.0)
        state = state.replace(time=state.time + 1)
        return self._obs(state), state, reward, jnp.bool_(True), {}


class MemoryCue(_Probe):
    """A random sign is shown on the first step only; after ``delay`` blank steps the agent must
    name it. Reward 1 for the right answer. Memoryless policies earn 0.5; a recurrent one earns 1.
    """

    obs_size = 2

    def __init__(self, delay: int = 2):
        self.delay = delay

    def _draw_cue(self, key: jax.Array) -> jax.Array:
        return jnp.where(jax.random.bernoulli(key), 1.0, -1.0)

    def _obs(self, state: ProbeState) -> jax.Array:
        cue = jnp.where(state.time == 0, state.cue, 0.0)
        answer_step = (state.time == self.delay + 1).astype(jnp.float32)
        return jnp.stack([cue, answer_step])

    def step_env(self, key, state, action, params):
        answer_step = state.time == self.delay + 1
        reward = jnp.where(answer_step & (action == (state.cue > 0)), 1.0, 0.0)
        state = state.replace(time=state.time + 1)
        return self._obs(state), state, reward, answer_step, {}


class ContinuousTarget(_Probe):
    """One step; observe a target x ~ U(-1, 1); a continuous action a earns -(a - x)^2."""

    def _draw_cue(self, key: jax.Array) -> jax.Array:
        return jax.random.uniform(key, minval=-1.0, maxval=1.0)

    def _obs(self, state: ProbeState) -> jax.Array:
        return state.cue[None]

    def action_space(self, params: Any = None) -> spaces.Box:
        return spaces.Box(-2.0, 2.0, (1,), jnp.float32)

    def step_env(self, key, state, action, params):
        reward = -jnp.sum((action - state.cue) ** 2)
        state = state.replace(time=state.time + 1)
        return self._obs(state), state, reward, jnp.bool_(True), {}


class CyclicChoice(_Probe):
    """One step, three choices, reward 0: the test game of intransitive preferences. Each choice
    scores three features (``trajectory_features``) that form a Condorcet cycle: by majority of
    features choice 0 beats 1, 1 beats 2 and 2 beats 0, so the preference is rock-paper-scissors
    and its minimax winner is the uniform policy, which no reward function can single out."""

    actions = 3
    FEATURES = jnp.array([[3.0, 1.0, 2.0], [2.0, 3.0, 1.0], [1.0, 2.0, 3.0]])

    def _obs(self, state: ProbeState) -> jax.Array:
        return jnp.zeros((1,))

    def step_env(self, key, state, action, params):
        state = state.replace(time=state.time + 1)
        return self._obs(state), state, jnp.float32(0.0), jnp.bool_(True), {}

    def trajectory_features(self, obs: jax.Array, action: jax.Array, reward: jax.Array) -> jax.Array:
        """The three features of a trajectory ``[L]`` of choices: their sums over its steps."""
        return self.FEATURES[action].sum(0)


for _cls in (ConstantReward, OneStepBandit, TwoStepCredit, MaskedBandit, MemoryCue, ContinuousTarget, CyclicChoice):
    envs.register(f"{_cls.__name__}-probe", _cls)
