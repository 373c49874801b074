"""GAE against hand-computed values, with termination and truncation."""

import numpy as np
import pytest

from rl.gae import gae


def reference_gae(rewards, values, next_values, terminated, done, gamma, lam):
    """Plain-Python GAE, one environment, written straight from the definition."""
    advantages = np.zeros(len(rewards))
    running = 0.0
    for t in reversed(range(len(rewards))):
        bootstrap = 0.0 if terminated[t] else gamma * next_values[t]
        delta = rewards[t] + bootstrap - values[t]
        running = delta + (0.0 if done[t] else gamma * lam * running)
        advantages[t] = running
    return advantages


def test_gae_by_hand_with_truncation_and_termination():
    # Steps 0-1: one episode truncated after step 1 (bootstrap from its final observation, value 10);
    # steps 2-3: an episode terminated at step 3 (no bootstrap).
    gamma, lam = 0.5, 0.5
    rewards = np.array([1.0, 2.0, 3.0, 4.0])
    values = np.array([0.5, 1.0, 1.5, 2.0])
    next_values = np.array([1.0, 10.0, 2.0, 99.0])  # V(s_{t+1}) or V(final obs)
    terminated = np.array([False, False, False, True])
    done = np.array([False, True, False, True])
    adv, target = gae(rewards, values, next_values, terminated, done, gamma, lam)
    # by hand
    a1 = 2.0 + 0.5 * 10.0 - 1.0  # truncated: bootstrap from the final observation, no recursion past it
    a0 = (1.0 + 0.5 * 1.0 - 0.5) + 0.25 * a1
    a3 = 4.0 - 2.0  # terminated: no bootstrap
    a2 = (3.0 + 0.5 * 2.0 - 1.5) + 0.25 * a3
    np.testing.assert_allclose(adv, [a0, a1, a2, a3], rtol=1e-6)
    np.testing.assert_allclose(target, np.array([a0, a1, a2, a3]) + values, rtol=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_gae_matches_reference_on_random_batches(seed):
    rng = np.random.default_rng(seed)
    T, N = 16, 3
    rewards, values, next_values = (rng.normal(size=(T, N)).astype(np.float32) for _ in range(3))
    terminated = rng.random((T, N)) < 0.15
    done = terminated | (rng.random((T, N)) < 0.15)
    adv, _ = gae(rewards, values, next_values, terminated, done, 0.97, 0.9)
    for n in range(N):
        ref = reference_gae(rewards[:, n], values[:, n], next_values[:, n], terminated[:, n], done[:, n], 0.97, 0.9)
        np.testing.assert_allclose(np.asarray(adv)[:, n], ref, rtol=1e-5, atol=1e-5)
