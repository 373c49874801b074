"""Spread a batch of independent runs (seeds, sweep points, ES members) over devices and hosts.

Every leaf of the batched state has the run index as its leading axis; ``batch_mesh`` lays that
axis over the devices of all processes, and ``map_over_runs`` compiles ``vmap(fn)`` per device
shard with ``shard_map``, so runs never communicate. With several processes (hosts) joined by
``jax.distributed.initialize``, every process calls the same functions with the same numpy inputs;
each keeps only its own shard, and ``to_host`` gathers results back to every process.

A learner that splits one run's batch over several devices (``Learner.data_parallel``) gets a 2-D
mesh ``(runs, data)``: runs are laid over the first axis as before, and every run's state is
replicated over the devices of the second, where its ``update`` may use collectives over
``DATA_AXIS``. A learner may also store leaves of its state split over ``DATA_AXIS``
(``Learner.state_specs``, fully sharded data parallel): ``run_specs`` turns its per-run
``PartitionSpec`` tree into the specs of the batched state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "runs"
DATA_AXIS = "data"


def batch_mesh(batch_size: int, devices: list[Any] | None = None, data_parallel: int = 1) -> Mesh:
    """A 1-D mesh over ``min(batch_size, number of devices)`` devices; with several processes,
    over every device (each process must take part). Batches that do not divide the mesh are
    padded (``padded_size``, ``pad_runs``) rather than run on fewer devices.

    ``data_parallel = d > 1``: a 2-D mesh ``(runs, data)`` of ``d`` devices per run (the device
    count must be a multiple of ``d``)."""
    devices = list(jax.devices() if devices is None else devices)
    if data_parallel > 1:
        if len(devices) % data_parallel:
            raise ValueError(f"data_parallel={data_parallel} does not divide the {len(devices)} devices")
        groups = len(devices) // data_parallel
        used = groups if jax.process_count() > 1 else min(batch_size, groups)
        return Mesh(np.array(devices[:used * data_parallel]).reshape(used, data_parallel), (AXIS, DATA_AXIS))
    used = len(devices) if jax.process_count() > 1 else min(batch_size, len(devices))
    return Mesh(np.array(devices[:used]), (AXIS,))


def run_devices(mesh: Mesh) -> int:
    """How many devices the runs are laid over (the mesh's ``runs`` axis)."""
    return mesh.shape[AXIS]


def padded_size(batch_size: int, mesh: Mesh) -> int:
    """``batch_size`` rounded up to a multiple of the devices the runs are laid over."""
    return -(-batch_size // run_devices(mesh)) * run_devices(mesh)


def pad_runs(tree: Any, size: int) -> Any:
    """Host arrays with the run axis extended to ``size`` by repeating the last run (padding runs
    compute a copy of it; results are sliced back with ``[:batch_size]``)."""

    def pad(x: Any) -> np.ndarray:
        x = np.asarray(x)
        return np.concatenate([x, np.repeat(x[-1:], size - len(x), axis=0)]) if size > len(x) else x

    return jax.tree.map(pad, tree)


def shard_runs(tree: Any, mesh: Mesh) -> Any:
    """Place host arrays (leading axis = runs) on the mesh; each process supplies its own shards."""
    sharding = NamedSharding(mesh, PartitionSpec(AXIS))

    def place(x: Any) -> jax.Array:
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree.map(place, tree)


def run_specs(per_run: Any) -> Any:
    """Specs of a batched tree from a tree of per-run ``PartitionSpec`` (runs axis prepended)."""
    return jax.tree.map(lambda spec: PartitionSpec(AXIS, *spec), per_run,
                        is_leaf=lambda x: isinstance(x, PartitionSpec))


def map_over_runs(fn: Callable[..., Any], mesh: Mesh, in_specs: Any = None, out_specs: Any = None) -> Callable[..., Any]:
    """``jit(shard_map(vmap(fn)))``: every positional argument and output is batched over runs.

    ``in_specs``/``out_specs`` (default: every leaf split over runs only, i.e. replicated over
    ``DATA_AXIS``) are shard_map's, for arguments or outputs with leaves also split over
    ``DATA_AXIS`` (``run_specs``). Runs never communicate, so shard_map's check of which values
    vary across devices is off: it would reject loops whose carry starts as a constant (a fresh
    environment state inside ``train``) and becomes per-device data.
    """
    spec = PartitionSpec(AXIS)
    return jax.jit(jax.shard_map(jax.vmap(fn), mesh=mesh, in_specs=spec if in_specs is None else in_specs,
                                 out_specs=spec if out_specs is None else out_specs, check_vma=False))


def to_host(tree: Any) -> Any:
    """Numpy copies of (possibly multi-host) arrays, identical on every process."""
    if jax.process_count() > 1:
        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.tree.map(np.asarray, jax.device_get(tree))


def abstract_like(tree: Any) -> Any:
    """Shape, dtype and sharding of every leaf (the restore target for checkpoints)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)
