"""A jit-compiled sampler with an explicit KV cache: one-pass prefill, then one token per step.

``make_sampler(model, max_new_tokens, ...)`` returns ``sample(params, prompt_tokens, prompt_mask, key,
row_ids=None)`` for left-padded prompts ``(B, P)`` (``rl.lm.tokenizer.CharTokenizer.encode_prompts``). The prompt
is run through the model once, filling slots ``0 .. P-1`` of a cache of ``P + max_new_tokens``
slots; then a ``lax.scan`` decodes one token per step, attending over the cache. Each step draws
from ``softmax(logits / temperature)`` restricted to the ``top_k`` most likely tokens and to the
smallest set whose probability reaches ``top_p`` (temperature 0: the most likely token). Each
sequence draws with its own key, ``fold_in(step_key, row_id)`` (``row_ids``, default ``0 .. B-1``),
so a batch split over devices samples exactly what the whole batch would on one device. Once a
sequence has produced the end-of-sequence token, the rest of its completion is padding and its
completion mask is ``False``.

Returns ``Sample(tokens (B, N), logprobs (B, N), mask (B, N))``: the completion tokens (EOS
included, mask ``True`` up to and including it), and the log-probability of each token under the
distribution it was drawn from before the top-k/top-p cut (``log_softmax(logits / temperature)``;
at temperature 0 and 1 this is the policy's own log-probability). The batch is sharded over
devices by the inputs' sharding (``shard_batch``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from models.transformer import Transformer, init_cache
from rl.lm.tokenizer import EOS, PAD


class Sample(NamedTuple):
    tokens: jax.Array
    logprobs: jax.Array
    mask: jax.Array


def filter_logits(logits: jax.Array, top_k: int = 0, top_p: float = 1.0) -> jax.Array:
    """``logits`` with the tokens outside the top ``top_k`` (0: no cut) and outside the nucleus of
    probability ``top_p`` set to ``-inf``; the most likely token always stays."""
    if top_k and top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if top_p < 1.0:
        ordered = jnp.sort(logits, axis=-1)[..., ::-1]
        probs = jax.nn.softmax(ordered, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # probability of the more likely tokens
        kept = jnp.where(before < top_p, ordered, jnp.inf).min(axis=-1, keepdims=True)
        logits = jnp.where(logits < kept, -jnp.inf, logits)
    return logits


def make_sampler(model: Transformer, max_new_tokens: int, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0) -> Callable[..., Sample]:
    """``sample(params, prompt_tokens, prompt_mask, key) -> Sample`` (see the module docstring), jitted."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if temperature < 0 or not 0 < top_p <= 1 or top_k < 0:
        raise ValueError(f"need temperature >= 0, 0 < top_p <= 1, top_k >= 0; got {temperature}, {top_p}, {top_k}")
    config = model.config

    def choose(logits: jax.Array, key: jax.Array, row_ids: jax.Array) -> tuple[jax.Array, jax.Array]:
        if temperature == 0.0:
            token = jnp.argmax(logits, axis=-1)
            logprob = jax.nn.log_softmax(logits)
        else:
            scaled = logits / temperature
            row_keys = jax.vmap(jax.random.fold_in, (None, 0))(key, row_ids)
            token = jax.vmap(jax.random.categorical)(row_keys, filter_logits(scaled, top_k, top_p))
            logprob = jax.nn.log_softmax(scaled)
        return token.astype(jnp.int32), jnp.take_along_axis(logprob, token[:, None], axis=-1)[:, 0]

    @jax.jit
    def sample(params: Any, prompt_tokens: jax.Array, prompt_mask: jax.Array, key: jax.Array,
               row_ids: jax.Array | None = None) -> Sample:
        batch, prompt_len = prompt_tokens.shape
        row_ids = jnp.arange(batch) if row_ids is None else row_ids
        total = prompt_len + max_new_tokens
        if total > config.max_len:
            raise ValueError(f"prompt ({prompt_len}) + new tokens ({max_new_tokens}) exceed max_len {config.max_len}")
        key_mask = jnp.concatenate([prompt_mask, jnp.zeros((batch, max_new_tokens), bool)], axis=1)
        positions = jnp.maximum(jnp.cumsum(prompt_mask, axis=1) - 1, 0)
        cache = init_cache(config, batch, total)
        logits, _, cache = model.apply(params, prompt_tokens, positions, key_mask, cache, 0)
        lengths = prompt_mask.sum(axis=1)
        first_key, decode_key = jax.random.split(key)
        token, logprob = choose(logits[:, -1], first_key, row_ids)

        def step(carry, step_key):
            token, logprob, done, cache, key_mask, t = carry
            live = ~done
            out = (jnp.where(live, token, PAD), jnp.where(live, logprob, 0.0), live)
            done = done | (token == EOS)
            slot = prompt_len + t
            key_mask = key_mask.at[:, slot].set(True)
            logits, _, cache = model.apply(params, token[:, None], (lengths + t)[:, None], key_mask, cache, slot)
            token, logprob = choose(logits[:, 0], step_key, row_ids)
            return (token, logprob, done, cache, key_mask, t + 1), out

        carry = (token, logprob, jnp.zeros(batch, bool), cache, key_mask, jnp.zeros((), jnp.int32))
        # the last step's forward pass would only feed a token that is never emitted
        carry, (tokens, logprobs, mask) = jax.lax.scan(step, carry, jax.random.split(decode_key, max_new_tokens - 1))
        token, logprob, done = carry[0], carry[1], carry[2]
        tokens = jnp.concatenate([tokens, jnp.where(done, PAD, token)[None]], axis=0)
        logprobs = jnp.concatenate([logprobs, jnp.where(done, 0.0, logprob)[None]], axis=0)
        mask = jnp.concatenate([mask, ~done[None]], axis=0)
        return Sample(tokens.T, logprobs.T, mask.T)

    return sample


def make_recompute_sampler(model: Transformer, max_new_tokens: int) -> Callable[..., jax.Array]:
    """Greedy decoding that recomputes the whole prefix at every step (no cache): the baseline the
    KV-cache sampler is benchmarked against. Returns the ``(B, N)`` completion tokens (EOS not handled)."""

    @jax.jit
    def sample(params: Any, prompt_tokens: jax.Array, prompt_mask: jax.Array) -> jax.Array:
        batch, prompt_len = prompt_tokens.shape
        tokens = jnp.concatenate([prompt_tokens, jnp.full((batch, max_new_tokens), PAD, jnp.int32)], axis=1)
        mask = jnp.concatenate([prompt_mask, jnp.zeros((batch, max_new_tokens), bool)], axis=1)

        def step(carry, t):
            tokens, mask = carry
            positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
            logits, _, _ = model.apply(params, tokens, positions, mask)
            slot = prompt_len + t
            token = jnp.argmax(jax.lax.dynamic_index_in_dim(logits, slot - 1, axis=1, keepdims=False), axis=-1)
            return (tokens.at[:, slot].set(token.astype(jnp.int32)), mask.at[:, slot].set(True)), None

        (tokens, _), _ = jax.lax.scan(step, (tokens, mask), jnp.arange(max_new_tokens))
        return tokens[:, prompt_len:]

    return sample


def shard_batch(tree: Any, mesh: Mesh, axis: str) -> Any:
    """``tree`` with every array's leading (batch) axis split over ``axis`` of ``mesh``."""
    return jax.tree.map(lambda x: jax.device_put(x, NamedSharding(mesh, PartitionSpec(axis))), tree)
