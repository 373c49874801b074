"""Runnable studies: one module per experiment, each a CLI that writes a run directory.

Multi-host runs: JAX must join its distributed runtime before its backend starts, and importing
the library starts it (gymnax builds arrays at import). So the multi-host flags of every entry point
(``--coordinator HOST:PORT --num-processes N --process-id I``) are read here, when
``python -m experiments.NAME`` imports this package, before the experiment module imports anything.
"""

import sys

from experiments.launch import join_from_argv

join_from_argv(sys.argv[1:])
