"""One learner for language-model training on verifiable tasks: supervised warm start and the RL
fine-tuning algorithms, as a core ``Learner`` (pure ``init``/``update``) that ``rl.runner.run``
compiles into chunks with its progress bar, metrics.jsonl, checkpoints and exact ``--resume``.

Every update of an RL algorithm samples ``prompts_per_update`` training problems, draws
``group_size`` completions of each with the KV-cache sampler (``rl.lm.sampler``, temperature
``temperature``), scores them with the task's exact verifier (arithmetic with ``reward="digits"``:
partial credit, the fraction of the answer's positions right; ``"prefix"``: the fraction right
before the first wrong one), and takes ``update_epochs`` passes of
``num_minibatches`` gradient steps over the batch (whole groups per minibatch). Per sequence ``i``
of a group with rewards ``r``:

- ``reinforce``: ``A_i = r_i - mean(r over the batch)``; ``rloo``: ``A_i = r_i - mean_{j != i} r_j``;
  both ``-sum_t rho_t A_i / N`` (N = ``max_new_tokens``).
- ``grpo``: ``A_i = (r_i - mean_G r) / (std_G r + eps)``; clipped surrogate averaged over each
  sequence's tokens, then over sequences. ``dr_grpo``: ``A_i = r_i - mean_G r``; token sums divided
  by N. ``dapo``: GRPO's advantage, averaged over all tokens of the batch, clip-higher
  (``clip_eps_high``), and groups whose rewards are all equal left out of the average (the
  in-batch form of DAPO's dynamic sampling). With ``reward="process"`` (arithmetic) these three
  take process supervision instead: each answer position is a step rewarded 1 when the completion
  is right up to it, and a token's advantage is the sum of the group-normalised step rewards at
  and after it (``process_advantages``; DeepSeekMath's GRPO with process supervision).
- ``ppo``: token-level value head; per-token reward ``-kl_coef (log pi_old - log pi_ref)`` plus the
  task reward on the last token; GAE (``gamma``, ``gae_lambda``, ``rl.gae``), clipped surrogate and
  clipped value loss averaged over tokens.
- ``dpo``: per prompt, the best and the worst of its samples (when their rewards differ) form a
  pair; ``-log sigmoid(beta [(log pi/pi_ref)(y_w) - (log pi/pi_ref)(y_l)])``.
- ``sppo``: ``P_i`` = the estimated probability that ``y_i`` beats the group's other samples
  (ties 1/2); ``(log(pi_theta/pi_t)(y_i) - eta (P_i - 1/2))^2``, with ``pi_t`` the sampling policy.

With ``advantages="positive"`` the five advantage-based algorithms (reinforce to dapo) keep only
``max(A_i, 0)``: samples better than their baseline are reinforced and worse ones are not pushed
down (positive sample reinforcement); ``"negative"`` keeps only ``min(A_i, 0)``.

KL to the frozen reference (the starting parameters) with ``D = log pi_ref - log pi_theta`` per
token: ``k1 = -D``, ``k2 = D^2/2``, ``k3 = e^D - D - 1``; as a loss term (``kl_coef``) or, with
``kl_in_reward``, subtracted from the sequence reward (``kl_coef * sum_t k(D)`` under the sampling
policy). ``sft`` is teacher-forced cross-entropy on the task's answer (and end-of-sequence token).

Metrics per update: ``reward_mean``/``reward_std`` (also as ``episode_return``), ``zero_adv_frac``
(groups whose rewards are all equal), ``solved`` (samples with the full reward 1), ``clip_frac``,
``kl``, ``entropy``, ``response_length``, ``samples_seen``, ``total_loss``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec

from models.transformer import Transformer
from rl.errors import ConfigError
from rl.gae import gae
from rl.lm import tasks as task_lib
from rl.lm.config import LMConfig, LMHParams, prompt_length, resolved
from rl.lm.objectives import (
    answer_positions,
    arithmetic_rewards,
    arithmetic_step_rewards,
    group_advantages,
    group_permutations,
    keep_advantages,
    kl_terms,
    process_advantages,
    win_probability,
)
from rl.lm.sampler import make_sampler
from rl.lm.tokenizer import EOS, PAD, CharTokenizer
from rl.losses import clipped_surrogate, clipped_value_loss
from rl.ppo import Learner
from rl.sharding import DATA_AXIS

PER_GROUP_KEYS = ("best", "worst", "has_pair")  # batch entries with one row per group (DPO's pairs)


class LMState(NamedTuple):
    """A run's state: the policy, the frozen reference (the starting parameters), Adam's moments,
    the random key and the samples seen so far."""

    params: Any
    reference: Any
    opt_state: Any
    key: jax.Array
    samples_seen: jax.Array


class ProblemPool(NamedTuple):
    """Problems as arrays: left-padded prompts ``(M, P)`` with masks, and answers ``(M, N)`` (the
    warm-start target, EOS, then padding)."""

    prompts: np.ndarray
    prompt_mask: np.ndarray
    answers: np.ndarray


def encode_problems(tokenizer: CharTokenizer, problems: list[task_lib.Problem], prompt_len: int,
                    answer_len: int) -> ProblemPool:
    """The arrays of ``problems`` (``ValueError`` if a prompt or an answer does not fit)."""
    prompts, mask = tokenizer.encode_prompts([p.prompt for p in problems], prompt_len)
    answers = np.full((len(problems), answer_len), PAD, np.int32)
    for row, problem in enumerate(problems):
        ids = [*tokenizer.encode(problem.target), EOS]
        if len(ids) > answer_len:
            raise ValueError(f"answer {problem.target!r} needs {len(ids)} tokens, more than max_new_tokens={answer_len}")
        answers[row, :len(ids)] = ids
    return ProblemPool(prompts, mask, answers)


def split_dim(shape: tuple[int, ...], shards: int) -> int:
    """The dimension of a leaf that fully sharded data parallel splits over ``shards`` devices: the
    largest one that ``shards`` divides (-1: none, the leaf is replicated)."""
    divisible = [i for i, n in enumerate(shape) if n % shards == 0]
    return max(divisible, key=lambda i: shape[i]) if divisible else -1


def make_learner(config: LMConfig, init_params: Any = None, reward_fn: Any = None) -> tuple[Learner, dict[str, Any]]:
    """The learner of ``config`` (starting from ``init_params`` when given), and its parts
    ``{"model", "tokenizer", "task", "prompt_len"}`` for evaluation and sampling, and
    ``"batch_gradient"``: ``(state, hparams) -> grads``, the gradient of the next update's whole
    batch at ``state``'s parameters (on one device: ``data_shards=1``).

    ``reward_fn(problem_indices, tokens) -> rewards`` (jax, ``(B,)`` float32) replaces the task's
    verifier when given (a custom reward on the same prompts)."""
    config.validate()
    if reward_fn is not None and config.reward != "exact":
        raise ConfigError("reward", f"a custom reward_fn replaces the task's reward; {config.reward!r} needs the task's")
    config = resolved(config)
    tokenizer = CharTokenizer()
    model = Transformer(config.model_config(tokenizer.vocab_size))
    task = task_lib.make_task(config.task)
    prompt_len = prompt_length(config)
    if prompt_len + config.max_new_tokens > config.max_len:
        raise ConfigError("max_len", f"prompts ({prompt_len}) + max_new_tokens ({config.max_new_tokens}) exceed it")
    pool_rng = np.random.default_rng(config.pool_seed)
    shorter = round(config.shorter_fraction * config.train_pool)
    problems = task.sample(pool_rng, config.train_pool - shorter, "train")
    if shorter:
        problems += task.sample_shorter(pool_rng, shorter)
    try:
        pool = encode_problems(tokenizer, problems, prompt_len, config.max_new_tokens)
    except ValueError as error:
        raise ConfigError("max_new_tokens", str(error)) from None
    sampler = make_sampler(model, config.max_new_tokens, config.temperature, config.top_k, config.top_p)
    optimizer = optax.scale_by_adam()  # after clipping by the global norm (over all shards)
    n_tokens, groups, g = config.max_new_tokens, config.prompts_per_update, config.group_size
    shards = config.data_shards
    local_groups = groups // shards
    eps_low, eps_high = config.clip_eps, config.upper_clip()

    def rewards_of(indices: jax.Array, tokens: jax.Array) -> jax.Array:
        if reward_fn is not None:
            return reward_fn(indices, tokens)
        answers = jnp.asarray(pool.answers)[indices]
        if task.single_answer:  # in JAX
            return arithmetic_rewards(tokens, answers, config.reward)

        def verify(indices: np.ndarray, tokens: np.ndarray) -> np.ndarray:
            # host copies first: the callback may receive jax arrays, and any jax operation on them
            # here (even iterating over rows) would be dispatched to a device that is busy running
            # the computation waiting on this callback, a deadlock once the batch spans devices
            indices, tokens = np.asarray(indices), np.asarray(tokens)
            flat_i, flat_t = indices.reshape(-1), tokens.reshape(-1, tokens.shape[-1])
            texts = [tokenizer.decode(t) for t in flat_t]
            return task.rewards([problems[i] for i in flat_i], texts).reshape(indices.shape)

        shape = jax.ShapeDtypeStruct(indices.shape, jnp.float32)
        return jax.pure_callback(verify, shape, indices, tokens, vmap_method="expand_dims")

    def forward(params: Any, prompts: jax.Array, prompt_mask: jax.Array, tokens: jax.Array, mask: jax.Array):
        """Per-token log-probs ``(B, N)`` of ``tokens`` after ``prompts``, entropies and values."""
        full = jnp.concatenate([prompts, tokens], axis=1)
        full_mask = jnp.concatenate([prompt_mask, mask], axis=1)
        positions = jnp.maximum(jnp.cumsum(full_mask, axis=1) - 1, 0)
        logits, values, _ = model.apply(params, full, positions, full_mask)
        logits, values = logits[:, prompt_len - 1:-1], values[:, prompt_len - 1:-1]
        logp_all = jax.nn.log_softmax(logits)
        logprobs = jnp.take_along_axis(logp_all, tokens[..., None], axis=-1)[..., 0]
        entropy = -(jnp.exp(logp_all) * logp_all).sum(-1)
        return logprobs, entropy, values

    def fresh_params(key: jax.Array) -> Any:
        dummy = jnp.zeros((1, prompt_len), jnp.int32)
        return model.init(key, dummy, dummy)

    # fully sharded data parallel: the dimension of each parameter split over the run's devices
    dims = jax.tree.map(lambda x: split_dim(x.shape, shards) if config.fsdp else -1,
                        jax.eval_shape(fresh_params, jax.random.PRNGKey(0)))

    def shard(tree: Any) -> Any:
        """This device's slices of a full tree shaped like the parameters."""
        def cut(x: jax.Array, dim: int) -> jax.Array:
            if dim < 0:
                return x
            size = x.shape[dim] // shards
            return jax.lax.dynamic_slice_in_dim(x, jax.lax.axis_index(DATA_AXIS) * size, size, axis=dim)

        return jax.tree.map(cut, tree, dims)

    def gather(tree: Any) -> Any:
        """The full tree from every device's slices (identity unless fsdp)."""
        return jax.tree.map(lambda x, dim: x if dim < 0 else jax.lax.all_gather(x, DATA_AXIS, axis=dim, tiled=True),
                            tree, dims)

    def reduce_gradients(grads: Any) -> Any:
        """Sum this device's gradients with the others' (each device keeps its slice under fsdp)."""
        if shards == 1:
            return grads
        return jax.tree.map(lambda g, dim: jax.lax.psum(g, DATA_AXIS) if dim < 0 else
                            jax.lax.psum_scatter(g, DATA_AXIS, scatter_dimension=dim, tiled=True), grads, dims)

    def init(key: jax.Array, hparams: LMHParams) -> LMState:
        init_key, key = jax.random.split(key)
        params = fresh_params(init_key) if init_params is None else jax.tree.map(jnp.asarray, init_params)
        params = shard(params)
        return LMState(params, params, optimizer.init(params), key, jnp.zeros((), jnp.int32))

    def learning_rate(hparams: LMHParams, samples_seen: jax.Array) -> jax.Array:
        step = (samples_seen // config.batch_size).astype(jnp.float32)
        scale = jnp.minimum(1.0, (step + 1.0) / max(config.warmup_updates, 1))
        if config.cosine_decay:
            progress = jnp.clip((step - config.warmup_updates) / max(config.num_updates - config.warmup_updates, 1), 0, 1)
            scale = scale * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
        return hparams.lr * scale

    def apply_gradients(state: LMState, hparams: LMHParams, grads: Any) -> tuple[Any, Any]:
        """Clip the summed gradients by their global norm, then one Adam step on this device's slices."""
        pairs = list(zip(jax.tree.leaves(grads), jax.tree.leaves(dims), strict=True))
        split = sum(jnp.sum(g**2) for g, dim in pairs if dim >= 0)  # this device's slices
        whole = sum(jnp.sum(g**2) for g, dim in pairs if dim < 0)
        norm = jnp.sqrt(whole + (jax.lax.psum(split, DATA_AXIS) if config.fsdp else split))
        grads = jax.tree.map(lambda g: jnp.where(norm < config.max_grad_norm, g, g / norm * config.max_grad_norm), grads)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        lr = learning_rate(hparams, state.samples_seen)
        params = jax.tree.map(lambda p, u: p - lr * u, state.params, updates)
        return params, opt_state

    def local(x: jax.Array) -> jax.Array:
        """This device's share of a batch drawn identically on every device (all of it on one)."""
        if shards == 1:
            return x
        size = x.shape[0] // shards
        return jax.lax.dynamic_slice_in_dim(x, jax.lax.axis_index(DATA_AXIS) * size, size)

    def total(x: Any) -> Any:
        """Sum over the devices of one run (identity on one device)."""
        return x if shards == 1 else jax.lax.psum(x, DATA_AXIS)

    def sft_gradient(state: LMState) -> tuple[jax.Array, Any, dict[str, jax.Array]]:
        """The next state's key, and the gradient and metrics of the cross-entropy on a fresh batch."""
        key, pick_key = jax.random.split(state.key)
        index = local(jax.random.randint(pick_key, (config.prompts_per_update,), 0, len(problems)))
        prompts, prompt_mask = jnp.asarray(pool.prompts)[index], jnp.asarray(pool.prompt_mask)[index]
        answers = jnp.asarray(pool.answers)[index]
        mask = answer_positions(answers)
        tokens = total(mask.sum())

        def loss_fn(params):
            logprobs, entropy, _ = forward(params, prompts, prompt_mask, answers, mask)
            return -(logprobs * mask).sum() / tokens, entropy

        (loss, entropy), grads = jax.value_and_grad(loss_fn, has_aux=True)(gather(state.params))
        loss = total(loss)
        metrics = {"total_loss": loss, "episode_return": -loss, "entropy": total((entropy * mask).sum()) / tokens}
        return key, reduce_gradients(grads), metrics

    def sft_update(state: LMState, hparams: LMHParams) -> tuple[LMState, dict[str, jax.Array]]:
        key, grads, metrics = sft_gradient(state)
        params, opt_state = apply_gradients(state, hparams, grads)
        seen = state.samples_seen + config.prompts_per_update
        return (state._replace(params=params, opt_state=opt_state, key=key, samples_seen=seen),
                {**metrics, "samples_seen": seen})

    def rl_loss(params: Any, batch: dict[str, jax.Array], hparams: LMHParams,
                counts: dict[str, jax.Array]) -> tuple[jax.Array, dict[str, jax.Array]]:
        """This device's share of the minibatch loss: sums over its samples divided by the
        minibatch's totals over all devices (``counts``: tokens, sequences, pairs, kept tokens)."""
        mask = batch["mask"].astype(jnp.float32)
        logprobs, entropy, values = forward(params, batch["prompts"], batch["prompt_mask"], batch["tokens"], batch["mask"])
        kl = kl_terms(batch["ref_logprobs"], logprobs, config.kl_estimator)
        lengths = jnp.maximum(mask.sum(axis=1), 1.0)
        log_ratio = (logprobs - batch["old_logprobs"]) * mask
        ratio = jnp.exp(log_ratio)
        token_mean = lambda x: (x * mask).sum() / counts["tokens"]  # noqa: E731
        if config.algo == "dpo":
            seq_delta = ((logprobs - batch["ref_logprobs"]) * mask).sum(axis=1).reshape(-1, g)
            chosen = jnp.take_along_axis(seq_delta, batch["best"][:, None], axis=1)[:, 0]
            rejected = jnp.take_along_axis(seq_delta, batch["worst"][:, None], axis=1)[:, 0]
            pair_loss = -jax.nn.log_sigmoid(config.dpo_beta * (chosen - rejected))
            policy_loss = (pair_loss * batch["has_pair"]).sum() / jnp.maximum(counts["pairs"], 1.0)
        elif config.algo == "sppo":
            target = config.sppo_eta * (batch["win_prob"] - 0.5)
            policy_loss = ((log_ratio.sum(axis=1) - target) ** 2).sum() / counts["sequences"]
        elif config.algo == "ppo":
            policy_loss = token_mean(clipped_surrogate(ratio, batch["advantages"], eps_low, eps_high))
            value_loss = clipped_value_loss(values, batch["old_values"], batch["returns"], eps_low, mask)
            policy_loss = policy_loss + config.vf_coef * value_loss * mask.sum() / counts["tokens"]
        else:
            per_token = clipped_surrogate(ratio, batch["advantages"], eps_low, eps_high) * mask
            if config.algo == "grpo":
                policy_loss = (per_token.sum(axis=1) / lengths).sum() / counts["sequences"]
            elif config.algo == "dapo":
                kept = batch["informative"][:, None] * mask
                policy_loss = (per_token * kept).sum() / jnp.maximum(counts["kept"], 1.0)
            else:  # dr_grpo, reinforce, rloo: token sums over a constant length
                policy_loss = (per_token.sum(axis=1) / n_tokens).sum() / counts["sequences"]
        kl_loss = 0.0 if config.kl_in_reward or config.algo == "ppo" else hparams.kl_coef * token_mean(kl)
        loss = policy_loss + kl_loss - hparams.entropy_coef * token_mean(entropy)
        stats = {"clip_frac": token_mean(jnp.abs(ratio - 1.0) > eps_low), "kl": token_mean(kl),
                 "entropy": token_mean(entropy)}
        return loss, stats

    def rl_batch(state: LMState, hparams: LMHParams) -> tuple[jax.Array, jax.Array, dict[str, jax.Array], jax.Array]:
        """Sample and score this update's completions: the next state's key, the key of the
        minibatch shuffles, the batch (one row per completion, except the per-group DPO pairs)
        and the rewards."""
        key, pick_key, sample_key, shuffle_key = jax.random.split(state.key, 4)
        all_rows = jnp.arange(config.batch_size)
        index = local(jnp.repeat(jax.random.randint(pick_key, (groups,), 0, len(problems)), g))
        prompts, prompt_mask = jnp.asarray(pool.prompts)[index], jnp.asarray(pool.prompt_mask)[index]
        params = gather(state.params)
        sample = sampler(params, prompts, prompt_mask, sample_key, local(all_rows))
        tokens, mask = sample.tokens, sample.mask
        if config.reward == "process":  # per-step rewards (B, N); the sequence's is their fraction
            answers = jnp.asarray(pool.answers)[index]
            scores, steps = arithmetic_step_rewards(tokens, answers), answer_positions(answers)
        else:
            scores = rewards_of(index, tokens)
        if config.shuffle_rewards:  # drawn for the whole batch, so any number of shards permutes alike
            order = local(group_permutations(jax.random.fold_in(sample_key, 1), groups, g))[:, :, None]
            scores = jnp.take_along_axis(scores.reshape(local_groups, g, -1), order, axis=1).reshape(scores.shape)
        rewards = scores.sum(axis=1) / steps.sum(axis=1) if config.reward == "process" else scores
        ref_logprobs, _, _ = forward(gather(state.reference), prompts, prompt_mask, tokens, mask)
        if config.algo == "ppo" or config.temperature != 1.0:
            old_logprobs, _, old_values = forward(params, prompts, prompt_mask, tokens, mask)
        else:  # at temperature 1 the sampler's log-probs are the policy's own
            old_logprobs, old_values = sample.logprobs, None
        maskf = mask.astype(jnp.float32)
        kl_old = kl_terms(ref_logprobs, old_logprobs, config.kl_estimator) * maskf
        shaped = rewards - hparams.kl_coef * kl_old.sum(axis=1) if config.kl_in_reward and config.algo != "ppo" else rewards
        grouped = shaped.reshape(local_groups, g)
        batch = {"prompts": prompts, "prompt_mask": prompt_mask, "tokens": tokens, "mask": mask,
                 "old_logprobs": old_logprobs, "ref_logprobs": ref_logprobs}
        if config.algo == "ppo":
            lengths = mask.sum(axis=1)
            last = jax.nn.one_hot(lengths - 1, n_tokens) * (lengths > 0)[:, None]
            # PPO's KL to the reference is always part of the per-token reward (k1 under the sampling policy)
            token_rewards = rewards[:, None] * last - hparams.kl_coef * (old_logprobs - ref_logprobs) * maskf
            ended = last.astype(bool) | ~mask
            values = old_values * maskf
            next_values = jnp.concatenate([values[:, 1:], jnp.zeros((values.shape[0], 1))], axis=1)
            advantages, returns = gae(token_rewards.T, values.T, next_values.T, ended.T, ended.T, config.gamma,
                                      config.gae_lambda)
            advantages = advantages.T * maskf
            count = total(maskf.sum())
            adv_mean = total(advantages.sum()) / count
            adv_std = jnp.sqrt(total((((advantages - adv_mean) * maskf) ** 2).sum()) / count)
            batch.update(advantages=(advantages - adv_mean) / (adv_std + 1e-8), returns=returns.T, old_values=values)
        elif config.algo == "dpo":
            batch.update(best=jnp.argmax(grouped, axis=1), worst=jnp.argmin(grouped, axis=1),
                         has_pair=(grouped.max(axis=1) > grouped.min(axis=1)).astype(jnp.float32))
        elif config.algo == "sppo":
            batch.update(win_prob=win_probability(grouped).reshape(-1))
        else:
            informative = jnp.repeat(grouped.max(axis=1) > grouped.min(axis=1), g).astype(jnp.float32)
            batch_mean = total(shaped.sum()) / config.batch_size  # REINFORCE's baseline: the whole batch
            if config.reward == "process":  # one advantage per token
                advantages = process_advantages(scores.reshape(local_groups, g, -1), steps.reshape(local_groups, g, -1),
                                                normalise=config.algo != "dr_grpo").reshape(scores.shape)
            else:  # one per sequence, broadcast over its tokens
                advantages = group_advantages(grouped, config.algo, batch_mean).reshape(-1, 1)
            advantages = keep_advantages(advantages, config.advantages)
            batch.update(advantages=advantages, informative=informative)
        return key, shuffle_key, batch, rewards

    def minibatch_gradient(params: Any, mb: dict[str, jax.Array], hparams: LMHParams
                           ) -> tuple[Any, dict[str, jax.Array]]:
        """The gradient of the RL loss on minibatch ``mb`` (this device's rows; summed over the
        devices), and the loss and its statistics."""
        mb_mask = mb["mask"].astype(jnp.float32)
        counts = total({"tokens": mb_mask.sum(), "sequences": jnp.float32(mb_mask.shape[0]),
                        "pairs": mb.get("has_pair", jnp.zeros(1)).sum(),
                        "kept": (mb.get("informative", jnp.zeros(1))[:, None] * mb_mask).sum()})
        (loss, stats), grads = jax.value_and_grad(rl_loss, has_aux=True)(gather(params), mb, hparams, counts)
        return reduce_gradients(grads), {"total_loss": total(loss), **total(stats)}

    def rl_update(state: LMState, hparams: LMHParams) -> tuple[LMState, dict[str, jax.Array]]:
        key, shuffle_key, batch, rewards = rl_batch(state, hparams)
        # the minibatch axis splits whole groups (DPO and SPPO compare samples within a group)
        per_group = {k: v if k in PER_GROUP_KEYS else v.reshape(local_groups, -1, *v.shape[1:])
                     for k, v in batch.items()}

        def epoch(carry, epoch_key):
            params, opt_state = carry
            order = jax.random.permutation(epoch_key, local_groups).reshape(config.num_minibatches, -1)

            def minibatch(carry, rows):
                params, opt_state = carry
                mb = {k: v[rows] if k in PER_GROUP_KEYS else v[rows].reshape(-1, *v.shape[2:])
                      for k, v in per_group.items()}
                grads, stats = minibatch_gradient(params, mb, hparams)
                params, opt_state = apply_gradients(state._replace(params=params, opt_state=opt_state), hparams, grads)
                return (params, opt_state), stats

            return jax.lax.scan(minibatch, (params, opt_state), order)

        (params, opt_state), stats = jax.lax.scan(epoch, (state.params, state.opt_state),
                                                  jax.random.split(shuffle_key, config.update_epochs))
        seen = state.samples_seen + config.batch_size
        maskf = batch["mask"].astype(jnp.float32)
        by_group = rewards.reshape(local_groups, g)
        reward_mean = total(rewards.sum()) / config.batch_size
        metrics = {k: v.mean() for k, v in stats.items()}
        metrics.update(
            episode_return=reward_mean, reward_mean=reward_mean,
            reward_std=jnp.sqrt(jnp.maximum(total((rewards**2).sum()) / config.batch_size - reward_mean**2, 0.0)),
            zero_adv_frac=total((by_group.max(axis=1) == by_group.min(axis=1)).sum()) / groups,
            solved=total((rewards >= 1.0).sum()) / config.batch_size,  # samples earning the full reward
            response_length=total(maskf.sum()) / config.batch_size, samples_seen=seen,
        )
        return LMState(params, state.reference, opt_state, key, seen), metrics

    def batch_gradient(state: LMState, hparams: LMHParams) -> Any:
        """The gradient the next update follows, on its whole batch at the current parameters (the
        update's first step when it takes one minibatch; before clipping and Adam): for measuring
        the gradient's noise (``experiments.lm_noise``)."""
        if not config.is_rl:
            return sft_gradient(state)[1]
        return minibatch_gradient(state.params, rl_batch(state, hparams)[2], hparams)[0]

    update = rl_update if config.is_rl else sft_update
    param_specs = jax.tree.map(lambda x, dim: PartitionSpec(*(DATA_AXIS if i == dim else None for i in range(x.ndim))),
                               jax.eval_shape(fresh_params, jax.random.PRNGKey(0)), dims)
    state_specs = LMState(param_specs, param_specs, optax.ScaleByAdamState(PartitionSpec(), param_specs, param_specs),
                          PartitionSpec(), PartitionSpec())
    learner = Learner(init=init, update=update, num_updates=config.num_updates, env_steps_per_update=config.batch_size,
                      data_parallel=shards, state_specs=state_specs if config.fsdp else None)
    return learner, {"model": model, "tokenizer": tokenizer, "task": task, "prompt_len": prompt_len,
                     "batch_gradient": batch_gradient}
