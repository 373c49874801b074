"""Runnable studies: ``python -m experiments.NAME --help``; each writes a run directory."""
