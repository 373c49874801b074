"""Learned Policy Gradient (LPG, Oh et al. 2020) and its temporally-aware variant (TA-LPG,
Jackson et al. 2024) as pure JAX functions.

The agent maps an observation to policy logits and an ``y_dim``-way categorical prediction
``y(s)``. The LPG network reads a rollout backwards in time and outputs, per step, a scalar
``pi_hat`` and a categorical ``y_hat``; the agent then descends

    L(theta) = -mean(log pi(a_t|s_t) * pi_hat_t) + y_coef * mean(KL(y(s_t) || y_hat_t))

with ``pi_hat`` and ``y_hat`` held fixed (they are the targets; only ``theta`` is differentiated
inside the update, while a meta-gradient still flows from them to the LPG parameters).

LPG network: an embedding MLP ``phi`` (``embed_sizes``, default [16, 1]) of ``y_t`` and of
``y_{t+1}``; a GRU run from the end of the rollout to its start over
``[r_t, done_t, gamma, pi(a_t|s_t), phi(y_t), phi(y_{t+1})]`` (+ ``[n/N, log N]`` for TA-LPG, with
``n`` the agent update and ``N`` the lifetime's number of updates); heads ``Dense(1)`` and
``softmax(Dense(y_dim))``. Episode boundaries follow the core's terminated/truncated split:
``done_t`` is termination, where ``phi(y_{t+1})`` is replaced by 0; on truncation ``y_{t+1}`` is the
prediction at the final observation (a bootstrap, as rl.gae does). The GRU state is cleared at
every episode end (terminated or truncated), so outputs of an episode never see later episodes.

Meta-training tasks are random grid worlds (rl.gridworld) with a lifetime of ``N`` agent updates,
log-uniform in ``[min_updates, max_updates]``. Every lifetime runs ``max_updates`` updates;
updates ``n >= N`` are masked to no-ops, so lifetimes of different lengths vmap together.
``make_lifetime`` is the ES fitness (mean return of the final policy, sampled actions);
``make_metagradient_trainer`` is the myopic baseline: meta-gradients through windows of updates.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from models.actor_critic import orthogonal
from rl import envs
from rl.errors import ConfigError
from rl.gridworld import MAX_EPISODE, GridWorldParams, sample_world

ENV_ID = "GridWorld-lpg"


@dataclasses.dataclass(frozen=True)
class LPGConfig:
    """Static settings of LPG lifetimes (shapes, sizes, the agent's optimiser)."""

    temporal: bool = False
    """TA-LPG: the LPG network also reads [n/N, log N]"""
    gru_size: int = 32
    """units of the reverse GRU (256 in Oh et al.; small for CPU)"""
    y_dim: int = 8
    """size of the agent's categorical prediction y(s)"""
    embed_sizes: tuple[int, ...] = (16, 1)
    """embedding MLP phi applied to y_t and y_{t+1}"""
    agent_hidden: tuple[int, ...] = ()
    """agent MLP hidden sizes; () is linear in the observation (tabular in the grid position)"""
    num_envs: int = 8
    """parallel environments of one agent"""
    num_steps: int = 16
    """rollout length per agent update"""
    lr: float = 0.05
    """agent learning rate"""
    optimizer: str = "adam"
    """agent optimiser: adam or sgd"""
    gamma: float = 0.99
    """discount fed to the LPG network (and used by the meta-gradient objective)"""
    y_coef: float = 0.5
    """weight of KL(y || y_hat) in the agent loss"""
    min_updates: int = 10
    """shortest sampled lifetime (agent updates)"""
    max_updates: int = 50
    """longest sampled lifetime and the number of update slots every lifetime runs (250 in the spec)"""
    eval_episodes: int = 16
    """evaluation episodes of the final policy (the fitness)"""

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the first invalid field."""
        for name in ("gru_size", "num_envs", "num_steps", "min_updates", "max_updates", "eval_episodes"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be a positive integer, got {getattr(self, name)}")
        if self.y_dim < 2:
            raise ConfigError("y_dim", f"must be >= 2, got {self.y_dim}")
        if not self.embed_sizes or min(self.embed_sizes) < 1:
            raise ConfigError("embed_sizes", f"must be non-empty positive sizes, got {self.embed_sizes}")
        if self.agent_hidden and min(self.agent_hidden) < 1:
            raise ConfigError("agent_hidden", f"must be positive sizes, got {self.agent_hidden}")
        if self.min_updates > self.max_updates:
            raise ConfigError("min_updates", f"must be <= max_updates = {self.max_updates}, got {self.min_updates}")
        if not self.lr > 0:
            raise ConfigError("lr", f"must be > 0, got {self.lr}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ConfigError("gamma", f"must be in [0, 1], got {self.gamma}")
        if not self.y_coef >= 0:
            raise ConfigError("y_coef", f"must be >= 0, got {self.y_coef}")
        if self.optimizer not in ("adam", "sgd"):
            raise ConfigError("optimizer", f"must be 'adam' or 'sgd', got {self.optimizer!r}")


@struct.dataclass
class Task:
    """A world and its lifetime length ``num_updates`` (N)."""

    world: GridWorldParams
    num_updates: jax.Array  # int32


@struct.dataclass
class AgentState:
    """One agent during its lifetime."""

    params: Any
    opt_state: Any
    env_state: Any
    obs: jax.Array  # [num_envs, obs]
    key: jax.Array
    update: jax.Array  # int32: updates attempted so far (those >= N were no-ops)


class Rollout(NamedTuple):
    """One rollout, every field ``[num_steps, num_envs, ...]``."""

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    terminated: jax.Array
    done: jax.Array  # terminated or truncated
    final_obs: jax.Array  # the observation that followed (before any automatic reset)
    episode_return: jax.Array  # return of the episode that ended at this step (if done)


class LPGInputs(NamedTuple):
    """What the LPG network reads: ``[T, B]`` arrays (``y`` and ``y_next`` ``[T, B, y_dim]``) and
    the scalars ``progress`` (n/N) and ``log_n`` (log N), read by TA-LPG only."""

    reward: jax.Array
    terminated: jax.Array
    done: jax.Array
    pi_a: jax.Array
    y: jax.Array
    y_next: jax.Array
    progress: jax.Array
    log_n: jax.Array


class _Embed(nn.Module):
    sizes: tuple[int, ...]

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i, size in enumerate(self.sizes):
            x = nn.Dense(size)(x)
            x = nn.relu(x) if i < len(self.sizes) - 1 else x
        return x


class _ResetGRU(nn.Module):
    size: int

    @nn.compact
    def __call__(self, carry: jax.Array, xs: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        x, episode_end = xs  # h_t = GRU(x_t, h_{t+1} cleared if the episode ended at t)
        carry = jnp.where(episode_end[:, None], 0.0, carry)
        return nn.GRUCell(self.size, recurrent_kernel_init=orthogonal(), name="cell")(carry, x)


class LPGNetwork(nn.Module):
    """The LPG network: ``(inputs, gamma) -> (pi_hat [T, B], log y_hat [T, B, y_dim])``."""

    gru_size: int
    y_dim: int
    embed_sizes: tuple[int, ...]
    temporal: bool

    @nn.compact
    def __call__(self, inputs: LPGInputs, gamma: jax.Array) -> tuple[jax.Array, jax.Array]:
        phi = _Embed(self.embed_sizes, name="phi")
        terminated = inputs.terminated.astype(jnp.float32)
        scalars = [inputs.reward, terminated, jnp.broadcast_to(gamma, terminated.shape), inputs.pi_a]
        if self.temporal:
            scalars += [jnp.broadcast_to(inputs.progress, terminated.shape), jnp.broadcast_to(inputs.log_n, terminated.shape)]
        x = jnp.concatenate(
            [jnp.stack(scalars, -1), phi(inputs.y), phi(inputs.y_next) * (1.0 - terminated)[..., None]], -1
        )
        scan = nn.scan(_ResetGRU, variable_broadcast="params", split_rngs={"params": False}, reverse=True)
        hidden0 = jnp.zeros((x.shape[1], self.gru_size), x.dtype)
        _, h = scan(self.gru_size, name="gru")(hidden0, (x, inputs.done))
        pi_hat = nn.Dense(1, name="pi_hat")(h)[..., 0]
        return pi_hat, jax.nn.log_softmax(nn.Dense(self.y_dim, name="y_hat")(h))


class Agent(nn.Module):
    """The agent: ``obs -> (policy logits, y logits)``; heads start at zero (uniform policy and y)."""

    num_actions: int
    y_dim: int
    hidden: tuple[int, ...]

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = obs
        for size in self.hidden:
            x = nn.relu(nn.Dense(size)(x))
        zeros = nn.initializers.zeros
        return nn.Dense(self.num_actions, kernel_init=zeros)(x), nn.Dense(self.y_dim, kernel_init=zeros)(x)


def _network(config: LPGConfig) -> LPGNetwork:
    return LPGNetwork(config.gru_size, config.y_dim, config.embed_sizes, config.temporal)


def _dummy_inputs(config: LPGConfig) -> LPGInputs:
    z = jnp.zeros((1, 1))
    y = jnp.full((1, 1, config.y_dim), 1.0 / config.y_dim)
    return LPGInputs(z, z.astype(bool), z.astype(bool), z, y, y, jnp.zeros(()), jnp.zeros(()))


def init_lpg_params(key: jax.Array, config: LPGConfig) -> Any:
    """Random LPG network parameters (vmappable over keys)."""
    return _network(config).init(key, _dummy_inputs(config), jnp.float32(config.gamma))


def lpg_targets(lpg_params: Any, config: LPGConfig, inputs: LPGInputs) -> tuple[jax.Array, jax.Array]:
    """The LPG targets of a rollout: ``pi_hat [T, B]`` and ``y_hat [T, B, y_dim]`` (probabilities),
    e.g. to plot what a learned LPG asks of the agent on a hand-made trajectory."""
    pi_hat, log_y_hat = _network(config).apply(lpg_params, inputs, jnp.float32(config.gamma))
    return pi_hat, jnp.exp(log_y_hat)


def sample_task(key: jax.Array, config: LPGConfig) -> Task:
    """A random world and a lifetime N log-uniform in ``[min_updates, max_updates]``."""
    world_key, n_key = jax.random.split(key)
    log_n = jax.random.uniform(n_key, (), minval=jnp.log(config.min_updates), maxval=jnp.log(config.max_updates))
    n = jnp.clip(jnp.round(jnp.exp(log_n)), config.min_updates, config.max_updates).astype(jnp.int32)
    return Task(sample_world(world_key), n)


class _Core(NamedTuple):
    agent: Agent
    init_agent: Callable[[jax.Array, GridWorldParams], AgentState]
    rollout: Callable[..., tuple[Any, jax.Array, Rollout]]
    update: Callable[[Any, AgentState, Task], tuple[AgentState, dict[str, jax.Array]]]
    evaluate: Callable[[Any, jax.Array, GridWorldParams], jax.Array]


def _make_core(config: LPGConfig) -> _Core:
    config.validate()
    vec_env, default_world = envs.make_vec_env(ENV_ID, config.num_envs)
    eval_env, _ = envs.make_vec_env(ENV_ID, config.eval_episodes)
    num_actions = envs.action_dim(vec_env, default_world)
    agent = Agent(num_actions, config.y_dim, config.agent_hidden)
    network = _network(config)
    gamma = jnp.float32(config.gamma)
    tx = optax.adam(config.lr, eps_root=1e-8) if config.optimizer == "adam" else optax.sgd(config.lr)
    # eps_root keeps Adam differentiable where a gradient is exactly 0 (unvisited grid cells)

    def init_agent(key: jax.Array, world: GridWorldParams) -> AgentState:
        net_key, env_key, key = jax.random.split(key, 3)
        obs, env_state = vec_env.reset(env_key, world)
        params = agent.init(net_key, obs[0])
        return AgentState(params, tx.init(params), env_state, obs, key, jnp.zeros((), jnp.int32))

    def rollout(params: Any, env_state: Any, obs: jax.Array, key: jax.Array, world: GridWorldParams):
        def step(carry, step_key):
            env_state, obs = carry
            action_key, env_key = jax.random.split(step_key)
            logits, _ = agent.apply(params, obs)
            action = jax.random.categorical(action_key, logits)
            next_obs, env_state, reward, terminated, truncated, info = vec_env.step(env_key, env_state, action, world)
            done = terminated | truncated
            out = Rollout(obs, action, reward, terminated, done, info["final_observation"], info["episode_return"])
            return (env_state, next_obs), out

        (env_state, obs), traj = jax.lax.scan(step, (env_state, obs), jax.random.split(key, config.num_steps))
        return env_state, obs, traj

    def update(lpg_params: Any, state: AgentState, task: Task) -> tuple[AgentState, dict[str, jax.Array]]:
        key, rollout_key = jax.random.split(state.key)
        env_state, obs, traj = rollout(jax.lax.stop_gradient(state.params), state.env_state, state.obs, rollout_key, task.world)
        n_updates = jnp.maximum(task.num_updates, 1).astype(jnp.float32)
        logits, y_logits = agent.apply(state.params, traj.obs)
        _, y_next_logits = agent.apply(state.params, traj.final_obs)
        pi_a = jnp.take_along_axis(jax.nn.softmax(logits), traj.action[..., None], -1)[..., 0]
        inputs = LPGInputs(
            traj.reward, traj.terminated, traj.done, pi_a, jax.nn.softmax(y_logits), jax.nn.softmax(y_next_logits),
            state.update / n_updates, jnp.log(n_updates),
        )
        pi_hat, log_y_hat = network.apply(lpg_params, inputs, gamma)  # fixed targets for the agent

        def loss(params: Any) -> jax.Array:
            logits, y_logits = agent.apply(params, traj.obs)
            log_pi = jnp.take_along_axis(jax.nn.log_softmax(logits), traj.action[..., None], -1)[..., 0]
            log_y = jax.nn.log_softmax(y_logits)
            kl = jnp.sum(jnp.exp(log_y) * (log_y - log_y_hat), -1)
            return -jnp.mean(log_pi * pi_hat) + config.y_coef * jnp.mean(kl)

        grads = jax.grad(loss)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        active = state.update < task.num_updates
        params, opt_state = envs.tree_where(active, (optax.apply_updates(state.params, updates), opt_state),
                                        (state.params, state.opt_state))
        finished = traj.done.sum()
        metrics = {
            "episode_return": jnp.where(finished > 0, jnp.sum(traj.episode_return * traj.done) / jnp.maximum(finished, 1),
                                        jnp.nan),
            "active": active,
            "pi_hat_sq": jnp.mean(pi_hat**2),
            "entropy": -jnp.mean(jnp.sum(jax.nn.softmax(logits) * jax.nn.log_softmax(logits), -1)),
        }
        return AgentState(params, opt_state, env_state, obs, key, state.update + 1), metrics

    def evaluate(params: Any, key: jax.Array, world: GridWorldParams) -> jax.Array:
        """Mean return of the first episode of each of ``eval_episodes`` parallel environments."""
        key, reset_key = jax.random.split(key)
        obs, env_state = eval_env.reset(reset_key, world)
        zeros = jnp.zeros((config.eval_episodes,))

        def running(carry) -> jax.Array:
            return (carry[1] <= MAX_EPISODE) & ~carry[-1].all()

        def step(carry):
            key, t, env_state, obs, returns, finished = carry
            key, action_key, env_key = jax.random.split(key, 3)
            action = jax.random.categorical(action_key, agent.apply(params, obs)[0])
            obs, env_state, _, _, _, info = eval_env.step(env_key, env_state, action, world)
            first = info["returned_episode"] & ~finished
            returns = jnp.where(first, info["episode_return"], returns)
            return key, t + 1, env_state, obs, returns, finished | info["returned_episode"]

        carry = (key, jnp.zeros((), jnp.int32), env_state, obs, zeros, zeros.astype(bool))
        return jax.lax.while_loop(running, step, carry)[4].mean()

    return _Core(agent, init_agent, rollout, update, evaluate)


def make_training(config: LPGConfig) -> Callable[[Any, jax.Array, Task], tuple[AgentState, dict[str, jax.Array]]]:
    """``train(lpg_params, key, task) -> (final agent state, per-update metrics [max_updates])``:
    one agent lifetime from scratch driven by the LPG network. Metrics: ``episode_return`` (NaN if
    no episode ended in that rollout), ``active`` (update n < N), ``pi_hat_sq``, ``entropy``."""
    return _training(config, _make_core(config))


def _training(config: LPGConfig, core: _Core) -> Callable[[Any, jax.Array, Task], tuple[AgentState, dict[str, jax.Array]]]:
    def train(lpg_params: Any, key: jax.Array, task: Task) -> tuple[AgentState, dict[str, jax.Array]]:
        state = core.init_agent(key, task.world)
        return jax.lax.scan(lambda s, _: core.update(lpg_params, s, task), state, None, length=config.max_updates)

    return train


def make_lifetime(config: LPGConfig, with_metrics: bool = False) -> Callable[..., Any]:
    """``lifetime(lpg_params, key, task) -> fitness``: train an agent for the task's lifetime, then
    the mean return of its final policy (sampled actions) over ``eval_episodes`` episodes. Pure,
    jittable and vmappable over ``(lpg_params, key, task)``. With ``with_metrics`` it returns
    ``(fitness, per-update metrics)`` (see ``make_training``)."""
    core = _make_core(config)
    train = _training(config, core)

    def lifetime(lpg_params: Any, key: jax.Array, task: Task) -> Any:
        train_key, eval_key = jax.random.split(key)
        state, metrics = train(lpg_params, train_key, task)
        fitness = core.evaluate(state.params, eval_key, task.world)
        return (fitness, metrics) if with_metrics else fitness

    return lifetime


def discounted_returns(reward: jax.Array, done: jax.Array, gamma: float) -> jax.Array:
    """Rewards-to-go ``[T, B]`` within a rollout, restarting at episode ends, no bootstrap."""

    def step(future: jax.Array, xs: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        r, d = xs
        g = r + gamma * future * (1.0 - d)
        return g, g

    return jax.lax.scan(step, jnp.zeros(reward.shape[1:]), (reward, done.astype(jnp.float32)), reverse=True)[1]


@struct.dataclass
class MetaGradientState:
    """State of the truncated meta-gradient trainer: LPG params and a batch of running lifetimes."""

    lpg_params: Any
    opt_state: Any
    agents: AgentState  # [num_lifetimes, ...]
    tasks: Task  # [num_lifetimes, ...]
    key: jax.Array
    step: jax.Array


class MetaGradientTrainer(NamedTuple):
    init: Callable[[jax.Array], MetaGradientState]
    step: Callable[[MetaGradientState], tuple[MetaGradientState, dict[str, jax.Array]]]


def make_metagradient_trainer(
    config: LPGConfig,
    window: int,
    meta_lr: float,
    num_lifetimes: int,
    ent_coef: float = 0.01,
    pi_hat_l2: float = 1e-3,
    max_grad_norm: float = 1.0,
) -> MetaGradientTrainer:
    """The myopic baseline: meta-gradients through truncated windows of agent updates.

    ``step`` advances each of ``num_lifetimes`` lifetimes by ``window`` agent updates, then scores
    the updated agent on a fresh rollout with REINFORCE (rewards-to-go minus their batch mean) plus
    ``ent_coef`` times the policy entropy, minus ``pi_hat_l2 * mean(pi_hat^2)`` over the window
    (Oh et al.'s regulariser), and differentiates that through the window's inner optimiser steps
    with respect to the LPG params (Adam at ``meta_lr``, gradient norm clipped). Lifetimes that
    reach their N restart on new tasks. ``init(key) -> state``, ``step(state) -> (state, metrics)``.
    """
    for name, value in (("window", window), ("num_lifetimes", num_lifetimes)):
        if value < 1:
            raise ConfigError(name, f"must be a positive integer, got {value}")
    if not meta_lr > 0:
        raise ConfigError("meta_lr", f"must be > 0, got {meta_lr}")
    core = _make_core(config)
    meta_tx = optax.chain(optax.clip_by_global_norm(max_grad_norm), optax.adam(meta_lr))

    def new_lifetimes(key: jax.Array) -> tuple[AgentState, Task]:
        keys = jax.random.split(key, (2, num_lifetimes))
        tasks = jax.vmap(lambda k: sample_task(k, config))(keys[0])
        return jax.vmap(core.init_agent)(keys[1], tasks.world), tasks

    def init(key: jax.Array) -> MetaGradientState:
        lpg_key, life_key, key = jax.random.split(key, 3)
        lpg_params = init_lpg_params(lpg_key, config)
        agents, tasks = new_lifetimes(life_key)
        return MetaGradientState(lpg_params, meta_tx.init(lpg_params), agents, tasks, key, jnp.zeros((), jnp.int32))

    def meta_loss(lpg_params: Any, agent: AgentState, task: Task, key: jax.Array):
        agent, window_metrics = jax.lax.scan(lambda s, _: core.update(lpg_params, s, task), agent, None, length=window)
        env_state, obs, traj = core.rollout(jax.lax.stop_gradient(agent.params), agent.env_state, agent.obs, key, task.world)
        logits, _ = core.agent.apply(agent.params, traj.obs)
        log_probs = jax.nn.log_softmax(logits)
        log_pi = jnp.take_along_axis(log_probs, traj.action[..., None], -1)[..., 0]
        entropy = -jnp.mean(jnp.sum(jnp.exp(log_probs) * log_probs, -1))
        returns = discounted_returns(traj.reward, traj.done, config.gamma)
        objective = jnp.mean(log_pi * (returns - returns.mean())) + ent_coef * entropy
        loss = -objective + pi_hat_l2 * window_metrics["pi_hat_sq"].mean()
        agent = agent.replace(env_state=env_state, obs=obs)
        return loss, (agent, {"meta_loss": loss, "entropy": entropy, "rollout_reward": traj.reward.mean(),
                              "pi_hat_sq": window_metrics["pi_hat_sq"].mean()})

    grad_fn = jax.vmap(jax.grad(meta_loss, has_aux=True), in_axes=(None, 0, 0, 0))

    def step(state: MetaGradientState) -> tuple[MetaGradientState, dict[str, jax.Array]]:
        key, loss_key, restart_key = jax.random.split(state.key, 3)
        grads, (agents, metrics) = grad_fn(state.lpg_params, state.agents, state.tasks,
                                           jax.random.split(loss_key, num_lifetimes))
        grads = jax.tree.map(lambda g: g.mean(0), grads)
        updates, opt_state = meta_tx.update(grads, state.opt_state, state.lpg_params)
        lpg_params = optax.apply_updates(state.lpg_params, updates)
        ended = agents.update >= state.tasks.num_updates
        fresh_agents, fresh_tasks = new_lifetimes(restart_key)
        agents, tasks = envs.tree_where(ended, (fresh_agents, fresh_tasks), (agents, state.tasks))
        metrics = {name: value.mean() for name, value in metrics.items()}
        metrics.update(grad_norm=optax.tree.norm(grads), lifetimes_ended=ended.sum())
        return MetaGradientState(lpg_params, opt_state, agents, tasks, key, state.step + 1), metrics

    return MetaGradientTrainer(init, step)
