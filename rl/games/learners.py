"""Self-play learners on normal-form games, vectorised over a batch of same-shaped games.

Every learner takes a batch ``[G, ...]`` and runs all ``G`` games in one jitted ``vmap`` of a
``lax.scan`` over iterations, returning a ``SelfPlayResult``: the last iterate, the average
policy (the mean of the policies played so far) and, at ``record_iterations(iterations,
num_records)`` (log-spaced; every iteration when ``num_records >= iterations``), the NashConv of
the average and of the last iterate. Compiled once per (shape, iterations, num_records); step
sizes are traced, so changing them does not recompile.

- ``fictitious_play``: simultaneous fictitious play. The empirical averages start at the uniform
  strategy (counted as one play); each iteration both players play a pure best response to the
  other's empirical average (ties: the first strategy). The last iterate is that pure profile.
- ``hedge``: Hedge / multiplicative weights with full information, from uniform: each player's
  logits grow by ``eta`` times the expected payoff of each pure strategy against the other's
  current mixed strategy, ``eta = step_size / (max - min payoff of the game)``.
- ``sppo_exact``: SPPO's ideal update on a preference matrix, one policy in both seats:
  ``pi_{t+1}(y) ∝ pi_t(y) exp(eta P(y > pi_t))``, ``P(y > pi) = sum_y' pi(y') P[y, y']``.
- ``sppo_sampled``: the SPPO learner (Wu et al. 2024) with a tabular softmax policy: each iteration
  draws ``num_samples`` options from ``pi_t``, estimates ``P_hat(y_k > pi_t)`` as the mean of
  ``P[y_k, y_j]`` over all the samples, ``y_k`` itself included (1/2), and takes ``inner_steps``
  optax SGD steps from ``pi_t`` on ``mean_k (log pi_theta(y_k)/pi_t(y_k) - eta (P_hat_k - 1/2))^2``;
  ``pi_{t+1} = pi_theta``.

SPPO's metrics are those of the preference game with payoff ``2P - 1`` at the profile (pi, pi).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rl.errors import ConfigError
from rl.games.matrix import best_response_values, nash_conv
from rl.games.preference import check_preference

DEFAULT_HEDGE_STEP = 0.5
DEFAULT_SPPO_ETA = 0.05


class SelfPlayResult(NamedTuple):
    """What every learner returns, for a batch of ``G`` games of ``m`` rows and ``n`` columns."""

    last_row: Any
    """[G, m] the row player's last iterate"""
    last_col: Any
    """[G, n] the column player's last iterate"""
    average_row: Any
    """[G, m] the row player's average policy"""
    average_col: Any
    """[G, n]"""
    nash_conv_average: Any
    """[G, R] NashConv of the average policy at each recorded iteration"""
    nash_conv_last: Any
    """[G, R] NashConv of the last iterate at each recorded iteration"""
    iterations: np.ndarray
    """[R] the recorded iterations (1-based counts of updates done)"""


def record_iterations(iterations: int, num_records: int) -> np.ndarray:
    """Log-spaced iteration counts from 1 to ``iterations`` (all of them if ``num_records >= iterations``)."""
    if iterations < 1 or num_records < 1:
        raise ConfigError("iterations", f"iterations and num_records must be >= 1, got {iterations}, {num_records}")
    if num_records >= iterations:
        return np.arange(1, iterations + 1)
    return np.unique(np.round(np.geomspace(1, iterations, num_records)).astype(np.int64))


@dataclasses.dataclass(frozen=True)
class _Spec:
    init: Callable
    step: Callable
    policies: Callable  # state -> (last_row, last_col, average_row, average_col)
    options: tuple = ()


@functools.partial(jax.jit, static_argnames=("spec", "iterations", "num_records"))
def _drive(spec: _Spec, payoffs: jax.Array, init_x: jax.Array, init_y: jax.Array, keys: jax.Array, hparams: Any,
           iterations: int, num_records: int):
    records = record_iterations(iterations, num_records)
    # updates between consecutive recorded iterations: the metrics are computed at records only
    gaps = jnp.asarray(np.diff(records, prepend=0), dtype=jnp.int32)

    def one_game(pay, x0, y0, key):
        def update(_, carry):
            state, key = carry
            key, sub = jax.random.split(key)
            return spec.step(pay, state, sub, hparams, spec.options), key

        def segment(carry, gap):
            carry = jax.lax.fori_loop(0, gap, update, carry)
            last_x, last_y, avg_x, avg_y = spec.policies(carry[0])
            return carry, (nash_conv(pay, avg_x, avg_y), nash_conv(pay, last_x, last_y))

        (state, _), (curve_avg, curve_last) = jax.lax.scan(segment, (spec.init(x0, y0), key), gaps)
        return (*spec.policies(state), curve_avg, curve_last)

    return jax.vmap(one_game)(payoffs, init_x, init_y, keys)


def _run(spec: _Spec, payoffs: Any, key: jax.Array | None, hparams: Any, iterations: int, num_records: int,
         initial: tuple[Any, Any] | None) -> SelfPlayResult:
    payoffs = jnp.asarray(payoffs, dtype=jnp.float32)
    if payoffs.ndim != 4 or payoffs.shape[1] != 2:
        raise ConfigError("payoffs", f"expected a batch [games, 2, rows, columns], got shape {payoffs.shape}")
    g, _, m, n = payoffs.shape
    if initial is None:
        initial = jnp.full((g, m), 1.0 / m), jnp.full((g, n), 1.0 / n)
    init_x, init_y = (jnp.asarray(p, dtype=jnp.float32) for p in initial)
    if init_x.shape != (g, m) or init_y.shape != (g, n) or not (jnp.all(init_x > 0) and jnp.all(init_y > 0)):
        raise ConfigError("initial", f"initial policies must be positive, shaped {(g, m)} and {(g, n)}")
    init_x, init_y = init_x / init_x.sum(-1, keepdims=True), init_y / init_y.sum(-1, keepdims=True)
    key = jax.random.PRNGKey(0) if key is None else jnp.asarray(key)
    keys = key if key.ndim == 2 else jax.random.split(key, g)
    if keys.shape[0] != g:
        raise ConfigError("key", f"one key or one per game ({g}), got {keys.shape[0]}")
    out = _drive(spec, payoffs, init_x, init_y, keys, hparams, iterations, num_records)
    return SelfPlayResult(*out, iterations=record_iterations(iterations, num_records))


# ----------------------------------------------------------------------------- fictitious play


def _fp_init(x0, y0):
    return x0, y0, x0, y0  # counts (the initial policy counts as one play), last


def _fp_step(pay, state, key, hp, options):
    counts_x, counts_y, _, _ = state
    row, col = best_response_values(pay, counts_x / counts_x.sum(), counts_y / counts_y.sum())
    x = jax.nn.one_hot(jnp.argmax(row), row.shape[-1])
    y = jax.nn.one_hot(jnp.argmax(col), col.shape[-1])
    return counts_x + x, counts_y + y, x, y


def _fp_policies(state):
    counts_x, counts_y, x, y = state
    return x, y, counts_x / counts_x.sum(), counts_y / counts_y.sum()


_FP = _Spec(_fp_init, _fp_step, _fp_policies)


def fictitious_play(payoffs: Any, iterations: int, num_records: int = 200,
                    initial: tuple[Any, Any] | None = None) -> SelfPlayResult:
    """Simultaneous fictitious play on a batch ``payoffs [G, 2, m, n]`` for ``iterations`` steps;
    ``initial`` = (row [G, m], column [G, n]) policies counted as the first play (default uniform)."""
    return _run(_FP, payoffs, None, (), iterations, num_records, initial)


# ----------------------------------------------------------------------------- Hedge


def _hedge_init(x0, y0):
    return jnp.log(x0), jnp.log(y0), jnp.zeros_like(x0), jnp.zeros_like(y0), jnp.zeros(())


def _hedge_step(pay, state, key, hp, options):
    logits_x, logits_y, sum_x, sum_y, t = state
    x, y = jax.nn.softmax(logits_x), jax.nn.softmax(logits_y)
    row, col = best_response_values(pay, x, y)
    eta = hp / jnp.maximum(pay.max() - pay.min(), 1e-12)
    logits_x, logits_y = logits_x + eta * row, logits_y + eta * col
    return logits_x - logits_x.max(), logits_y - logits_y.max(), sum_x + x, sum_y + y, t + 1


def _hedge_policies(state):
    logits_x, logits_y, sum_x, sum_y, t = state
    return jax.nn.softmax(logits_x), jax.nn.softmax(logits_y), sum_x / t, sum_y / t


_HEDGE = _Spec(_hedge_init, _hedge_step, _hedge_policies)


def hedge(payoffs: Any, iterations: int, step_size: float = DEFAULT_HEDGE_STEP, num_records: int = 200,
          initial: tuple[Any, Any] | None = None) -> SelfPlayResult:
    """Hedge (multiplicative weights, full information) on a batch ``payoffs [G, 2, m, n]``; the step
    on each game is ``step_size`` divided by that game's payoff range. ``initial``: the first
    policies (row [G, m], column [G, n]; default uniform)."""
    if not step_size > 0:
        raise ConfigError("step_size", f"must be > 0, got {step_size}")
    return _run(_HEDGE, payoffs, None, jnp.float32(step_size), iterations, num_records, initial)


# ----------------------------------------------------------------------------- SPPO


def preference_payoffs(preferences: Any) -> np.ndarray:
    """The symmetric zero-sum game ``[G, 2, n, n]`` of preference matrices ``[G, n, n]``: row payoff
    ``2P - 1``, column payoff ``1 - 2P``."""
    p = check_preference(preferences)
    if p.ndim != 3:
        raise ConfigError("preferences", f"expected a batch [games, n, n], got shape {p.shape}")
    return np.stack([2 * p - 1, 1 - 2 * p], axis=1)


def sppo_rewards(preferences: Any, samples: Any) -> jax.Array:
    """``P_hat(y_k > pi_t)`` for each of the K ``samples`` (option indices drawn from pi_t): the mean
    of ``P[y_k, y_j]`` over all K samples, ``y_k`` itself included (``P[y, y] = 1/2``)."""
    preferences, samples = jnp.asarray(preferences), jnp.asarray(samples)
    return preferences[samples][:, samples].mean(axis=1)


def sppo_loss(logits: jax.Array, logits_t: jax.Array, samples: jax.Array, rewards: jax.Array, eta: Any) -> jax.Array:
    """SPPO's square loss ``mean_k (log pi_theta(y_k) / pi_t(y_k) - eta (P_hat_k - 1/2))^2``."""
    log_ratio = jax.nn.log_softmax(logits)[samples] - jax.nn.log_softmax(logits_t)[samples]
    return jnp.mean((log_ratio - eta * (rewards - 0.5)) ** 2)


def _sppo_init(x0, y0):
    return jnp.log(x0), jnp.zeros_like(x0), jnp.zeros(())


def _sppo_policies(state):
    logits, total, t = state
    pi, avg = jax.nn.softmax(logits), total / t
    return pi, pi, avg, avg


def _sppo_exact_step(pay, state, key, hp, options):
    logits, total, t = state
    pi = jax.nn.softmax(logits)
    win = (1 + pay[0]) / 2 @ pi  # P(y > pi) for every y
    logits = logits + hp * win
    return logits - logits.max(), total + pi, t + 1


def _sppo_sampled_step(pay, state, key, hp, options):
    num_samples, inner_steps = options
    eta, lr = hp
    logits_t, total, t = state
    samples = jax.random.categorical(key, logits_t, shape=(num_samples,))
    rewards = sppo_rewards((1 + pay[0]) / 2, samples)
    opt = optax.sgd(lr)

    def inner(carry, _):
        theta, opt_state = carry
        grads = jax.grad(sppo_loss)(theta, logits_t, samples, rewards, eta)
        updates, opt_state = opt.update(grads, opt_state, theta)
        return (optax.apply_updates(theta, updates), opt_state), None

    (theta, _), _ = jax.lax.scan(inner, (logits_t, opt.init(logits_t)), None, length=inner_steps)
    return theta - theta.max(), total + jax.nn.softmax(logits_t), t + 1


_SPPO_EXACT = _Spec(_sppo_init, _sppo_exact_step, _sppo_policies)


def sppo_exact(preferences: Any, iterations: int, eta: float = DEFAULT_SPPO_ETA, num_records: int = 200,
               initial: Any | None = None) -> SelfPlayResult:
    """SPPO's ideal multiplicative update on a batch of preference matrices ``[G, n, n]``, from
    ``initial`` policies ``[G, n]`` (default uniform)."""
    if not eta > 0:
        raise ConfigError("eta", f"must be > 0, got {eta}")
    return _run(_SPPO_EXACT, preference_payoffs(preferences), None, jnp.float32(eta), iterations, num_records,
                None if initial is None else (initial, initial))


def sppo_sampled(preferences: Any, iterations: int, key: jax.Array, eta: float = DEFAULT_SPPO_ETA,
                 num_samples: int = 64, inner_steps: int = 10, lr: float = 1.0,
                 num_records: int = 200, initial: Any | None = None) -> SelfPlayResult:
    """The sampled SPPO learner (tabular softmax policy, ``num_samples`` samples per iteration,
    ``inner_steps`` SGD steps of rate ``lr`` on SPPO's loss) on preference matrices ``[G, n, n]``;
    ``key``: one PRNG key, split over the games, or one per game ``[G, 2]``."""
    if num_samples < 2:
        raise ConfigError("num_samples", f"SPPO needs at least 2 samples per iteration, got {num_samples}")
    if inner_steps < 1:
        raise ConfigError("inner_steps", f"must be >= 1, got {inner_steps}")
    if not (eta > 0 and lr > 0):
        raise ConfigError("eta", f"eta and lr must be > 0, got {eta}, {lr}")
    spec = _Spec(_sppo_init, _sppo_sampled_step, _sppo_policies, (num_samples, inner_steps))
    hparams = (jnp.float32(eta), jnp.float32(lr))
    return _run(spec, preference_payoffs(preferences), key, hparams, iterations, num_records,
                None if initial is None else (initial, initial))
