"""Gumbel MuZero search (mctx) with a pgx game as the model, and the pure-search baseline player.

The search plumbing is generic in an *evaluator* ``evaluate(state, key) -> (prior_logits, value)``
on a batched pgx ``State``: ``prior_logits`` ``[B, num_actions]`` and ``value`` ``[B]``, the
expected final reward of the player to move in ``state``. The pure-search baseline uses uniform
priors and random-rollout values; AlphaZero uses a policy-value network.

Sign convention for two-player zero-sum games. mctx backs a value up the tree as
``q(parent, a) = reward + discount * value(child)``. Here every node's ``value`` is from the point of
view of the player to move at that node, and the ``reward`` of an edge is the reward pgx gives the
player who made the move (the player to move at the parent). So when the turn passes to the opponent,
``discount = -1`` turns the child's value into the parent player's view; when the same player moves
again (games with multi-part turns) the discount is ``+1``; once the game has ended the discount is
``0`` and the ended node's value is 0, so only the final reward counts. Stepping an ended state
again keeps it ended with reward 0, so the search can safely descend below a terminal node.

Using it for AlphaZero (``params`` and ``net`` are yours)::

    def evaluate(state, key):
        logits, value = net.apply(params, state.observation)
        return logits, value

    policy = search_policy(env, evaluate, num_simulations=64)   # build inside the jitted function
    out = policy(state, key)            # mctx.PolicyOutput
    out.action, out.action_weights      # act with out.action; train the policy on action_weights
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import mctx
import pgx

Evaluator = Callable[[pgx.State, jax.Array], tuple[jax.Array, jax.Array]]


def _masked_logits(logits: jax.Array, legal: jax.Array) -> jax.Array:
    """Legal actions' logits shifted so that their largest is 0; illegal actions get the lowest
    finite logit (mctx's softmax must not see -inf). Masking masked logits changes nothing, so a
    child's stored prior logits can serve as a root's (``child_evaluation``)."""
    top = jnp.max(jnp.where(legal, logits, -jnp.inf), axis=-1, keepdims=True)
    logits = logits - jnp.where(jnp.isfinite(top), top, 0.0)
    return jnp.where(legal, logits, jnp.finfo(logits.dtype).min)


def make_recurrent_fn(env: pgx.Env, evaluate: Evaluator) -> Callable:
    """An mctx ``recurrent_fn(params, key, action, embedding)`` that steps the pgx game.

    The embedding is the batched pgx ``State``. After stepping it with ``action``:
    ``reward`` is the reward of the player who moved, ``discount`` is -1 if the turn passed to the
    other player (+1 if the same player moves again, 0 once the game has ended), ``prior_logits``
    and ``value`` come from ``evaluate`` on the new state (illegal actions masked, value 0 at an ended
    state). An embedding that had already ended stays ended, with reward 0. ``params`` is unused
    (close over your network parameters in ``evaluate``).
    """
    step = jax.vmap(env.step)

    def recurrent_fn(params, key: jax.Array, action: jax.Array, embedding: pgx.State):
        del params
        step_key, eval_key = jax.random.split(key)
        batch = action.shape[0]
        mover = embedding.current_player
        was_over = embedding.terminated | embedding.truncated
        state = step(embedding, action, jax.random.split(step_key, batch))
        over = state.terminated | state.truncated
        reward = jnp.where(was_over, 0.0, state.rewards[jnp.arange(batch), mover])
        discount = jnp.where(over, 0.0, jnp.where(state.current_player == mover, 1.0, -1.0))
        logits, value = evaluate(state, eval_key)
        output = mctx.RecurrentFnOutput(
            reward=reward.astype(jnp.float32),
            discount=discount.astype(jnp.float32),
            prior_logits=_masked_logits(logits.astype(jnp.float32), state.legal_action_mask),
            value=jnp.where(over, 0.0, value).astype(jnp.float32),
        )
        return output, state

    return recurrent_fn


def search_policy(
    env: pgx.Env,
    evaluate: Evaluator,
    num_simulations: int,
    max_num_considered_actions: int = 16,
    gumbel_scale: float = 1.0,
    qtransform: Callable = mctx.qtransform_completed_by_mix_value,
) -> Callable[[pgx.State, jax.Array], mctx.PolicyOutput]:
    """Gumbel MuZero search from each game of a batched pgx ``State``, with ``env.step`` as the model.

    Args:
        env: the pgx environment.
        evaluate: ``(state, key) -> (prior_logits [B, A], value [B])``, value from the view of the
            player to move; used at the root and at every expanded node.
        num_simulations: simulations per search (at least 1).
        max_num_considered_actions: actions sampled at the root for sequential halving.
        gumbel_scale: scale of the root Gumbel noise: 1 samples the action from the improved policy
            (self-play), 0 picks the best one (evaluation).
        qtransform: mctx's completion of Q-values; the pure-search baseline uses ``qtransform_unscaled``.

    Returns:
        ``policy(state, key, root_evaluation=None) -> mctx.PolicyOutput``: ``action`` (always legal
        for an unfinished game), ``action_weights`` (the improved policy, a training target) and
        ``search_tree``. ``root_evaluation``, when given, is ``(prior_logits, value)`` of ``state``
        already computed (``child_evaluation`` of the previous search), used instead of calling
        ``evaluate`` at the root.
    """
    if num_simulations < 1:
        raise ValueError(f"num_simulations must be at least 1, got num_simulations={num_simulations}")
    recurrent_fn = make_recurrent_fn(env, evaluate)

    def policy(state: pgx.State, key: jax.Array,
               root_evaluation: tuple[jax.Array, jax.Array] | None = None) -> mctx.PolicyOutput:
        root_key, search_key = jax.random.split(key)
        logits, value = evaluate(state, root_key) if root_evaluation is None else root_evaluation
        root = mctx.RootFnOutput(
            prior_logits=_masked_logits(logits.astype(jnp.float32), state.legal_action_mask),
            value=value.astype(jnp.float32),
            embedding=state,
        )
        return mctx.gumbel_muzero_policy(
            params=None,
            rng_key=search_key,
            root=root,
            recurrent_fn=recurrent_fn,
            num_simulations=num_simulations,
            invalid_actions=~state.legal_action_mask,
            max_num_considered_actions=max_num_considered_actions,
            gumbel_scale=gumbel_scale,
            qtransform=qtransform,
        )

    return policy


def child_evaluation(tree: mctx.Tree, action: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(prior_logits [B, A], value [B])`` that a search's ``tree`` holds for the root's child
    through ``action`` ``[B]``: the evaluation of the position after that move (illegal actions
    masked, value 0 if the move ended the game), as ``evaluate`` gave it when the search expanded
    the child. The next search from that position can take it as its ``root_evaluation`` instead
    of evaluating the position again. Gumbel MuZero visits the action it selects, so the child
    exists (``num_simulations >= 1``)."""
    rows = jnp.arange(action.shape[0])
    child = tree.children_index[rows, mctx.Tree.ROOT_INDEX, action]
    return tree.children_prior_logits[rows, child], tree.raw_values[rows, child]


def rollout_value(env: pgx.Env, state: pgx.State, key: jax.Array) -> jax.Array:
    """Play uniformly random legal moves from each game to its end; return the total reward of the
    player to move in ``state`` (``[B]``; 0 for a game that has already ended)."""
    batch = state.current_player.shape[0]
    rows = jnp.arange(batch)
    me = state.current_player
    step = jax.vmap(env.step)

    def cond(carry):
        state, _, _ = carry
        return ~jnp.all(state.terminated | state.truncated)

    def body(carry):
        state, key, total = carry
        key, act_key, step_key = jax.random.split(key, 3)
        logits = jnp.where(state.legal_action_mask, 0.0, -jnp.inf)
        action = jax.random.categorical(act_key, logits, axis=-1)
        state = step(state, action, jax.random.split(step_key, batch))
        return state, key, total + state.rewards[rows, me]  # ended games give zero rewards

    _, _, total = jax.lax.while_loop(cond, body, (state, key, jnp.zeros(batch, jnp.float32)))
    return total


def rollout_evaluator(env: pgx.Env, rollouts: int = 1) -> Evaluator:
    """No network: uniform prior logits and the mean of ``rollouts`` random-rollout values.

    The prior logits are zeros plus uniform noise in ``[0, 1e-3)``. The noise only breaks ties: with
    deterministic root selection (``gumbel_scale=0``) and more legal actions than
    ``max_num_considered_actions``, it makes the root consider a random subset of actions rather
    than the lowest-numbered ones.
    """
    if rollouts < 1:
        raise ValueError(f"rollouts must be at least 1, got rollouts={rollouts}")

    def evaluate(state: pgx.State, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        tie_key, rollout_key = jax.random.split(key)
        values = jax.vmap(lambda k: rollout_value(env, state, k))(jax.random.split(rollout_key, rollouts))
        logits = 1e-3 * jax.random.uniform(tie_key, state.legal_action_mask.shape)
        return logits, jnp.mean(values, axis=0)

    return evaluate


# Q-values completed by the mixed value, without rescaling them to [0, 1] per node. Board-game
# values already lie in [-1, 1]; rescaling magnifies small, noisy differences between random-rollout
# estimates, so the deterministic interior selection keeps revisiting a child and stops exploring its
# siblings (it missed immediate wins and blocks on tic-tac-toe). Measured against uniform random at 128
# simulations (256 tic-tac-toe / 128 connect-four games): score 0.938 / 0.992 without rescaling,
# 0.910 / 0.977 with it (both with gumbel_scale=0).
qtransform_unscaled = functools.partial(mctx.qtransform_completed_by_mix_value, rescale_values=False)


def pure_search_player(
    env: pgx.Env,
    num_simulations: int,
    rollouts: int = 1,
    *,
    gumbel_scale: float = 0.0,
    max_num_considered_actions: int = 16,
    qtransform: Callable = qtransform_unscaled,
) -> Callable[[pgx.State, jax.Array], jax.Array]:
    """The no-network search baseline: Gumbel MuZero search with uniform priors and random-rollout
    value estimates (``rollouts`` per evaluated node, the root included).

    It acts with the search's selected action, which is always legal. ``gumbel_scale=0`` (the
    default, mctx's advice for evaluation on perfect-information games) acts greedily on the search's
    Q-values instead of sampling from the improved policy; the player is still stochastic through its
    rollouts.
    """
    policy = search_policy(
        env,
        rollout_evaluator(env, rollouts),
        num_simulations,
        max_num_considered_actions=max_num_considered_actions,
        gumbel_scale=gumbel_scale,
        qtransform=qtransform,
    )

    def player(state: pgx.State, key: jax.Array) -> jax.Array:
        return policy(state, key).action.astype(jnp.int32)

    return player
