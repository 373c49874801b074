"""PPO with the conv torso on MinAtar, beside rejax's PPO with the same budget and settings.

    python -m experiments.minatar --rejax-python .peer-rejax/bin/python

For each environment, trains ``--num-seeds`` runs of ours through the ``experiments.ppo`` path
(conv torso) and, when rejax's Python is given (a venv with rejax and gymnax < 1.0, see the
README), the same number of rejax PPO runs (its MLP policy) with the same PPO settings and
environment steps. Both are scored the same way: the final policy's mean return over 128 episodes
with sampled actions, per seed. Writes summary.json and a table (mean, 95% CI over seeds) to --out,
with each of our runs in its own run directory below it.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from experiments import ppo as ppo_experiment
from experiments.common import RunArgs, cli, format_table
from rl import records
from rl.ppo import PPOConfig

PEER_SCRIPT = Path(__file__).resolve().parent / "peers" / "rejax_ppo.py"


@dataclasses.dataclass(frozen=True)
class Args:
    envs: tuple[str, ...] = ("Breakout-MinAtar", "SpaceInvaders-MinAtar")
    """MinAtar ids to train on"""
    total_timesteps: int = 3_000_000
    """environment steps per run"""
    num_seeds: int = 3
    """runs per environment and learner"""
    rejax_python: str | None = None
    """python of a venv with rejax and gymnax<1.0; without it only our runs are made"""
    rejax_hidden_sizes: tuple[int, ...] = (256, 256)
    """rejax's MLP policy and critic layers"""
    out: str = "runs/minatar"
    """output directory"""
    seed: int = 0
    """base seed of our runs"""
    anneal_lr: bool = True
    """anneal our learning rate linearly to 0 (PureJaxRL's MinAtar setting); rejax's stays constant"""


def ppo_config(env: str, total_timesteps: int, anneal_lr: bool = True) -> PPOConfig:
    """PureJaxRL's MinAtar PPO settings, shared with the peer except the learning-rate schedule
    (ours anneals it linearly to 0 as PureJaxRL does; rejax has a constant rate only: with it, one
    of four SpaceInvaders seeds of ours ended on a policy far worse than the ones just before).
    Ours reads the images with the conv torso (16 channels) and 128x128 MLPs (with 64x64 MLPs,
    2 seeds of 2M Breakout steps stalled at a return of 7)."""
    return PPOConfig(env=env, total_timesteps=total_timesteps, num_envs=64, num_steps=128, update_epochs=4,
                     num_minibatches=8, lr=5e-4, anneal_lr=anneal_lr, gamma=0.99, gae_lambda=0.95, clip_eps=0.2,
                     ent_coef=0.01, vf_coef=0.5, max_grad_norm=0.5, activation="relu", torso="conv",
                     conv_channels=(16,), hidden_sizes=(128, 128))


def run_rejax(python: str, config: PPOConfig, hidden_sizes: tuple[int, ...], seeds: int) -> dict[str, Any]:
    """rejax PPO with ``config``'s settings (its own MLP network) through ``experiments/peers``."""
    peer = {"env": config.env, "total_timesteps": config.total_timesteps, "num_envs": config.num_envs,
            "num_steps": config.num_steps, "num_epochs": config.update_epochs,
            "num_minibatches": config.num_minibatches, "learning_rate": config.lr,
            "max_grad_norm": config.max_grad_norm, "gamma": config.gamma, "gae_lambda": config.gae_lambda,
            "clip_eps": config.clip_eps, "ent_coef": config.ent_coef, "vf_coef": config.vf_coef,
            "agent_kwargs": {"activation": config.activation, "hidden_layer_sizes": list(hidden_sizes)}}
    done = subprocess.run([python, str(PEER_SCRIPT), json.dumps(peer), str(seeds)], capture_output=True, text=True,
                          timeout=7200)
    if done.returncode != 0:
        raise RuntimeError(f"rejax failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(args: Args) -> dict[str, Any]:
    """Train ours (and rejax) on every environment; returns the summary."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, results = [], {}
    for env in args.envs:
        config = ppo_config(env, args.total_timesteps, args.anneal_lr)
        run_args = RunArgs(out=str(out / env), seed=args.seed, num_seeds=args.num_seeds, eval_episodes=128,
                           eval_greedy=False, progress=False)
        ours = ppo_experiment.main(ppo_experiment.Args(run_args, config))
        results[env] = {"ours": ours}
        learners = [("ours (conv torso)", ours)]
        if args.rejax_python:
            results[env]["rejax"] = run_rejax(args.rejax_python, config, args.rejax_hidden_sizes, args.num_seeds)
            learners.append((f"rejax (MLP {'x'.join(map(str, args.rejax_hidden_sizes))})", results[env]["rejax"]))
        for name, result in learners:
            mean, half = records.mean_ci95(np.asarray(result["eval_return_per_seed"]))
            rows.append({"env": env, "learner": name, "eval_return": f"{mean:.1f} ± {half:.1f}",
                         "per_seed": " ".join(f"{x:.1f}" for x in result["eval_return_per_seed"]),
                         "env_steps_per_second": result["env_steps_per_second"], "train_seconds": result["train_seconds"]})
    summary = {"total_timesteps": args.total_timesteps, "num_seeds": args.num_seeds, "results": results, "table": rows}
    records.write_json(out / "summary.json", summary)
    print(format_table(rows, ["env", "learner", "eval_return", "per_seed", "env_steps_per_second", "train_seconds"]))
    print("eval_return: final policy, 128 sampled episodes per seed; mean ± 95% CI half-width over seeds", file=sys.stderr)
    return summary


if __name__ == "__main__":
    cli(main, Args, __doc__)
