"""Test setup: 8 fake CPU devices (for the sharding tests) before JAX starts, and shared helpers."""

import os
import subprocess
import sys
from pathlib import Path

os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=8".strip()

import rl  # noqa: E402,F401  (sets up JAX's CPU backend before it starts)

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m <args>`` from the repository root with the default CPU set-up (one device
    per core)."""
    env = {**os.environ, "XLA_FLAGS": ""}
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
