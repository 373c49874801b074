"""Self-play on two-player pgx board games, and an honest evaluation of the agent.

    python -m experiments.selfplay --game tic_tac_toe --algo ppo --out runs/selfplay/ttt_ppo

``--algo ppo`` trains the core PPO learner on ``pgx/<game>``: one shared policy plays both seats
against its latest self and a pool of frozen past snapshots (``--opponent-pool``), all inside the
compiled loop. ``--algo alphazero`` splits each run's games and minibatches over the devices
the other seeds leave free (``--game-shards``; rl.selfplay.alphazero). Training writes the core's
run directory (config.json, metrics.jsonl, checkpoints, ``--resume``) plus snapshots of the agent
across training (``--snapshots``).

The evaluation, in summary.json, printed and plotted (evaluation.png): win/draw/loss of the final
agent (its most likely legal move) from both seats against uniform random play and against pure
search (mctx Gumbel MuZero search with a uniform prior and random-rollout values) at each of
``--search-simulations``; an Elo table over the snapshots and the random player (maximum-likelihood
Bradley-Terry over a round robin, random = 0); for tic-tac-toe, the record against perfect play
from both seats over every optimal reply of the perfect player (exact solver, rl.selfplay.solver).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from experiments.common import RunArgs, cli, format_table, repeat_runs, seed_keys
from rl import envs, records, runner
from rl.errors import ConfigError
from rl.ppo import PPOConfig, default_hparams, make_learner
from rl.selfplay import agents, alphazero, arena, elo, games, search, solver
from rl.selfplay.alphazero import AlphaZeroConfig

ALGOS = ("ppo", "alphazero")


@dataclasses.dataclass(frozen=True)
class EvalArgs:
    """How the trained agent is evaluated."""

    eval_games: int = 256
    """games against uniform random play (half from each seat)"""
    search_simulations: tuple[int, ...] = (32, 128, 512)
    """simulations of the pure-search opponents (mctx, uniform prior, random-rollout values)"""
    search_games: int = 64
    """games against each pure-search opponent (half from each seat)"""
    elo_games: int = 64
    """games per pair of players in the Elo round robin (snapshots and random)"""


@dataclasses.dataclass(frozen=True)
class Args:
    game: str = "tic_tac_toe"
    """two-player pgx game id (tic_tac_toe, connect_four, othello, go_9x9, ...)"""
    algo: str = "ppo"
    """ppo (self-play PPO with an opponent pool) or alphazero (mctx search with a policy-value net)"""
    snapshots: int = 8
    """agent snapshots kept across training (besides the initial one) for the Elo table"""
    opening_plies: int = 4
    """(ppo) each training game opens with 0 to this many uniformly random moves (number drawn uniformly)"""
    run: RunArgs = RunArgs(num_seeds=1, eval_episodes=0)
    ppo: PPOConfig = PPOConfig(
        env="pgx/tic_tac_toe", total_timesteps=20_000_000, num_envs=256, num_steps=32, lr=3e-4, ent_coef=0.03,
        hidden_sizes=(128, 128), opponent_pool=32, pool_interval=20, latest_opponent_prob=0.3,
        random_opponent_prob=0.3,
    )
    alphazero: AlphaZeroConfig = AlphaZeroConfig()
    evaluation: EvalArgs = EvalArgs()

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the first invalid field, before anything is compiled."""
        games.make_game(self.game)
        if self.algo not in ALGOS:
            raise ConfigError("algo", f"unknown algo {self.algo!r}; known: {', '.join(ALGOS)}")
        if self.snapshots < 1:
            raise ConfigError("snapshots", f"must be >= 1, got {self.snapshots}")
        if self.opening_plies < 0:
            raise ConfigError("opening_plies", f"must be >= 0, got {self.opening_plies}")
        ev = self.evaluation
        for name in ("eval_games", "search_games", "elo_games"):
            value = getattr(ev, name)
            if value < 2 or value % 2:
                raise ConfigError(name, f"must be a positive even number (half the games per seat), got {value}")
        if any(s < 1 for s in ev.search_simulations):
            raise ConfigError("search_simulations", f"must be >= 1, got {ev.search_simulations}")
        self.run.validate()
        if self.algo == "ppo":
            self.ppo_config().validate()
        else:
            self.alphazero.validate()

    def ppo_config(self) -> PPOConfig:
        """The PPO settings with the environment of ``--game``."""
        return dataclasses.replace(self.ppo, env=games.env_id(self.game))


def train(args: Args, out: Path) -> dict[str, Any]:
    """Self-play PPO or AlphaZero through the core runner; returns the core summary."""
    saved = {"game": args.game, "algo": args.algo, "seed": args.run.seed, "num_seeds": args.run.num_seeds,
             "snapshots": args.snapshots, "evaluation": dataclasses.asdict(args.evaluation)}
    if args.algo == "ppo":
        config = args.ppo_config()
        learner = make_learner(config)
        env_params = envs.make(config.env)[1].replace(opening_plies=args.opening_plies)
        hparams = repeat_runs(default_hparams(config, env_params), args.run.num_seeds)
        saved["ppo"] = dataclasses.asdict(config)
        saved["opening_plies"] = args.opening_plies
    else:
        config = args.alphazero.with_game_shards(args.run.num_seeds, jax.device_count())
        learner = alphazero.make_learner(args.game, config)
        hparams = repeat_runs(alphazero.default_hparams(config), args.run.num_seeds)
        saved["alphazero"] = dataclasses.asdict(config)
    every = max(1, learner.num_updates // args.snapshots)
    result = args.run.run(learner, seed_keys(args.run.seed, args.run.num_seeds), hparams, out, saved,
                          snapshot_every=every)
    return runner.summarize(result)


def evaluate(args: Args, out: Path, key: jax.Array) -> dict[str, Any]:
    """The evaluation of the run in ``out`` (see the module docstring)."""
    env = games.make_game(args.game)
    ev = args.evaluation
    agent = agents.player_from_run(out)
    random_player = arena.random_player(env)
    keys = iter(jax.random.split(key, 64))
    report: dict[str, Any] = {"vs_random": arena.play_match(env, agent, random_player, next(keys), ev.eval_games)}
    report["vs_search"] = {
        str(sims): arena.play_match(env, agent, search.pure_search_player(env, sims), next(keys), ev.search_games)
        for sims in ev.search_simulations
    }
    updates = agents.snapshot_updates(out)
    names = ["random"] + [f"update {u}" for u in updates]
    players = [random_player] + [agents.player_from_run(out, u) for u in updates]
    results = []
    for i in range(len(players)):
        for j in range(i + 1, len(players)):
            match = arena.play_match(env, players[i], players[j], next(keys), ev.elo_games)
            n = match["num_games"]
            results.append((i, j, match["win"] * n, match["draw"] * n, match["loss"] * n))
    ratings = elo.fit_elo(names, results, anchor="random")
    report["elo"] = [{"player": name, "update": None if name == "random" else updates[k - 1],
                      "elo": float(ratings[name])} for k, name in enumerate(names)]
    if args.game == "tic_tac_toe":
        act = jax.jit(lambda state: agent(state, jax.random.PRNGKey(0)))
        report["vs_perfect"] = {seat: solver.record_vs_perfect(act, seat_id)
                                for seat, seat_id in (("first", 0), ("second", 1))}
    return report


def plot(path: Path, report: dict[str, Any], title: str) -> None:
    """Win/draw/loss bars per opponent, and Elo against training update."""
    plt = records.pyplot()
    fig, (bars, curve) = plt.subplots(1, 2, figsize=(11, 4))
    opponents = {"random": report["vs_random"], **{f"search {k}": v for k, v in report["vs_search"].items()}}
    bottom = np.zeros(len(opponents))
    for outcome, colour in (("win", "tab:green"), ("draw", "tab:gray"), ("loss", "tab:red")):
        values = np.array([r[outcome] for r in opponents.values()])
        bars.bar(list(opponents), values, bottom=bottom, label=outcome, color=colour)
        bottom += values
    bars.set_ylabel("fraction of games (both seats)")
    bars.legend()
    rows = [r for r in report["elo"] if r["update"] is not None]
    curve.plot([r["update"] for r in rows], [r["elo"] for r in rows], marker="o")
    curve.axhline(0.0, color="gray", linestyle=":", label="random = 0")
    curve.set_xlabel("update")
    curve.set_ylabel("Elo")
    curve.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(args: Args) -> dict[str, Any]:
    """Train, evaluate, write summary.json and evaluation.png; returns the summary."""
    args.validate()
    args.run.start_distributed()
    began = time.perf_counter()
    out = args.run.out_dir("selfplay")
    summary: dict[str, Any] = {"game": args.game, "algo": args.algo, **train(args, out)}
    tick = time.perf_counter()
    summary.update(evaluate(args, out, jax.random.PRNGKey(args.run.seed + 1)))
    simulations = args.alphazero.num_simulations if args.algo == "alphazero" else 0
    summary.update(simulations=simulations, evaluation_seconds=time.perf_counter() - tick,
                   wall_seconds=time.perf_counter() - began)
    if jax.process_index() == 0:
        records.write_json(out / "summary.json", summary)
        plot(out / "evaluation.png", summary, f"{args.algo} self-play on {args.game}")
    rows = [{"opponent": "random", **summary["vs_random"]}]
    rows += [{"opponent": f"search {k} sims", **v} for k, v in summary["vs_search"].items()]
    rows += [{"opponent": f"perfect play ({seat} seat)", **v} for seat, v in summary.get("vs_perfect", {}).items()]
    print(format_table([{k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows],
                       ["opponent", "win", "draw", "loss"]))
    print(format_table([{**r, "elo": f"{r['elo']:.0f}"} for r in summary["elo"]], ["player", "elo"]))
    print(f"wall time {summary['wall_seconds']:.0f} s (training {summary['train_seconds']:.0f} s); run directory: {out}")
    return summary


if __name__ == "__main__":
    cli(main, Args, __doc__)
