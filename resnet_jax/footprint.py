"""What a run will hold in memory, estimated from its config alone, so that a run too large for the machine
is one line before anything is allocated (not an allocator's abort or a numpy traceback minutes later).

The estimate is a floor, not a forecast: the training state (parameters, gradients, updates and the
optimiser's slots, from the model's shapes via `nnx.eval_shape`, nothing allocated), the dataset's images
(the raw, the normalised and the device's copy), and a chunk's batch indices. Activations come on top; a run
the floor already rules out cannot run here.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import jax
from flax import nnx

from resnet_jax import data, models
from resnet_jax.config import Config
from resnet_jax.errors import UserError

# copies of the parameters that training holds: the parameters, their gradients and the updates
TRAINING_COPIES = 3
OPTIMISER_SLOTS = {"sgd": 1, "adamw": 2}  # momentum; Adam's first and second moments
DATASET_COPIES = 3  # as read, normalised, and on the device


class DoesNotFit(UserError):
    """A run (or a population's member) that cannot fit in the memory this machine has."""

    exit_code = 1


@dataclass(frozen=True)
class Footprint:
    """Bytes a run needs at least, by what needs them."""

    parameters: int  # the model's parameter count
    state_bytes: int  # the training state
    dataset_bytes: int
    indices_bytes: int  # one chunk's batch indices

    @property
    def total(self) -> int:
        return self.state_bytes + self.dataset_bytes + self.indices_bytes


def parameter_count(cfg: Config, shape: data.Shape) -> int:
    """The model's parameters, counted from its shapes (`nnx.eval_shape`: no array is allocated)."""
    abstract = nnx.eval_shape(lambda: models.build(cfg.model, shape.image_shape, shape.num_classes, cfg.seed))
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(nnx.state(abstract, nnx.Param)))


def estimate(cfg: Config) -> Footprint:
    shape = data.shape(cfg.data)
    parameters = parameter_count(cfg, shape)
    copies = TRAINING_COPIES + OPTIMISER_SLOTS.get(cfg.optim.name, 2)
    chunk = min(cfg.trainer.log_every, cfg.trainer.steps)
    return Footprint(
        parameters=parameters,
        state_bytes=4 * parameters * copies,
        dataset_bytes=DATASET_COPIES * shape.image_bytes,
        indices_bytes=2 * 4 * chunk * cfg.trainer.batch_size,  # int32, on the host and on the device
    )


def free_bytes() -> int:
    """Memory free for a run: the accelerator allocator's limit, or the host's available memory."""
    stats = jax.local_devices()[0].memory_stats() or {}
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def size(nbytes: float) -> str:
    """Bytes as a person reads them: 1.5 GiB, 7.3 TiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if nbytes < 1024 or unit == "PiB":
            return f"{nbytes:.1f} {unit}" if unit != "B" else f"{int(nbytes)} B"
        nbytes /= 1024
    raise AssertionError("unreachable")


def _keys(section: object, names: tuple[str, ...], prefix: str) -> str:
    return ", ".join(f"{prefix}.{n}={getattr(section, n)}" for n in names if hasattr(section, n))


def check_fits(cfg: Config, members: int = 1) -> Footprint:
    """The footprint of one run (of `members` runs trained together, sharing the dataset); `DoesNotFit`,
    one line naming what is too large and the keys that size it, when its floor exceeds the free memory."""
    need = estimate(cfg)
    total = members * (need.state_bytes + need.indices_bytes) + need.dataset_bytes
    free = free_bytes()
    if total <= free:
        return need
    model_keys = _keys(cfg.model, ("depth", "width"), "model")
    data_keys = _keys(cfg.data, ("train_size", "test_size", "image_size"), "data")
    parts = {
        f"the model, {need.parameters:,} parameters ({model_keys})": members * need.state_bytes,
        f"the dataset (data={cfg.data.name}{', ' + data_keys if data_keys else ''})": need.dataset_bytes,
        f"a chunk's batch indices (trainer.log_every={cfg.trainer.log_every}, "
        f"trainer.batch_size={cfg.trainer.batch_size})": members * need.indices_bytes,
    }
    largest = max(parts, key=parts.__getitem__)

    who = f"{members} members" if members > 1 else "the run"
    raise DoesNotFit(
        f"{who} would need at least {size(total)} of memory, more than the {size(free)} free on "
        f"{jax.default_backend()}; most of it is {largest}: {size(parts[largest])}. Make it smaller, or run "
        "where there is more memory"
    )
