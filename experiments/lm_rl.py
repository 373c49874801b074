"""Language-model RL on verifiable tasks: a transformer trained from scratch by a supervised warm
start, then fine-tuned by an RL algorithm, evaluated on held-out problems.

    python -m experiments.lm_rl --task multiplication --algo sft --out runs/lm/mul_sft
    python -m experiments.lm_rl --task multiplication --algo grpo --init runs/lm/mul_sft --out runs/lm/mul_grpo

``--algo`` is one of sft, reinforce, rloo, grpo, dr_grpo, dapo, ppo, dpo, sppo (rl.lm.learner). An
RL algorithm starts from the run given with ``--init``, or first trains the default warm start
(``--sft-updates``, ``--sft-lr``, ``--sft-batch``) into ``<out>-sft``. Training goes through the
core runner (progress bar, metrics.jsonl, checkpoints, ``--resume``), keeping ``--eval-points``
snapshots. Each snapshot is evaluated on ``--eval-problems`` held-out problems: greedy pass@1 and
pass@k (``--pass-k``; unbiased estimator from 2k samples at temperature 1). summary.json holds
``pass_at_1`` and ``pass_at_k`` before (the starting checkpoint) and after training, the curve over
samples seen (also plotted, pass_at_1.png), ``samples_seen``, ``wall_seconds`` and the sampler's
``tokens_per_second`` measured during the evaluation.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from experiments.common import RunArgs, cli, format_table, repeat_runs, seed_keys
from rl import records, runner
from rl.checkpoint import read_snapshot, snapshot_updates
from rl.errors import ConfigError
from rl.lm import learner as lm_learner
from rl.lm.config import LMConfig, default_hparams, resolved
from rl.lm.policy import LMPolicy, evaluate, lm_config_from_run


@dataclasses.dataclass(frozen=True)
class Args:
    lm: LMConfig = LMConfig(data_shards=0)
    init: str | None = None
    """run directory (of this script) whose final parameters start training (default: from scratch for
    sft; for RL, the default warm start trained into <out>-sft)"""
    sft_updates: int = 12000
    """warm start (when RL runs without --init): updates (50 of warm-up, then a cosine decay)"""
    sft_lr: float = 1e-3
    """warm start: learning rate"""
    sft_batch: int = 64
    """warm start: problems per update"""
    eval_problems: int = 2048
    """held-out problems for pass@1 and pass@k (256 left a standard error of about 2 points: the default
    warm start scored 14.5% on one such draw and 11.2% on 2,048 problems)"""
    pass_k: int = 4
    """k of pass@k (2k samples per problem)"""
    eval_points: int = 4
    """snapshots across training evaluated for the pass@1 curve (besides the start)"""
    run: RunArgs = RunArgs(num_seeds=1, eval_episodes=0)

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the first invalid field, before anything is compiled."""
        self.lm.validate()
        self.run.validate()
        if self.run.num_seeds != 1:
            raise ConfigError("num_seeds", "language-model runs train one seed per run directory")
        for name in ("sft_updates", "sft_batch", "eval_problems", "pass_k", "eval_points"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be >= 1, got {getattr(self, name)}")
        if self.init is not None and not (Path(self.init) / "config.json").exists():
            raise ConfigError("init", f"{self.init} is not a run directory (no config.json)")

    def warm_start(self, out: Path) -> Args:
        """The arguments of the default supervised warm start of this run."""
        sft = dataclasses.replace(self.lm, algo="sft", num_updates=self.sft_updates, lr=self.sft_lr,
                                  prompts_per_update=self.sft_batch, num_minibatches=1,
                                  warmup_updates=min(50, self.sft_updates - 1), cosine_decay=True)
        return dataclasses.replace(self, lm=sft, init=None, run=dataclasses.replace(self.run, out=str(out)))


def start_params(init: str | None, config: LMConfig) -> Any:
    """The final parameters of run ``init`` (checked to have the same model sizes), or None."""
    if init is None:
        return None
    saved = lm_config_from_run(init)
    sizes = ("num_layers", "d_model", "num_heads", "max_len", "task")
    different = [name for name in sizes if getattr(saved, name) != getattr(config, name)]
    if different:
        raise ConfigError("init", f"{init} has a different {', '.join(different)}")
    return read_snapshot(init)[1]["params"]


def evaluate_run(args: Args, config: LMConfig, out: Path, parts: dict[str, Any],
                 samples_per_update: int) -> dict[str, Any]:
    """pass@1 and pass@k of every snapshot (update 0 is the start), on the same held-out problems."""
    task = parts["task"]
    problems = task.sample(np.random.default_rng(12345), args.eval_problems, "test")
    key = jax.random.PRNGKey(args.run.seed + 1)
    curve = []
    policy = None
    for update in snapshot_updates(out):
        params = read_snapshot(out, update)[1]["params"]
        if policy is None:
            policy = LMPolicy(params, config)
        policy.params = params
        result = evaluate(policy, task, problems, args.pass_k, key, prompt_len=parts["prompt_len"])
        curve.append({"update": update, "samples_seen": update * samples_per_update, **result})
    return {"curve": curve, "tokens_per_second": policy.tokens_generated / max(policy.seconds, 1e-9)}


def plot(path: Path, curve: list[dict[str, Any]], title: str) -> None:
    plt = records.pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    seen = [c["samples_seen"] for c in curve]
    ax.plot(seen, [c["pass_at_1"] for c in curve], marker="o", color="black", label="pass@1 (greedy)")
    for j in curve[0]["sampled_pass_at"]:
        ax.plot(seen, [c["sampled_pass_at"][j] for c in curve], marker="s", alpha=0.8, label=f"pass@{j} (sampled)")
    ax.set_xlabel("samples seen")
    ax.set_ylabel("held-out success")
    ax.set_ylim(0, 1)
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(args: Args) -> dict[str, Any]:
    """Train (warm start first when needed), evaluate, write summary.json and pass_at_1.png."""
    args.validate()
    args.run.start_distributed()
    began = time.perf_counter()
    out = args.run.out_dir("lm_rl")
    init = args.init
    if args.lm.is_rl and init is None:
        sft_out = Path(f"{out}-sft")
        if not (sft_out / "summary.json").exists():
            resume = args.run.resume and (sft_out / "config.json").exists()
            main(dataclasses.replace(args.warm_start(sft_out), run=dataclasses.replace(
                args.run, out=str(sft_out), resume=resume)))
        init = str(sft_out)
    config = resolved(args.lm)
    start = start_params(init, config)
    learner, parts = lm_learner.make_learner(config, start)
    saved = {"lm": dataclasses.asdict(config), "init": init, "seed": args.run.seed}
    hparams = repeat_runs(default_hparams(config), 1)
    every = max(1, learner.num_updates // args.eval_points)
    result = args.run.run(learner, seed_keys(args.run.seed, 1), hparams, out, saved, snapshot_every=every)
    summary: dict[str, Any] = {"task": args.lm.task, "algo": args.lm.algo, "init": init, **runner.summarize(result)}
    evaluation = evaluate_run(args, config, out, parts, learner.env_steps_per_update)
    curve = evaluation["curve"]
    summary.update(
        pass_at_1={"before": curve[0]["pass_at_1"], "after": curve[-1]["pass_at_1"]},
        pass_at_k={"k": args.pass_k, "before": curve[0]["pass_at_k"], "after": curve[-1]["pass_at_k"]},
        samples_seen=curve[-1]["samples_seen"], curve=curve, tokens_per_second=evaluation["tokens_per_second"],
        eval_problems=args.eval_problems, wall_seconds=time.perf_counter() - began,
    )
    if jax.process_index() == 0:
        records.write_json(out / "summary.json", summary)
        plot(out / "pass_at_1.png", curve, f"{args.lm.algo} on {args.lm.task}")
    print(format_table([{k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in c.items()} for c in curve],
                       ["update", "samples_seen", "pass_at_1", "pass_at_k", "reward_greedy"]))
    print(f"wall time {summary['wall_seconds']:.0f} s; run directory: {out}")
    return summary


if __name__ == "__main__":
    cli(main, Args, __doc__)
