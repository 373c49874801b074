"""Self-play on two-player board games (pgx): environments for the core PPO learner, AlphaZero with
mctx, opponents (random, pure search), matches, Elo and an exact tic-tac-toe solver.

``rl.selfplay.load_agent(run_dir)`` (``rl.selfplay.agents.load_agent``) is imported on first use, so
importing a submodule does not import the agents' dependencies."""

from typing import Any

__all__ = ["load_agent"]


def __getattr__(name: str) -> Any:
    if name == "load_agent":
        from rl.selfplay.agents import load_agent

        return load_agent
    raise AttributeError(f"module 'rl.selfplay' has no attribute {name!r}")
