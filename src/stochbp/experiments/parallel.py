"""Data parallelism of the experiments with JAX's own SPMD (``jax.sharding``).

A run trains on a one-axis device mesh ``("data",)`` of N devices: every training
step's minibatch is split along its first axis into N equal slices, one per device
(``shard_batch``, a sharding constraint inside the jitted step), and the parameters,
optimiser and control-variate states are replicated (``replicate``). XLA's SPMD
partitioner then runs each device on its slice and sums the gradient contributions
across devices with an all-reduce; the program is the same as on one device, so the
numbers agree with N = 1 up to the order of floating-point sums. Random keys do not
depend on the mesh (``jax.random`` draws the same values whatever the sharding).

Several hosts: every process runs the same command after
``jax.distributed.initialize`` (see the README, "Several devices"); the mesh then spans
the devices of every process, each process supplies the same replicated inputs, and
only process 0 writes files (``is_writer``, checked by :mod:`stochbp.experiments.io`).

The runner sets the mesh of the current run with :func:`using`; experiments read it
with :func:`current`.
"""
from __future__ import annotations

import contextlib
from typing import Optional

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "data"
_CURRENT: list = []  # stack of meshes set by `using`


def make_mesh(devices: Optional[int] = None) -> Mesh:
    """A mesh of the first ``devices`` devices JAX sees (all of them when None: the
    local ones, or every host's after ``jax.distributed.initialize``). Raises
    UsageError naming --devices when the count is not available."""
    from stochbp.experiments.errors import UsageError
    available = jax.devices()
    n = len(available) if devices is None else devices
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or \
            not 1 <= n <= len(available):
        raise UsageError(f"--devices must be an integer from 1 to {len(available)} (the "
                         f"{available[0].platform} devices JAX sees); got --devices={n!r}")
    return Mesh(np.array(available[:int(n)]), (AXIS,))


def default_device_count(batch_size: Optional[int] = None) -> int:
    """The device count a run uses without --devices: every device JAX sees, or, when
    that count does not divide ``batch_size``, the largest count that does (so a batch
    of 100 on 8 devices runs on 5). Runs of several processes keep every device (each
    process must hold a share of the mesh); the batch must then divide evenly."""
    available = len(jax.devices())
    if batch_size is None or jax.process_count() > 1:
        return available
    return max(n for n in range(1, available + 1) if batch_size % n == 0)


def describe(mesh: Mesh) -> dict:
    """What the manifest records of the mesh."""
    devices = list(mesh.devices.flat)
    return {"devices": len(devices), "axis": AXIS, "platform": devices[0].platform,
            "device_kind": devices[0].device_kind, "processes": jax.process_count()}


@contextlib.contextmanager
def using(mesh: Mesh):
    """Make ``mesh`` the current run's mesh inside the block."""
    _CURRENT.append(mesh)
    try:
        yield mesh
    finally:
        _CURRENT.pop()


def current() -> Mesh:
    """The mesh set by :func:`using`, else a mesh of the first device alone."""
    return _CURRENT[-1] if _CURRENT else make_mesh(1)


def size(mesh: Optional[Mesh] = None) -> int:
    return int((mesh or current()).devices.size)


def batch_sharding(mesh: Optional[Mesh] = None) -> NamedSharding:
    """First axis split over the mesh, the others whole."""
    return NamedSharding(mesh or current(), PartitionSpec(AXIS))


def replicated_sharding(mesh: Optional[Mesh] = None) -> NamedSharding:
    return NamedSharding(mesh or current(), PartitionSpec())


def shard_batch(x, mesh: Optional[Mesh] = None):
    """Inside a jitted function: constrain a batch (first axis = examples) to be split
    over the mesh. Its first dimension must be a multiple of the number of devices
    (:func:`check_divisible`)."""
    return jax.lax.with_sharding_constraint(x, batch_sharding(mesh))


def check_divisible(name: str, value: int, mesh: Optional[Mesh] = None) -> None:
    """A batch dimension split over the mesh must divide evenly: UsageError otherwise."""
    from stochbp.experiments.errors import UsageError
    n = size(mesh)
    if value % n:
        raise UsageError(f"{name}={value} is not a multiple of the {n} devices of the mesh "
                         f"(--devices {n}); choose {name} divisible by {n}, or another "
                         "--devices")


def replicate(tree, mesh: Optional[Mesh] = None):
    """Every array leaf placed whole on every device of the mesh (also across
    processes: built from each process's own copy, which must be the same)."""
    sharding = replicated_sharding(mesh)

    def put(x):
        if isinstance(x, jax.Array):  # already on devices: moved (a no-op if in place)
            return jax.device_put(x, sharding)
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])
    return jax.tree_util.tree_map(put, tree)


def to_host(tree):
    """NumPy copies of every array leaf; a replicated array spread over several
    processes is read from this process's own copy."""
    def get(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            if not x.is_fully_replicated:
                raise ValueError("to_host: a sharded multi-process array has no single "
                                 "host copy; replicate it first")
            return np.asarray(x.addressable_data(0))
        return np.asarray(x)
    return jax.tree_util.tree_map(get, tree)


def is_writer() -> bool:
    """Whether this process writes results and checkpoints: process 0 alone."""
    return jax.process_index() == 0
