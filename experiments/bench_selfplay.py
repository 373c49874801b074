"""Throughput of board-game self-play: random play and AlphaZero (search included), beside pgx's own
AlphaZero example measured in the same run.

    python -m experiments.bench_selfplay --pgx-python .peer-pgx/bin/python \\
        --pgx-example /work/peer-pgx-example/examples/alphazero

Measures, for the pgx game ``--game``:

- **Random play**: env steps/s of a compiled ``lax.scan`` of uniformly random legal moves over a
  vmapped batch of ``--random-batch`` games; finished games restart at once (one device).
- **AlphaZero self-play** (``rl.selfplay.alphazero.make_selfplay``): positions/s, search included:
  ``--selfplay-steps`` moves, each a Gumbel MuZero search of ``--num-simulations`` simulations
  with the residual conv net (``--channels``, ``--blocks``), in each of ``--selfplay-games`` games
  that start fresh on every call (as the example's do), or with ``--warm-calls N`` from the games
  left by N untimed calls (games at every stage, as in our training, which carries games over
  between updates); positions/s = games x steps / seconds. Timed for each device
  count of ``--devices``: on 1 device the plain ``jax.jit`` of ``selfplay``, on more the games are
  split over the devices with ``shard_map`` (one CPU device per core after ``import rl``). With
  ``--fresh-roots`` also ours with every search's root evaluated by the network, timed in turn
  with the default in the same process (``reuse_gain`` = default / fresh roots); with
  ``--every-board`` also ours with the network evaluating every board of a batch, repeated
  positions included (``distinct_gain`` = default / every board).
- **pgx's AlphaZero example** (``examples/alphazero/train.py`` of the pgx repository, dm-haiku),
  when ``--pgx-python`` (a venv with jax, pgx, mctx, dm-haiku, optax, omegaconf, pydantic; see
  README: Benchmark) and ``--pgx-example`` (the folder holding its ``train.py``) are given: its
  ``selfplay`` alone, through ``experiments/peers/pgx_alphazero_selfplay.py``, at the same
  settings (``env_id``, ``selfplay_batch_size``, ``max_num_steps``, ``num_simulations``,
  ``num_channels``, ``num_layers``), with as many CPU devices as ours for its own ``pmap``
  (``XLA_FLAGS=--xla_force_host_platform_device_count``).

Both sides compile apart (``lower().compile()``, reported as compile seconds), make one untimed
warm-up call, and are then timed call by call, alternating (ours, peer, ours, peer, ...; every
peer run is a fresh process: import, compile, warm-up, one timed call); medians of ``--repeats``
are reported with the ratio ours / peer. Writes ``bench.json`` to ``--out`` and prints a table.

What could not be matched exactly (the peer runs as it is):

- Network: same width and depth (``num_channels = channels``, ``num_layers = blocks``: a 3x3 conv
  stem, residual blocks of two 3x3 convolutions, a 2-channel policy head and a 1-channel value
  head with a hidden layer of ``channels``), but the example's ``AZNet`` adds BatchNorm (inference
  mode in self-play; pre-activation ``resnet_v2``, its default) and uses ``hk.Conv2D``, where ours
  has no normalisation; its 3x3 convolutions are ``models.actor_critic.conv3x3`` (XLA's
  convolution, as haiku's).
- Search: both ``mctx.gumbel_muzero_policy`` with ``qtransform_completed_by_mix_value``, gumbel
  scale 1 and 16 considered actions (mctx's default, which the example keeps). Our model step
  also passes random keys to ``env.step``, gives discount +1 when the same player moves again and
  treats truncation as an end; the example's does not (no difference in cost or result for
  connect four or tic-tac-toe).
- Network calls: each of our searches takes its root's evaluation from the previous search's
  tree (``make_selfplay(reuse_evaluations=True)``, the same games up to float rounding), so ours
  calls the network ``num_simulations`` times per move after the first and the example
  ``num_simulations + 1``; and ours evaluates each distinct board of a call once
  (``--distinct-chunks``, ``alphazero.evaluate_distinct``, the same outputs up to float
  rounding), where the example evaluates every board, repeats included (games that start
  together share their first positions).
- Per call, the example starts its games with ``env.init`` inside its compiled ``selfplay`` and
  returns only its training records; ours takes the initial games as input and also returns the
  games after the moves.
- Devices: the example always ``pmap``s (also over one device); the peer's device count is set
  for the CPU only, so on an accelerator it uses all its local devices (give ``--devices`` that
  count).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from experiments.common import cli, format_table
from rl import envs, records
from rl.errors import ConfigError
from rl.selfplay import alphazero, games

PEER_SCRIPT = Path(__file__).resolve().parent / "peers" / "pgx_alphazero_selfplay.py"
AXIS = "games"


@dataclasses.dataclass(frozen=True)
class Args:
    game: str = "connect_four"
    """pgx two-player game id"""
    random_batch: int = 1024
    """games in parallel for the random-play timing"""
    random_steps: int = 1_000_000
    """env steps (over all games) per random-play timing (0: skip random play)"""
    alphazero: alphazero.AlphaZeroConfig = alphazero.AlphaZeroConfig(selfplay_steps=16)
    """the self-play settings timed (--num-simulations, --selfplay-games, --selfplay-steps, --channels, --blocks)"""
    devices: tuple[int, ...] = ()
    """device counts to time self-play on, both sides (empty: 1 and all of this process's devices)"""
    repeats: int = 3
    """timed runs per measurement (median reported)"""
    seed: int = 0
    """random seed of the network and the games"""
    fresh_roots: bool = False
    """also time our self-play evaluating every search's root with the network
    (``make_selfplay(reuse_evaluations=False)``), alternated with the default, for the gain of reuse"""
    warm_calls: int = 0
    """ours only: every timed call starts from the games left by this many untimed calls (games at
    every stage, as in training, where games carry over between updates) instead of fresh games;
    the peer always starts fresh"""
    every_board: bool = False
    """also time our self-play with the network evaluating every board of a batch, repeats included
    (``--distinct-chunks 0``), alternated with the default, for the gain of evaluating distinct boards once"""
    pgx_python: str | None = None
    """python of a venv with pgx's AlphaZero example's dependencies (dm-haiku, ...)"""
    pgx_example: str | None = None
    """folder of pgx's examples/alphazero (train.py, network.py), outside this project"""
    out: str = "runs/bench_selfplay"
    """where bench.json is written"""


def device_counts(args: Args) -> list[int]:
    """The device counts to time (``--devices``, or 1 and all devices), validated."""
    if args.alphazero.game_shards:
        raise ConfigError("game_shards", "bench_selfplay splits the games over --devices; leave --game-shards at 0")
    counts = list(dict.fromkeys(args.devices or (1, jax.device_count())))
    for count in counts:
        if not 1 <= count <= jax.device_count():
            raise ConfigError("devices", f"{count} is not between 1 and the {jax.device_count()} devices here")
        if args.alphazero.selfplay_games % count:
            raise ConfigError("devices", f"selfplay_games {args.alphazero.selfplay_games} does not split over {count} devices")
    return counts


def example_dir(path: str | None) -> Path:
    """The folder with the example's ``train.py`` (also found under ``examples/alphazero``)."""
    if path is None:
        raise ConfigError("pgx_example", "give the folder of pgx's examples/alphazero with --pgx-python")
    for folder in (Path(path), Path(path) / "examples" / "alphazero"):
        if (folder / "train.py").is_file() and (folder / "network.py").is_file():
            return folder.resolve()
    raise ConfigError("pgx_example", f"no train.py and network.py of pgx's AlphaZero example in {path}")


def time_random_play(game: str, batch: int, steps: int, repeats: int, seed: int) -> dict[str, float]:
    """Median env steps/s (and finished games/s) of a compiled scan of uniformly random legal moves
    over ``batch`` games of ``game``, each finished game restarted at once."""
    env = games.make_game(game)
    length = max(1, steps // batch)
    init, step = jax.vmap(env.init), jax.vmap(env.step)

    def play(key: jax.Array) -> jax.Array:
        init_key, key = jax.random.split(key)

        def move(state: Any, key: jax.Array) -> tuple[Any, jax.Array]:
            action_key, step_key, reset_key = jax.random.split(key, 3)
            logits = jnp.where(state.legal_action_mask, 0.0, -jnp.inf)
            action = jax.random.categorical(action_key, logits, axis=-1)
            after = step(state, action, jax.random.split(step_key, batch))
            ended = after.terminated | after.truncated
            fresh = init(jax.random.split(reset_key, batch))
            state = envs.tree_where(ended, fresh, after)
            return state, ended.sum()

        _, finished = jax.lax.scan(move, init(jax.random.split(init_key, batch)), jax.random.split(key, length))
        return finished.sum()

    tick = time.perf_counter()
    compiled = jax.jit(play).lower(jax.random.PRNGKey(seed)).compile()
    compile_seconds = time.perf_counter() - tick
    jax.block_until_ready(compiled(jax.random.PRNGKey(seed)))  # warm-up
    times, finished = [], []
    for run in range(repeats):
        tick = time.perf_counter()
        finished.append(int(jax.block_until_ready(compiled(jax.random.PRNGKey(seed + 1 + run)))))
        times.append(time.perf_counter() - tick)
    seconds = statistics.median(times)
    return {"env_steps_per_second": length * batch / seconds, "games_per_second": statistics.median(finished) / seconds,
            "compile_seconds": compile_seconds}


def compile_selfplay(game: str, config: alphazero.AlphaZeroConfig, devices: int, seed: int, reuse: bool = True,
                     warm_calls: int = 0):
    """Our AlphaZero self-play over ``devices`` devices, compiled: ``(run(key), seconds)`` where
    ``run`` plays ``selfplay_steps`` searched moves in each of ``selfplay_games`` games, fresh or
    those left by ``warm_calls`` untimed calls (``reuse``: ``make_selfplay``'s ``reuse_evaluations``)."""
    env, network = alphazero.make_network(game, config)
    net_key, game_key = jax.random.split(jax.random.PRNGKey(seed))
    params = network.init(net_key, jnp.zeros((1, *env.observation_shape)))
    initial = jax.vmap(env.init)(jax.random.split(game_key, config.selfplay_games))
    tick = time.perf_counter()
    if devices == 1:
        selfplay = jax.jit(alphazero.make_selfplay(env, network, config, reuse))
        compiled = selfplay.lower(params, initial, jax.random.PRNGKey(seed)).compile()

        def run(key: jax.Array) -> Any:
            return compiled(params, initial, key)
    else:  # each device plays its share of the games
        local = alphazero.make_selfplay(env, network, dataclasses.replace(
            config, selfplay_games=config.selfplay_games // devices), reuse)
        mesh = Mesh(np.array(jax.devices()[:devices]), (AXIS,))
        split = PartitionSpec(AXIS)

        def per_device(params: Any, game_state: Any, keys: jax.Array) -> Any:
            return local(params, game_state, keys[0])

        selfplay = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(PartitionSpec(), split, split),
                                         out_specs=(split, PartitionSpec(None, AXIS)), check_vma=False))
        params = jax.device_put(params, NamedSharding(mesh, PartitionSpec()))
        initial = jax.device_put(initial, NamedSharding(mesh, split))
        keys_sharding = NamedSharding(mesh, split)
        keys = jax.device_put(jax.random.split(jax.random.PRNGKey(seed), devices), keys_sharding)
        compiled = selfplay.lower(params, initial, keys).compile()

        def run(key: jax.Array) -> Any:
            return compiled(params, initial, jax.device_put(jax.random.split(key, devices), keys_sharding))
    seconds = time.perf_counter() - tick
    # `run` reads `initial` when it is called, so each warm call moves the start of the timed calls;
    # the keys depend on the seed only, so every variant warms up with the same moves
    for call in range(warm_calls):
        initial = run(jax.random.fold_in(jax.random.PRNGKey(seed), 1_000_000 + call))[0]
    return run, seconds


def peer_environment(devices: int) -> dict[str, str]:
    """The peer's environment: on the CPU, ``devices`` host devices for its ``pmap``."""
    env = dict(os.environ)
    env.pop("JAX_NUM_CPU_DEVICES", None)
    if jax.default_backend() == "cpu":
        flags = re.sub(r"--xla_force_host_platform_device_count=\S+", "", env.get("XLA_FLAGS", ""))
        env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices}".strip()
    return env


def run_peer(python: str, folder: Path, args: Args, devices: int) -> dict[str, Any] | None:
    """One timing of the example's ``selfplay`` in its own venv (a fresh process): the peer script's
    JSON line, or None (its stderr shown) if it failed."""
    settings = {"env_id": args.game, "seed": args.seed, "selfplay_batch_size": args.alphazero.selfplay_games,
                "max_num_steps": args.alphazero.selfplay_steps, "num_simulations": args.alphazero.num_simulations,
                "num_channels": args.alphazero.channels, "num_layers": args.alphazero.blocks}
    result = subprocess.run([python, str(PEER_SCRIPT), str(folder), json.dumps(settings), "1"], capture_output=True,
                            text=True, timeout=3600, env=peer_environment(devices))
    if result.returncode != 0:
        print(f"peer {PEER_SCRIPT.name} failed:\n{result.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(args: Args) -> dict[str, Any]:
    """Run all timings, write ``bench.json`` and print a table."""
    config = args.alphazero
    config.validate()
    games.make_game(args.game)
    counts = device_counts(args)
    folder = example_dir(args.pgx_example) if args.pgx_python else None
    if args.repeats < 1:
        raise ConfigError("repeats", f"must be >= 1, got {args.repeats}")
    if args.warm_calls < 0:
        raise ConfigError("warm_calls", f"must be >= 0, got {args.warm_calls}")

    rows: list[dict[str, Any]] = []
    result: dict[str, Any] = {
        "device": f"{jax.devices()[0].device_kind} x {jax.device_count()}", "game": args.game,
        "settings": {"num_simulations": args.alphazero.num_simulations, "selfplay_games": args.alphazero.selfplay_games,
                     "selfplay_steps": args.alphazero.selfplay_steps, "channels": args.alphazero.channels, "blocks": args.alphazero.blocks,
                     "max_considered_actions": config.max_considered_actions, "random_batch": args.random_batch,
                     "repeats": args.repeats, "warm_calls": args.warm_calls},
    }
    if args.random_steps:
        random_play = time_random_play(args.game, args.random_batch, args.random_steps, args.repeats, args.seed)
        rows.append({"what": f"random play, {args.random_batch} games, 1 device", **random_play})

    positions = args.alphazero.selfplay_games * args.alphazero.selfplay_steps
    peer_versions = None
    # ablations of ours, timed in turn with the default: name -> (config, reuse, name of the gain)
    ablations = {}
    if args.fresh_roots:
        ablations["fresh_roots"] = (config, False, "reuse_gain")
    if args.every_board:
        ablations["every_board"] = (dataclasses.replace(config, distinct_chunks=0), True, "distinct_gain")
    for devices in counts:
        run, compile_seconds = compile_selfplay(args.game, config, devices, args.seed, warm_calls=args.warm_calls)
        ablation_runs = {name: compile_selfplay(args.game, setting, devices, args.seed, reuse, args.warm_calls)[0]
                         for name, (setting, reuse, _) in ablations.items()}
        for timed in (run, *ablation_runs.values()):
            jax.block_until_ready(timed(jax.random.PRNGKey(args.seed)))  # warm-up
        ours, peer = [], []
        ablation_rates: dict[str, list[float]] = {name: [] for name in ablations}

        def rate(timed: Any, key: jax.Array) -> float:
            tick = time.perf_counter()
            jax.block_until_ready(timed(key))
            return positions / (time.perf_counter() - tick)

        for repeat in range(args.repeats):  # alternate ours (and its ablations) and the peer
            key = jax.random.PRNGKey(args.seed + 1 + repeat)
            ours.append(rate(run, key))
            for name, timed in ablation_runs.items():
                ablation_rates[name].append(rate(timed, key))
            if folder is not None:
                peer.append(run_peer(args.pgx_python, folder, args, devices))
        del run, ablation_runs
        row: dict[str, Any] = {
            "what": f"AlphaZero self-play, {args.alphazero.selfplay_games} games x {args.alphazero.selfplay_steps} moves x "
                    f"{args.alphazero.num_simulations} sims, {devices} device(s)"
                    + (f", after {args.warm_calls} untimed calls" if args.warm_calls else ""),
            "devices": devices, "positions_per_second": statistics.median(ours), "compile_seconds": compile_seconds,
            "positions_per_second_runs": ours,
        }
        for name, rates in ablation_rates.items():
            row.update({f"{name}_positions_per_second": statistics.median(rates), f"{name}_runs": rates,
                        ablations[name][2]: row["positions_per_second"] / statistics.median(rates)})
        peer = [p for p in peer if p]
        if peer:
            peer_sps = statistics.median(p["positions_per_second"] for p in peer)
            row.update(pgx_positions_per_second=peer_sps,
                       pgx_compile_seconds=statistics.median(p["compile_seconds"] for p in peer),
                       ratio_vs_pgx=row["positions_per_second"] / peer_sps,
                       pgx_positions_per_second_runs=[p["positions_per_second"] for p in peer],
                       pgx_devices=peer[0]["devices"])
            peer_versions = peer[0]["versions"]
            if peer[0]["devices"] != devices:
                print(f"warning: the peer ran on {peer[0]['devices']} device(s), ours on {devices}", file=sys.stderr)
        rows.append(row)

    result["rows"] = rows
    if peer_versions:
        result["pgx_example"] = {"path": str(folder), "versions": peer_versions}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records.write_json(out / "bench.json", result)
    columns = ["what", "env_steps_per_second", "positions_per_second", "compile_seconds",
               *(column for name, (_, _, gain) in ablations.items() for column in (f"{name}_positions_per_second", gain)),
               "pgx_positions_per_second", "pgx_compile_seconds", "ratio_vs_pgx"]
    print(f"device: {result['device']}, game: {args.game}")
    print(format_table(rows, columns))
    return result


if __name__ == "__main__":
    cli(main, Args, __doc__)
