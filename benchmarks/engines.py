"""The engines the benchmarks time: one run's or a population's, on random data of a given shape, and the
rate at which they train (`bench.py`, `gpu_check.py`)."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from resnet_jax import models
from resnet_jax.config import Config
from resnet_jax.engine import Engine
from resnet_jax.population import PopulationEngine, population_model, resolve_layout


def make_engine(
    cfg: Config, shape: tuple[int, int, int], batch: int, examples: int = 1024, dtype: jnp.dtype = jnp.float32
) -> Engine:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(examples, *shape)).astype(np.float32)
    y = rng.integers(0, 10, size=examples).astype(np.int32)
    model = models.build(cfg.model, shape, 10, cfg.seed)
    return Engine(
        model,
        cfg.optim,
        10_000,
        x_train=x,
        y_train=y,
        augment=False,
        dtype=dtype,
        seed=cfg.seed,
    )


def train_rate(engine: Engine, batch: int, steps_per_call: int, calls: int) -> tuple[float, float]:
    """(steps/s summed over the engine's members, first-call seconds): `calls` timed calls of `steps_per_call`
    steps after one warm-up call, through the members interface the training runs use (one member or many)."""
    rng = np.random.default_rng(1)
    n, members = engine.x_train.shape[0], engine.members
    alive = np.ones(members, bool)

    def indices() -> np.ndarray:
        return rng.integers(0, n, size=(steps_per_call, members, batch)).astype(np.int32)

    state = engine.stacked(engine.member_initial)
    start = time.perf_counter()
    state, rows = engine.train_members(state, indices(), alive)
    jax.block_until_ready(rows)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(calls):
        state, rows = engine.train_members(state, indices(), alive)
    jax.block_until_ready(rows)
    return members * calls * steps_per_call / (time.perf_counter() - start), first


def make_population(
    cfg: Config,
    shape: tuple[int, int, int],
    members: int,
    layout: str = "auto",
    examples: int = 1024,
    dtype: jnp.dtype = jnp.float32,
) -> PopulationEngine:
    """`members` copies of `cfg` (seeds 0, 1, ...) as one population on random data, computed with `layout`
    (`population.LAYOUTS`) and the kernels the launcher gives that layout."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(examples, *shape)).astype(np.float32)
    y = rng.integers(0, 10, size=examples).astype(np.int32)
    layout = resolve_layout(layout)
    networks = [models.build(population_model(cfg.model, layout), shape, 10, seed) for seed in range(members)]
    return PopulationEngine(
        networks,
        [cfg.optim] * members,
        10_000,
        seeds=list(range(members)),
        x_train=x,
        y_train=y,
        augment=False,
        dtype=dtype,
        layout=layout,
    )
