"""SPO, Bradley-Terry RLHF and PPO on the true reward, trained by the core PPO learner.

    python -m experiments.spo --env Pendulum-v1 --preference transitive --algo spo \\
        --total-timesteps 1000000 --num-seeds 5 --out runs/spo/pendulum-transitive-spo

``--algo spo`` rewards each trajectory by its win rate against the other samples from the same
start state (``rl.preference.SPOReward``); ``rlhf_bt`` fits a Bradley-Terry reward model to the
same comparisons and maximises it; ``ppo_true_reward`` is PPO on the environment's reward. The
metric is always the ground-truth return: summary.json holds ``final_true_return_mean`` and
``final_true_return_ci95`` (the final policies' greedy evaluation, 95% Student-t interval over
seeds), the same shifted to be positive (``final_true_return_shifted_mean``: plus the lowest
return an episode can have, ``RETURN_SHIFT``), and on the cyclic test game (``CyclicChoice-probe``)
``distance_to_minimax_winner`` (intransitive preference): the L1 distance of the final policies'
choice probabilities to the preference's von Neumann (minimax) winner. ``python -m
experiments.plot_runs DIR ...`` overlays the learning curves of several runs.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from experiments.common import RunArgs, cli, format_table, repeat_runs, seed_keys
from rl import envs, records, runner
from rl.errors import ConfigError
from rl.ppo import PPOConfig, default_hparams, make_learner, make_policy
from rl.preference import PREFERENCES, make_trajectory_reward, preference_matrix

ALGOS = ("spo", "rlhf_bt", "ppo_true_reward")
# PPO settings per environment: shared by all three algos, then per-algo changes. Pendulum's are
# the README's tuned PPO settings; the preference learners use gamma 0.99 (their reward is spread
# over the whole trajectory) and cannot use reward normalisation (they set their own scale).
SETTINGS: dict[str, dict[str, Any]] = {
    "Pendulum-v1": dict(num_envs=16, num_steps=200, update_epochs=10, num_minibatches=32, lr=3e-4, ent_coef=0.0,
                        normalize_obs=True),
    "Reacher-misc": dict(num_envs=16, num_steps=100, update_epochs=10, num_minibatches=32, lr=3e-4, ent_coef=0.0,
                         normalize_obs=True),
    "CyclicChoice-probe": dict(num_envs=64, num_steps=8, update_epochs=4, num_minibatches=4, lr=1e-3, ent_coef=0.05,
                               hidden_sizes=(16,), normalize_advantages=False),
}
TRUE_REWARD = {"Pendulum-v1": dict(gamma=0.95, normalize_reward=True), "Reacher-misc": dict(gamma=0.99)}
PREFERENCE_LEARNER = {"Pendulum-v1": dict(gamma=0.99), "Reacher-misc": dict(gamma=0.99)}
EPISODE_LENGTH = {"Pendulum-v1": 200, "Reacher-misc": 100, "CyclicChoice-probe": 1}
# Lowest possible return of an episode, subtracted so returns are positive (Pendulum: 200 steps of
# at most pi^2 + 0.1 * 8^2 + 0.001 * 2^2 cost; Reacher's and the cyclic game's rewards are >= 0).
RETURN_SHIFT = {"Pendulum-v1": 200 * (np.pi**2 + 0.1 * 64 + 0.001 * 4), "Reacher-misc": 0.0,
                "CyclicChoice-probe": 0.0}


@dataclasses.dataclass(frozen=True)
class Args:
    run: RunArgs = RunArgs(num_seeds=5)
    env: str = "Pendulum-v1"
    """environment: Pendulum-v1, Reacher-misc or CyclicChoice-probe"""
    preference: str = "transitive"
    """transitive (ground-truth return), intransitive (majority of three features) or noisy
    (transitive flipped with probability --noise)"""
    algo: str = "spo"
    """spo, rlhf_bt (Bradley-Terry reward model) or ppo_true_reward"""
    total_timesteps: int = 1_000_000
    """environment steps per run"""
    group_size: int = 4
    """N: trajectories sampled from each start state and compared with each other"""
    noise: float = 0.2
    """flip probability of the noisy preference"""
    credit: str = "spread"
    """SPO: the win rate on every step (spread) or on the last step (last)"""


def ppo_config(args: Args) -> PPOConfig:
    """The PPO config of ``args``: per-env settings, and the trajectory reward of the algo."""
    if args.env not in SETTINGS:
        raise ConfigError("env", f"no SPO settings for {args.env!r}; known: {', '.join(SETTINGS)}")
    if args.algo not in ALGOS:
        raise ConfigError("algo", f"unknown algo {args.algo!r}; known: {', '.join(ALGOS)}")
    if args.preference not in PREFERENCES:
        raise ConfigError("preference", f"unknown preference {args.preference!r}; known: {', '.join(PREFERENCES)}")
    if args.run.eval_episodes < 1:
        raise ConfigError("eval_episodes", "the score is the final policies' evaluation: needs at least 1 episode")
    if args.group_size < 2:
        raise ConfigError("group_size", f"N must be at least 2 samples per start state, got {args.group_size}")
    settings = dict(SETTINGS[args.env])
    if args.algo == "ppo_true_reward":
        settings.update(TRUE_REWARD.get(args.env, {}))
        return PPOConfig(env=args.env, total_timesteps=args.total_timesteps, **settings)
    settings.update(PREFERENCE_LEARNER.get(args.env, {}))
    fields = dict(env=args.env, episode_length=EPISODE_LENGTH[args.env], preference=args.preference,
                  noise=args.noise, group_size=args.group_size)
    if args.algo == "spo":
        fields["credit"] = args.credit
    reward = make_trajectory_reward(args.algo, **fields)
    return PPOConfig(env=args.env, total_timesteps=args.total_timesteps, group_size=args.group_size,
                     trajectory_reward=reward, **settings)


def choice_probabilities(config: PPOConfig, params: Any) -> np.ndarray:
    """The final policies' action probabilities on the one-step cyclic game, ``[runs, actions]``."""
    env, env_params = envs.make_single_env(config.env)
    policy = make_policy(config, env, env_params)
    obs = jnp.zeros((1, *env.observation_space(env_params).shape))
    return np.asarray(jax.vmap(lambda p: policy.probs(p, obs)[0])(params))


def minimax_winner(env_id: str, preference: str) -> np.ndarray:
    """The von Neumann winner of the preference between the one-step game's choices."""
    from rl.games.preference import von_neumann_winner

    env = envs.make(env_id)[0]
    choices = jnp.arange(env.num_actions)
    features = jax.vmap(lambda a: env.trajectory_features(jnp.zeros((1, 1)), a[None], jnp.zeros(1)))(choices)
    prefer = preference_matrix(preference, jnp.zeros(len(choices)), features, jax.random.PRNGKey(0), 0.0)
    return np.asarray(von_neumann_winner(np.asarray(prefer)))


def main(args: Args) -> dict[str, Any]:
    """Train ``num_seeds`` runs of ``args.algo`` and write the run directory; returns the summary."""
    args.run.validate()
    args.run.start_distributed()
    config = ppo_config(args)
    config.validate()
    out = args.run.out_dir(f"spo/{args.env}-{args.preference}-{args.algo}")
    learner = make_learner(config)
    seeds = args.run.num_seeds
    hparams = repeat_runs(default_hparams(config), seeds)
    run_config = {**dataclasses.asdict(config), "algo": args.algo, "preference": args.preference, "seed": args.run.seed,
                  "num_seeds": seeds, "chunk_updates": args.run.chunk_updates}
    result = args.run.run(learner, seed_keys(args.run.seed, seeds), hparams, out, run_config)
    summary = {"env": args.env, "algo": args.algo, "preference": args.preference, **runner.summarize(result)}
    true_returns = np.asarray(summary["eval_return_per_seed"], float)
    mean, half = records.mean_ci95(true_returns)
    shift = RETURN_SHIFT[args.env]
    summary.update(final_true_return_mean=float(mean), final_true_return_ci95=float(half),
                   final_true_return_per_seed=true_returns.tolist(), return_shift=shift,
                   final_true_return_shifted_mean=float(mean + shift))
    if args.env == "CyclicChoice-probe" and args.preference == "intransitive":
        probs = choice_probabilities(config, jax.tree.map(lambda x: x[:seeds], result.state.params))
        winner = minimax_winner(args.env, args.preference)
        distances = np.abs(probs - winner).sum(axis=1)
        summary.update(policy_per_seed=probs.tolist(), minimax_winner=winner.tolist(),
                       distance_to_minimax_winner=float(distances.mean()),
                       distance_to_minimax_winner_per_seed=distances.tolist())
    if jax.process_index() == 0:
        records.write_json(out / "summary.json", summary)
        label = f"{args.algo} ({args.preference})" if args.algo != "ppo_true_reward" else args.algo
        curves = {label: (records.series(result.records, "env_steps"), records.series(result.records, "episode_return"))}
        records.plot_curves(out / "learning_curve.png", curves, f"{args.env}: true return")
    row = {**summary, "seeds": seeds,
           "true_return": f"{mean:.1f} ± {half:.1f}", "shifted": f"{mean + shift:.1f}"}
    columns = ["env", "algo", "preference", "seeds", "true_return", "shifted", "train_seconds"]
    if "distance_to_minimax_winner" in summary:
        columns.append("distance_to_minimax_winner")
    print(format_table([row], columns))
    print(f"run directory: {out}")
    return summary


if __name__ == "__main__":
    cli(main, Args, __doc__)
