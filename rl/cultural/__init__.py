"""Environments of the cultural-accumulation study (``memory_sequence/in_context``, ``memory_sequence/in_weights``),
registered with ``rl.envs`` on import."""

from rl.cultural import memory_sequence  # noqa: F401
