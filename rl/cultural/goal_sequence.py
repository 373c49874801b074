"""Goal Sequence: visit goals of a grid world in a hidden order, helped by a demonstrator who may be seen.

The grid-world environment of the cultural-accumulation study (../shared/specs/cultural-accumulation.md).
A ``grid_size x grid_size`` grid without inner walls holds ``num_goals`` goals at distinct random
cells. Cells are ``(row, col)``, row 0 at the top (north). Directions are 0 north, 1 east, 2 south,
3 west; actions are 0 turn left, 1 turn right, 2 forward (a forward off the grid stays in place).
The learner starts every trial at ``(0, grid_size // 2)`` (the spec's (0, 3) on 7x7) facing south,
into the grid; demonstrators start at ``(1, grid_size // 2)`` facing south too.

An episode hides a sequence of ``sequence_length`` goals (uniform over the goals). Moving onto the
cell of the next goal of the sequence gives +1 and advances the learner's index; moving onto another
goal gives -1 (index unchanged). Only a move onto a goal counts (turning on a goal cell or bumping
the edge while on it does not), goals do not block and are not consumed, and once the whole sequence
is done goals give 0. A trial lasts ``trial_length`` steps; at its end the learner and the
demonstrators go back to their start cells and every index to 0. The layout and the sequence are
drawn at reset from ``task_key`` (fixed by ``task_seed >= 0``) and stay the same for the episode's
``num_trials`` trials. ``info["trial_score"]`` is the trial's return.

Demonstrators (the spec has one) have their own position, direction and index. As noisy oracles
(the default) each takes, on each step with probability ``p = 1 - 1 / (1 + U * oracle_skill)``
(``U ~ U(0, 1)`` per episode), a shortest-path action toward its next goal (forward if it faces a
direction that shortens the Manhattan distance, else a turn toward one; standing on its next goal
it steps off, to come back), and a uniformly random action otherwise. Replayed demonstrators
(``rl.cultural.base``) start at the learner's start cell, so they retrace the recorded trial's path,
and stand still, hidden, after it.

Observation (flat): the egocentric 5x5 view as ``[channel, row, col]`` with channels wall (outside
the grid), one per goal (``num_goals`` channels, so 3 in the spec) and other agent (a demonstrator
that is visible on this step); the learner is at the bottom-centre cell (row 4, col 2) looking up
the view (it sees 4 cells ahead, 2 to each side, nothing behind), and the view turns with it. Then
its direction one-hot (4), the trial one-hot (``trial_features``, 4: later trials share the last
feature, so an agent trained on 4 trials plays longer episodes) and the last reward one-hot (-1, 0,
+1; 0 at reset): 136 numbers in both modes (``in_weights`` has 1 trial per episode; use it with a
fixed ``task_seed``). The modes differ only by these defaults.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

from rl.cultural.base import CulturalEnv, CulturalParams, register_cultural
from rl.errors import ConfigError

VIEW = 5
MOVES = jnp.array([[-1, 0], [0, 1], [1, 0], [0, -1]], jnp.int32)  # north, east, south, west
START_DIRECTION = 2  # south
LEFT, RIGHT, FORWARD = 0, 1, 2


@struct.dataclass
class GoalSequenceParams(CulturalParams):
    oracle_skill: float = 2.0
    """L: the oracle follows a shortest path with p = 1 - 1/(1 + U L), U ~ U(0, 1) per episode"""


@struct.dataclass
class GoalSequenceState(environment.EnvState):
    goals: jax.Array  # [num_goals, 2] int32 cells
    sequence: jax.Array  # [sequence_length] int32 goal indices
    pos: jax.Array  # [2] the learner's cell
    direction: jax.Array  # the learner's direction
    index: jax.Array  # the learner's position in the sequence
    demo_pos: jax.Array  # [num_demonstrators, 2]
    demo_direction: jax.Array  # [num_demonstrators]
    demo_index: jax.Array  # [num_demonstrators]
    accuracy: jax.Array  # [num_demonstrators] oracle accuracies of this episode
    demo_shown: jax.Array  # [num_demonstrators] whether each demonstrator is playing on this step
    visible: jax.Array  # whether the demonstrators are seen on this step
    step: jax.Array  # step within the trial
    trial: jax.Array
    trial_return: jax.Array  # the current trial's return so far
    last_reward: jax.Array
    time: jax.Array


def _move(pos: jax.Array, direction: jax.Array, action: jax.Array, size: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One agent's turn or move: the new cell, the new direction and whether it changed cell."""
    direction = jnp.where(action == LEFT, direction - 1, jnp.where(action == RIGHT, direction + 1, direction)) % 4
    ahead = pos + MOVES[direction]
    moved = (action == FORWARD) & jnp.all((ahead >= 0) & (ahead < size))
    return jnp.where(moved, ahead, pos), direction, moved


def _goal_at(pos: jax.Array, goals: jax.Array) -> jax.Array:
    """The index of the goal at ``pos``, or -1."""
    here = jnp.all(goals == pos, axis=-1)
    return jnp.where(here.any(), jnp.argmax(here), -1)


class GoalSequence(CulturalEnv):
    """Goal Sequence with noisy-oracle or replayed demonstrators (see the module docstring)."""

    def __init__(self, mode: str = "in_context", grid_size: int = 7, num_goals: int = 3, sequence_length: int = 100,
                 trial_length: int = 50, num_trials: int | None = None, num_demonstrators: int = 1,
                 trial_features: int = 4):
        super().__init__()
        self.mode = mode
        self.grid_size, self.num_goals, self.sequence_length = grid_size, num_goals, sequence_length
        self.trial_length = trial_length
        self.num_trials = num_trials if num_trials is not None else (4 if mode == "in_context" else 1)
        self.trial_features = trial_features
        self.num_demonstrators = num_demonstrators
        self.check_sizes(grid_size=3, num_goals=1, sequence_length=1, trial_length=1, num_trials=1,
                         trial_features=1, num_demonstrators=0)
        if num_goals > grid_size * grid_size - 2:
            raise ConfigError("num_goals", f"must be <= grid_size**2 - 2 = {grid_size * grid_size - 2}, got {num_goals}")
        middle = grid_size // 2
        self.start = jnp.array([0, middle], jnp.int32)
        self.demo_start = jnp.array([1, middle], jnp.int32)

    @property
    def name(self) -> str:
        return f"GoalSequence-{self.mode}"

    @property
    def default_params(self) -> GoalSequenceParams:
        return GoalSequenceParams(**self.replay_defaults())

    @property
    def num_actions(self) -> int:
        return 3

    def action_space(self, params: Any = None) -> spaces.Discrete:
        return spaces.Discrete(3)

    @property
    def num_channels(self) -> int:
        return self.num_goals + 2

    @property
    def obs_size(self) -> int:
        return VIEW * VIEW * self.num_channels + 4 + self.trial_features + 3

    def observation_space(self, params: Any = None) -> spaces.Box:
        return spaces.Box(0.0, 1.0, (self.obs_size,), jnp.float32)

    def _start_trial(self, state: GoalSequenceState, params: GoalSequenceParams) -> GoalSequenceState:
        """Everyone back to the start cells, facing south, at the start of the sequence. A replayed
        demonstrator starts at the learner's start cell, so that it retraces the recorded trial."""
        d = self.num_demonstrators
        zero = jnp.zeros((), jnp.int32)
        demo_start = jnp.where(params.use_replay, self.start, self.demo_start)
        return state.replace(
            pos=self.start, direction=zero + START_DIRECTION, index=zero,
            demo_pos=jnp.tile(demo_start, (d, 1)), demo_direction=jnp.full((d,), START_DIRECTION, jnp.int32),
            demo_index=jnp.zeros((d,), jnp.int32), step=zero, trial_return=jnp.zeros((), jnp.float32),
        )

    def _observe(self, key: jax.Array, state: GoalSequenceState, params: GoalSequenceParams) -> GoalSequenceState:
        """Draw whether the demonstrators are seen at the state's step, and which are still playing."""
        _, playing = self.replayed(state.step, params)
        return state.replace(visible=self.draw_visible(key, state.trial, params),
                             demo_shown=jnp.where(params.use_replay, playing, True))

    def _oracle_action(self, pos: jax.Array, direction: jax.Array, target: jax.Array) -> jax.Array:
        """A shortest-path action from ``pos`` facing ``direction`` toward the cell ``target``."""
        delta = target - pos
        wanted = jnp.stack([delta[0] < 0, delta[1] > 0, delta[0] > 0, delta[1] < 0])  # N, E, S, W
        ahead = pos + MOVES[direction]
        can_leave = jnp.all((ahead >= 0) & (ahead < self.grid_size))
        on_target = ~wanted.any()
        turn = jnp.where(wanted[(direction + 1) % 4], RIGHT, LEFT)
        return jnp.where(on_target, jnp.where(can_leave, FORWARD, RIGHT), jnp.where(wanted[direction], FORWARD, turn))

    def reset_env(self, key: jax.Array, params: GoalSequenceParams) -> tuple[jax.Array, GoalSequenceState]:
        layout_key, sequence_key = jax.random.split(self.task_key(key, params))
        skill_key, visible_key = jax.random.split(jax.random.fold_in(key, 1))
        cells = self.grid_size * self.grid_size
        free = jnp.ones(cells).at[self.start[0] * self.grid_size + self.start[1]].set(0.0)
        free = free.at[self.demo_start[0] * self.grid_size + self.demo_start[1]].set(0.0)
        flat = jax.random.choice(layout_key, cells, (self.num_goals,), replace=False, p=free / free.sum())
        goals = jnp.stack([flat // self.grid_size, flat % self.grid_size], axis=-1).astype(jnp.int32)
        sequence = jax.random.randint(sequence_key, (self.sequence_length,), 0, self.num_goals)
        skill = jax.random.uniform(skill_key, (self.num_demonstrators,))
        d, zero = self.num_demonstrators, jnp.zeros((), jnp.int32)
        state = GoalSequenceState(
            goals=goals, sequence=sequence.astype(jnp.int32), pos=self.start, direction=zero, index=zero,
            demo_pos=jnp.zeros((d, 2), jnp.int32), demo_direction=jnp.zeros((d,), jnp.int32),
            demo_index=jnp.zeros((d,), jnp.int32), accuracy=1.0 - 1.0 / (1.0 + skill * params.oracle_skill),
            demo_shown=jnp.ones((d,), bool), visible=jnp.bool_(False), step=zero, trial=zero,
            trial_return=jnp.zeros((), jnp.float32), last_reward=jnp.zeros((), jnp.float32), time=zero,
        )
        state = self._observe(visible_key, self._start_trial(state, params), params)
        return self.get_obs(state, params), state

    def step_env(self, key: jax.Array, state: GoalSequenceState, action: jax.Array, params: GoalSequenceParams):
        hit_key, random_key, visible_key = jax.random.split(key, 3)
        action = jnp.asarray(action, jnp.int32)
        last = self.sequence_length - 1
        # the learner
        pos, direction, moved = _move(state.pos, state.direction, action, self.grid_size)
        goal = _goal_at(pos, state.goals)
        scoring = moved & (goal >= 0) & (state.index <= last)
        right = goal == state.sequence[jnp.minimum(state.index, last)]
        reward = jnp.where(scoring, jnp.where(right, 1.0, -1.0), 0.0).astype(jnp.float32)
        index = state.index + (scoring & right).astype(jnp.int32)
        # the demonstrators
        targets = state.goals[state.sequence[jnp.minimum(state.demo_index, last)]]  # [d, 2]
        oracle = jax.vmap(self._oracle_action)(state.demo_pos, state.demo_direction, targets)
        hits = jax.random.uniform(hit_key, (self.num_demonstrators,)) < state.accuracy
        guesses = jax.random.randint(random_key, (self.num_demonstrators,), 0, 3)
        replay, playing = self.replayed(state.step, params)
        demo_action = jnp.where(params.use_replay, replay, jnp.where(hits, oracle, guesses))
        acting = jnp.where(params.use_replay, playing, True)
        demo_pos, demo_direction, demo_moved = jax.vmap(_move, (0, 0, 0, None))(
            state.demo_pos, state.demo_direction, demo_action, self.grid_size)
        demo_pos = jnp.where(acting[:, None], demo_pos, state.demo_pos)
        demo_direction = jnp.where(acting, demo_direction, state.demo_direction)
        reached = acting & demo_moved & jnp.all(demo_pos == targets, axis=-1) & (state.demo_index <= last)
        # the trial
        trial_return = state.trial_return + reward
        trial_over = state.step + 1 >= self.trial_length
        trial = state.trial + trial_over.astype(jnp.int32)
        done = trial >= self.num_trials
        info = self.trial_info(trial_return, trial_over, state.trial)
        state = state.replace(
            pos=pos, direction=direction, index=index, demo_pos=demo_pos, demo_direction=demo_direction,
            demo_index=state.demo_index + reached.astype(jnp.int32), step=state.step + 1,
            trial=jnp.minimum(trial, self.num_trials - 1), trial_return=trial_return, last_reward=reward,
            time=state.time + 1,
        )
        state = jax.tree.map(lambda new, old: jnp.where(trial_over, new, old), self._start_trial(state, params), state)
        state = self._observe(visible_key, state, params)
        return self.get_obs(state, params), state, reward, done, info

    def view(self, state: GoalSequenceState) -> jax.Array:
        """The egocentric view ``[channel, row, col]``: wall, goals, other agent; the learner at (4, 2)."""
        ahead = (VIEW - 1 - jnp.arange(VIEW))[:, None, None]  # cells ahead, per view row
        side = (jnp.arange(VIEW) - VIEW // 2)[None, :, None]  # cells to the right, per view col
        cells = state.pos + ahead * MOVES[state.direction] + side * MOVES[(state.direction + 1) % 4]  # [5, 5, 2]
        wall = ~jnp.all((cells >= 0) & (cells < self.grid_size), axis=-1)
        goals = jnp.all(cells[None] == state.goals[:, None, None], axis=-1)  # [num_goals, 5, 5]
        seen = state.visible & state.demo_shown  # [d]
        others = jnp.all(cells[None] == state.demo_pos[:, None, None], axis=-1) & seen[:, None, None]
        return jnp.concatenate([wall[None], goals, others.any(axis=0)[None]]).astype(jnp.float32)

    def get_obs(self, state: GoalSequenceState, params: Any = None, key: Any = None) -> jax.Array:
        return jnp.concatenate([
            self.view(state).reshape(-1), jax.nn.one_hot(state.direction, 4),
            jax.nn.one_hot(jnp.minimum(state.trial, self.trial_features - 1), self.trial_features), jax.nn.one_hot(state.last_reward.astype(jnp.int32) + 1, 3),
        ])


register_cultural("goal_sequence", GoalSequence)
