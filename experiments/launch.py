"""Join the multi-host JAX runtime from the command line, before the backend starts.

Kept free of the library's imports (only ``jax`` itself, which does not start a backend), because
it runs from ``experiments/__init__.py`` ahead of every experiment module.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import jax


def multihost_flags(argv: Sequence[str]) -> argparse.Namespace:
    """``--coordinator``, ``--num-processes`` and ``--process-id`` from ``argv`` (others ignored)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--coordinator", default=None)
    parser.add_argument("--num-processes", "--num_processes", type=int, default=1)
    parser.add_argument("--process-id", "--process_id", type=int, default=0)
    return parser.parse_known_args(list(argv))[0]


def join(coordinator: str, num_processes: int, process_id: int) -> None:
    """``jax.distributed.initialize`` with CPU collectives over Gloo (accelerators use their own);
    a no-op if this process already joined. Exits with one line on impossible flags."""
    if jax.distributed.is_initialized():
        return
    if not 0 <= process_id < num_processes:
        print(f"error: process_id: must be in [0, {num_processes}), got {process_id}", file=sys.stderr)
        sys.exit(2)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator, num_processes, process_id)


def join_from_argv(argv: Sequence[str]) -> None:
    """Join the runtime if ``argv`` has ``--coordinator`` (and is asking for more than ``--help``)."""
    flags = multihost_flags(argv)
    if flags.coordinator is not None and not {"-h", "--help"} & set(argv):
        join(flags.coordinator, flags.num_processes, flags.process_id)
