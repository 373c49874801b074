"""A trained language-model policy: text generation, held-out evaluation (pass@1, pass@k) and loading
from a run directory of ``experiments.lm_rl``."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from models.transformer import Transformer
from rl.checkpoint import read_snapshot
from rl.errors import ConfigError
from rl.lm.config import LMConfig, resolved
from rl.lm.sampler import make_sampler
from rl.lm.tasks import Problem
from rl.lm.tokenizer import CharTokenizer


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of the probability that at least one of ``k`` samples is correct, from
    ``c`` correct among ``n >= k`` samples: ``1 - C(n - c, k) / C(n, k)``."""
    if n < k:
        raise ValueError(f"need n >= k samples, got n={n}, k={k}")
    return 1.0 if n - c < k else 1.0 - math.comb(n - c, k) / math.comb(n, k)


class LMPolicy:
    """``generate(prompts, max_new_tokens, temperature)`` with a transformer's parameters."""

    def __init__(self, params: Any, config: LMConfig):
        self.params, self.config = params, resolved(config)
        self.tokenizer = CharTokenizer()
        self.model = Transformer(config.model_config(self.tokenizer.vocab_size))
        self.tokens_generated, self.seconds = 0, 0.0

    @functools.lru_cache(maxsize=16)  # noqa: B019 (one sampler per setting, kept with the policy)
    def _sampler(self, max_new_tokens: int, temperature: float):
        return make_sampler(self.model, max_new_tokens, temperature)

    def sample(self, prompts: list[str], max_new_tokens: int, temperature: float, key: jax.Array, prompt_len: int = 0):
        """The sampler's ``Sample`` for ``prompts`` (left-padded to ``prompt_len`` when given)."""
        tokens, mask = self.tokenizer.encode_prompts(prompts, prompt_len or None)
        if tokens.shape[1] + max_new_tokens > self.config.max_len:
            raise ValueError(f"prompt ({tokens.shape[1]} tokens) + max_new_tokens ({max_new_tokens}) exceed the "
                             f"model's context of {self.config.max_len}")
        began = time.perf_counter()
        out = jax.device_get(self._sampler(max_new_tokens, float(temperature))(self.params, tokens, mask, key))
        self.seconds += time.perf_counter() - began
        self.tokens_generated += int(out.mask.sum())
        return out

    def generate(self, prompts: list[str], max_new_tokens: int = 16, temperature: float = 0.0,
                 seed: int = 0) -> list[str]:
        """Each prompt's completion, without the prompt and the end-of-sequence token."""
        out = self.sample(prompts, max_new_tokens, temperature, jax.random.PRNGKey(seed))
        return [self.tokenizer.decode(row) for row in out.tokens]


def evaluate(policy: LMPolicy, task: Any, problems: list[Problem], k: int, key: jax.Array,
             batch_size: int = 256, prompt_len: int = 0) -> dict[str, float]:
    """Greedy pass@1 and sampled (temperature 1) pass@k with ``2k`` samples per problem on ``problems``,
    in batches of ``batch_size`` (padded, so each setting compiles once). ``sampled_pass_at`` holds
    the sampled pass@j for j = 1, 2, 4, ... up to k (the pass@k curve)."""
    n_tokens = policy.config.max_new_tokens

    def rewards(prompt_problems: list[Problem], temperature: float, sample_key: jax.Array) -> np.ndarray:
        out = []
        for start in range(0, len(prompt_problems), batch_size):
            chunk = prompt_problems[start:start + batch_size]
            padded = chunk + [chunk[0]] * (batch_size - len(chunk))
            sample = policy.sample([p.prompt for p in padded], n_tokens, temperature,
                                   jax.random.fold_in(sample_key, start), prompt_len)
            texts = [policy.tokenizer.decode(row) for row in sample.tokens[:len(chunk)]]
            out.append(task.rewards(chunk, texts))
        return np.concatenate(out)

    greedy = rewards(problems, 0.0, key)
    n = 2 * k
    sampled = rewards([p for p in problems for _ in range(n)], 1.0, jax.random.fold_in(key, 1)).reshape(-1, n)
    correct = (sampled >= 1.0).sum(axis=1)
    ks = sorted({*(2**i for i in range(k.bit_length())), k})
    sampled_pass_at = {str(j): float(np.mean([pass_at_k(n, c, j) for c in correct])) for j in ks}
    return {"pass_at_1": float((greedy >= 1.0).mean()), "pass_at_k": sampled_pass_at[str(k)],
            "reward_greedy": float(greedy.mean()), "k": k, "sampled_pass_at": sampled_pass_at}


def lm_config_from_run(run_dir: str | Path) -> LMConfig:
    """The ``LMConfig`` saved in ``run_dir/config.json``."""
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise ConfigError("run_dir", f"{run_dir} is not a run directory (no config.json)")
    saved = json.loads(path.read_text())
    if "lm" not in saved:
        raise ConfigError("run_dir", f"{run_dir} is not a language-model run (no 'lm' in config.json)")
    names = {f.name for f in dataclasses.fields(LMConfig)}
    return LMConfig(**{k: v for k, v in saved["lm"].items() if k in names})


def load_policy(run_dir: str | Path, update: int | None = None) -> LMPolicy:
    """The policy of an ``experiments.lm_rl`` run (its last snapshot or checkpoint, or ``update``)."""
    config = lm_config_from_run(run_dir)
    _, state = read_snapshot(run_dir, update)
    return LMPolicy(state["params"], config)
