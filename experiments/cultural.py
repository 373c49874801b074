"""Cultural accumulation: ``python -m experiments.cultural --env memory_sequence --mode in_context``.

Reproduces the generation studies of "Artificial Generational Intelligence: Cultural Accumulation
in Reinforcement Learning" (../shared/specs/cultural-accumulation.md) with the core PPO learner
and ``meta.cultural``'s generation loops:

- ``--mode in_context``: trains an RL^2 agent (recurrent PPO with the spec's PPO settings; a
  smaller net than the spec's by default, which ``--torso-sizes 128 256 --gru-size 256
  --hidden-sizes 128 128`` restores) against noisy-oracle demonstrators (for TSP ordered best
  first by default, as the generations order theirs: ``--sort-oracles``), then runs
  ``--generations`` episodic generations on fixed tasks. Baselines at equal experience: the
  agent evaluated for ``generations x num_trials`` trials in one episode, an agent trained on
  that many trials evaluated the same way, and the noisy oracle (an agent copying one
  always-visible oracle of the unordered draw).
- ``--mode in_weights``: ``--generations`` train-time generations of a population, each trained
  for ``--steps-per-generation`` while observing the previous generation; baseline: a population
  trained for one lifetime of all generations' steps, and the noisy oracle. A generation starts
  from the previous generation's agent with the layer groups of ``--reset-layers``
  reinitialised (the paper's optional layer resets: the heads by default; ``torso gru heads``
  trains every generation from scratch). The demonstrators' visibility falls linearly from 1 to
  0 by ``--visible-until`` (a fraction of each generation's training; the spec's 1 by default),
  and the learning rate stays constant in weights (``--anneal-lr True`` anneals it as in context).

Scores are per trial, higher is better: Memory Sequence, correct digits before the first
mistake; TSP and Goal Sequence, the trial's return. A generation's score is its agents' mean
score in their last trial (in weights: an episode played alone), averaged over tasks; the table
gives the mean and 95% confidence interval over ``--num-seeds`` independent studies.

Writes config.json, a runner directory per trained agent (metrics.jsonl, checkpoints; --resume
continues them), summary.json (``generation_scores``, ``generation_ci95``, ``baselines``...) and
generations.png to --out, and prints the table. The defaults are scaled down for a 2-core CPU
(1e6 training steps instead of 8e6 with a learning rate of 1e-3 instead of 2.5e-4, 3 in-weights
generations instead of 8, the smaller net); ``--total-timesteps 8000000 --lr 2.5e-4
--generations 8`` and the net flags above restore the spec's.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from experiments.common import cli, format_table, repeat_runs, seed_keys
from meta import cultural
from rl import envs, records, runner
from rl.cultural.base import env_id
from rl.errors import ConfigError
from rl.ppo import PPOConfig, default_hparams, make_learner

ENVS = ("memory_sequence", "tsp", "goal_sequence")
# Per env: PPO entropy, in-context generations, training oracles best first; evaluation's generation-0 oracles.
ENV_DEFAULTS = {
    "memory_sequence": {"ent_coef": 0.03, "generations": 8, "sort_oracles": False, "eval_params": {}},
    "tsp": {"ent_coef": 0.05, "generations": 8, "sort_oracles": True, "eval_params": {"fixed_temperature": 10.0}},
    "goal_sequence": {"ent_coef": 0.03, "generations": 7, "sort_oracles": False, "eval_params": {}},
}
IN_WEIGHTS_GENERATIONS = 3  # scaled down from the spec's 8 for the CPU (--generations 8)


@dataclasses.dataclass(frozen=True)
class Args:
    env: str = "memory_sequence"
    """memory_sequence, tsp or goal_sequence"""
    mode: str = "in_context"
    """in_context (episodic generations) or in_weights (train-time generations)"""
    out: str | None = None
    """run directory (default runs/cultural/<time>)"""
    seed: int = 0
    """base random seed of the study"""
    num_seeds: int = 5
    """independent studies (agents trained and evaluated from scratch) for the 95% CIs"""
    resume: bool = False
    """continue the study in --out: finished trainings are reused, unfinished ones resume"""
    generations: int = 0
    """generations (0: in context the spec's 8, Goal Sequence 7; in weights 3, the spec's 8 scaled down)"""
    seq_len: int | None = None
    """Memory Sequence: digits in the sequence (spec: 24)"""
    num_digits: int | None = None
    """Memory Sequence: digit types (spec: 3 in context, 10 in weights)"""
    num_cities: int | None = None
    """TSP: cities (spec: 6)"""
    grid_size: int | None = None
    """Goal Sequence: grid side (spec: 7)"""
    num_trials: int | None = None
    """trials per episode (spec: 4 Memory Sequence and Goal Sequence in context, 8 TSP; 1 in weights)"""
    total_timesteps: int = 1_000_000
    """in context: environment steps of each RL^2 agent's training (spec: 8e6)"""
    steps_per_generation: int = 100_000
    """in weights: environment steps of each generation's training (spec: 1e5)"""
    population: int | None = None
    """in weights: agents per generation, all observed by the next (default: the spec's 5)"""
    reset_layers: tuple[str, ...] = ("heads",)
    """in weights: layer groups (torso, gru, heads) initialised afresh in each generation; the others
    start from the previous generation's agent in the same population slot (default: the heads, the
    paper's optional layer resets; ``torso gru heads``: every generation from scratch)"""
    visible_until: float = 1.0
    """in weights: the fraction of each generation's training at which the demonstrators' visibility,
    annealed linearly from 1, reaches 0 (spec: 1, the end of training); the rest is practice alone"""
    anneal_lr: bool | None = None
    """anneal the learning rate linearly to 0 over each training (default: in context yes, as the spec's
    PPO; in weights no, so each generation practises alone, once the visibility has faded, at the full
    rate; see the README's in-weights results)"""
    eval_tasks: int = 64
    """in context: fixed tasks each generation is evaluated on"""
    lr: float = 1e-3
    """PPO learning rate, annealed (spec: 2.5e-4 over 8e6 steps; 1e-3 suits the CPU's 1e6: an agent
    then holds 3.7 digits of Memory Sequence after training, against 2.5 at 2.5e-4)"""
    num_envs: int = 16
    """parallel environments per agent"""
    num_steps: int = 128
    """rollout length"""
    num_minibatches: int = 8
    """minibatches per epoch (of whole environment sequences)"""
    ent_coef: float | None = None
    """entropy bonus (default: spec's per env, 0.03; TSP 0.05)"""
    torso_sizes: tuple[int, ...] = (128,)
    """dense layers before the GRU (the spec's RL^2 net: 128 256, 6x slower to train on the CPU)"""
    gru_size: int = 128
    """GRU size (spec: 256)"""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """actor and critic heads (spec: 128 128)"""
    greedy: bool = True
    """in context: agents act greedily in the generations and baselines (--no-greedy: they sample
    their actions, so learners of one generation differ and the best trial is selected)"""
    sort_oracles: bool | None = None
    """in context: the training oracles of an episode stand best first, as the generations order
    their demonstrators by score (default: TSP True, Memory Sequence False)"""
    progress: bool = True
    """progress bars over training and generations"""

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the first bad flag, before anything compiles."""
        if self.env not in ENVS:
            raise ConfigError("env", f"must be one of {', '.join(ENVS)}, got {self.env!r}")
        if self.mode not in ("in_context", "in_weights"):
            raise ConfigError("mode", f"must be in_context or in_weights, got {self.mode!r}")
        for name in ("num_seeds", "eval_tasks", "total_timesteps", "steps_per_generation"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be >= 1, got {getattr(self, name)}")
        if self.generations < 0:
            raise ConfigError("generations", f"must be >= 0, got {self.generations}")
        if self.mode == "in_context" and self.num_generations < 2:
            raise ConfigError("generations", f"must be >= 2 in context, got {self.generations}")
        if self.mode == "in_context" and self.num_trials is not None and self.num_trials < 2:
            raise ConfigError("num_trials", "must be >= 2 in context (the last trial is played alone)")
        unknown = sorted(set(self.reset_layers) - set(cultural.LAYER_GROUPS))
        if unknown:
            raise ConfigError("reset_layers", f"unknown layer group {unknown[0]!r}; known: {', '.join(cultural.LAYER_GROUPS)}")
        if self.sort_oracles is not None and (self.mode == "in_weights" or self.env == "goal_sequence"):
            raise ConfigError("sort_oracles", "orders the several noisy oracles of in-context training (TSP, Memory "
                              "Sequence); in weights the demonstrators are agents, the grid has one")
        if not 0.0 < self.visible_until <= 1.0:
            raise ConfigError("visible_until", f"must be in (0, 1], got {self.visible_until}")
        if self.population is not None and self.population < 1:
            raise ConfigError("population", f"must be >= 1, got {self.population}")
        if self.resume and self.out is None:
            raise ConfigError("resume", "needs --out naming the study to continue")
        envs.check_env_id(self.env_id())
        self.ppo().validate()

    @property
    def num_generations(self) -> int:
        if self.generations:
            return self.generations
        return ENV_DEFAULTS[self.env]["generations"] if self.mode == "in_context" else IN_WEIGHTS_GENERATIONS

    def env_id(self, num_trials: int | None = None) -> str:
        """The env id with the flags' sizes (``num_trials`` overriding ``--num-trials``)."""
        sizes = {"seq_len": self.seq_len, "num_digits": self.num_digits, "num_cities": self.num_cities,
                 "grid_size": self.grid_size}
        own = {"memory_sequence": ("seq_len", "num_digits"), "tsp": ("num_cities",), "goal_sequence": ("grid_size",)}
        for name, value in sizes.items():
            if value is not None and name not in own[self.env]:
                raise ConfigError(name, f"is not a size of {self.env}")
        return env_id(self.env, self.mode, **{name: sizes[name] for name in own[self.env]},
                      num_trials=num_trials or self.num_trials,
                      num_demonstrators=self.population_size if self.mode == "in_weights" else None)

    @property
    def lr_annealed(self) -> bool:
        """--anneal-lr, or the mode's default (in context: annealed; in weights: constant)."""
        return self.mode == "in_context" if self.anneal_lr is None else self.anneal_lr

    @property
    def oracles_sorted(self) -> bool:
        """--sort-oracles, or the env's default."""
        return ENV_DEFAULTS[self.env]["sort_oracles"] if self.sort_oracles is None else self.sort_oracles

    @property
    def population_size(self) -> int | None:
        """In weights: --population, else 5 (the spec's; the env's own default, except Goal Sequence's 1)."""
        return self.population or (5 if self.env == "goal_sequence" else None)

    def ppo(self, env: str | None = None, total_timesteps: int | None = None) -> PPOConfig:
        """The RL^2 agent's PPO configuration (the spec's settings)."""
        steps = self.total_timesteps if self.mode == "in_context" else self.steps_per_generation
        return PPOConfig(
            env=env or self.env_id(), total_timesteps=total_timesteps or steps, num_envs=self.num_envs,
            num_steps=self.num_steps, update_epochs=2, num_minibatches=self.num_minibatches, lr=self.lr,
            anneal_lr=self.lr_annealed, gamma=0.99, gae_lambda=0.95,
            clip_eps=0.2, ent_coef=self.ent_coef if self.ent_coef is not None else ENV_DEFAULTS[self.env]["ent_coef"],
            recurrent=True, torso_sizes=self.torso_sizes, gru_size=self.gru_size, hidden_sizes=self.hidden_sizes,
            activation="leaky_relu",
        )


def train(args: Args, config: PPOConfig, out: Path, keys: np.ndarray, throughput: dict[str, float],
          env_params: Any = None, inherited: Any = None) -> Any:
    """Train ``len(keys)`` agents of ``config`` with the core runner in ``out`` (resumed when it
    exists and --resume); ``env_params`` batched per agent (default: the env's); ``inherited``
    network params per agent, whose layers outside ``--reset-layers`` the agents start from.
    Returns their params; the training's env steps per second (over all agents) go to
    ``throughput[out.name]``."""
    learner = make_learner(config)
    kept = tuple(name for name in cultural.LAYER_GROUPS if name not in args.reset_layers)
    if inherited is not None and kept:
        learner = cultural.warm_start(learner, keys, inherited, kept)
    hparams = repeat_runs(default_hparams(config), len(keys))
    if env_params is not None:
        hparams = hparams.replace(env_params=env_params)
    resume = args.resume and (out / "config.json").exists()
    result = runner.run(learner, keys, hparams, out, {**dataclasses.asdict(config), "runs": len(keys)},
                        resume=resume, progress=args.progress)
    throughput[out.name] = runner.summarize(result)["env_steps_per_second"]
    return jax.tree.map(lambda x: x[:len(keys)], result.state.params)


def last_trial_score(trials: cultural.Trials) -> np.ndarray:
    """Mean score of the last trial over every axis but the first (seeds)."""
    scores = np.asarray(trials.scores[..., -1])
    return scores.reshape(scores.shape[0], -1).mean(axis=1)


def in_context(args: Args, out: Path, throughput: dict[str, float]) -> tuple[np.ndarray, dict[str, np.ndarray], dict]:
    """Train the RL^2 agents, run the generations, evaluate the baselines: per-seed scores."""
    config = args.ppo()
    env, env_params = envs.make(config.env)
    trials, generations = env.num_trials, args.num_generations
    long_trials = trials * generations

    def training_params(env_id: str) -> Any:
        """The env's default params with the oracles' order of --sort-oracles, one row per seed."""
        return repeat_runs(envs.make(env_id)[1].replace(sort_oracles=args.oracles_sorted), args.num_seeds)

    params = train(args, config, out / "agent", seed_keys(args.seed, args.num_seeds), throughput,
                   training_params(config.env))
    long_config = args.ppo(env=args.env_id(long_trials))
    long_params = train(args, long_config, out / f"agent_{long_trials}_trials", seed_keys(args.seed + 1, args.num_seeds),
                        throughput, training_params(long_config.env))

    eval_params = env_params.replace(**ENV_DEFAULTS[args.env]["eval_params"])
    play = cultural.make_player(config, config.env, greedy=args.greedy)
    grid = args.env == "goal_sequence"  # its demonstrator replays the best trial; generation 0 random actions
    seed_keys_eval = [jax.random.fold_in(jax.random.PRNGKey(args.seed + 2), s) for s in range(args.num_seeds)]
    seed_scores, trial_scores = [], []
    for s, key in enumerate(seed_keys_eval):
        scores = cultural.in_context_generations(
            play, jax.tree.map(lambda x, s=s: x[s], params), eval_params, generations, args.eval_tasks, key,
            keep_best=grid, random_first=env.num_actions if grid else 0, progress=args.progress)
        seed_scores.append(scores[..., -1].mean(axis=(1, 2)))  # [G]: last trial, over tasks and learners
        trial_scores.append(scores.mean(axis=(1, 2)))  # [G, T]

    # Baselines at equal experience, on the same tasks: generations x trials in one episode beside the
    # evaluation's generation-0 oracles; and an agent copying one always-visible training oracle
    # (an oracle of the env's draw: not sorted, so it is not the best of several).
    long_env, long_default = envs.make(long_config.env)
    reset_keys = jnp.stack([cultural.task_keys(key, args.eval_tasks) for key in seed_keys_eval])
    step_keys = jax.random.split(jax.random.PRNGKey(args.seed + 5), (args.num_seeds, args.eval_tasks,
                                                                      long_env.num_demonstrators))

    def evaluate(play_fn: Any, params_batch: Any, env_params: Any) -> np.ndarray:
        per_task = jax.vmap(jax.vmap(play_fn, in_axes=(None, None, None, 0)), in_axes=(None, None, 0, 0))
        per_seed = jax.jit(jax.vmap(per_task, in_axes=(0, None, 0, 0)))
        return last_trial_score(per_seed(params_batch, env_params, reset_keys, step_keys))

    long_play = cultural.make_player(config, long_config.env, greedy=args.greedy)
    long_eval = long_default.replace(**ENV_DEFAULTS[args.env]["eval_params"])
    baselines = {f"rl2_{trials}_trials": evaluate(long_play, params, long_eval),
                 f"rl2_{long_trials}_trials": evaluate(long_play, long_params, long_eval)}
    if not grid:  # a grid demonstrator's actions move it from its own start: copying them is no baseline
        copier = cultural.make_player(config, long_config.env, copy_demonstrator=True)
        baselines["noisy_oracle"] = evaluate(copier, params, long_default.replace(visibility=1.0))
    info = {"env_id": config.env, "long_env_id": long_config.env, "sort_oracles": args.oracles_sorted,
            "generation_trial_scores": np.mean(trial_scores, axis=0).round(3).tolist()}
    return np.stack(seed_scores, axis=1), baselines, info


def in_weights(args: Args, out: Path, throughput: dict[str, float]) -> tuple[np.ndarray, dict[str, np.ndarray], dict]:
    """Train-time generations and the single-lifetime baseline: per-seed scores."""
    config = args.ppo()
    env, env_params = envs.make(config.env)
    population, generations, studies = env.num_demonstrators, args.num_generations, args.num_seeds
    study_params = repeat_runs(env_params, studies).replace(
        task_seed=args.seed * 1000 + np.arange(studies), anneal_visibility=np.ones(studies, bool),
        visible_until=np.full(studies, args.visible_until, np.float32))
    learner = make_learner(config)
    init_keys = jax.random.split(jax.random.PRNGKey(args.seed + 3), studies * population)
    per_agent = jax.tree.map(lambda x: np.repeat(x, population, axis=0), study_params)
    hparams = repeat_runs(default_hparams(config), studies * population).replace(env_params=per_agent)
    initial = jax.jit(jax.vmap(learner.init))(init_keys, hparams).params
    play = cultural.make_player(config, config.env)

    def train_generation(g: int, observed: Any, previous: Any) -> Any:
        return train(args, config, out / f"generation_{g}", seed_keys(args.seed + 100 + g, studies * population),
                     throughput, observed, previous)

    scores = cultural.in_weights_generations(train_generation, play, initial, study_params, generations, population,
                                             jax.random.PRNGKey(args.seed + 4), progress=args.progress)

    # One lifetime of all generations' steps, observing generation 0's demonstrators (random agents).
    lifetime = args.ppo(total_timesteps=generations * args.steps_per_generation)

    def train_lifetime(_: int, observed: Any, __: Any) -> Any:
        return train(args, lifetime, out / "single_lifetime", seed_keys(args.seed + 99, studies * population),
                     throughput, observed)

    single = cultural.in_weights_generations(train_lifetime, play, initial, study_params, 1, population,
                                             jax.random.PRNGKey(args.seed + 4))[0]
    baselines = {"single_lifetime": single.mean(axis=1)}
    if args.env != "goal_sequence":  # an agent copying one always-visible oracle, on the study's task
        copier = jax.vmap(cultural.make_player(config, config.env, copy_demonstrator=True), in_axes=(None, None, 0, 0))
        seen = study_params.replace(visibility=np.ones(studies, np.float32), anneal_visibility=np.zeros(studies, bool))
        keys = jax.random.split(jax.random.PRNGKey(args.seed + 6), (2, studies, args.eval_tasks))
        oracle = jax.jit(jax.vmap(copier))(jax.tree.map(lambda x: x[:studies], initial), seen, keys[0], keys[1])
        baselines["noisy_oracle"] = last_trial_score(oracle)
    return scores.mean(axis=2), baselines, {"env_id": config.env, "population": population}


def summarize(args: Args, scores: np.ndarray, baselines: dict[str, np.ndarray], info: dict[str, Any],
              wall: float) -> dict[str, Any]:
    """summary.json: per-generation means and 95% CIs over seeds (``scores[G, seeds]``), baselines."""
    mean, half = records.mean_ci95(scores.astype(np.float64), axis=1)
    base = {name: records.mean_ci95(values.astype(np.float64)) for name, values in baselines.items()}
    return {
        "env": args.env, "mode": args.mode, **info,
        "env_params": {k: v for k, v in dataclasses.asdict(args).items()
                       if k in ("seq_len", "num_digits", "num_cities", "grid_size", "num_trials")},
        "score": "last-trial score, higher is better: " + {
            "memory_sequence": "correct digits before the first mistake",
            "tsp": "the trial's return (per move (sqrt 2 - distance) / sqrt 2, -1 for a revisit)",
            "goal_sequence": "the trial's return (+1 right goal, -1 wrong goal)"}[args.env],
        "generation_scores": mean.tolist(), "generation_ci95": half.tolist(),
        "generation_scores_per_seed": scores.T.tolist(),
        "baselines": {name: float(m) for name, (m, _) in base.items()},
        "baselines_ci95": {name: float(h) for name, (_, h) in base.items()},
        "baselines_per_seed": {name: values.tolist() for name, values in baselines.items()},
        "num_seeds": args.num_seeds, "num_generations": args.num_generations, "wall_seconds": wall,
    }


def plot(path: Path, summary: dict[str, Any]) -> None:
    """Per-generation score with 95% CIs, baselines as horizontal bands."""
    plt = records.pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    gens = np.arange(len(summary["generation_scores"]))
    mean, half = np.array(summary["generation_scores"]), np.array(summary["generation_ci95"])
    ax.errorbar(gens, mean, yerr=half, marker="o", capsize=3, label="generations")
    for i, (name, value) in enumerate(summary["baselines"].items()):
        ci = summary["baselines_ci95"][name]
        ax.axhline(value, color=f"C{i + 1}", linestyle="--", label=name)
        ax.axhspan(value - ci, value + ci, color=f"C{i + 1}", alpha=0.15)
    ax.set_xlabel("generation")
    ax.set_ylabel("score (last trial)")
    ax.set_title(f"{summary['env']} {summary['mode']} (n={summary['num_seeds']} seeds, 95% CI)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(args: Args) -> dict[str, Any]:
    """Run the study and write the run directory; returns the summary."""
    args.validate()
    out = Path(args.out or f"runs/cultural/{time.strftime('%Y%m%d-%H%M%S')}")
    runner.prepare_run_dir(out, dataclasses.asdict(args) | {"resume": None, "progress": None}, args.resume)
    start, throughput = time.perf_counter(), {}
    scores, baselines, info = (in_context if args.mode == "in_context" else in_weights)(args, out, throughput)
    info["training_steps_per_second"] = throughput
    summary = summarize(args, scores, baselines, info, time.perf_counter() - start)
    records.write_json(out / "summary.json", summary)
    plot(out / "generations.png", summary)
    rows = [{"": f"generation {g}", "score": f"{m:.2f} ± {h:.2f}"}
            for g, (m, h) in enumerate(zip(summary["generation_scores"], summary["generation_ci95"], strict=True))]
    rows += [{"": name, "score": f"{m:.2f} ± {summary['baselines_ci95'][name]:.2f}"}
             for name, m in summary["baselines"].items()]
    print(format_table(rows, ["", "score"]))
    print(f"{summary['score']}; mean ± 95% CI over {args.num_seeds} seeds; wall {summary['wall_seconds']:.0f} s")
    print(f"run directory: {out}")
    return summary


if __name__ == "__main__":
    cli(main, Args, __doc__)
