"""A decoder-only transformer (pre-norm, rotary positions, optional value head) with an explicit KV cache.

The size is configuration only (``TransformerConfig``). One call serves training, one-pass prefill
and one-token decoding:

    logits, values, cache = model.apply(params, tokens, positions, key_mask, cache, write_index)

- ``tokens``, ``positions``: ``(B, L)`` int32; positions drive the rotary embedding, so a
  left-padded prompt gives its first real token position 0.
- ``cache``: ``None`` (training: attention over the ``L`` tokens themselves) or a ``KVCache`` per
  layer, each ``k``/``v`` of shape ``(B, heads, T, head_dim)``; the ``L`` new keys and values are
  written at slots ``write_index .. write_index + L - 1`` and the queries attend over all ``T``
  slots. Heads come before slots so that each decoding step's attention reads the cache as it is
  stored: with ``(B, T, heads, head_dim)`` XLA's CPU backend transposed the whole cache on every
  step, and the sampler ran at 13.9k instead of 18.7k tokens/s on one device and 18.2k instead of
  37.7k on two (``experiments.bench_sampler``).
- ``key_mask``: ``(B, T)`` bool, the slots holding real tokens (``False`` for padding); a query in
  slot ``s`` attends to the real slots ``<= s`` (causal).

Embeddings are tied (the output layer is the transpose of the token embedding), as in GPT-2.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """The architecture; every size is a field."""

    vocab_size: int
    num_layers: int = 4
    d_model: int = 128
    num_heads: int = 4
    mlp_ratio: int = 4
    max_len: int = 128
    value_head: bool = False
    rope_base: float = 10_000.0

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first inconsistent field."""
        for name in ("vocab_size", "num_layers", "d_model", "num_heads", "mlp_ratio", "max_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.d_model % self.num_heads or self.head_dim % 2:
            raise ValueError(f"d_model ({self.d_model}) must split into num_heads ({self.num_heads}) heads of even size")


class KVCache(NamedTuple):
    """Keys and values of one layer for ``T`` slots: each ``(B, heads, T, head_dim)``."""

    k: jax.Array
    v: jax.Array


def init_cache(config: TransformerConfig, batch: int, length: int, dtype: jnp.dtype = jnp.float32) -> tuple[KVCache, ...]:
    """An all-zero cache of ``length`` slots for ``batch`` sequences, one ``KVCache`` per layer."""
    shape = (batch, config.num_heads, length, config.head_dim)
    return tuple(KVCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)) for _ in range(config.num_layers))


def rotary(x: jax.Array, positions: jax.Array, base: float) -> jax.Array:
    """Rotate the two halves of each head's features of ``x`` ``(B, L, H, D)`` by position-dependent angles."""
    half = x.shape[-1] // 2
    frequencies = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angles = positions[..., None].astype(jnp.float32) * frequencies  # (B, L, half)
    cos, sin = jnp.cos(angles)[:, :, None, :], jnp.sin(angles)[:, :, None, :]
    first, second = x[..., :half], x[..., half:]
    return jnp.concatenate([first * cos - second * sin, first * sin + second * cos], axis=-1).astype(x.dtype)


class Attention(nn.Module):
    config: TransformerConfig

    @nn.compact
    def __call__(self, x, positions, key_mask, cache: KVCache | None, write_index):
        c = self.config
        batch, length, _ = x.shape
        qkv = nn.DenseGeneral((3, c.num_heads, c.head_dim), name="qkv")(x)  # (B, L, 3, H, D)
        q = rotary(qkv[:, :, 0], positions, c.rope_base)
        k = rotary(qkv[:, :, 1], positions, c.rope_base)
        v = qkv[:, :, 2]
        k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # (B, H, L, D)
        if cache is None:
            keys, values, query_slots = k, v, jnp.arange(length)
        else:
            start = (0, 0, write_index, 0)
            keys = jax.lax.dynamic_update_slice(cache.k, k.astype(cache.k.dtype), start)
            values = jax.lax.dynamic_update_slice(cache.v, v.astype(cache.v.dtype), start)
            cache = KVCache(keys, values)
            query_slots = write_index + jnp.arange(length)
        key_slots = jnp.arange(keys.shape[2])
        allowed = (key_slots[None, :] <= query_slots[:, None])[None, None] & key_mask[:, None, None, :]
        scores = jnp.einsum("bqhd,bhkd->bhqk", q, keys) / jnp.sqrt(c.head_dim).astype(q.dtype)
        scores = jnp.where(allowed, scores, jnp.finfo(scores.dtype).min)
        weights = jax.nn.softmax(scores, axis=-1)
        out = jnp.einsum("bhqk,bhkd->bqhd", weights, values).reshape(batch, length, c.d_model)
        return nn.Dense(c.d_model, name="out")(out), cache


class Block(nn.Module):
    config: TransformerConfig

    @nn.compact
    def __call__(self, x, positions, key_mask, cache, write_index):
        attended, cache = Attention(self.config, name="attention")(
            nn.LayerNorm(name="norm_attention")(x), positions, key_mask, cache, write_index)
        x = x + attended
        hidden = nn.Dense(self.config.d_model * self.config.mlp_ratio, name="mlp_in")(nn.LayerNorm(name="norm_mlp")(x))
        return x + nn.Dense(self.config.d_model, name="mlp_out")(nn.gelu(hidden)), cache


class Transformer(nn.Module):
    """Decoder-only transformer; returns ``(logits (B, L, V), values (B, L) or None, cache)``."""

    config: TransformerConfig

    @nn.compact
    def __call__(self, tokens, positions, key_mask=None, cache=None, write_index=0):
        c = self.config
        embed = nn.Embed(c.vocab_size, c.d_model, embedding_init=nn.initializers.normal(0.02), name="embed")
        x = embed(tokens)
        if key_mask is None:
            key_mask = jnp.ones((tokens.shape[0], tokens.shape[1] if cache is None else cache[0].k.shape[2]), bool)
        new_cache = []
        for layer in range(c.num_layers):
            x, layer_cache = Block(c, name=f"block_{layer}")(
                x, positions, key_mask, None if cache is None else cache[layer], write_index)
            new_cache.append(layer_cache)
        x = nn.LayerNorm(name="norm_out")(x)
        logits = embed.attend(x)
        values = nn.Dense(1, name="value")(x)[..., 0] if c.value_head else None
        return logits, values, (None if cache is None else tuple(new_cache))


def num_params(params) -> int:
    """The number of scalars in ``params``."""
    return sum(leaf.size for leaf in jax.tree.leaves(params))
