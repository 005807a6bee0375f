"""One process drives all its local devices; several SLURM tasks join into one global mesh.

Mesh axis `data`: the batch is sharded across devices, parameters and optimizer state are replicated.
Under `jit`, XLA turns the batch means (loss, BatchNorm statistics) into cross-device reductions, so
BatchNorm sees the global batch and 1 or 8 devices compute the same numbers up to float rounding.
Every process computes the same global batch indices (they depend on seed and step only) and feeds
the shards its own devices hold.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from resnet_jax.errors import ConfigError, UserError

log = logging.getLogger(__name__)

DATA_AXIS = "data"


def initialize_multihost() -> None:
    """`jax.distributed.initialize()` inside a multi-task SLURM step (`srun`, as submitit runs each task).

    Only a step's environment counts (`SLURM_STEP_NUM_TASKS`): `SLURM_NTASKS` is set in the whole allocation,
    also where one process was started by hand (`salloc -n2 python ...`, or in the batch script itself), and
    initialising there would wait for peers that never come. Such a process says so in one line and trains
    alone. CPU collectives are set to gloo, so that every JAX version in the allowed range behaves the same.
    """
    if jax.distributed.is_initialized():
        return
    step_tasks = int(os.environ.get("SLURM_STEP_NUM_TASKS", "1"))
    if step_tasks > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize()  # coordinator, process count and id come from SLURM's environment
        log.info("jax.distributed: process %d of %d", jax.process_index(), jax.process_count())
        return
    tasks = int(os.environ.get("SLURM_NTASKS", "1"))
    if tasks > 1:
        log.warning(
            "this SLURM allocation has %d tasks but this process was not started by srun as one of "
            "them; training as a single process (start it with `srun python -m resnet_jax.train ...` "
            "to use every task)",
            tasks,
        )


class BackendUnavailable(UserError):
    """The JAX backend asked for (JAX_PLATFORMS) cannot start on this machine."""


def check_backend() -> None:
    """Start JAX's backend, or say in one line why the one asked for cannot start here."""
    try:
        jax.devices()
    except RuntimeError as exc:
        asked = os.environ.get("JAX_PLATFORMS")
        why = " ".join(str(exc).split())
        raise BackendUnavailable(
            f"JAX_PLATFORMS={asked} asks for a backend this machine cannot start ({why}); unset "
            "JAX_PLATFORMS to use the devices that are here, or run where that accelerator and JAX for it are"
            if asked
            else f"JAX cannot start a backend here ({why})"
        ) from None


def make_mesh() -> Mesh:
    """All devices of all processes on one `data` axis."""
    return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def check_batch_divides(batch_size: int, mesh: Mesh) -> None:
    devices = mesh.devices.size
    if batch_size % devices:
        raise ConfigError(
            f"trainer.batch_size={batch_size} does not divide evenly over {devices} devices; "
            f"choose a multiple of {devices} (e.g. {max(devices, batch_size // devices * devices)})"
        )


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh, axis: int = 0) -> NamedSharding:
    """Shard dimension `axis` (the batch, or a population's members) over the data axis."""
    return NamedSharding(mesh, PartitionSpec(*([None] * axis), DATA_AXIS))


def put(host_array: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A global array from a host array every process holds in full: each process feeds its shards."""
    host_array = np.asarray(host_array)
    return jax.make_array_from_callback(host_array.shape, sharding, lambda index: host_array[index])


def put_tree(tree: Any, sharding: NamedSharding) -> Any:
    return jax.tree.map(lambda leaf: put(np.asarray(leaf), sharding), tree)


def host_copy(value: Any) -> np.ndarray:
    """A global array's whole value on this process (np.asarray fails on an array spanning processes): a
    replicated one from this process's first shard, one sharded over several processes (a population's
    members) gathered from all of them, which every process must then call in the same order."""
    if not isinstance(value, jax.Array):
        return np.asarray(value)
    if value.is_fully_replicated:
        return np.asarray(value.addressable_data(0))
    if value.is_fully_addressable:
        return np.asarray(value)
    return np.asarray(multihost_utils.process_allgather(value, tiled=True))


def is_primary() -> bool:
    """Process 0 writes the run directory's files; the others compute."""
    return jax.process_index() == 0
