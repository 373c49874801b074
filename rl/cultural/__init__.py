"""Environments of the cultural-accumulation study (``memory_sequence/<mode>``, ``tsp/<mode>``,
``goal_sequence/<mode>``; see ``rl.cultural.base``), registered with ``rl.envs`` on import."""

from rl.cultural import (
    goal_sequence,  # noqa: F401
    memory_sequence,  # noqa: F401
    tsp,  # noqa: F401
)
