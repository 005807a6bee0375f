"""A program's members as the devices compute them: the engine (one member: the single run's `Engine`;
several: a `population.PopulationEngine`) and the probes every member takes in one call."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from resnet_jax import data as datasets
from resnet_jax import distributed, models, probes
from resnet_jax.config import Config
from resnet_jax.engine import Engine, TrainState
from resnet_jax.population import PopulationEngine, population_model


def build_engine(configs: Sequence[Config], data: datasets.Dataset, layout: str) -> Engine:
    """The engine for these members' configs (equal but for the population keys), each network built from its
    own seed. `layout`: how several members are computed (`population.LAYOUTS`, resolved)."""
    cfg = configs[0]
    mesh = distributed.make_mesh()
    if len(configs) < mesh.devices.size:  # each member's batch is split over the devices
        distributed.check_batch_divides(cfg.trainer.batch_size, mesh)
    shared = {
        "x_train": data.x_train,
        "y_train": data.y_train,
        "augment": cfg.data.augment,
        "dtype": jnp.dtype(cfg.trainer.dtype),
        "mesh": mesh,
    }
    if len(configs) == 1:
        model = models.build(cfg.model, data.image_shape, data.num_classes, cfg.seed)
        return Engine(model, cfg.optim, cfg.trainer.steps, seed=cfg.seed, **shared)
    networks = [
        models.build(population_model(c.model, layout), data.image_shape, data.num_classes, c.seed)
        for c in configs
    ]
    return PopulationEngine(
        networks,
        [c.optim for c in configs],
        cfg.trainer.steps,
        seeds=[c.seed for c in configs],
        layout=layout,
        **shared,
    )


def probe_batch(engine: Engine, cfg: Config, data: datasets.Dataset) -> tuple[jax.Array, jax.Array]:
    """The fixed batch probes measure on: the first `probe.batch_size` training examples, on the devices."""
    size = min(cfg.probe.batch_size, len(data.y_train))
    x, y = (distributed.put(a[:size], engine.replicated) for a in (data.x_train, data.y_train))
    return x, y


def probe_lists(values: dict[str, Any]) -> dict[str, list[float]]:
    """Measured probes as JSON-ready lists, to six significant digits, not decimals: a vanishing gradient's
    1e-9 must not be recorded as 0."""
    return {
        f"probe/{key}": [float(f"{v:.6g}") for v in np.asarray(value).tolist()]
        for key, value in values.items()
    }


def member_probes(
    cfg: Config, engine: Engine, data: datasets.Dataset
) -> Callable[[TrainState], list[dict[str, list[float]]]] | None:
    """Every member's probes in one call (`Engine.each_member`), on `probe_batch`: a JSON-ready dict per
    member; None when the config takes no probes."""
    if not cfg.probe.every:
        return None
    x, y = probe_batch(engine, cfg, data)
    measure = partial(probes.measure, engine.graphdef, dtype=engine.dtype)
    measure_all = jax.jit(engine.each_member(measure), out_shardings=engine.replicated)

    def measure_members(state: TrainState) -> list[dict[str, list[float]]]:
        values = {
            key: distributed.host_copy(value)
            for key, value in measure_all(state.params, state.model_state, x, y).items()
        }
        return [probe_lists({key: v[k] for key, v in values.items()}) for k in range(engine.members)]

    return measure_members
