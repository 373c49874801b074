"""Static settings of a language-model run (``LMConfig``: model size, task, algorithm, budget),
their validation before anything compiles, the per-run hyperparameters that sweeps vmap
(``LMHParams``), and how the automatic fields resolve (``resolved``)."""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from models.transformer import TransformerConfig
from rl.errors import ConfigError
from rl.lm import tasks as task_lib

REWARDS = ("exact", "digits", "prefix", "process")
PROCESS_ALGOS = ("grpo", "dr_grpo", "dapo")  # the group-normalised algorithms that take per-step rewards
ALGOS = ("sft", "reinforce", "rloo", "grpo", "dr_grpo", "dapo", "ppo", "dpo", "sppo")
KL_ESTIMATORS = ("k1", "k2", "k3")
ADVANTAGE_PARTS = ("both", "positive", "negative")
ADVANTAGE_ALGOS = ("reinforce", "rloo", "grpo", "dr_grpo", "dapo")


@dataclasses.dataclass(frozen=True)
class LMConfig:
    """Static settings of a language-model run (sizes, budget, algorithm)."""

    task: str = "multiplication"
    algo: str = "grpo"
    num_layers: int = 4
    d_model: int = 128
    num_heads: int = 4
    max_len: int = 32
    num_updates: int = 500
    prompts_per_update: int = 64
    """RL: prompts per update; SFT: problems per update"""
    group_size: int = 8
    max_new_tokens: int = 0
    """completion tokens per sample (0: the task's default, ``DEFAULT_NEW_TOKENS``)"""
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    update_epochs: int = 1
    num_minibatches: int = 1
    lr: float = 5e-5
    warmup_updates: int = 0
    """learning rate rises linearly over these updates"""
    cosine_decay: bool = False
    """learning rate decays to 0 along a cosine over the updates after the warm-up"""
    max_grad_norm: float = 1.0
    clip_eps: float = 0.2
    clip_eps_high: float = 0.0
    """upper clip of the ratio (0: clip_eps; dapo defaults to 0.28)"""
    kl_coef: float = 0.0
    kl_estimator: str = "k3"
    kl_in_reward: bool = False
    entropy_coef: float = 0.0
    vf_coef: float = 0.5
    gamma: float = 1.0
    gae_lambda: float = 0.95
    dpo_beta: float = 0.1
    sppo_eta: float = 1.0
    data_shards: int = 1
    """devices that split each run's batch (data parallel: each samples and scores its share of the
    prompts; gradients are summed over them, normalised by the whole batch's counts); 0: as many
    as possible (the largest count that divides both the devices and the prompts per minibatch)"""
    fsdp: bool = False
    """with data_shards > 1: store the parameters, the reference and Adam's moments split over the
    run's devices (fully sharded data parallel: each leaf along its largest dimension that
    data_shards divides); an update gathers the full parameters for its compute and
    reduce-scatters the gradients, so each device updates only its slice"""
    reward: str = "exact"
    """arithmetic RL reward: "exact" (1 for the exact answer and EOS, else 0), "digits" (the
    fraction of the answer's positions, its digits and EOS, that the completion gets right: 1 only
    for the exact answer; partial credit for near misses) or "prefix" (the fraction of those
    positions before the first wrong one: within a group, samples that agree up to a position and
    differ there are ranked by that position) or "process" (GRPO with process supervision: each
    answer position is a step whose reward is 1 when the completion is right up to and including
    it; ``rl.lm.objectives.process_advantages`` gives every token its own advantage; grpo, dr_grpo
    and dapo)"""
    train_pool: int = 200_000
    """training problems generated up front (sampled with replacement during training)"""
    pool_seed: int = 0
    advantages: str = "both"
    """which advantages the policy gradient keeps (reinforce, rloo, grpo, dr_grpo, dapo): "both",
    "positive" (max(A, 0): better-than-baseline samples reinforced, worse ones not pushed down) or
    "negative" (min(A, 0))"""
    shuffle_rewards: bool = False
    """a control for RL: permute the rewards within each group at random before the update, so a
    sample's reward no longer depends on its answer. The rewards' statistics stay the same and the
    expected policy gradient is zero: what the updates then do to the model is their noise alone"""
    shorter_fraction: float = 0.0
    """sft on arithmetic: this fraction of the training pool has operands of a uniformly drawn number
    of digits up to the task's (``Arithmetic.sample_shorter``), the rest the task's own problems"""

    def model_config(self, vocab_size: int) -> TransformerConfig:
        """The transformer of these sizes (with the value head PPO reads) over ``vocab_size`` tokens."""
        return TransformerConfig(vocab_size=vocab_size, num_layers=self.num_layers, d_model=self.d_model,
                                 num_heads=self.num_heads, max_len=self.max_len, value_head=True)

    @property
    def is_rl(self) -> bool:
        """Every algorithm but ``sft`` samples completions and learns from their rewards."""
        return self.algo != "sft"

    @property
    def batch_size(self) -> int:
        """Sequences per update."""
        return self.prompts_per_update * (self.group_size if self.is_rl else 1)

    def upper_clip(self) -> float:
        """The ratio's upper clip: ``clip_eps_high``, else 0.28 for dapo (clip-higher), else ``clip_eps``."""
        return self.clip_eps_high or (0.28 if self.algo == "dapo" else self.clip_eps)

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the first invalid field, before anything compiles."""
        if self.algo not in ALGOS:
            raise ConfigError("algo", f"unknown algo {self.algo!r}; known: {', '.join(ALGOS)}")
        if self.task not in task_lib.TASKS:
            raise ConfigError("task", f"unknown task {self.task!r}; known: {', '.join(task_lib.TASKS)}")
        if self.reward not in REWARDS:
            raise ConfigError("reward", f"must be one of {REWARDS}, got {self.reward!r}")
        if not 0 <= self.shorter_fraction < 1:
            raise ConfigError("shorter_fraction", f"must be in [0, 1), got {self.shorter_fraction}")
        if self.shorter_fraction and (self.is_rl or not task_lib.make_task(self.task).single_answer):
            raise ConfigError("shorter_fraction", "shorter problems are a warm-start curriculum for sft on arithmetic")
        if self.advantages not in ADVANTAGE_PARTS:
            raise ConfigError("advantages", f"unknown {self.advantages!r}; known: {', '.join(ADVANTAGE_PARTS)}")
        if self.advantages != "both" and self.algo not in ADVANTAGE_ALGOS:
            raise ConfigError("advantages", f"applies to {', '.join(ADVANTAGE_ALGOS)}, not {self.algo!r}")
        if self.shuffle_rewards and not self.is_rl:
            raise ConfigError("shuffle_rewards", "is a control for RL, not for sft")
        if self.reward != "exact" and not task_lib.make_task(self.task).single_answer:
            raise ConfigError("reward", f"{self.reward} credit needs an arithmetic task, not {self.task!r}")
        if self.reward == "process" and self.algo not in PROCESS_ALGOS:
            raise ConfigError("reward", f"process rewards apply to {', '.join(PROCESS_ALGOS)}, not {self.algo!r}")
        if self.reward == "process" and self.kl_in_reward:
            raise ConfigError("kl_in_reward", "a sequence-level KL penalty does not apply to per-step rewards")
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ConfigError("kl_estimator", f"must be one of {KL_ESTIMATORS}, got {self.kl_estimator!r}")
        for name in ("num_updates", "prompts_per_update", "update_epochs", "num_minibatches", "train_pool"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be >= 1, got {getattr(self, name)}")
        if self.is_rl and self.group_size < 2:
            raise ConfigError("group_size", f"RL needs at least 2 samples per prompt, got {self.group_size}")
        if self.max_new_tokens < 0:
            raise ConfigError("max_new_tokens", f"must be >= 0 (0: the task's default), got {self.max_new_tokens}")
        if self.data_shards < 0:
            raise ConfigError("data_shards", f"must be >= 0 (0: every device), got {self.data_shards}")
        if self.fsdp and self.data_shards == 1:
            raise ConfigError("fsdp", "sharding the parameters needs data_shards >= 2")
        if self.prompts_per_update % (self.num_minibatches * max(self.data_shards, 1)):
            raise ConfigError("num_minibatches", f"num_minibatches ({self.num_minibatches}) x data_shards "
                              f"({self.data_shards}) must divide prompts_per_update ({self.prompts_per_update})")
        if self.temperature <= 0 and self.is_rl:
            raise ConfigError("temperature", f"RL samples need temperature > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError("top_p", f"must be in (0, 1], got {self.top_p}")
        for name in ("lr", "clip_eps", "max_grad_norm"):
            if not getattr(self, name) > 0:
                raise ConfigError(name, f"must be > 0, got {getattr(self, name)}")
        try:
            self.model_config(1).validate()
        except ValueError as error:
            raise ConfigError("d_model", str(error)) from None


class LMHParams(NamedTuple):
    """Per-run hyperparameters (arrays; a vmap axis of sweeps)."""

    lr: jax.Array
    kl_coef: jax.Array
    entropy_coef: jax.Array


def default_hparams(config: LMConfig) -> LMHParams:
    """The hyperparameters ``config`` names, as arrays (one run; sweeps stack them)."""
    return LMHParams(jnp.float32(config.lr), jnp.float32(config.kl_coef), jnp.float32(config.entropy_coef))


def prompt_length(config: LMConfig) -> int:
    """Prompt slots (BOS + the longest prompt of the task's ranges)."""
    task = task_lib.make_task(config.task)
    if isinstance(task, task_lib.Arithmetic):
        return 1 + len(str(task.a_max)) + 1 + len(str(task.b_max)) + 1
    digits = len(str(task.max_number))
    return 1 + task.num_numbers * (digits + 1) + len(str(task.max_target)) + 1


DEFAULT_NEW_TOKENS = {"addition": 8, "multiplication": 8, "countdown": 16}


def resolved(config: LMConfig) -> LMConfig:
    """``config`` with its automatic fields filled in: ``max_new_tokens = 0`` by the task's default,
    ``data_shards = 0`` by the largest count dividing both JAX's devices and the prompts of a
    minibatch (call it after ``jax.distributed.initialize``)."""
    if not config.max_new_tokens:
        config = dataclasses.replace(config, max_new_tokens=DEFAULT_NEW_TOKENS[config.task])
    if not config.data_shards:
        shards = math.gcd(jax.device_count(), config.prompts_per_update // config.num_minibatches)
        config = dataclasses.replace(config, data_shards=shards, fsdp=config.fsdp and shards > 1)
    return config
