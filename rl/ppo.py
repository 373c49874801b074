"""Proximal policy optimisation as one pure function: ``make_train(config)(key, hparams)``.

Static choices (environment, sizes, recurrence, objective) live in the frozen ``PPOConfig``
(defined with ``PPOHParams`` and ``default_hparams`` in ``rl.ppo_config`` and exported here);
everything numeric that a sweep, an ES population or an environment distribution may vary is in
``PPOHParams`` (a pytree of arrays, including ``objective_params`` and gymnax ``env_params``), so
``jax.vmap(train)`` over keys and hparams runs many lifetimes in one compile.

The learner is also exposed as ``Learner(init, update)`` so that ``rl.runner`` can run it in
compiled chunks with checkpoints in between; ``train`` is exactly ``init`` followed by
``num_updates`` calls of ``update``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from models.actor_critic import (
    ActorCritic,
    RecurrentActorCritic,
    categorical_entropy,
    categorical_log_prob,
    gaussian_entropy,
    gaussian_log_prob,
    masked_logits,
    unroll,
)
from rl import envs
from rl.errors import ConfigError
from rl.gae import gae
from rl.losses import OBJECTIVES, clipped_value_loss, normalize
from rl.opponents import OpponentPolicy, OpponentPool, mixed_action_probs
from rl.ppo_config import (  # noqa: F401 (the settings are part of rl.ppo's public API)
    HPARAM_FIELDS,
    PPOConfig,
    PPOHParams,
    check_hparam_values,
    default_hparams,
)


@struct.dataclass
class TrainState:
    """Everything a run needs to continue: checkpointing this resumes the run exactly."""

    params: Any
    opt_state: Any
    env_state: Any
    obs: jax.Array
    last_done: jax.Array  # did the previous step end an episode (resets the GRU)
    hidden: jax.Array | None  # GRU state [num_envs, gru_size]; None for feed-forward networks
    reward_scale: envs.RewardScale | None  # running return statistics (normalize_reward only)
    key: jax.Array
    update_step: jax.Array
    reward_model: Any = None  # the trajectory reward's state (e.g. a reward model), if any
    opponents: OpponentPool | None = None  # past snapshots (self-play with opponent_pool > 0)


class Transition(NamedTuple):
    """One rollout step of every environment (stacked over time by the rollout scan)."""

    obs: jax.Array
    action: jax.Array
    log_prob: jax.Array
    reward: jax.Array  # scaled when normalize_reward
    terminated: jax.Array
    done: jax.Array
    mask: jax.Array | None
    final_obs: jax.Array
    hidden: jax.Array | None  # GRU state after reading obs (the final observation follows it)


class EpisodeTotals(NamedTuple):
    """Per-environment sums over the episodes that end during a rollout, carried through its loop
    (cheaper than stacking per-step statistics), and the last finished episode of each env."""

    return_sum: jax.Array
    length_sum: jax.Array
    count: jax.Array
    last_return: jax.Array  # of the last episode this env finished (0 if none yet)
    last_length: jax.Array  # 0 until the env has finished an episode
    no_legal_action: jax.Array  # steps whose legal-action mask was all False
    env_metrics: dict[str, tuple[jax.Array, jax.Array]]  # name -> (sum of value * weight, sum of weight)


class Learner(NamedTuple):
    """A learner as pure functions: ``init(key, hparams) -> state``,
    ``update(state, hparams) -> (state, metrics)`` and, optionally,
    ``evaluate(state, hparams, key, num_episodes) -> {"return": [E], "length": [E], ...}``.

    ``data_parallel = d > 1`` asks the runner to give each run ``d`` devices: ``update`` then runs
    on all of them with the same (replicated) state, and may split its batch over the mesh axis
    ``rl.sharding.DATA_AXIS`` (``jax.lax.axis_index`` / ``all_gather``), returning the same new
    state on every device. ``state_specs``, when given, is a tree of ``PartitionSpec`` matching the state
    of one run (over that run's dimensions): leaves whose spec names ``DATA_AXIS`` are stored split
    over the run's devices (fully sharded data parallel), and ``init`` and ``update`` return (and
    ``update`` sees) each device's slice of them."""

    init: Callable[[jax.Array, PPOHParams], TrainState]
    update: Callable[[TrainState, PPOHParams], tuple[TrainState, dict[str, jax.Array]]]
    num_updates: int
    env_steps_per_update: int
    evaluate: Callable[..., dict[str, jax.Array]] | None = None
    data_parallel: int = 1
    state_specs: Any = None


class Policy(NamedTuple):
    """The network of a config and the distribution maths around it, shared by training and
    evaluation. ``act(params, hidden, obs, reset) -> (hidden, logits, log_std)`` runs the actor only;
    ``probs(params, obs) -> [batch, actions]`` are a feed-forward discrete policy's action probabilities."""

    network: Any
    continuous: bool
    masked: bool
    act: Callable[..., tuple[jax.Array | None, jax.Array, jax.Array]]
    sample: Callable[..., jax.Array]
    mode: Callable[..., jax.Array]
    log_prob_and_entropy: Callable[..., tuple[jax.Array, jax.Array]]
    probs: Callable[[Any, jax.Array], jax.Array]


def make_policy(config: PPOConfig, env: Any, env_params: Any) -> Policy:
    """The actor-critic network ``config`` selects (MLP, conv torso, GRU) for ``env``."""
    continuous = envs.is_continuous(env, env_params)
    n_actions = envs.action_dim(env, env_params)
    if config.recurrent:
        network = RecurrentActorCritic(
            n_actions, continuous, config.torso_sizes or config.hidden_sizes[:1], config.gru_size, config.hidden_sizes,
            config.activation,
            config.torso, config.conv_channels,
        )
    else:
        network = ActorCritic(
            n_actions, continuous, config.hidden_sizes, config.activation, config.torso, config.conv_channels
        )

    def act(params: Any, hidden: jax.Array | None, obs: jax.Array, reset: jax.Array):
        if config.recurrent:
            hidden = network.apply(params, hidden, obs, reset, method=network.core)
            return (hidden, *network.apply(params, hidden, method=network.policy))
        return (hidden, *network.apply(params, obs, method=network.policy))

    def sample(key: jax.Array, logits: jax.Array, log_std: jax.Array, mask: jax.Array | None) -> jax.Array:
        if continuous:
            return logits + jnp.exp(log_std) * jax.random.normal(key, logits.shape)
        return jax.random.categorical(key, masked_logits(logits, mask))

    def mode(logits: jax.Array, mask: jax.Array | None) -> jax.Array:
        return logits if continuous else jnp.argmax(masked_logits(logits, mask), axis=-1)

    def log_prob_and_entropy(logits: jax.Array, log_std: jax.Array, action: jax.Array, mask: jax.Array | None):
        if continuous:
            return gaussian_log_prob(logits, log_std, action), gaussian_entropy(log_std)
        logits = masked_logits(logits, mask)
        return categorical_log_prob(logits, action), categorical_entropy(logits)

    def probs(params: Any, obs: jax.Array) -> jax.Array:
        return jax.nn.softmax(act(params, None, obs, jnp.ones(obs.shape[:1], bool))[1])

    return Policy(network, continuous, envs.has_action_mask(env), act, sample, mode, log_prob_and_entropy, probs)


def make_opponent_act(policy: Policy, obs_shape: tuple[int, ...], random_move_prob: float = 0.0) -> Callable:
    """A board-game opponent's ``act(candidate, obs, mask, key) -> action`` at one raw observation:
    the policy's sample with ``candidate["params"]``, or a uniformly random legal move when
    ``candidate["uniform"]`` (the random player) and, with probability ``random_move_prob``, for any
    candidate."""

    def act(candidate: dict[str, Any], obs: jax.Array, mask: jax.Array, key: jax.Array) -> jax.Array:
        _, logits, log_std = policy.act(candidate["params"], None, obs.reshape(1, *obs_shape), jnp.ones((1,), bool))
        uniform = candidate["uniform"]
        if random_move_prob > 0:  # its own key: runs without it keep their random stream
            uniform = uniform | jax.random.bernoulli(jax.random.fold_in(key, 1), random_move_prob)
        logits = jnp.where(uniform, jnp.zeros_like(logits), logits)
        return policy.sample(key, logits, log_std, mask[None])[0]

    return act


def no_legal_action(mask: jax.Array | None) -> jax.Array:
    """How many rows of a legal-action mask allow nothing (0 without masks)."""
    return jnp.zeros((), jnp.int32) if mask is None else jnp.sum(~mask.any(-1))


def make_learner(config: PPOConfig) -> Learner:
    """Validate ``config`` and build its ``init``, ``update`` and ``evaluate`` (not yet compiled)."""
    config.validate()
    vec_env, default_env_params = envs.make_vec_env(
        config.env, config.num_envs, config.normalize_obs, flatten=config.torso != "conv", group_size=config.group_size
    )
    policy = make_policy(config, vec_env, default_env_params)
    network, masked = policy.network, policy.masked
    objective_name = config.policy_objective
    objective = OBJECTIVES[objective_name]
    self_play = envs.is_self_play(vec_env)
    policy_opponent = envs.is_policy_opponent(vec_env)
    relabeler = config.trajectory_reward
    follows_progress = hasattr(envs.base_env(vec_env), "at_progress")
    env_metric_names = reported_env_metrics(vec_env)
    obs_shape = vec_env.observation_space(default_env_params).shape

    opponent_act = make_opponent_act(policy, obs_shape, config.opponent_random_move_prob)

    def env_params_for(state: TrainState, hp: PPOHParams) -> Any:
        """The run's env params, at the run's progress (envs with ``at_progress``), with the opponent
        of a self-play environment bound to them."""
        if follows_progress:
            progress = state.update_step / config.num_updates
            hp = hp.replace(env_params=envs.base_env(vec_env).at_progress(hp.env_params, progress))
        if policy_opponent:  # the latest policy, the pool's snapshots and a random player; one per game
            latest = jax.tree.map(lambda leaf: leaf[None], jax.lax.stop_gradient(state.params))
            if state.opponents is None:
                candidates, weights = latest, jnp.ones((1,))
            else:
                candidates = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), latest, state.opponents.params)
                weights = state.opponents.weights(config.latest_opponent_prob)
            # the random player: one more candidate (its params unused)
            candidates = jax.tree.map(lambda leaf: jnp.concatenate([leaf, leaf[:1]]), candidates)
            weights = jnp.concatenate([weights * (1.0 - config.random_opponent_prob),
                                       jnp.array([config.random_opponent_prob])])
            uniform = jnp.arange(weights.shape[0]) == weights.shape[0] - 1
            return vec_env.with_opponent_policy(
                hp.env_params, OpponentPolicy({"params": candidates, "uniform": uniform}, weights, opponent_act))
        if not self_play:
            return hp.env_params
        obs = vec_env.opponent_observations(hp.env_params)
        probs = mixed_action_probs(policy.probs, state.params, state.opponents, config.latest_opponent_prob, obs)
        return vec_env.with_opponent(hp.env_params, jax.lax.stop_gradient(probs))

    def rollout_values(params: Any, traj: Transition) -> tuple[jax.Array, jax.Array]:
        """Values of each step's observation and of the observation that followed it."""
        if config.recurrent:
            next_hidden = network.apply(
                params, traj.hidden, traj.final_obs, jnp.zeros_like(traj.done), method=network.core
            )
            both = network.apply(params, jnp.stack([traj.hidden, next_hidden]), method=network.value)
        else:
            both = network.apply(params, jnp.stack([traj.obs, traj.final_obs]), method=network.value)
        return both[0], both[1]

    def optimizer(hp: PPOHParams, lr: jax.Array) -> optax.GradientTransformation:
        # One flat parameter vector: a few large kernels instead of many tiny ones per step.
        return optax.flatten(
            optax.chain(optax.clip_by_global_norm(hp.max_grad_norm), optax.scale_by_adam(eps=1e-5), optax.scale(-lr))
        )

    def init(key: jax.Array, hp: PPOHParams) -> TrainState:
        key, net_key, env_key = jax.random.split(key, 3)
        obs, env_state = vec_env.reset(env_key, hp.env_params)
        hidden = jnp.zeros((config.num_envs, config.gru_size)) if config.recurrent else None
        done = jnp.ones((config.num_envs,), bool)
        if config.recurrent:
            params = network.init(net_key, hidden, obs, done)
        else:
            params = network.init(net_key, obs[0])
        return TrainState(
            params=params,
            opt_state=optimizer(hp, hp.lr).init(params),
            env_state=env_state,
            obs=obs,
            last_done=done,
            hidden=hidden,
            reward_scale=envs.RewardScale.create(config.num_envs) if config.normalize_reward else None,
            key=key,
            update_step=jnp.zeros((), jnp.int32),
            reward_model=None if relabeler is None else relabeler.init(
                jax.random.fold_in(net_key, 1), obs[0], vec_env.action_space(hp.env_params).sample(net_key)
            ),
            opponents=OpponentPool.create(params, config.opponent_pool)
            if (self_play or policy_opponent) and config.opponent_pool else None,
        )

    def rollout(state: TrainState, hp: PPOHParams, key: jax.Array) -> tuple[TrainState, Transition, EpisodeTotals]:
        env_params = env_params_for(state, hp)

        def env_step(carry, step_key):
            env_state, obs, last_done, hidden, reward_scale, totals = carry
            action_key, env_key = jax.random.split(step_key)
            mask = vec_env.action_mask(env_state, env_params) if masked else None
            hidden, logits, log_std = policy.act(state.params, hidden, obs, last_done)
            action = policy.sample(action_key, logits, log_std, mask)
            log_prob, _ = policy.log_prob_and_entropy(logits, log_std, action, mask)
            next_obs, env_state, reward, terminated, truncated, info = vec_env.step(
                env_key, env_state, action, env_params
            )
            done = jnp.logical_or(terminated, truncated)
            if config.normalize_reward:
                reward_scale, reward = envs.scale_reward(reward_scale, reward, done, hp.gamma)
            totals = EpisodeTotals(
                totals.return_sum + jnp.where(done, info["episode_return"], 0.0),
                totals.length_sum + jnp.where(done, info["episode_length"], 0),
                totals.count + done,
                info["episode_return"],
                info["episode_length"],
                totals.no_legal_action + no_legal_action(mask),
                add_env_metrics(totals.env_metrics, info.get("metrics", {})),
            )
            transition = Transition(
                obs, action, log_prob, reward, terminated, done, mask, info["final_observation"], hidden
            )
            return (env_state, next_obs, done, hidden, reward_scale, totals), transition

        zeros = jnp.zeros((config.num_envs,), jnp.float32)
        zero_counts = jnp.zeros((config.num_envs,), jnp.int32)
        env_metrics = {name: (jnp.zeros(()), jnp.zeros(())) for name in env_metric_names}
        totals = EpisodeTotals(zeros, zero_counts, zero_counts, zeros, zero_counts, jnp.zeros((), jnp.int32),
                               env_metrics)
        carry = (state.env_state, state.obs, state.last_done, state.hidden, state.reward_scale, totals)
        carry, traj = jax.lax.scan(env_step, carry, jax.random.split(key, config.num_steps))
        env_state, obs, last_done, hidden, reward_scale, totals = carry
        state = state.replace(env_state=env_state, obs=obs, last_done=last_done, hidden=hidden, reward_scale=reward_scale)
        return state, traj, totals

    def loss_fn(params: Any, hp: PPOHParams, batch: dict[str, Any], progress: jax.Array):
        if config.recurrent:
            _, out = unroll(network, params, batch["hidden0"], batch["obs"], batch["reset"])
        else:
            out = network.apply(params, batch["obs"])
        log_prob, entropy = policy.log_prob_and_entropy(out.logits, out.log_std, batch["action"], batch["mask"])
        log_ratio = log_prob - batch["log_prob"]
        ratio = jnp.exp(log_ratio)
        advantage = normalize(batch["advantage"]) if config.normalize_advantages else batch["advantage"]
        # The clip objective's epsilon is hp.clip_eps itself: one leaf for the whole of PPO.
        objective_params = hp.clip_eps if objective_name == "clip" else hp.objective_params
        policy_loss = objective(ratio, advantage, progress, objective_params).mean()
        if config.clip_value_loss:
            value_loss = clipped_value_loss(out.value, batch["value"], batch["target"], hp.clip_eps)
        else:
            value_loss = 0.5 * jnp.mean((out.value - batch["target"]) ** 2)
        entropy = entropy.mean()
        total = policy_loss + hp.vf_coef * value_loss - hp.ent_coef * entropy
        aux = {
            "policy_loss": policy_loss,
            "value_loss": value_loss,
            "entropy": entropy,
            "approx_kl": jnp.mean(ratio - 1.0 - log_ratio),
            "clip_fraction": jnp.mean(jnp.abs(ratio - 1.0) > hp.clip_eps),
        }
        return total, aux

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def minibatches(key: jax.Array, data: dict[str, Any]) -> dict[str, Any]:
        """Shuffle and split into ``[num_minibatches, ...]``: samples for feed-forward networks,
        whole environment sequences (time kept first) for the GRU."""
        m = config.num_minibatches
        if config.recurrent:
            perm = jax.random.permutation(key, config.num_envs)
            hidden0 = data["hidden0"][perm].reshape(m, -1, config.gru_size)
            sequences = {k: v for k, v in data.items() if k != "hidden0"}
            sequences = jax.tree.map(
                lambda x: jnp.moveaxis(x[:, perm].reshape(x.shape[0], m, -1, *x.shape[2:]), 1, 0), sequences
            )
            return {**sequences, "hidden0": hidden0}
        perm = jax.random.permutation(key, config.batch_size)
        return jax.tree.map(lambda x: x.reshape(config.batch_size, *x.shape[2:])[perm].reshape(m, -1, *x.shape[2:]), data)

    def update(state: TrainState, hp: PPOHParams) -> tuple[TrainState, dict[str, jax.Array]]:
        key, rollout_key, epoch_key = jax.random.split(state.key, 3)
        hidden0, reset0 = state.hidden, state.last_done
        state, traj, totals = rollout(state, hp, rollout_key)
        relabel_metrics = {}
        if relabeler is not None:  # its own key, so runs without it keep their random stream
            reward_model, reward, relabel_metrics = relabeler.relabel(
                state.reward_model, traj, hp, jax.random.fold_in(epoch_key, 1)
            )
            # the relabelled reward scores whole trajectories: their ends are terminal, no bootstrap
            traj = traj._replace(reward=reward, terminated=traj.done)
            state = state.replace(reward_model=reward_model)
        values, next_values = rollout_values(state.params, traj)
        advantage, target = gae(traj.reward, values, next_values, traj.terminated, traj.done, hp.gamma, hp.gae_lambda)
        data = {
            "obs": traj.obs, "action": traj.action, "log_prob": traj.log_prob, "value": values,
            "advantage": advantage, "target": target, "mask": traj.mask,
        }
        if config.recurrent:  # step t starts from a cleared memory iff step t-1 ended an episode
            data.update(reset=jnp.concatenate([reset0[None], traj.done[:-1]]), hidden0=hidden0)

        progress = state.update_step / config.num_updates
        lr = hp.lr * (1.0 - progress) if config.anneal_lr else hp.lr
        tx = optimizer(hp, lr)

        def minibatch_step(carry, batch):
            params, opt_state = carry
            (total, aux), grads = grad_fn(params, hp, batch, progress)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), {"total_loss": total, **aux}

        def epoch(carry, key):
            return jax.lax.scan(minibatch_step, carry, minibatches(key, data))

        (params, opt_state), losses = jax.lax.scan(
            epoch, (state.params, state.opt_state), jax.random.split(epoch_key, config.update_epochs)
        )
        metrics = {name: value.mean() for name, value in losses.items()}
        metrics.update(episode_metrics(totals), **relabel_metrics, learning_rate=lr)
        step = state.update_step + 1
        if state.opponents is not None:
            state = state.replace(opponents=state.opponents.maybe_add(params, step, config.pool_interval))
        state = state.replace(params=params, opt_state=opt_state, key=key, update_step=step)
        return state, metrics

    def evaluate_state(state: TrainState, hp: PPOHParams, key: jax.Array, num_episodes: int, greedy: bool = True):
        return evaluate(state.params, config, hp, key, num_episodes, greedy, obs_statistics(config, state))

    return Learner(init, update, config.num_updates, config.batch_size, evaluate_state)


def add_env_metrics(sums: dict[str, tuple[jax.Array, jax.Array]], metrics: dict[str, tuple[jax.Array, jax.Array]]):
    """Running ``(sum of value * weight, sum of weight)`` per name, plus one step's ``info["metrics"]``."""
    return {name: (total + jnp.sum(metrics[name][0] * metrics[name][1]), weight + jnp.sum(metrics[name][1]))
            for name, (total, weight) in sums.items()}


def episode_metrics(totals: EpisodeTotals) -> dict[str, jax.Array]:
    """Mean return and length of the episodes that ended in this rollout; if none did, of the last
    episode of each environment that has finished one; NaN (missing) before any has. Also how many
    episodes ended, how many steps offered no legal action (must be 0), and each metric the
    environment reports (``env/<name>``: its weighted mean over the rollout, NaN if its weight was 0)."""
    finished = totals.count.sum()
    ever = totals.last_length > 0

    def mean(sum_finished: jax.Array, last: jax.Array) -> jax.Array:
        fallback = jnp.where(ever.any(), jnp.sum(jnp.where(ever, last, 0)) / jnp.maximum(ever.sum(), 1), jnp.nan)
        return jnp.where(finished > 0, sum_finished.sum() / jnp.maximum(finished, 1), fallback)

    env = {f"env/{name}": jnp.where(weight > 0, total / jnp.maximum(weight, 1e-12), jnp.nan)
           for name, (total, weight) in totals.env_metrics.items()}
    return {
        **env,
        "episode_return": mean(totals.return_sum, totals.last_return),
        "episode_length": mean(totals.length_sum.astype(jnp.float32), totals.last_length.astype(jnp.float32)),
        "episodes": finished,
        "no_legal_action": totals.no_legal_action,
    }


def reported_env_metrics(env: Any) -> tuple[str, ...]:
    """Names of the metrics an environment reports: an env with ``metric_names`` puts
    ``info["metrics"] = {name: (value, weight)}`` in every step, and the learner logs the weighted
    mean over each rollout as ``env/<name>`` (e.g. the per-trial scores of ``rl.cultural``)."""
    return tuple(getattr(envs.base_env(env), "metric_names", ()))


def obs_statistics(config: PPOConfig, state: TrainState) -> envs.RunningMeanStd | None:
    """The observation normaliser's running statistics in a train state (None without one)."""
    return state.env_state.obs_stats if config.normalize_obs else None


def evaluate(
    params: Any,
    config: PPOConfig,
    hparams: PPOHParams,
    key: jax.Array,
    num_episodes: int,
    greedy: bool = True,
    obs_stats: envs.RunningMeanStd | None = None,
    max_steps: int | None = None,
) -> dict[str, jax.Array]:
    """Play ``num_episodes`` episodes (in parallel) with a frozen policy and return per-episode
    ``return`` and ``length`` [num_episodes], ``finished`` (False if cut at ``max_steps``, default
    the env's ``max_steps_in_episode``) and ``no_legal_action`` (steps whose mask allowed nothing).

    ``greedy`` takes the most likely action (the Gaussian mean); otherwise actions are sampled.
    ``obs_stats`` are the training run's observation statistics (``obs_statistics``), required with
    ``normalize_obs``. Pure and jittable; vmap it over runs (params, hparams, keys).
    """
    if config.normalize_obs and obs_stats is None:
        raise ConfigError("obs_stats", "normalize_obs policies need the run's observation statistics")
    single_env, default_env_params = envs.make_single_env(config.env, flatten=config.torso != "conv")
    env = envs.VecEnv(single_env, num_episodes)
    policy = make_policy(config, single_env, default_env_params)
    env_params = hparams.env_params
    limit = max_steps or int(getattr(default_env_params, "max_steps_in_episode", 10_000))
    key, reset_key = jax.random.split(key)
    obs, env_state = env.reset(reset_key, env_params)
    hidden = jnp.zeros((num_episodes, config.gru_size)) if config.recurrent else None
    zeros = jnp.zeros((num_episodes,))
    carry = (key, jnp.zeros((), jnp.int32), env_state, obs, hidden, zeros, zeros.astype(jnp.int32),
             zeros.astype(bool), jnp.zeros((), jnp.int32))

    def running(carry) -> jax.Array:
        _, t, *_, finished, _ = carry
        return (t < limit) & ~finished.all()

    def step(carry):
        key, t, env_state, obs, hidden, returns, lengths, finished, illegal = carry
        key, action_key, env_key = jax.random.split(key, 3)
        seen = obs_stats.normalize(obs) if obs_stats is not None else obs
        hidden, logits, log_std = policy.act(params, hidden, seen, jnp.broadcast_to(t == 0, (num_episodes,)))
        mask = env.action_mask(env_state, env_params) if policy.masked else None
        action = policy.mode(logits, mask) if greedy else policy.sample(action_key, logits, log_std, mask)
        obs, env_state, reward, terminated, truncated, _ = env.step(env_key, env_state, action, env_params)
        active = ~finished
        if mask is not None:  # only steps of episodes still running count
            illegal = illegal + no_legal_action(mask | finished[:, None])
        returns = returns + jnp.where(active, reward, 0.0)
        lengths = lengths + active
        finished = finished | terminated | truncated
        return key, t + 1, env_state, obs, hidden, returns, lengths, finished, illegal

    *_, returns, lengths, finished, illegal = jax.lax.while_loop(running, step, carry)
    return {"return": returns, "length": lengths, "finished": finished, "no_legal_action": illegal}


def make_train(config: PPOConfig) -> Callable[[jax.Array, PPOHParams], tuple[TrainState, dict[str, jax.Array]]]:
    """``train(key, hparams) -> (final_state, metrics)``: a whole run as one pure function;
    ``metrics`` holds one value per update. Jit it, vmap it over keys and hparams, shard it."""
    learner = make_learner(config)

    def train(key: jax.Array, hp: PPOHParams) -> tuple[TrainState, dict[str, jax.Array]]:
        state = learner.init(key, hp)
        return jax.lax.scan(lambda s, _: learner.update(s, hp), state, None, length=learner.num_updates)

    return train
