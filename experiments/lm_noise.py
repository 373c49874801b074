"""How much of each update's gradient is signal, per algorithm, at one checkpoint.

    python -m experiments.lm_noise --init runs/lm/mul_sft12k --algos sft grpo grpo-shuffled --out runs/lm/noise

For every ``--algos`` entry the gradient that an update would follow (one minibatch, before
clipping and Adam) is computed at the parameters of ``--init`` for ``--batches`` independent
batches, each with its own problems and samples, split over the devices. An entry is an ``rl.lm``
algorithm, with ``-shuffled`` for the shuffled-reward control of an RL algorithm and
``:field=value,...`` to change ``LMConfig`` fields for that entry alone (for example
``grpo:group_size=2,prompts_per_update=256``); the other settings are the ``lm_rl`` flags
(``--prompts-per-update``, ``--group-size``, ``--reward``, ...).

``rl.gradient_noise`` turns the gradients into, per entry:

- ``grad_norm_sq`` (the true gradient's squared norm) and its jackknife standard error,
- ``batch_noise`` (one batch's noise) and ``snr`` (their ratio),
- ``noise_scale`` (the batch, in prompts, at which noise equals signal; ``noise_scale_samples``
  counts completions) and ``mean_cosine`` (between two batches' gradients),
- ``cosine_with_first`` (between this entry's true gradient and the first entry's, with its
  standard error ``cosine_se``) and ``useful_snr`` (the per-batch signal along the first entry's
  true gradient: ``cosine^2 * snr``).

With little signal per batch the estimates need thousands of batches: read the standard errors.
Writes ``<out>/summary.json`` and prints the table.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.flatten_util import ravel_pytree

from experiments import lm_rl
from experiments.common import cli, format_table
from rl import records
from rl.errors import ConfigError, parse_settings
from rl.gradient_noise import GradientNoise, mean_gradient_cosine
from rl.lm import learner as lm_learner
from rl.lm.config import ALGOS, LMConfig, default_hparams, resolved

SHUFFLED = "-shuffled"


@dataclasses.dataclass(frozen=True)
class Args:
    lm: LMConfig = LMConfig(data_shards=1)
    """the settings of the update whose gradient is measured (its algo comes from --algos)"""
    init: str = ""
    """run directory of experiments.lm_rl whose final parameters are measured (required)"""
    algos: tuple[str, ...] = ("sft", "grpo", "grpo-shuffled")
    """algorithms measured; ``<rl algo>-shuffled``: with its rewards permuted within each group"""
    batches: int = 64
    """independent batches per algorithm"""
    seed: int = 0
    out: str = "runs/lm_noise"

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the first invalid field, before anything is compiled."""
        if not self.init or not (Path(self.init) / "config.json").exists():
            raise ConfigError("init", f"{self.init!r} is not a run directory (no config.json)")
        if self.batches < 2:
            raise ConfigError("batches", f"the estimates need at least 2 batches, got {self.batches}")
        if not self.algos:
            raise ConfigError("algos", "give at least one algorithm")
        for name in self.algos:
            config = self.config(name)
            config.validate()
            if config.data_shards != 1:
                raise ConfigError("data_shards", "each batch runs on one device (batches are split over the devices)")

    def config(self, entry: str) -> LMConfig:
        """The learner settings of ``--algos`` entry ``entry`` (``algo[-shuffled][:field=value,...]``)."""
        name, overrides = parse_settings(entry, "algos")
        algo = name.removesuffix(SHUFFLED)
        if algo not in ALGOS:
            raise ConfigError("algos", f"unknown {name!r}; known: {', '.join(ALGOS)} (RL ones also with {SHUFFLED})")
        if name.endswith(SHUFFLED) and algo == "sft":
            raise ConfigError("algos", "sft has no rewards to shuffle")
        changes: dict[str, Any] = {"algo": algo, "shuffle_rewards": name.endswith(SHUFFLED)}
        for field, value in overrides.items():
            if field not in {f.name for f in dataclasses.fields(LMConfig)} or field in changes:
                raise ConfigError("algos", f"{entry!r}: {field!r} is not a settable LMConfig field")
            kind = type(getattr(self.lm, field))
            try:
                changes[field] = value.lower() in ("1", "true") if kind is bool else kind(value)
            except ValueError:
                raise ConfigError("algos", f"{entry!r}: {value!r} is not a {kind.__name__} for {field}") from None
        return dataclasses.replace(self.lm, **changes)


def measure(config: LMConfig, params: Any, batches: int, seed: int, stream: int) -> tuple[GradientNoise, float]:
    """Running noise sums over ``batches`` gradients at ``params``, and seconds per batch. Each
    ``stream`` draws other problems and samples: entries measured with different streams are
    independent, as the cosine between their true gradients needs."""
    learner, parts = lm_learner.make_learner(config, params)
    hparams = default_hparams(config)
    state = learner.init(jax.random.PRNGKey(seed), hparams)
    devices = jax.local_device_count()

    @functools.partial(jax.pmap, in_axes=(None, 0))
    def gradients(state: lm_learner.LMState, key: jax.Array) -> jax.Array:
        return ravel_pytree(parts["batch_gradient"](state._replace(key=key), hparams))[0]

    noise = GradientNoise(batch_size=config.prompts_per_update)
    keys = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed), stream), -(-batches // devices) * devices)
    jax.block_until_ready(gradients(state, keys[:devices]))  # compile
    began = time.perf_counter()
    for start in range(0, batches, devices):
        for grad in np.asarray(gradients(state, keys[start:start + devices]))[:batches - start]:
            noise.add(grad)
    return noise, (time.perf_counter() - began) / batches


def main(args: Args) -> dict[str, Any]:
    """Measure every algorithm, print the table, write summary.json."""
    args.validate()
    config = resolved(args.config(args.algos[0]))
    params = lm_rl.start_params(args.init, config)
    rows, first = [], None
    for stream, entry in enumerate(args.algos):
        config = resolved(args.config(entry))
        noise, seconds = measure(config, params, args.batches, args.seed, stream)
        row = {"algo": entry, **noise.summary(), "seconds_per_batch": seconds}
        row["noise_scale_samples"] = row["noise_scale"] * (config.group_size if config.is_rl else 1)
        if first is None:
            first = noise
        else:
            cosine, row["cosine_se"] = mean_gradient_cosine(noise, first)
            row["cosine_with_first"], row["useful_snr"] = cosine, cosine**2 * row["snr"]
        rows.append(row)
    summary = {"init": args.init, "lm": dataclasses.asdict(args.lm), "batches": args.batches, "rows": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records.write_json(out / "summary.json", summary)
    columns = ["algo", "grad_norm_sq", "grad_norm_sq_se", "batch_noise", "snr", "noise_scale", "noise_scale_samples",
               "mean_cosine", "cosine_with_first", "cosine_se", "useful_snr", "seconds_per_batch"]
    print(format_table([{k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows], columns))
    return summary


if __name__ == "__main__":
    cli(main, Args, __doc__)
