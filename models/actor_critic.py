"""Actor-critic networks (MLP, conv torso for image observations, GRU) and the distribution maths
the learners need.

A policy head returns ``PolicyOutput``: for discrete actions ``logits`` (``log_std`` is unused),
for continuous actions the Gaussian ``mean`` in ``logits`` and a state-independent ``log_std``.
Distribution helpers are plain functions of arrays so they vmap and differentiate without
wrappers.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

ACTIVATIONS = {"tanh": nn.tanh, "relu": nn.relu, "leaky_relu": nn.leaky_relu}
LOG_2PI = float(np.log(2.0 * np.pi))


class PolicyOutput(NamedTuple):
    """Network output: action logits (or Gaussian mean), log std (continuous only), value."""

    logits: jax.Array
    log_std: jax.Array
    value: jax.Array


def orthogonal(scale: float = 1.0) -> nn.initializers.Initializer:
    """Orthogonal initialiser (as ``flax.linen.initializers.orthogonal``) whose QR factorisation
    never runs batched.

    Under ``vmap`` (a batch of seeds) JAX's CPU QR kernel splits the batch over XLA's thread pool
    and blocks until the pieces finish; when every pool thread is already busy (several CPU devices,
    or concurrently scheduled branches) that wait never ends and training hangs at initialisation.
    ``sequential_vmap`` turns the batch into a loop of single QRs, with the same values.
    """
    base = nn.initializers.orthogonal(scale)

    def init(key: jax.Array, shape: tuple[int, ...], dtype: jnp.dtype = jnp.float32) -> jax.Array:
        return jax.custom_batching.sequential_vmap(lambda k: base(k, shape, dtype))(key)

    return init


def _dense(features: int, scale: float, name: str | None = None) -> nn.Dense:
    return nn.Dense(
        features,
        kernel_init=orthogonal(scale),
        bias_init=nn.initializers.zeros,
        name=name,
    )


class MLP(nn.Module):
    """A stack of dense layers with orthogonal sqrt(2) initialisation."""

    hidden_sizes: tuple[int, ...]
    activation: str = "tanh"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        for size in self.hidden_sizes:
            x = act(_dense(size, np.sqrt(2.0))(x))
        return x


def _stacked_orthogonal(scale: float) -> nn.initializers.Initializer:
    """Orthogonal initialiser applied separately to each slice ``[i]`` of a stacked kernel."""
    single = orthogonal(scale)

    def init(key: jax.Array, shape: tuple[int, ...], dtype: jnp.dtype = jnp.float32) -> jax.Array:
        return jax.vmap(lambda k: single(k, shape[1:], dtype))(jax.random.split(key, shape[0]))

    return init


class TwinMLP(nn.Module):
    """Two MLPs of the same shape with separate weights, stored stacked (``kernel_i[2, in, out]``).

    ``apply(params, x)`` runs both on the same input and returns ``[2, ..., out]``: one batched
    matmul per layer instead of two (development A/B timings on CPU, README: Benchmark: a PPO
    gradient step ~10% faster, CartPole training ~6%).
    ``apply(params, x, index=k)`` runs MLP ``k`` alone and returns ``[..., out]``.
    """

    hidden_sizes: tuple[int, ...]
    activation: str = "tanh"

    @nn.compact
    def __call__(self, x: jax.Array, index: int | None = None) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        for layer, size in enumerate(self.hidden_sizes):
            shape = (2, x.shape[-1], size)
            kernel = self.param(f"kernel_{layer}", _stacked_orthogonal(np.sqrt(2.0)), shape)
            bias = self.param(f"bias_{layer}", nn.initializers.zeros, (2, size))
            if index is not None:
                x = act(x @ kernel[index] + bias[index])
            elif layer == 0 and shape[1] >= 256:
                # A wide shared input (conv features): one matmul with both kernels side by side, whose
                # input gradient is one matmul too. Measured on CPU: MinAtar PPO 2.2x faster; with narrow
                # inputs (CartPole) the batched form below is ~6% faster.
                side_by_side = jnp.moveaxis(kernel, 0, 1).reshape(shape[1], 2 * size)
                x = jnp.moveaxis((x @ side_by_side).reshape(*x.shape[:-1], 2, size), -2, 0)
                x = act(x + bias.reshape(2, *([1] * (x.ndim - 2)), size))
            else:
                x = jnp.broadcast_to(x, (2, *x.shape)) if layer == 0 else x
                x = act(jax.vmap(lambda xk, wk, bk: xk @ wk + bk)(x, kernel, bias))
        return x


def patches3x3(x: jax.Array) -> jax.Array:
    """The 3x3 neighbourhood of every pixel of ``[N, H, W, C]`` images (zero padding), stacked on the
    channel axis: ``[N, H, W, 9 C]``. A dense layer over these is a 3x3 "same" convolution."""
    height, width = x.shape[1:3]
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return jnp.concatenate([padded[:, i:i + height, j:j + width] for i in range(3) for j in range(3)], axis=-1)


def _conv3x3_by_patches(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
    return patches3x3(x) @ kernel + bias


@jax.custom_batching.custom_vmap
def _xla_conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
    channels, features = x.shape[-1], kernel.shape[-1]
    return jax.lax.conv_general_dilated(
        x, kernel.reshape(3, 3, channels, features), (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


@_xla_conv3x3.def_vmap
def _xla_conv3x3_vmap(axis_size: int, in_batched: list[bool], x: jax.Array, kernel: jax.Array):
    """Batched images: one convolution over the merged batch. Batched kernels (several runs):
    a loop of plain convolutions, since XLA's CPU grouped convolution was ~14x slower per run."""
    x_batched, kernel_batched = in_batched
    if not kernel_batched:
        out = _xla_conv3x3(x.reshape(-1, *x.shape[2:]), kernel)
        return out.reshape(axis_size, -1, *out.shape[1:]), True
    x = x if x_batched else jnp.broadcast_to(x, (axis_size, *x.shape))
    return jax.lax.map(lambda pair: _xla_conv3x3(*pair), (x, kernel)), True


@jax.custom_vjp
def conv3x3(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
    """A 3x3 "same" convolution of ``[N, H, W, C]`` images with a dense layer's params over
    ``patches3x3`` (``kernel[9 C, out]``, ``bias[out]``): ``patches3x3(x) @ kernel + bias``.

    The value is computed by XLA's convolution, the gradient by the matmul over patches: on CPU the
    convolution's forward pass is ~2.2x faster than the patch matmul (a 7-layer 32-channel net on
    256 connect-four boards: 4.7 ms against 10.4 ms), and its gradient, vmapped over runs, ~26x
    slower (0.95 s against 36 ms). Search-based self-play evaluates the network far more often than
    it differentiates it. Under ``vmap`` over runs (batched kernels) the forward pass loops over the
    runs rather than use XLA's grouped convolution.
    """
    return _xla_conv3x3(x, kernel) + bias


def _conv3x3_forward(x: jax.Array, kernel: jax.Array, bias: jax.Array):
    return conv3x3(x, kernel, bias), (x, kernel, bias)


def _conv3x3_backward(residuals: tuple[jax.Array, jax.Array, jax.Array], grad: jax.Array):
    _, vjp = jax.vjp(_conv3x3_by_patches, *residuals)
    return vjp(grad)


conv3x3.defvjp(_conv3x3_forward, _conv3x3_backward)


class Conv3x3(nn.Module):
    """``conv3x3`` as a layer: params ``kernel[9 C, features]`` and ``bias`` initialised as a
    ``nn.Dense`` over ``patches3x3`` would be."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (9 * x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        return conv3x3(x, kernel, bias)


class ConvTorso(nn.Module):
    """3x3 convolutions (stride 1, same padding, ReLU) over ``[..., H, W, C]`` images, flattened:
    the MinAtar network's feature extractor (one layer of 16 channels by default).

    Each convolution is a dense layer over ``patches3x3``: the same function as ``nn.Conv``, but
    XLA's CPU convolution (and its gradient) ran PPO on MinAtar about 50x slower than this matmul.
    """

    channels: tuple[int, ...] = (16,)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        batch_shape, (height, width) = x.shape[:-3], x.shape[-3:-1]
        x = x.reshape(-1, *x.shape[-3:]).astype(jnp.float32)
        for channels in self.channels:
            pixels = patches3x3(x).reshape(-1, 9 * x.shape[-1])  # a 2-D matmul: XLA's fast CPU path
            x = nn.relu(_dense(channels, np.sqrt(2.0))(pixels)).reshape(-1, height, width, channels)
        return x.reshape(*batch_shape, -1)


TORSOS = ("mlp", "conv")


class ActorCritic(nn.Module):
    """Separate MLP actor and critic (PureJaxRL layout): ``apply(params, obs) -> PolicyOutput``.

    The two MLPs share no weights; they are stored stacked in one ``TwinMLP`` (index 0 the
    actor, 1 the critic) so that a training step evaluates both at once. ``method=ActorCritic.policy``
    and ``method=ActorCritic.value`` evaluate one half only: learners act with the actor inside the
    rollout loop and evaluate the critic on the whole rollout at once. ``torso="conv"`` reads image
    observations ``[..., H, W, C]`` through a ``ConvTorso`` shared by actor and critic.
    """

    action_dim: int
    continuous: bool = False
    hidden_sizes: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    torso: str = "mlp"
    conv_channels: tuple[int, ...] = (16,)

    def setup(self) -> None:
        if self.torso == "conv":
            self.conv = ConvTorso(self.conv_channels)
        self.torsos = TwinMLP(self.hidden_sizes, self.activation)
        self.actor_head = _dense(self.action_dim, 0.01)
        self.critic_head = _dense(1, 1.0)
        if self.continuous:
            self.log_std = self.param("log_std", nn.initializers.zeros, (self.action_dim,))

    def features(self, obs: jax.Array) -> jax.Array:
        """The input of the actor and critic MLPs: conv features of an image, or ``obs`` itself."""
        return self.conv(obs) if self.torso == "conv" else obs

    def _policy_head(self, features: jax.Array) -> tuple[jax.Array, jax.Array]:
        logits = self.actor_head(features)
        log_std = self.log_std if self.continuous else jnp.zeros((self.action_dim,), logits.dtype)
        return logits, jnp.broadcast_to(log_std, logits.shape)

    def policy(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Logits (or Gaussian mean) and log std (zeros for discrete actions)."""
        return self._policy_head(self.torsos(self.features(obs), index=0))

    def value(self, obs: jax.Array) -> jax.Array:
        """State value."""
        return self.critic_head(self.torsos(self.features(obs), index=1))[..., 0]

    def __call__(self, obs: jax.Array) -> PolicyOutput:
        actor_features, critic_features = self.torsos(self.features(obs))
        return PolicyOutput(*self._policy_head(actor_features), self.critic_head(critic_features)[..., 0])


class RecurrentActorCritic(nn.Module):
    """Dense (or conv + dense) torso -> GRU -> actor and critic MLP heads, one time step per call.

    ``apply(params, hidden, obs, reset) -> (new_hidden, PolicyOutput)``. ``reset`` (bool, batch)
    zeroes the hidden state before ``obs`` is read: pass ``True`` on the first step of an episode,
    so memory spans everything inside an episode (all trials of an RL^2 episode) and nothing across.
    ``method=core`` advances the memory only; ``policy``, ``value`` and ``heads`` read a hidden
    state. ``unroll`` runs it over a whole sequence for training (``encode``, then the GRU's
    equations step by step, then ``heads``).
    """

    action_dim: int
    continuous: bool = False
    torso_sizes: tuple[int, ...] = (128,)
    hidden_size: int = 128
    head_sizes: tuple[int, ...] = (64,)
    activation: str = "tanh"
    torso: str = "mlp"
    conv_channels: tuple[int, ...] = (16,)

    def setup(self) -> None:
        dense = MLP(self.torso_sizes, self.activation)
        self.encoder = nn.Sequential([ConvTorso(self.conv_channels), dense]) if self.torso == "conv" else dense
        self.gru = nn.GRUCell(self.hidden_size, recurrent_kernel_init=orthogonal())
        self.actor = ActorCritic(self.action_dim, self.continuous, self.head_sizes, self.activation)

    def encode(self, obs: jax.Array) -> jax.Array:
        """The torso's features of ``obs`` (no memory involved: batch it over time)."""
        return self.encoder(obs)

    def core(self, hidden: jax.Array, obs: jax.Array, reset: jax.Array) -> jax.Array:
        """The hidden state after reading ``obs`` (memory cleared first where ``reset``)."""
        hidden = jnp.where(reset[..., None], jnp.zeros_like(hidden), hidden)
        hidden, _ = self.gru(hidden, self.encode(obs))
        return hidden

    def heads(self, hidden: jax.Array) -> PolicyOutput:
        """Policy and value from hidden states (any leading axes)."""
        return self.actor(hidden)

    def policy(self, hidden: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Logits (or Gaussian mean) and log std from a hidden state."""
        return self.actor.policy(hidden)

    def value(self, hidden: jax.Array) -> jax.Array:
        """State value from a hidden state."""
        return self.actor.value(hidden)

    def __call__(
        self, hidden: jax.Array, obs: jax.Array, reset: jax.Array
    ) -> tuple[jax.Array, PolicyOutput]:
        hidden = self.core(hidden, obs, reset)
        return hidden, self.heads(hidden)


def masked_logits(logits: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Set the logits of illegal actions (``mask == False``) to a large negative number."""
    if mask is None:
        return logits
    return jnp.where(mask, logits, jnp.finfo(logits.dtype).min)


def categorical_log_prob(logits: jax.Array, action: jax.Array) -> jax.Array:
    """Log-probability of integer ``action`` under softmax(``logits``)."""
    log_probs = jax.nn.log_softmax(logits)
    return jnp.take_along_axis(log_probs, action[..., None].astype(jnp.int32), axis=-1)[..., 0]


def categorical_entropy(logits: jax.Array) -> jax.Array:
    """Entropy of softmax(``logits``); masked actions (huge negative logits) contribute zero."""
    log_probs = jax.nn.log_softmax(logits)
    probs = jnp.exp(log_probs)
    return -jnp.sum(jnp.where(probs > 0, probs * log_probs, 0.0), axis=-1)


def gaussian_log_prob(mean: jax.Array, log_std: jax.Array, action: jax.Array) -> jax.Array:
    """Log-density of ``action`` under a diagonal Gaussian, summed over action dimensions."""
    z = (action - mean) * jnp.exp(-log_std)
    return jnp.sum(-0.5 * z**2 - log_std - 0.5 * LOG_2PI, axis=-1)


def gaussian_entropy(log_std: jax.Array) -> jax.Array:
    """Entropy of a diagonal Gaussian, summed over action dimensions."""
    return jnp.sum(log_std + 0.5 * (LOG_2PI + 1.0), axis=-1)


def unroll(network: RecurrentActorCritic, params: Any, hidden: jax.Array, obs: jax.Array, reset: jax.Array
           ) -> tuple[jax.Array, PolicyOutput]:
    """``network`` over a sequence ``obs[T, B, ...]`` with ``reset[T, B]`` from ``hidden[B, H]``: the
    last hidden state and the outputs of every step, as ``T`` calls of ``network.apply`` would give
    (up to float rounding).

    Only the GRU's recurrence runs step by step in a ``lax.scan``: the torso, the GRU's input
    projections and the heads see all ``T * B`` inputs at once, and each step makes one matmul of
    the hidden state with the three recurrent kernels side by side (flax's ``GRUCell`` equations
    on its own parameters), forward and backward, instead of a whole network of small matmuls."""
    gru = params["params"]["gru"]
    size = hidden.shape[-1]
    input_kernel = jnp.concatenate([gru[name]["kernel"] for name in ("ir", "iz", "in")], axis=-1)
    input_bias = jnp.concatenate([gru[name]["bias"] for name in ("ir", "iz", "in")], axis=-1)
    hidden_kernel = jnp.concatenate([gru[name]["kernel"] for name in ("hr", "hz", "hn")], axis=-1)
    features = network.apply(params, obs, method=network.encode)
    input_gates = features @ input_kernel + input_bias  # [T, B, 3H]

    def step(hidden: jax.Array, inputs: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        gates_in, reset_now = inputs
        hidden = jnp.where(reset_now[..., None], jnp.zeros_like(hidden), hidden)
        gates_hidden = hidden @ hidden_kernel
        r = jax.nn.sigmoid(gates_in[..., :size] + gates_hidden[..., :size])
        z = jax.nn.sigmoid(gates_in[..., size:2 * size] + gates_hidden[..., size:2 * size])
        n = jnp.tanh(gates_in[..., 2 * size:] + r * (gates_hidden[..., 2 * size:] + gru["hn"]["bias"]))
        hidden = (1.0 - z) * n + z * hidden
        return hidden, hidden

    last, hiddens = jax.lax.scan(step, hidden, (input_gates, reset))
    return last, network.apply(params, hiddens, method=network.heads)
