"""Random tabular grid worlds: the meta-training environments of LPG (Oh et al., 2020).

A world is a ``size x size`` grid (4..10) drawn inside a fixed 10x10 canvas, holding up to
``MAX_OBJECTS`` objects. Everything that makes one world differ from another lives in
``GridWorldParams`` as arrays, so a batch of different worlds is one vmap axis (``sample_world``
draws one). Registered with ``rl.envs`` as ``GridWorld-lpg``.

Rules of one step (order matters and is tested):

1. respawn: every object of the world that was absent at the start of the step reappears, at its
   fixed position, with its ``respawn_prob``;
2. move: actions are 0 up, 1 down, 2 left, 3 right (no "stay" action: bumping into a wall is
   the only way to stand still); positions are clamped into the grid;
3. collect: if the agent now stands on a present object it earns the object's reward, the object
   disappears, and the episode terminates with the object's ``term_prob``.

Episodes start at a uniformly random cell with every object present and are truncated after
``max_steps_in_episode`` steps. The observation is the one-hot agent position on the 10x10 canvas
followed by the ``MAX_OBJECTS`` object-present flags (105 numbers), so a linear policy is tabular
in the position.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

from rl import envs

CANVAS = 10
MAX_OBJECTS = 5
MIN_SIZE, MAX_SIZE = 4, 10
MIN_EPISODE, MAX_EPISODE = 20, 750
OBS_SIZE = CANVAS * CANVAS + MAX_OBJECTS
MOVES = jnp.array([[-1, 0], [1, 0], [0, -1], [0, 1]], jnp.int32)  # up, down, left, right


@struct.dataclass
class GridWorldParams(environment.EnvParams):
    """One world; every field is an array (scalars are 0-d), so worlds stack along a vmap axis."""

    size: jax.Array = 5  # int32: the grid is size x size, cells (row, col) in [0, size)
    object_pos: jax.Array = None  # int32 [MAX_OBJECTS, 2]
    object_active: jax.Array = None  # bool [MAX_OBJECTS]: the slot holds an object of this world
    object_reward: jax.Array = None  # float32 [MAX_OBJECTS]
    term_prob: jax.Array = None  # float32 [MAX_OBJECTS]: episode ends when the object is collected
    respawn_prob: jax.Array = None  # float32 [MAX_OBJECTS]: per step, while the object is absent
    max_steps_in_episode: jax.Array = 50  # int32


@struct.dataclass
class GridWorldState(environment.EnvState):
    pos: jax.Array  # int32 [2]
    present: jax.Array  # bool [MAX_OBJECTS]
    time: jax.Array  # int32


def make_world(
    size: int,
    objects: list[tuple[int, int, float, float, float]],
    max_steps_in_episode: int,
) -> GridWorldParams:
    """A hand-built world: ``objects`` lists ``(row, col, reward, term_prob, respawn_prob)``."""
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"size must be in [{MIN_SIZE}, {MAX_SIZE}], got {size}")
    if not 1 <= len(objects) <= MAX_OBJECTS:
        raise ValueError(f"a world holds 1 to {MAX_OBJECTS} objects, got {len(objects)}")
    pad = [(0, 0, 0.0, 0.0, 0.0)] * (MAX_OBJECTS - len(objects))
    rows = objects + pad
    return GridWorldParams(
        size=jnp.int32(size),
        object_pos=jnp.array([[r[0], r[1]] for r in rows], jnp.int32),
        object_active=jnp.arange(MAX_OBJECTS) < len(objects),
        object_reward=jnp.array([r[2] for r in rows], jnp.float32),
        term_prob=jnp.array([r[3] for r in rows], jnp.float32),
        respawn_prob=jnp.array([r[4] for r in rows], jnp.float32),
        max_steps_in_episode=jnp.int32(max_steps_in_episode),
    )


def sample_world(key: jax.Array) -> GridWorldParams:
    """Draw a random world: size U{4..10}, 1-5 objects on distinct cells with rewards U(-1, 1),
    termination probability U(0, 1), respawn probability U(0.01, 0.2), and an episode length
    log-uniform in [20, 750]. Pure and vmappable over keys."""
    k_size, k_num, k_cells, k_rew, k_term, k_resp, k_len = jax.random.split(key, 7)
    size = jax.random.randint(k_size, (), MIN_SIZE, MAX_SIZE + 1)
    num = jax.random.randint(k_num, (), 1, MAX_OBJECTS + 1)
    rows, cols = jnp.divmod(jnp.arange(CANVAS * CANVAS), CANVAS)
    inside = (rows < size) & (cols < size)
    # distinct cells: the MAX_OBJECTS inside cells with the largest random scores
    scores = jnp.where(inside, jax.random.uniform(k_cells, (CANVAS * CANVAS,)), -1.0)
    cells = jnp.argsort(-scores)[:MAX_OBJECTS]
    log_len = jax.random.uniform(k_len, (), minval=jnp.log(MIN_EPISODE), maxval=jnp.log(MAX_EPISODE))
    return GridWorldParams(
        size=size.astype(jnp.int32),
        object_pos=jnp.stack([rows[cells], cols[cells]], -1).astype(jnp.int32),
        object_active=jnp.arange(MAX_OBJECTS) < num,
        object_reward=jax.random.uniform(k_rew, (MAX_OBJECTS,), minval=-1.0, maxval=1.0),
        term_prob=jax.random.uniform(k_term, (MAX_OBJECTS,)),
        respawn_prob=jax.random.uniform(k_resp, (MAX_OBJECTS,), minval=0.01, maxval=0.2),
        max_steps_in_episode=jnp.round(jnp.exp(log_len)).astype(jnp.int32),
    )


class GridWorld(environment.Environment):
    """The LPG grid world (rules in the module docstring)."""

    @property
    def default_params(self) -> GridWorldParams:
        """A fixed 6x6 world: a terminal +1 goal in the far corner, a -1 trap next to it, and a
        small respawning +0.2 snack near the centre; 50-step episodes."""
        return make_world(
            6, [(5, 5, 1.0, 1.0, 0.05), (4, 5, -1.0, 0.5, 0.05), (2, 2, 0.2, 0.0, 0.1)], max_steps_in_episode=50
        )

    @property
    def num_actions(self) -> int:
        return 4

    def action_space(self, params: Any = None) -> spaces.Discrete:
        return spaces.Discrete(4)

    def observation_space(self, params: Any = None) -> spaces.Box:
        return spaces.Box(0.0, 1.0, (OBS_SIZE,), jnp.float32)

    def get_obs(self, state: GridWorldState, params: Any = None, key: Any = None) -> jax.Array:
        cell = jax.nn.one_hot(state.pos[0] * CANVAS + state.pos[1], CANVAS * CANVAS)
        return jnp.concatenate([cell, state.present.astype(jnp.float32)])

    def reset_env(self, key: jax.Array, params: GridWorldParams) -> tuple[jax.Array, GridWorldState]:
        pos = jax.random.randint(key, (2,), 0, params.size)
        state = GridWorldState(pos=pos.astype(jnp.int32), present=params.object_active, time=jnp.zeros((), jnp.int32))
        return self.get_obs(state), state

    def step_env(self, key: jax.Array, state: GridWorldState, action: jax.Array, params: GridWorldParams):
        respawn_draw, term_draw = jax.random.uniform(key, (2, MAX_OBJECTS))
        respawn = respawn_draw < params.respawn_prob
        present = (state.present | respawn) & params.object_active
        pos = jnp.clip(state.pos + MOVES[action], 0, params.size - 1)
        hit = present & jnp.all(params.object_pos == pos, axis=-1)
        reward = jnp.sum(jnp.where(hit, params.object_reward, 0.0))
        ends = term_draw < params.term_prob
        terminated = jnp.any(hit & ends)
        state = GridWorldState(pos=pos, present=present & ~hit, time=state.time + 1)
        return self.get_obs(state), state, reward, terminated, {}


envs.register("GridWorld-lpg", GridWorld)
