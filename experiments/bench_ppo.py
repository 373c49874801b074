"""Throughput of the PPO learner, with peers measured in the same run.

    python -m experiments.bench_ppo --rejax-python .peer-rejax/bin/python --sb3-python .peer-sb3/bin/python

Measures (CartPole-v1, PureJaxRL default config): env-only steps/s with random actions; PPO
training steps/s for 1, 8 and 32 seeds with compile time apart, two ways: the bare
``make_train`` (vmapped and sharded over devices as the runner does; ``import rl`` makes one CPU
device per core) and the CLI as users run it (``python -m experiments.ppo`` with its default
chunks, metrics.jsonl, checkpoints; its training-loop wall time, compile apart, from summary.json);
and, when their Python interpreters are given (or stable-baselines3 is importable here, the
optional ``bench`` extra), rejax PPO and stable-baselines3 PPO through the scripts in
../shared/bench. Commands alternate (ours, CLI, peer, ours, ...) and medians are reported, with
ratios ours / peer and compile times side by side. Also the throughput of an ES population of
discovered-objective lifetimes (TA-LPO drift objective, the fitness function of
experiments.discover: whole PPO lifetimes plus evaluation, vmapped and sharded), as inner training
env steps per second summed over the population, beside single-run PPO.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from experiments.common import cli, format_table, repeat_runs, seed_keys
from meta import lpo
from rl import envs, records, sharding
from rl.ppo import PPOConfig, default_hparams, make_train


@dataclasses.dataclass(frozen=True)
class Args:
    env: str = "CartPole-v1"
    """environment id"""
    total_timesteps: int = 500_000
    """training steps per seed for the PPO timings"""
    seeds: tuple[int, ...] = (1, 8, 32)
    """numbers of vmapped seeds to time"""
    repeats: int = 3
    """timed runs per measurement (median reported)"""
    env_only_steps: int = 1_000_000
    """steps of the random-action env-only loop"""
    rejax_python: str | None = None
    """python of a venv with rejax and gymnax<1.0 (see ../shared/bench/README.md); timed for 1 and 8 seeds"""
    sb3_python: str | None = None
    """python of a venv with stable-baselines3 (default: this one if it has it)"""
    sb3_steps: int = 20_000
    """stable-baselines3 training steps per timing"""
    peer_dir: str = str(Path(__file__).resolve().parents[2] / "shared" / "bench")
    """folder of the peer benchmark scripts"""
    cli: bool = True
    """also time the CLI (python -m experiments.ppo with its default chunks, logs and checkpoints)"""
    population: int = 32
    """ES population size of the discovered-objective timing (0: skip it)"""
    out: str = "runs/bench_ppo"
    """where bench.json is written"""


def time_env_only(env_id: str, num_envs: int, steps: int, repeats: int) -> float:
    """Median env steps/s of a compiled scan of random actions over ``num_envs`` environments."""
    env, params = envs.make_vec_env(env_id, num_envs)
    space = env.action_space(params)
    length = max(1, steps // num_envs)

    def loop(key):
        _, state = env.reset(key, params)

        def step(state, key):
            action_key, step_key = jax.random.split(key)
            actions = jax.vmap(space.sample)(jax.random.split(action_key, num_envs))
            _, state, reward, _, _, _ = env.step(step_key, state, actions, params)
            return state, reward.sum()

        return jax.lax.scan(step, state, jax.random.split(key, length))[1].sum()

    compiled = jax.jit(loop).lower(jax.random.PRNGKey(0)).compile()
    times = []
    for r in range(repeats):
        tick = time.perf_counter()
        jax.block_until_ready(compiled(jax.random.PRNGKey(r)))
        times.append(time.perf_counter() - tick)
    return length * num_envs / statistics.median(times)


def compile_ppo(env_id: str, total_timesteps: int, num_seeds: int):
    """Whole PPO training for ``num_seeds`` seeds, vmapped and sharded over devices as the runner
    does, compiled: (fn, inputs, seconds, steps, devices used)."""
    config = PPOConfig(env=env_id, total_timesteps=total_timesteps)
    mesh = sharding.batch_mesh(num_seeds)
    hparams = sharding.shard_runs(repeat_runs(default_hparams(config), num_seeds), mesh)
    keys = sharding.shard_runs(seed_keys(0, num_seeds), mesh)
    tick = time.perf_counter()
    compiled = sharding.map_over_runs(make_train(config), mesh).lower(keys, hparams).compile()
    steps = config.num_updates * config.batch_size * num_seeds
    return compiled, (keys, hparams), time.perf_counter() - tick, steps, mesh.devices.size


def compile_population(env_id: str, total_timesteps: int, population: int):
    """The TA-LPO fitness of ``population`` members (random drift networks), each a whole PPO
    lifetime of ``total_timesteps`` plus 8 evaluation episodes, vmapped and sharded as
    ``meta.es.evolve`` does, compiled: (fn, inputs, seconds, training steps, devices used)."""
    base = PPOConfig(env=env_id, total_timesteps=total_timesteps, **lpo.LPO_INNER_SETTINGS)
    configs = lpo.inner_configs("ta_lpo", [env_id], [total_timesteps], base)
    mesh = sharding.batch_mesh(population)
    weights = jax.vmap(lambda k: lpo.drift_weights(k, temporal=True, scale=0.04))(
        jax.random.split(jax.random.PRNGKey(0), population))
    inputs = sharding.shard_runs((jax.tree.map(np.asarray, weights), seed_keys(0, population)), mesh)
    tick = time.perf_counter()
    compiled = sharding.map_over_runs(lpo.make_fitness(configs, 8), mesh).lower(*inputs).compile()
    steps = configs[0].num_updates * configs[0].batch_size * population
    return compiled, inputs, time.perf_counter() - tick, steps, mesh.devices.size


def run_peer(python: str, script: Path, *args: int) -> dict[str, float] | None:
    """One peer timing (its script prints a JSON line with env_steps_per_second, and for rejax
    compile_plus_run and run)."""
    result = subprocess.run([python, str(script), *map(str, args)], capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        print(f"peer {script.name} failed:\n{result.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_cli(env_id: str, total_timesteps: int, seeds: int, out: Path) -> dict[str, float]:
    """``python -m experiments.ppo`` with its defaults (chunks, logs, checkpoints, evaluation):
    summary.json's training-loop throughput and compile time, and the command's wall time."""
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "experiments.ppo", "--env", env_id, "--total-timesteps", str(total_timesteps),
               "--num-seeds", str(seeds), "--out", str(out), "--no-progress"]
    tick = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=Path(__file__).resolve().parents[1])
    wall = time.perf_counter() - tick
    summary = json.loads((out / "summary.json").read_text())
    return {"env_steps_per_second": summary["env_steps_per_second"], "compile_seconds": summary["compile_seconds"],
            "wall_seconds": wall}


def main(args: Args) -> dict[str, Any]:
    """Run all timings and write ``bench.json``; prints a table."""
    peer_dir = Path(args.peer_dir)
    sb3_python = args.sb3_python or (sys.executable if importlib.util.find_spec("stable_baselines3") else None)
    rows: list[dict[str, Any]] = []
    result: dict[str, Any] = {"device": f"{jax.devices()[0].device_kind} x {jax.device_count()}", "env": args.env, "total_timesteps": args.total_timesteps}

    for num_envs in (4, 1024):
        sps = time_env_only(args.env, num_envs, args.env_only_steps, args.repeats)
        rows.append({"what": f"env only, random actions, {num_envs} envs", "env_steps_per_second": sps})

    sb3: list[float] = []
    for seeds in args.seeds:
        compiled, inputs, compile_s, steps, devices = compile_ppo(args.env, args.total_timesteps, seeds)
        ours, cli_runs, rejax = [], [], []
        for _ in range(args.repeats):  # alternate ours, the CLI and the peers
            tick = time.perf_counter()
            jax.block_until_ready(compiled(*inputs))
            ours.append(steps / (time.perf_counter() - tick))
            if args.cli:
                cli_runs.append(run_cli(args.env, args.total_timesteps, seeds, Path(args.out) / "cli_run"))
            if args.rejax_python and seeds in (1, 8):
                rejax.append(run_peer(args.rejax_python, peer_dir / "rejax_ppo_bench.py", args.total_timesteps, seeds))
            if sb3_python and seeds == 1:
                sb3.append(run_peer(sb3_python, peer_dir / "sb3_ppo_bench.py", args.sb3_steps))
        rejax = [r for r in rejax if r]
        rejax_sps = statistics.median(r["env_steps_per_second"] for r in rejax) if rejax else None
        rejax_compile = statistics.median(r["compile_plus_run"] - r["run"] for r in rejax) if rejax else None
        measured = [(f"PPO train, {seeds} seed(s) on {devices} device(s)", statistics.median(ours), compile_s)]
        if cli_runs:
            measured.append((f"CLI experiments.ppo, {seeds} seed(s)",
                             statistics.median(r["env_steps_per_second"] for r in cli_runs),
                             statistics.median(r["compile_seconds"] for r in cli_runs)))
        for what, sps, compile_seconds in measured:
            row = {"what": what, "env_steps_per_second": sps, "compile_seconds": compile_seconds}
            if rejax_sps:
                row.update(rejax_steps_per_second=rejax_sps, rejax_compile_seconds=rejax_compile,
                           ratio_vs_rejax=sps / rejax_sps)
            rows.append(row)
        if cli_runs:
            rows[-1]["cli_wall_seconds"] = statistics.median(r["wall_seconds"] for r in cli_runs)
        del compiled

    if args.population:
        population_timing = compile_population(args.env, args.total_timesteps, args.population)
        single_timing = compile_ppo(args.env, args.total_timesteps, 1)
        pop_sps, one_sps = [], []
        for _ in range(args.repeats):  # alternate the population and the single run
            for timing, store in ((population_timing, pop_sps), (single_timing, one_sps)):
                compiled, inputs, _, steps, _ = timing
                tick = time.perf_counter()
                jax.block_until_ready(compiled(*inputs))
                store.append(steps / (time.perf_counter() - tick))
        rows.append({"what": "PPO train, 1 seed, timed beside the population",
                     "env_steps_per_second": statistics.median(one_sps), "compile_seconds": single_timing[2]})
        rows.append({"what": f"ES population: {args.population} TA-LPO lifetimes on {population_timing[4]} device(s)",
                     "env_steps_per_second": statistics.median(pop_sps), "compile_seconds": population_timing[2],
                     "ratio_vs_single_run": statistics.median(pop_sps) / statistics.median(one_sps)})

    sb3 = [s["env_steps_per_second"] for s in sb3 if s]
    if sb3:
        sb3_sps = statistics.median(sb3)
        rows.append({"what": "stable-baselines3 PPO (torch CPU), 1 seed", "env_steps_per_second": sb3_sps})
        for row in rows:
            if row["what"].startswith(("PPO train", "CLI")):
                row["ratio_vs_sb3"] = row["env_steps_per_second"] / sb3_sps
    result["rows"] = rows
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records.write_json(out / "bench.json", result)
    columns = ["what", "env_steps_per_second", "compile_seconds", "rejax_steps_per_second", "rejax_compile_seconds",
               "ratio_vs_rejax", "ratio_vs_sb3", "cli_wall_seconds", "ratio_vs_single_run"]
    print(f"device: {result['device']}")
    print(format_table(rows, columns))
    return result


if __name__ == "__main__":
    cli(main, Args, __doc__)
