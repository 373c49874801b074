"""Evolution strategies over whole training lifetimes (evosax 0.3), with checkpoints and resume.

``evolve`` runs a loop of generations: ask the strategy for a population, score every member on
every task with ``fitness_fn`` (one vmapped computation over the population, sharded over the
devices of all hosts by ``rl.sharding``), normalise each task's fitness over the population (so
environments with different return scales weigh the same), and tell the strategy. evosax
minimises, so it is told the negated fitness. The ES mean is scored beside the population every
generation: its fitness is the honest measure of progress (members are perturbed copies).

Every generation draws its keys from ``fold_in(seed key, generation)``, so a resumed run repeats an
uninterrupted one exactly.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from evosax.algorithms import distribution_based_algorithms
from tqdm.auto import tqdm

from rl import sharding
from rl.checkpoint import Checkpoints
from rl.errors import ConfigError, RunError

# fitness_fn(members, keys) -> fitness [members, tasks]; members and keys batched on axis 0
FitnessFn = Callable[[Any, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class ESConfig:
    """Evolution-strategy settings (defaults: OpenAI-ES as in LPO's meta-training, shorter)."""

    strategy: str = "Open_ES"
    """any distribution-based evosax 0.3 algorithm by name (Open_ES, SNES, CMA_ES, PGPE, ...)"""
    population: int = 32
    """members per generation (even with antithetic sampling)"""
    generations: int = 64
    """generations of meta-training"""
    sigma: float = 0.04
    """Open_ES: initial standard deviation of the perturbations"""
    sigma_final: float = 0.01
    """Open_ES: standard deviation reached (linearly) at the last generation"""
    lr: float = 0.01
    """Open_ES: initial Adam learning rate of the ES mean"""
    lr_final: float = 0.001
    """Open_ES: learning rate reached (linearly) at the last generation"""
    antithetic: bool = True
    """Open_ES: antithetic pairs (i, i + P/2) of perturbations"""
    common_seeds: bool = True
    """all members of a generation (and the ES mean) train and evaluate with the same random keys,
    so their fitness differs by their parameters, not by luck (a new key every generation)"""

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the first invalid field."""
        if self.strategy not in distribution_based_algorithms:
            raise ConfigError("strategy", f"unknown evosax strategy {self.strategy!r}; known: "
                              f"{', '.join(sorted(distribution_based_algorithms))}")
        if self.population < 2:
            raise ConfigError("population", f"must be at least 2, got {self.population}")
        if self.strategy == "Open_ES" and self.antithetic and self.population % 2:
            raise ConfigError("population", f"antithetic sampling pairs members: must be even, got {self.population}")
        if self.generations < 1:
            raise ConfigError("generations", f"must be a positive integer, got {self.generations}")
        for name in ("sigma", "sigma_final", "lr", "lr_final"):
            if not getattr(self, name) > 0:
                raise ConfigError(name, f"must be > 0, got {getattr(self, name)}")


def make_strategy(config: ESConfig, solution: Any) -> Any:
    """The evosax algorithm ``config`` names, for solutions shaped like ``solution``. Open_ES gets
    Adam with a linearly decaying learning rate and standard deviation and centred-rank shaping
    (evosax's default); other strategies run with evosax's default settings."""
    config.validate()
    if config.strategy == "Open_ES":
        steps = max(config.generations - 1, 1)
        return distribution_based_algorithms["Open_ES"](
            config.population,
            solution,
            use_antithetic_sampling=config.antithetic,
            optimizer=optax.adam(optax.linear_schedule(config.lr, config.lr_final, steps)),
            std_schedule=optax.linear_schedule(config.sigma, config.sigma_final, steps),
        )
    return distribution_based_algorithms[config.strategy](config.population, solution)


def normalize_per_task(fitness: np.ndarray) -> np.ndarray:
    """Each task's (column's) fitness standardised over the population, then averaged over tasks."""
    fitness = np.asarray(fitness, np.float64)
    std = fitness.std(axis=0)
    z = (fitness - fitness.mean(axis=0)) / np.where(std > 0, std, 1.0)
    return z.mean(axis=1)


@dataclasses.dataclass
class EvolutionResult:
    """The final ES mean (the discovered solution) and one record per generation."""

    mean: Any
    history: list[dict[str, Any]]
    seconds: float
    compile_seconds: float


def evolve(
    config: ESConfig,
    solution: Any,
    fitness_fn: FitnessFn,
    task_names: list[str],
    out: Path,
    seed: int = 0,
    resume: bool = False,
    progress: bool = True,
    checkpoint_seconds: float = 60.0,
    on_generation: Callable[[list[dict[str, Any]]], None] | None = None,
    devices: list[Any] | None = None,
) -> EvolutionResult:
    """Evolve ``solution`` (the ES mean's starting point) for ``config.generations`` generations.

    ``fitness_fn(members, keys)`` returns the raw fitness ``[members, len(task_names)]`` (maximised);
    it is vmapped and sharded here. Checkpoints (ES state + history) go to ``out/checkpoints``;
    ``resume`` continues from the newest one. Each generation's record holds the population's mean
    and best fitness (averaged over tasks), the ES mean's fitness, and per-task values;
    ``on_generation(history)`` sees all records so far after every generation. ``devices``
    (default: all) are those the population is sharded over.
    """
    strategy = make_strategy(config, solution)
    init_key, base_key = jax.random.split(jax.random.PRNGKey(seed))
    state = strategy.init(init_key, solution, strategy.default_params)
    checkpoints = Checkpoints(out / "checkpoints")
    history: list[dict[str, Any]] = []
    start = 0
    if resume:
        start, state, meta = checkpoints.restore_latest(jax.tree.map(np.asarray, state))
        history = meta["history"][:start]
    elif checkpoints.latest_step() is not None:
        raise RunError(f"{out} already holds checkpoints: pass --resume or choose another --out")

    members = config.population + 1  # the population and the ES mean
    mesh = sharding.batch_mesh(members, devices)
    size = sharding.padded_size(members, mesh)
    scores = sharding.map_over_runs(fitness_fn, mesh)
    compile_seconds, began, last_save = 0.0, time.time(), time.time()
    bar = tqdm(total=config.generations, initial=start, disable=not progress or jax.process_index() != 0,
               desc="generations")
    for generation in range(start, config.generations):
        ask_key, eval_key, tell_key = jax.random.split(jax.random.fold_in(base_key, generation), 3)
        population, state = strategy.ask(ask_key, state, strategy.default_params)
        batch = jax.tree.map(lambda p, m: np.concatenate([np.asarray(p), np.asarray(m)[None]]),
                             population, strategy.get_mean(state))
        keys = np.asarray(jax.random.split(eval_key, 1 if config.common_seeds else members))
        keys = np.repeat(keys, members, axis=0) if config.common_seeds else keys
        tick = time.time()
        inputs = sharding.shard_runs(sharding.pad_runs((batch, keys), size), mesh)
        fitness = sharding.to_host(scores(*inputs))[:members].astype(np.float64)
        if generation == start:
            compile_seconds = time.time() - tick
        if not np.isfinite(fitness).all():
            raise RunError(f"generation {generation}: non-finite fitness of members "
                           f"{np.flatnonzero(~np.isfinite(fitness).all(1)).tolist()}")
        member_fitness = fitness[:-1]
        shaped = normalize_per_task(member_fitness) if len(task_names) > 1 else member_fitness[:, 0]
        state, _ = strategy.tell(tell_key, population, jnp.asarray(-shaped, jnp.float32), state,
                                 strategy.default_params)
        record = {
            "generation": generation,
            "mean": float(member_fitness.mean()),
            "best": float(member_fitness.mean(1).max()),
            "es_mean": float(fitness[-1].mean()),
            "per_task": {name: {"mean": float(member_fitness[:, i].mean()), "best": float(member_fitness[:, i].max()),
                                "es_mean": float(fitness[-1, i])} for i, name in enumerate(task_names)},
            "seconds": time.time() - began,
        }
        history.append(record)
        bar.update(1)
        bar.set_postfix(mean=f"{record['mean']:.1f}", es_mean=f"{record['es_mean']:.1f}")
        if on_generation is not None:
            on_generation(history)
        done = generation + 1
        if done == config.generations or time.time() - last_save >= checkpoint_seconds:
            checkpoints.save(done, jax.tree.map(np.asarray, state), {"history": history})
            last_save = time.time()
    bar.close()
    checkpoints.close()
    return EvolutionResult(strategy.get_mean(state), history, time.time() - began, compile_seconds)
