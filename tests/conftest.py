"""Test setup: 8 fake CPU devices (for the sharding tests) before JAX starts, and shared helpers."""

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# Tests compile many small programs and run each for moments: XLA's LLVM optimisations of the CPU
# code cost more compile time than they save (a third of test_cultural_generations' time), and so do
# its newer fusion emitters (the cultural agent's training program compiled in 2.2-3.8 s without
# them, 6-7 s with them). Every test process and its children compile this way; what the programs
# compute is unchanged.
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=8 {FAST_COMPILE}".strip()

# One persistent compilation cache for the session, shared by this process and every child process
# (they inherit the environment): many tests compile the same programs again (a resumed run, the
# same config in a second process, a second call that builds new closures). It starts empty in a
# fresh temporary directory, so nothing carries over between sessions; the cache is keyed on the
# compiled program, so what runs is unchanged. JAX_COMPILATION_CACHE_DIR set by you is used instead.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="jax-test-cache-")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
# Only programs that took a second to compile (JAX's default): writing every small op of eager code
# to the cache would slow those tests down instead (test_envs ran 2.4x slower with no threshold).
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")

import rl  # noqa: E402,F401  (sets up JAX's CPU backend before it starts)

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m <args>`` from the repository root with the default CPU set-up (one device
    per core)."""
    env = {**os.environ, "XLA_FLAGS": FAST_COMPILE}
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def run_cli_cases(module: str | None, cases: list[list[str]], timeout: float = 300) -> list[subprocess.CompletedProcess]:
    """``run_cli(module, *case)`` for every case, all in one child process (``tests/cli_cases.py``):
    for command lines that stop before training (``--help``, bad input), whose time is mostly
    Python's imports and JAX's start. With ``module=None`` each case starts with its module. Each
    result has the case's exit status, stdout and stderr."""
    commands = [list(case) if module is None else [module, *case] for case in cases]
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "results.json"
        done = subprocess.run([sys.executable, str(ROOT / "tests" / "cli_cases.py"), str(results), json.dumps(commands)],
                              cwd=ROOT, env={**os.environ, "XLA_FLAGS": FAST_COMPILE}, capture_output=True, text=True,
                              timeout=timeout)
        assert done.returncode == 0, done.stderr[-3000:]
        return [subprocess.CompletedProcess(command, r["returncode"], r["stdout"], r["stderr"])
                for command, r in zip(commands, json.loads(results.read_text()), strict=True)]


# The two xdist workers take whole test files (`--dist loadfile`) from one queue. xdist orders that
# queue by the number of tests in a file, so files of a few slow tests (test_cultural_experiment:
# 3 tests, 3 minutes) came last and one worker ran alone at the end. Slowest first instead (seconds
# per file measured with --durations on 2026-12-03), the rest after them in their collection order.
SLOWEST_FILES_FIRST = [
    "test_objectives.py",  # 271 s
    "test_lm.py",  # 255
    "test_cultural_experiment.py",  # 180
    "test_runner.py",  # 178
    "test_selfplay.py",  # 130
    "test_experiments.py",  # 130
    "test_selfplay_alphazero.py",  # 115
    "test_preference.py",  # 111
    "test_selfplay_arena.py",  # 107
    "test_sharding.py",  # 87
    "test_cultural_generations.py",  # 66
    "test_envs.py",  # 61
    "test_matrix_games.py",  # 59
    "test_probes.py",  # 52
]


def pytest_configure(config):
    """In the controlling process: keep the queue in the order of ``pytest_collection_modifyitems``."""
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(items):
    """Test files slowest first (``SLOWEST_FILES_FIRST``); a file's own tests keep their order."""
    rank = {name: i for i, name in enumerate(SLOWEST_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
