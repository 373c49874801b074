"""Peer: the self-play of pgx's own AlphaZero example (``examples/alphazero/train.py`` in the pgx
repository, dm-haiku), timed alone; run with the peer venv's Python, never imported by the project.

    .peer-pgx/bin/python experiments/peers/pgx_alphazero_selfplay.py EXAMPLE_DIR SETTINGS_JSON [RUNS]

``EXAMPLE_DIR`` holds the example's ``train.py`` and ``network.py`` as the pgx repository has them
(kept outside this project, imported where they are). ``SETTINGS_JSON`` is a JSON object of the
example's ``Config`` fields, passed to it as its own command-line overrides, e.g.
``{"env_id": "connect_four", "selfplay_batch_size": 256, "max_num_steps": 16,
"num_simulations": 32, "num_channels": 32, "num_layers": 3}``.

Importing ``train.py`` does things this machine cannot or should not do, so they are neutralised
before the import, and nothing of the example's code is changed or copied:

- ``pgx.make_baseline_model`` (downloads a baseline network; only the example's ``evaluate`` uses
  it) is replaced by a stub that fails if it is ever called;
- ``wandb`` (only used under ``__main__``) is a fake empty module in ``sys.modules``;
- ``sys.argv`` is set to the overrides that ``OmegaConf.from_cli()`` reads;
- what the module prints at import (its config) goes to stderr, so stdout holds only the result.

The module's ``selfplay`` (``jax.pmap`` over ``jax.local_devices()``, each device playing
``selfplay_batch_size / devices`` games for ``max_num_steps`` searched moves from fresh games) is
compiled apart (``lower(...).compile()``), called once untimed (warm-up, as the benchmark does for
its own self-play) and then timed ``RUNS`` times (default 1). The network is the example's
``AZNet`` initialised as its ``__main__`` does (``forward.init`` on two fresh observations), copied
to every device with a leading device axis (``jax.device_put_replicated``, which the example's
``__main__`` uses, is gone from jax 0.10). Prints one JSON line: ``positions_per_second`` (median
over the runs, ``selfplay_batch_size * max_num_steps`` positions per call), ``compile_seconds``,
``run_seconds`` (each run), ``devices`` and the versions used.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import statistics
import sys
import time
import types
from pathlib import Path
from typing import Any


def _neutralise_import_side_effects(overrides: dict[str, Any]) -> None:
    """Stub what ``train.py`` does at import that needs a network or an account, and set argv."""
    import pgx

    def no_baseline(*args: Any, **kwargs: Any) -> Any:
        def baseline(*_: Any, **__: Any) -> Any:
            raise RuntimeError("pgx.make_baseline_model is stubbed in this benchmark (no downloads)")

        return baseline

    pgx.make_baseline_model = no_baseline
    sys.modules.setdefault("wandb", types.ModuleType("wandb"))
    sys.argv = ["train.py", *(f"{key}={value}" for key, value in overrides.items())]


def load_example(example_dir: Path, overrides: dict[str, Any]) -> types.ModuleType:
    """Import the example's ``train.py`` from ``example_dir`` with its side effects neutralised."""
    if not (example_dir / "train.py").is_file():
        raise SystemExit(f"error: no train.py in {example_dir} (give the example's examples/alphazero folder)")
    _neutralise_import_side_effects(overrides)
    sys.path.insert(0, str(example_dir))  # its ``from network import AZNet``
    spec = importlib.util.spec_from_file_location("pgx_alphazero_train", example_dir / "train.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    with contextlib.redirect_stdout(sys.stderr):
        spec.loader.exec_module(module)
    return module


def time_selfplay(train: types.ModuleType, runs: int) -> dict[str, Any]:
    """Compile the example's ``selfplay`` apart, warm it up once, time ``runs`` calls."""
    import jax
    import jax.numpy as jnp

    config, devices = train.config, train.devices
    if config.selfplay_batch_size % len(devices):
        raise SystemExit(f"error: selfplay_batch_size {config.selfplay_batch_size} does not split over "
                         f"{len(devices)} devices")
    dummy = jax.vmap(train.env.init)(jax.random.split(jax.random.PRNGKey(0), 2)).observation
    model = train.forward.init(jax.random.PRNGKey(0), dummy)  # (params, state), as its __main__
    model = jax.tree.map(lambda x: jnp.broadcast_to(x, (len(devices), *x.shape)), model)
    keys = jax.random.split(jax.random.PRNGKey(config.seed), len(devices))

    tick = time.perf_counter()
    compiled = train.selfplay.lower(model, keys).compile()
    compile_seconds = time.perf_counter() - tick
    jax.block_until_ready(compiled(model, keys))  # warm-up, untimed
    seconds = []
    for run in range(runs):
        run_keys = jax.random.split(jax.random.PRNGKey(config.seed + 1 + run), len(devices))
        tick = time.perf_counter()
        jax.block_until_ready(compiled(model, run_keys))
        seconds.append(time.perf_counter() - tick)
    positions = config.selfplay_batch_size * config.max_num_steps
    return {"positions_per_second": positions / statistics.median(seconds), "compile_seconds": compile_seconds,
            "run_seconds": seconds, "positions_per_run": positions, "devices": len(devices),
            "device_kind": devices[0].device_kind}


def main(argv: list[str]) -> None:
    """``EXAMPLE_DIR SETTINGS_JSON [RUNS]``: print the timing as one JSON line."""
    if len(argv) not in (2, 3):
        raise SystemExit(__doc__)
    example_dir, overrides = Path(argv[0]).resolve(), json.loads(argv[1])
    runs = int(argv[2]) if len(argv) == 3 else 1
    train = load_example(example_dir, overrides)
    result = time_selfplay(train, runs)
    import haiku
    import jax
    import mctx
    import pgx

    result["versions"] = {"jax": jax.__version__, "pgx": pgx.__version__, "mctx": mctx.__version__,
                          "dm-haiku": haiku.__version__}
    result["config"] = train.config.model_dump()
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
