"""The pieces of the language-model RL objectives that need no model: verifier rewards of
arithmetic (exact, partial credit, per-position process steps), per-sequence and per-token
advantages, KL estimators, SPPO's win probability and the reward-shuffling control. The learner
(``rl.lm.learner``) combines them into each algorithm's loss; its docstring gives the formulas."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rl.lm.tokenizer import EOS


def answer_positions(answers: jax.Array) -> jax.Array:
    """Mask of each target row's answer tokens and its EOS (not the padding after it)."""
    is_eos = answers == EOS
    return jnp.cumsum(is_eos, axis=1) - is_eos == 0


def arithmetic_step_rewards(tokens: jax.Array, answers: jax.Array) -> jax.Array:
    """Per-position rewards ``(B, N)`` of completions against target rows: 1 at each of the answer's
    positions (its digits and EOS) up to which the completion is right, 0 from the first wrong one
    on and beyond the answer."""
    scored = answer_positions(answers)
    right_so_far = jnp.cumprod(jnp.where(scored, tokens == answers, True), axis=1).astype(bool)
    return (right_so_far & scored).astype(jnp.float32)


def arithmetic_rewards(tokens: jax.Array, answers: jax.Array, reward: str = "exact") -> jax.Array:
    """Rewards ``(B,)`` of completions ``(B, N)`` against target rows (the answer, EOS, padding):
    "exact" is 1 when the completion is the answer and EOS; "digits" is the fraction of the answer's
    positions and its EOS that the completion matches; "prefix" the fraction matched before the
    first mismatch (both 1 exactly when "exact" is 1; also the sequence reward of "process")."""
    scored = answer_positions(answers)
    if reward == "digits":
        return ((tokens == answers) & scored).sum(axis=1) / scored.sum(axis=1)
    if reward == "prefix":
        return arithmetic_step_rewards(tokens, answers).sum(axis=1) / scored.sum(axis=1)
    return jnp.all(tokens == answers, axis=1).astype(jnp.float32)


def kl_terms(reference_logprobs: jax.Array, logprobs: jax.Array, estimator: str) -> jax.Array:
    """Per-token KL estimate with ``D = log pi_ref - log pi``: k1 = -D, k2 = D^2/2, k3 = e^D - D - 1."""
    d = reference_logprobs - logprobs
    if estimator == "k1":
        return -d
    if estimator == "k2":
        return 0.5 * d**2
    return jnp.exp(d) - d - 1.0


def group_advantages(rewards: jax.Array, algo: str, batch_mean: jax.Array | None = None) -> jax.Array:
    """Per-sequence advantages from rewards ``(prompts, G)`` (the formulas are in ``rl.lm.learner``'s
    docstring); REINFORCE's baseline is ``batch_mean`` when given (the mean over a batch split across
    devices)."""
    mean = rewards.mean(axis=1, keepdims=True)
    if algo == "reinforce":
        return rewards - (rewards.mean() if batch_mean is None else batch_mean)
    if algo == "rloo":
        g = rewards.shape[1]
        return rewards - (rewards.sum(axis=1, keepdims=True) - rewards) / (g - 1)
    if algo == "dr_grpo":
        return rewards - mean
    return (rewards - mean) / (rewards.std(axis=1, keepdims=True) + 1e-4)


def process_advantages(step_rewards: jax.Array, steps: jax.Array, normalise: bool = True) -> jax.Array:
    """Per-token advantages ``(prompts, G, N)`` of GRPO with process supervision (DeepSeekMath):
    the step rewards ``(prompts, G, N)`` at the positions ``steps`` marks are centred on the mean of
    all steps of their group (and, with ``normalise``, divided by the steps' standard deviation;
    ``dr_grpo`` does not); a token's advantage is the sum of those over the steps at and after it."""
    steps = steps.astype(jnp.float32)
    count = steps.sum(axis=(1, 2), keepdims=True)
    mean = (step_rewards * steps).sum(axis=(1, 2), keepdims=True) / count
    centred = (step_rewards - mean) * steps
    if normalise:
        centred = centred / (jnp.sqrt((centred**2).sum(axis=(1, 2), keepdims=True) / count) + 1e-4)
    return jnp.flip(jnp.cumsum(jnp.flip(centred, axis=2), axis=2), axis=2)


def keep_advantages(advantages: jax.Array, part: str) -> jax.Array:
    """``advantages`` with only their ``part`` kept: "both" (unchanged), "positive" or "negative"."""
    if part == "positive":
        return jnp.maximum(advantages, 0.0)
    if part == "negative":
        return jnp.minimum(advantages, 0.0)
    return advantages


def group_permutations(key: jax.Array, groups: int, group_size: int) -> jax.Array:
    """``(groups, group_size)`` indices: a random permutation of each group's samples, drawn
    independently per group (``shuffle_rewards``)."""
    return jnp.argsort(jax.random.uniform(key, (groups, group_size)), axis=1)


def win_probability(rewards: jax.Array) -> jax.Array:
    """SPPO's ``P(y_i beats the other samples of its group)`` from rewards ``(prompts, G)`` (ties 1/2)."""
    beats = (rewards[:, :, None] > rewards[:, None, :]) + 0.5 * (rewards[:, :, None] == rewards[:, None, :])
    g = rewards.shape[1]
    return (beats.sum(axis=2) - 0.5) / (g - 1)  # drop the comparison with itself (a tie)
