"""LPG and TA-LPG in the discovery and evaluation entry points (used by experiments.discover and
experiments.evaluate_objective; not a command of its own).

Meta-training tasks are a fixed set of random grid worlds (``meta.lpg.sample_task``: size, objects,
rewards, termination and respawn, episode length, lifetime N), drawn from the seed, so fitness is
comparable across generations; each member's fitness on a world is the final policy's return after
a whole lifetime driven by its LPG network. The truncated meta-gradient baseline trains the same
network by gradients through windows of agent updates, for the same number of agent updates as the
ES run, and is scored on the same worlds. Held-out evaluation draws new worlds.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from meta import lpg
from meta.es import EvolutionResult
from rl import records
from rl.objectives import read_info, restore_params, save_params
from rl.ppo import PPOConfig, default_hparams, evaluate, make_train

LPG_KINDS = ("lpg", "ta_lpg")
META_TRAINING_WORLDS = 4
HELD_OUT_OFFSET = 10_000  # held-out worlds come from seed + this offset


def lpg_config(args: Any) -> lpg.LPGConfig:
    """The LPG settings of a discovery run: ``meta.lpg.LPGConfig`` defaults (CPU scale) with the
    run's GRU size, longest lifetime and evaluation episodes; TA-LPG for ``ta_lpg``."""
    config = lpg.LPGConfig(temporal=args.objective == "ta_lpg", eval_episodes=args.eval_episodes,
                           gru_size=args.lpg_gru_size, max_updates=args.lpg_max_updates)
    config.validate()
    return config


def training_tasks(config: lpg.LPGConfig, seed: int, count: int = META_TRAINING_WORLDS) -> lpg.Task:
    """``count`` random worlds with their lifetimes, batched on axis 0."""
    return jax.vmap(lambda k: lpg.sample_task(k, config))(jax.random.split(jax.random.PRNGKey(seed), count))


def tasks_fitness(config: lpg.LPGConfig, tasks: lpg.Task):
    """``fitness(lpg_params, key) -> [worlds]``: one lifetime per world."""
    lifetime = lpg.make_lifetime(config)

    def fitness(params: Any, key: jax.Array) -> jax.Array:
        keys = jax.random.split(key, tasks.num_updates.shape[0])
        return jax.vmap(lifetime, in_axes=(None, 0, 0))(params, keys, tasks)

    return fitness


def save_lpg(out: Path, kind: str, params: Any, config: lpg.LPGConfig, info: dict[str, Any]) -> Path:
    """The LPG network's params and settings, stored as every discovered objective is."""
    return save_params(out, kind, params, {"lpg_config": dataclasses.asdict(config), **info})


def load_lpg(directory: str | Path) -> tuple[str, lpg.LPGConfig, Any]:
    """``(kind, config, params)`` of an LPG network saved by ``save_lpg``."""
    info = read_info(directory)
    settings = {k: tuple(v) if isinstance(v, list) else v for k, v in info["lpg_config"].items()}
    config = lpg.LPGConfig(**settings)
    return info["kind"], config, restore_params(directory, lpg.init_lpg_params(jax.random.PRNGKey(0), config))


def lpg_problem(args: Any) -> tuple[Any, Any, list[str], int, Any]:
    """(starting LPG params, fitness, world names, agent env steps per member, save) for the ES."""
    config = lpg_config(args)
    tasks = training_tasks(config, args.seed, args.lpg_worlds)
    names = [f"world{i}-N{int(n)}" for i, n in enumerate(tasks.num_updates)]
    steps = int(np.sum(tasks.num_updates)) * config.num_envs * config.num_steps

    def save(out: Path, params: Any, info: dict[str, Any]) -> Path:
        return save_lpg(out, args.objective, params, config, info)

    start = lpg.init_lpg_params(jax.random.PRNGKey(args.seed), config)
    return start, tasks_fitness(config, tasks), names, steps, save


def metagradient_run(args: Any, tasks_names: list[str], on_generation: Any) -> tuple[EvolutionResult, Any]:
    """The truncated meta-gradient baseline, for as many agent updates as the ES run would do; every
    'generation' of it is scored on the ES's meta-training worlds. Returns the history (as the ES
    does, calling ``on_generation(history)`` after each) and the save function."""
    config = lpg_config(args)
    tasks = training_tasks(config, args.seed, args.lpg_worlds)
    window, lifetimes = args.meta_gradient_window, args.meta_gradient_lifetimes
    es_updates = (args.es.population + 1) * int(np.sum(tasks.num_updates))
    steps_per_generation = max(1, math.ceil(es_updates / (lifetimes * window)))
    trainer = lpg.make_metagradient_trainer(config, window, args.meta_gradient_lr, lifetimes)
    fitness = jax.jit(tasks_fitness(config, tasks))

    @jax.jit
    def chunk(state):
        return jax.lax.scan(lambda s, _: trainer.step(s), state, None, length=steps_per_generation)

    state = trainer.init(jax.random.PRNGKey(args.seed))
    state = state.replace(lpg_params=lpg.init_lpg_params(jax.random.PRNGKey(args.seed), config))  # same start as ES
    history, began, compile_seconds = [], time.time(), 0.0
    bar = tqdm(total=args.es.generations, disable=not args.progress, desc="meta-gradient generations")
    for generation in range(args.es.generations):
        tick = time.time()
        state, metrics = chunk(state)
        scores = np.asarray(fitness(state.lpg_params, jax.random.fold_in(jax.random.PRNGKey(args.seed), generation)))
        if generation == 0:
            compile_seconds = time.time() - tick
        history.append({"generation": generation, "mean": float(scores.mean()), "best": float(scores.mean()),
                        "es_mean": float(scores.mean()), "meta_loss": float(np.asarray(metrics["meta_loss"]).mean()),
                        "per_task": {n: {"mean": float(s)} for n, s in zip(tasks_names, scores, strict=True)},
                        "seconds": time.time() - began, "meta_gradient_steps": (generation + 1) * steps_per_generation})
        on_generation(history)
        bar.update(1)
        bar.set_postfix(fitness=f"{scores.mean():.2f}")
    bar.close()

    def save(out: Path, params: Any, info: dict[str, Any]) -> Path:
        return save_lpg(out, args.objective, params, config, {**info, "meta_gradient_window": window})

    return EvolutionResult(state.lpg_params, history, time.time() - began, compile_seconds), save


def evaluate_lpg(directory: str, horizons: list[int], num_seeds: int, seed: int, out: Path) -> list[dict[str, Any]]:
    """Train agents from scratch with a discovered LPG network on ``num_seeds`` held-out random
    worlds for each lifetime in ``horizons`` (agent updates), beside PPO (the core learner, same
    worlds, same number of env steps, final policy's sampled-action return)."""
    kind, config, params = load_lpg(directory)
    worlds = jax.vmap(lpg.sample_task, in_axes=(0, None))(
        jax.random.split(jax.random.PRNGKey(seed + HELD_OUT_OFFSET), num_seeds), config).world
    keys = jax.random.split(jax.random.PRNGKey(seed), num_seeds)
    table = []
    for horizon in horizons:
        sized = dataclasses.replace(config, max_updates=horizon, min_updates=min(config.min_updates, horizon))
        lifetime = jax.jit(jax.vmap(lpg.make_lifetime(sized), in_axes=(None, 0, 0)))
        tasks = lpg.Task(worlds, jnp.full((num_seeds,), horizon, jnp.int32))
        found = np.asarray(lifetime(params, keys, tasks))
        ppo_config = PPOConfig(env=lpg.ENV_ID, num_envs=config.num_envs, num_steps=config.num_steps,
                               total_timesteps=horizon * config.num_envs * config.num_steps, num_minibatches=2)
        train = make_train(ppo_config)
        base_hp = default_hparams(ppo_config)

        def ppo_run(key, world, ppo_config=ppo_config, train=train, base_hp=base_hp):
            hp = base_hp.replace(env_params=world)
            state, _ = train(key, hp)
            episodes = evaluate(state.params, ppo_config, hp, jax.random.fold_in(key, 1), config.eval_episodes,
                                greedy=False, max_steps=1000)  # episodes last at most 750 steps
            return episodes["return"].mean()

        ppo = np.asarray(jax.jit(jax.vmap(ppo_run))(keys, worlds))
        table.append({"horizon": horizon, "objective": _ci(found), "ppo": _ci(ppo), "kind": kind})
    return table


def _ci(values: np.ndarray) -> dict[str, Any]:
    mean, half = records.mean_ci95(np.asarray(values, np.float64))
    return {"mean": float(mean), "ci95": float(half), "per_seed": [float(v) for v in values]}


def plot_targets(path: Path, directory: str) -> None:
    """The learned targets pi_hat of an LPG network along a hand-made 30-step episode (reward +1 at
    step 10, -1 at step 20, termination at 29), at several lifetime progress points for TA-LPG."""
    kind, config, params = load_lpg(directory)
    steps = 30
    reward = jnp.zeros((steps, 1)).at[10, 0].set(1.0).at[20, 0].set(-1.0)
    end = jnp.zeros((steps, 1), bool).at[steps - 1, 0].set(True)
    uniform = jnp.full((steps, 1, config.y_dim), 1.0 / config.y_dim)
    plt = records.pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for progress in ((0.0, 0.5, 1.0) if config.temporal else (0.0,)):
        inputs = lpg.LPGInputs(reward, end, end, jnp.full((steps, 1), 0.25), uniform, uniform,
                               jnp.float32(progress), jnp.float32(np.log(config.max_updates)))
        pi_hat, _ = lpg.lpg_targets(params, config, inputs)
        ax.plot(np.asarray(pi_hat[:, 0]), label=f"n/N = {progress:g}" if config.temporal else kind)
    for t, r in ((10, "+1"), (20, "-1")):
        ax.axvline(t, color="grey", alpha=0.4)
        ax.text(t, ax.get_ylim()[1], f" r={r}", fontsize=8, va="top")
    ax.set_xlabel("step of the episode")
    ax.set_ylabel("pi_hat (the agent's policy-gradient weight)")
    ax.set_title(f"learned {kind} targets along a hand-made episode", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
