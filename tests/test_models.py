"""Networks: the actor-only and critic-only paths equal the joint forward pass; the actor and critic
really are separate networks; the recurrent network unrolled over a sequence (its GRU alone scanned)
equals its step-by-step calls, outputs and gradients; the orthogonal initialiser is orthogonal and
equal under vmap."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.actor_critic import ActorCritic, ConvTorso, RecurrentActorCritic, orthogonal, unroll


@pytest.mark.parametrize("continuous", [False, True])
def test_actor_critic_halves_equal_the_joint_pass(continuous):
    net = ActorCritic(3, continuous, hidden_sizes=(16, 8))
    obs = jax.random.normal(jax.random.PRNGKey(0), (5, 4))
    params = net.init(jax.random.PRNGKey(1), obs[0])
    joint = net.apply(params, obs)
    logits, log_std = net.apply(params, obs, method=net.policy)
    value = net.apply(params, obs, method=net.value)
    np.testing.assert_allclose(joint.logits, logits, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(joint.log_std, log_std, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(joint.value, value, rtol=1e-6, atol=1e-6)
    assert joint.logits.shape == (5, 3) and joint.value.shape == (5,)


def test_actor_and_critic_share_no_weights():
    """A gradient of the value alone touches only the critic's slices of the stacked kernels."""
    net = ActorCritic(2, hidden_sizes=(8, 8))
    obs = jnp.ones((3, 4))
    params = net.init(jax.random.PRNGKey(0), obs[0])
    grads = jax.grad(lambda p: net.apply(p, obs).value.sum())(params)["params"]
    for name, grad in grads["torsos"].items():
        assert np.all(grad[0] == 0) and np.any(grad[1] != 0), name
    assert all(np.all(g == 0) for g in jax.tree.leaves(grads["actor_head"]))
    kernels = params["params"]["torsos"]["kernel_1"]
    assert not np.allclose(kernels[0], kernels[1])  # two independently initialised networks


def test_recurrent_actor_critic_halves_equal_the_joint_pass():
    net = RecurrentActorCritic(2, torso_sizes=(8,), hidden_size=6, head_sizes=(8,))
    obs, hidden, reset = jnp.ones((3, 4)), jnp.zeros((3, 6)), jnp.array([True, False, False])
    params = net.init(jax.random.PRNGKey(0), hidden, obs, reset)
    new_hidden, joint = net.apply(params, hidden, obs, reset)
    core = net.apply(params, hidden, obs, reset, method=net.core)
    np.testing.assert_allclose(new_hidden, core, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(joint.logits, net.apply(params, core, method=net.policy)[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(joint.value, net.apply(params, core, method=net.value), rtol=1e-6, atol=1e-6)


def test_unroll_equals_the_network_called_step_by_step():
    """Outputs, last hidden state and the gradient of a loss on them, with episode resets inside."""
    net = RecurrentActorCritic(3, torso_sizes=(8,), hidden_size=6, head_sizes=(8,), activation="leaky_relu")
    steps, batch = 7, 4
    obs = jax.random.normal(jax.random.PRNGKey(0), (steps, batch, 5))
    reset = jax.random.bernoulli(jax.random.PRNGKey(1), 0.3, (steps, batch))
    hidden = jax.random.normal(jax.random.PRNGKey(2), (batch, 6))
    params = net.init(jax.random.PRNGKey(3), hidden, obs[0], reset[0])

    def stepwise(p):
        return jax.lax.scan(lambda h, inputs: net.apply(p, h, *inputs), hidden, (obs, reset))

    def loss(run, p):
        last, out = run(p)
        return jnp.sum(out.logits ** 2) + jnp.sum(out.value) + jnp.sum(last)

    (last, out), (last_u, out_u) = stepwise(params), unroll(net, params, hidden, obs, reset)
    np.testing.assert_allclose(last_u, last, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out_u.logits, out.logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out_u.value, out.value, rtol=1e-5, atol=1e-6)
    grads = jax.grad(lambda p: loss(stepwise, p))(params)
    grads_u = jax.grad(lambda p: loss(lambda q: unroll(net, q, hidden, obs, reset), p))(params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5), grads, grads_u)
    assert np.any(reset[1:]) and not np.allclose(out.value[0], out.value[-1])  # resets happen; outputs move

def test_orthogonal_matches_flax_under_vmap():
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    ours = jax.jit(jax.vmap(lambda k: orthogonal(2.0)(k, (6, 4))))(keys)
    flax_values = jax.vmap(lambda k: nn.initializers.orthogonal(2.0)(k, (6, 4)))(keys)
    np.testing.assert_allclose(ours, flax_values, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ours[0].T @ ours[0], 4.0 * np.eye(4), atol=1e-5)


def test_conv_torso_is_a_3x3_same_convolution():
    images = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 5, 4)) + 0.5
    torso = ConvTorso((16,))
    params = torso.init(jax.random.PRNGKey(1), images)
    dense = params["params"]["Dense_0"]
    kernel = dense["kernel"].reshape(3, 3, 4, 16)  # patches are ordered (row, column, channel)
    bias = jax.random.normal(jax.random.PRNGKey(2), (16,))
    params = {"params": {"Dense_0": {"kernel": dense["kernel"], "bias": bias}}}
    reference = jax.lax.conv_general_dilated(images, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    expected = jax.nn.relu(reference + bias).reshape(2, -1)
    np.testing.assert_allclose(torso.apply(params, images), expected, rtol=1e-5, atol=1e-5)


def test_twin_mlp_on_wide_inputs_equals_two_separate_mlps():
    """The side-by-side first layer (inputs >= 256 wide) computes the same as the narrow path."""
    net = ActorCritic(3, hidden_sizes=(8, 8))
    obs = jax.random.normal(jax.random.PRNGKey(0), (4, 300))
    params = net.init(jax.random.PRNGKey(1), obs[0])
    joint = net.apply(params, obs)
    np.testing.assert_allclose(joint.logits, net.apply(params, obs, method=net.policy)[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(joint.value, net.apply(params, obs, method=net.value), rtol=1e-5, atol=1e-5)


def test_conv3x3_is_the_patch_matmul_in_value_and_gradient():
    from models.actor_critic import conv3x3, patches3x3

    images = jax.random.normal(jax.random.PRNGKey(0), (3, 6, 7, 2))
    kernel = jax.random.normal(jax.random.PRNGKey(1), (18, 5))
    bias = jax.random.normal(jax.random.PRNGKey(2), (5,))

    def by_patches(x, k, b):
        return patches3x3(x) @ k + b

    np.testing.assert_allclose(conv3x3(images, kernel, bias), by_patches(images, kernel, bias), rtol=1e-5, atol=1e-5)
    weights = jax.random.normal(jax.random.PRNGKey(3), (3, 6, 7, 5))
    grads = jax.grad(lambda *a: jnp.sum(weights * jnp.tanh(conv3x3(*a))), (0, 1, 2))(images, kernel, bias)
    expected = jax.grad(lambda *a: jnp.sum(weights * jnp.tanh(by_patches(*a))), (0, 1, 2))(images, kernel, bias)
    for got, want in zip(grads, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # under vmap over a batch of params (runs), too
    batched = jax.vmap(conv3x3, in_axes=(None, 0, 0))(images, jnp.stack([kernel, -kernel]), jnp.stack([bias, bias]))
    np.testing.assert_allclose(batched[1], by_patches(images, -kernel, bias), rtol=1e-5, atol=1e-5)
