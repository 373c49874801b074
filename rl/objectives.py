"""Discovered policy objectives as plug-ins of the PPO learner: DPO, LPO and TA-LPO.

Mirror learning writes a policy loss as ``-(r A - drift(r, A))`` with ``r = pi_new / pi_old``, ``A``
the advantage and a drift that is >= 0, 0 at ``r = 1`` and flat there. PPO's clip is one such
drift, ``relu((r - clip(r, 1-eps, 1+eps)) A)``. LPO (Lu et al. 2022) learns the drift with a small
network of ``x = [log r, log^2 r, 1-r, (1-r)^2]`` and ``A x``; TA-LPO (Jackson et al. 2024) also
feeds ``(n/N) * [x, A x]`` (n/N = training progress) so the drift can change over a lifetime. DPO is
the closed form distilled from LPO.

The networks have no biases and all their inputs vanish at ``r = 1``, so ``net = 0`` there; the
``relu(. - 1e-4)`` keeps value and slope 0 at ``r = 1`` and the drift non-negative. With
``ppo_init = 1`` PPO's clip drift is added inside the relu, so the all-zero network is PPO (up to
the 1e-4 offset) and evolution starts from PPO.

A discovered objective is stored in a directory (``save_objective``) and used anywhere the PPO
learner runs with ``PPOConfig(objective_from=DIR)`` (``--objective-from DIR`` on the command line).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import struct

from rl.errors import ConfigError
from rl.losses import register_objective

DRIFT_HIDDEN = 128
DRIFT_OFFSET = 1e-4
DPO_ALPHA = 2.0
DPO_BETA = 0.6
LEARNED_OBJECTIVES = ("lpo", "ta_lpo")
OBJECTIVE_FILE = "objective.json"


@struct.dataclass
class DriftParams:
    """Params of a learned drift: the network's weights (what evolution changes), the clip epsilon
    of the PPO initialisation, and whether that initialisation is on (1.0) or off (0.0)."""

    weights: dict[str, jax.Array]  # {"hidden": [inputs, 128], "out": [128, 1]}
    clip_eps: jax.Array
    ppo_init: jax.Array


def drift_inputs(ratio: jax.Array, advantage: jax.Array) -> jax.Array:
    """LPO's 8 features ``[x, A x]``, ``x = [log r, log^2 r, 1 - r, (1 - r)^2]`` (all 0 at r = 1)."""
    log_r, one_minus_r = jnp.log(ratio), 1.0 - ratio
    x = jnp.stack([log_r, log_r**2, one_minus_r, one_minus_r**2], axis=-1)
    return jnp.concatenate([x, advantage[..., None] * x], axis=-1)


def temporal_drift_inputs(ratio: jax.Array, advantage: jax.Array, progress: jax.Array) -> jax.Array:
    """TA-LPO's 16 features ``[x_rA, (n/N) x_rA]``."""
    x_ra = drift_inputs(ratio, advantage)
    return jnp.concatenate([x_ra, jnp.asarray(progress)[..., None] * x_ra], axis=-1)


def drift_weights(key: jax.Array | None, temporal: bool, scale: float = 0.0) -> dict[str, jax.Array]:
    """Drift-network weights: zeros (``key=None`` or ``scale=0``, the ES starting point) or normal
    with standard deviation ``scale``."""
    shapes = {"hidden": (16 if temporal else 8, DRIFT_HIDDEN), "out": (DRIFT_HIDDEN, 1)}
    if key is None or scale == 0.0:
        return {name: jnp.zeros(shape) for name, shape in shapes.items()}
    keys = dict(zip(shapes, jax.random.split(key, len(shapes)), strict=True))
    return {name: scale * jax.random.normal(keys[name], shape) for name, shape in shapes.items()}


def drift_params(weights: dict[str, jax.Array], clip_eps: float = 0.2, ppo_init: bool = True) -> DriftParams:
    """Wrap drift-network ``weights`` with the PPO-initialisation settings."""
    return DriftParams(weights, jnp.asarray(clip_eps, jnp.float32), jnp.asarray(float(ppo_init), jnp.float32))


def _drift(features: jax.Array, ratio: jax.Array, advantage: jax.Array, params: DriftParams) -> jax.Array:
    net = (jnp.tanh(features @ params.weights["hidden"]) @ params.weights["out"])[..., 0]
    clipped = jnp.clip(ratio, 1.0 - params.clip_eps, 1.0 + params.clip_eps)
    ppo_drift = jax.nn.relu((ratio - clipped) * advantage)
    return jax.nn.relu(net + params.ppo_init * ppo_drift - DRIFT_OFFSET)


def lpo_drift(ratio: jax.Array, advantage: jax.Array, params: DriftParams) -> jax.Array:
    """LPO's learned drift (>= 0, value and gradient 0 at r = 1)."""
    return _drift(drift_inputs(ratio, advantage), ratio, advantage, params)


def ta_lpo_drift(ratio: jax.Array, advantage: jax.Array, progress: jax.Array, params: DriftParams) -> jax.Array:
    """TA-LPO's learned drift, which also reads the training progress n/N."""
    return _drift(temporal_drift_inputs(ratio, advantage, progress), ratio, advantage, params)


def lpo_objective(ratio: jax.Array, advantage: jax.Array, progress: jax.Array, params: DriftParams) -> jax.Array:
    """LPO policy loss per sample: ``-(r A - drift(r, A))``."""
    del progress
    return -(ratio * advantage - lpo_drift(ratio, advantage, params))


def ta_lpo_objective(ratio: jax.Array, advantage: jax.Array, progress: jax.Array, params: DriftParams) -> jax.Array:
    """TA-LPO policy loss per sample: ``-(r A - drift(r, A, n/N))``."""
    return -(ratio * advantage - ta_lpo_drift(ratio, advantage, progress, params))


def dpo_drift(ratio: jax.Array, advantage: jax.Array, alpha: float = DPO_ALPHA, beta: float = DPO_BETA) -> jax.Array:
    """DPO's closed-form drift: ``relu((r-1)A - alpha tanh((r-1)A / alpha))`` for A >= 0, else
    ``relu(log(r) A - beta tanh(log(r) A / beta))``."""
    positive = (ratio - 1.0) * advantage
    negative = jnp.log(ratio) * advantage
    return jnp.where(
        advantage >= 0,
        jax.nn.relu(positive - alpha * jnp.tanh(positive / alpha)),
        jax.nn.relu(negative - beta * jnp.tanh(negative / beta)),
    )


def dpo_objective(ratio: jax.Array, advantage: jax.Array, progress: jax.Array, params: Any) -> jax.Array:
    """DPO policy loss per sample, ``-(r A - dpo_drift(r, A))``; params ``{"alpha", "beta"}`` or None
    (the published 2 and 0.6)."""
    del progress
    alpha, beta = (DPO_ALPHA, DPO_BETA) if params is None else (params["alpha"], params["beta"])
    return -(ratio * advantage - dpo_drift(ratio, advantage, alpha, beta))


register_objective("dpo", dpo_objective)
register_objective("lpo", lpo_objective)
register_objective("ta_lpo", ta_lpo_objective)


def default_objective_params(objective: str, clip_eps: float = 0.2) -> Any:
    """Starting params of a registered objective: zero drift networks with PPO initialisation for
    LPO and TA-LPO, None (published constants) for DPO and the clip objective."""
    if objective in LEARNED_OBJECTIVES:
        return drift_params(drift_weights(None, temporal=objective == "ta_lpo"), clip_eps, ppo_init=True)
    return None


def save_params(directory: str | Path, kind: str, params: Any, info: dict[str, Any] | None = None) -> Path:
    """Store any discovered objective's ``params`` (orbax, under ``DIR/objective``) with
    ``objective.json`` (its ``kind`` and ``info``). Every process of a multi-host run calls it."""
    directory = Path(directory).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "objective"
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(path, jax.tree.map(np.asarray, params), force=True)
    if jax.process_index() == 0:
        (directory / OBJECTIVE_FILE).write_text(json.dumps({"kind": kind, **(info or {})}, indent=2, default=str))
    return path


def read_info(directory: str | Path) -> dict[str, Any]:
    """The ``objective.json`` of ``directory``; ``ConfigError`` (field ``objective_from``) if none."""
    file = Path(directory) / OBJECTIVE_FILE
    try:
        info = json.loads(file.read_text())
        info["kind"]  # noqa: B018  (must be present)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ConfigError("objective_from", f"{directory} holds no discovered objective ({file} unreadable: {error})") from error
    return info


def restore_params(directory: str | Path, template: Any) -> Any:
    """The params stored by ``save_params``, shaped like ``template``."""
    path = Path(directory).absolute() / "objective"
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            return checkpointer.restore(path, jax.tree.map(np.asarray, template))
    except Exception as error:  # orbax raises many types for unreadable data
        raise ConfigError("objective_from", f"cannot read the params in {path}: {type(error).__name__}") from error


def save_objective(directory: str | Path, kind: str, params: DriftParams, info: dict[str, Any] | None = None) -> Path:
    """Store a learned drift objective (``save_params`` for LPO / TA-LPO)."""
    if kind not in LEARNED_OBJECTIVES:
        raise ConfigError("objective", f"only learned objectives are stored; {kind!r} is not one of {LEARNED_OBJECTIVES}")
    return save_params(directory, kind, params, info)


def objective_kind(directory: str | Path) -> str:
    """The kind (``lpo`` or ``ta_lpo``) of the drift objective stored in ``directory``;
    ``ConfigError`` (field ``objective_from``) if it holds none or one of another kind."""
    kind = read_info(directory)["kind"]
    if kind not in LEARNED_OBJECTIVES:
        raise ConfigError("objective_from", f"{directory} holds a {kind!r} objective, not one of {LEARNED_OBJECTIVES}")
    return kind


def load_objective(directory: str | Path) -> tuple[str, DriftParams]:
    """``(kind, params)`` of the drift objective stored in ``directory`` by ``save_objective``."""
    kind = objective_kind(directory)
    params = restore_params(directory, default_objective_params(kind))
    return kind, jax.tree.map(jnp.asarray, params)
