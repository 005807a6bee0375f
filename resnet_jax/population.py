"""Populations: a sweep's runs that differ only in traced scalars, trained as one compiled program.

The members of a population share the network's structure, the data and every static setting; each has its
own seed (initial parameters, data order, augmentation) and its own optimiser hyperparameters, which enter the
compiled step as arrays with a leading member axis. This module says which runs form a population and how its
engine computes them; their life (directories, chunks, records) is `resnet_jax.lifecycle`'s, the same as a
single run's, so the report, W&B and resume cannot tell a member from a single run.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import PartitionSpec as P

from resnet_jax import distributed, footprint, optim
from resnet_jax.config import Config, OptimConfig, as_dict
from resnet_jax.engine import Engine, TrainState, run_steps
from resnet_jax.ops import kernels

log = logging.getLogger(__name__)

# the keys that may differ within a population: the seed and the optimiser's traced values
POPULATION_KEYS = ("seed", *(f"optim.{key}" for key in optim.TRACED_KEYS))

# how a program computes its members: side by side (`vmap`: one step of every member at once, which fills an
# accelerator that one small net leaves idle) or one after another (`in_turn`: each member's K steps as a
# single run computes them; on CPU one run already keeps the cores busy, and a vmapped population ran at
# 0.7-0.85x one run's steps/s per member, in turn at 0.9-1.1x: README "Populations"); `auto` picks per backend
LAYOUTS = ("auto", "vmap", "in_turn")


def resolve_layout(requested: str) -> str:
    """The layout a program uses: `auto` is `in_turn` on CPU and `vmap` on GPU/TPU."""
    if requested != "auto":
        return requested
    return "in_turn" if jax.default_backend() == "cpu" else "vmap"


@dataclass(frozen=True)
class MemberJob:
    """One run of a population: its config, its run directory and its names (those of a single run)."""

    config: Config
    run_dir: Path
    overrides: tuple[str, ...] = ()
    name: str = "default"  # the W&B run's name: Hydra's override_dirname, as for a single run
    checked: bool = False  # its config passed the command line's pre-flight (`preflight.checked_ahead`)


def group_key(cfg: Config) -> str:
    """What the members of one program share: the config without the population keys' values (whether
    momentum is used at all stays: it changes the optimiser's state)."""
    shared = as_dict(cfg)
    shared.pop("seed")
    for key in optim.TRACED_KEYS:
        if key in shared["optim"]:
            shared["optim"][key] = bool(shared["optim"][key]) if key == "momentum" else None
    return json.dumps(shared, sort_keys=True, default=str)


def form_groups(jobs: Sequence[MemberJob], max_members: int) -> list[list[MemberJob]]:
    """The jobs in populations: same group key, in the sweep's order, at most `max_members` each."""
    by_key: dict[str, list[MemberJob]] = {}
    for job in jobs:
        by_key.setdefault(group_key(job.config), []).append(job)
    return [
        members[i : i + max_members]
        for members in by_key.values()
        for i in range(0, len(members), max_members)
    ]


class TooLarge(Exception):
    """A population whose compiled program does not fit in the device's memory; `fit` members would."""

    def __init__(self, fit: int):
        super().__init__(f"{fit} members fit")
        self.fit = fit


def _stack(trees: Sequence[Any]) -> Any:
    return jax.tree.map(lambda *leaves: np.stack([np.asarray(leaf) for leaf in leaves]), *trees)


class PopulationEngine(Engine):
    """The engine of `resnet_jax.engine`, for M members at once: every state leaf has a leading member axis,
    one compiled call runs K steps of every member (the vmapped step inside the K-step scan), and a member
    whose `alive` flag is off keeps its state unchanged (diverged, finished, or ahead after a resume).
    `layout` (`LAYOUTS`, resolved): the members' steps side by side, or one member after another.

    With at least as many members as devices, the members are split over the devices (each device trains
    whole members; no gradient crosses devices), their number padded to a multiple of the devices with
    copies of the first member that never train and are never reported. With fewer, every member's batch is
    split over the devices, as a single run's."""

    def __init__(
        self,
        networks: Sequence[nnx.Module],
        optim_cfgs: Sequence[OptimConfig],
        steps: int,
        *,
        seeds: Sequence[int],
        layout: str,
        **data_and_devices: Any,  # `Engine`'s x_train, y_train, augment, dtype and mesh
    ):
        self.layout = layout
        super().__init__(networks[0], optim_cfgs[0], steps, seed=seeds[0], **data_and_devices)
        self.members = len(networks)
        self._spread_members()
        self.member_initial = []
        for network in networks:
            _, params, model_state = nnx.split(network, nnx.Param, ...)
            initial = TrainState(jnp.zeros((), jnp.int32), params, model_state, self.tx.init(params))
            self.member_initial.append(jax.device_get(initial))
        hyper = {key: self._padded(values) for key, values in optim.traced(list(optim_cfgs)).items()}
        self.hyper = distributed.put_tree(hyper, self.state_sharding)
        seeds = self._padded(np.asarray(seeds, np.int32))
        self.augment_keys = jax.jit(jax.vmap(jax.random.key), out_shardings=self.state_sharding)(seeds + 1)
        self.compiled_chunk = jax.jit(self._population_chunk, donate_argnums=0)
        self._programs: dict[tuple[int, ...], Any] = {}  # the chunk compiled, by the indices' shape
        self.eval_batch = jax.jit(self._population_eval_batch)

    def _spread_members(self) -> None:
        """Where the members' arrays live: split over the devices (padded to a multiple of them), or every
        member's batch split over the devices."""
        self.members_split = self.devices > 1 and self.members >= self.devices
        self.slots = -(-self.members // self.devices) * self.devices if self.members_split else self.members
        if self.members_split:
            self.state_sharding = distributed.batch_sharded(self.mesh)  # axis 0: the members
            self.eval_sharding = self.replicated
            self.indices_sharding = distributed.batch_sharded(self.mesh, axis=1)  # (K, members, B)
        else:
            self.indices_sharding = distributed.batch_sharded(self.mesh, axis=2)

    def each_member(self, fn: Callable) -> Callable:
        """`fn(params, model_state, *shared)` of one member, for every member's (leading axis) with the rest
        shared: side by side (`vmap`) or one member after another (`lax.map`), as the layout computes."""

        def each(params, model_state, *shared):
            if self.layout == "vmap":
                return jax.vmap(fn, in_axes=(0, 0) + (None,) * len(shared))(params, model_state, *shared)
            return jax.lax.map(lambda member: fn(*member, *shared), (params, model_state))

        return each

    def _population_eval_batch(self, params, model_state, x, y, mask):
        sums = self.each_member(self._eval_batch)(params, model_state, x, y, mask)
        return jax.lax.with_sharding_constraint(sums, self.replicated)  # every process reads every member

    def _padded(self, per_member: np.ndarray, fill: Any = None) -> np.ndarray:
        """`per_member` (members on axis 0) with the padding slots: copies of the first member, or `fill`."""
        extra = self.slots - self.members
        pad = np.repeat(per_member[:1], extra, axis=0) if fill is None else np.full(extra, fill)
        return np.concatenate([per_member, pad.astype(per_member.dtype)])

    def stacked(self, states: Sequence[TrainState]) -> TrainState:
        """The members' host states, stacked (with the padding slots) and placed on the devices."""
        return self.place_state(jax.tree.map(self._padded, _stack(states)))

    def _population_chunk(
        self, state: TrainState, indices: jax.Array, alive: jax.Array, hyper: dict, augment_keys: jax.Array
    ):
        """Every alive member trains the chunk's K steps (the others keep their state); rows of (K, M). The
        per-member arrays are arguments, not closed over: split over several processes, a jitted function
        may not close over an array that spans them."""
        chunk = self._side_by_side if self.layout == "vmap" else self._in_turn
        new, rows = chunk(state, indices, alive, hyper, augment_keys)
        return new, jax.lax.with_sharding_constraint(rows, self.replicated)

    def _side_by_side(
        self, state: TrainState, indices: jax.Array, alive: jax.Array, hyper: dict, augment_keys: jax.Array
    ):
        """The vmapped step inside the K-step scan. Masking once per chunk, not per step: a select over the
        whole state each step cost a fifth of the speed."""
        step = jax.vmap(self.member_step)
        new, rows = run_steps(lambda s, batch: step(s, batch, hyper, augment_keys), state, indices)
        kept = jax.tree.map(
            lambda n, o: jnp.where(alive.reshape((-1,) + (1,) * (n.ndim - 1)), n, o), new, state
        )
        return kept, rows

    def _in_turn(
        self, state: TrainState, indices: jax.Array, alive: jax.Array, hyper: dict, augment_keys: jax.Array
    ):
        """Each member's K steps after the previous member's, each the single run's chunk with the member's
        hyperparameters; a member not alive is skipped, not computed. With the members split over devices,
        each device takes its own members in turn."""

        def local(state, indices, hyper, augment_keys, alive, data):
            def member_chunk(member):
                state, indices, hyper, augment_key, member_alive = member

                def train(s: TrainState):
                    s, rows = run_steps(
                        lambda st, b: self.member_step(st, b, hyper, augment_key, data), s, indices
                    )
                    # float32 holds every dtype's loss exactly
                    return s, jax.tree.map(lambda row: row.astype(jnp.float32), rows)

                def skip(s: TrainState):
                    nothing = jnp.zeros(indices.shape[0], jnp.float32)
                    return s, {"loss": nothing, "error": nothing}

                return jax.lax.cond(member_alive, train, skip, state)

            members = (state, jnp.moveaxis(indices, 1, 0), hyper, augment_keys, alive)
            new, rows = jax.lax.map(member_chunk, members)
            return new, jax.tree.map(lambda row: jnp.moveaxis(row, 0, 1), rows)

        if self.members_split:  # each device its own members (and its own copy of the data)
            members, steps_members = P(distributed.DATA_AXIS), P(None, distributed.DATA_AXIS)
            # no value crosses devices, so shard_map's varying-axis check has nothing to find; it is off
            # because the oneDNN kernels' custom VJPs do not carry its types
            local = jax.shard_map(
                local,
                mesh=self.mesh,
                check_vma=False,
                in_specs=(members, steps_members, members, members, members, P()),
                out_specs=(members, steps_members),
            )
        return local(state, indices, hyper, augment_keys, alive, (self.x_train, self.y_train))

    def _program(self, state: TrainState, indices: jax.Array, *rest: Any):
        """The chunk for these shapes, compiled once: the program that trains, and that `members_that_fit`
        sizes (sizing it costs no compilation of its own)."""
        if indices.shape not in self._programs:
            self._programs[indices.shape] = self.compiled_chunk.lower(state, indices, *rest).compile()
        return self._programs[indices.shape]

    def _members_chunk_arguments(self, indices: np.ndarray, alive: np.ndarray) -> tuple[Any, ...]:
        """The chunk's arguments after the state: the indices and alive flags placed, and the members'
        hyperparameters and augmentation keys."""
        indices = np.moveaxis(self._padded(np.moveaxis(indices, 1, 0)), 0, 1)
        alive = self._padded(np.asarray(alive, bool), fill=False)
        return (
            distributed.put(indices, self.indices_sharding),
            distributed.put(alive, self.state_sharding),
            self.hyper,
            self.augment_keys,
        )

    def train_members(self, state: TrainState, indices: np.ndarray, alive: np.ndarray):
        """K steps of every alive member: `indices` (K, M, B); returns the state and the rows, each (K, M)."""
        arguments = self._members_chunk_arguments(indices, alive)
        state, rows = self._program(state, *arguments)(state, *arguments)
        return state, jax.tree.map(lambda row: row[:, : self.members], rows)

    def members_that_fit(self, steps: int, batch_size: int, fraction: float = 0.8) -> int:
        """How many members fit in `fraction` of each device's free memory: this population's compiled
        chunk of `steps` steps, as XLA's memory analysis sizes it (arguments, outputs and temporaries, per
        device), lowered from the state's shapes (no copy of it is placed). The dataset, which the members
        share, counts once; so do the temporaries of members taken in turn (one member's at a time), while
        side by side every member has its own."""
        arguments = self._members_chunk_arguments(
            np.zeros((steps, self.members, batch_size), np.int32), np.ones(self.members, bool)
        )
        shapes = jax.tree.map(  # the host state's leaves are numpy arrays
            lambda leaf: jax.ShapeDtypeStruct(
                (self.slots, *leaf.shape), leaf.dtype, sharding=self.state_sharding
            ),
            self.member_initial[0],
        )
        memory = self._program(shapes, *arguments).memory_analysis()
        once = self.x_train.nbytes + self.y_train.nbytes
        if self.layout == "in_turn":
            once += memory.temp_size_in_bytes
        total = memory.argument_size_in_bytes + memory.output_size_in_bytes + memory.temp_size_in_bytes
        per_device = self.slots // self.devices if self.members_split else self.slots
        one = max((total - memory.alias_size_in_bytes - once) / per_device, 1.0)
        free = footprint.free_bytes()
        fit = max(1, int((fraction * free - once) // one))
        fit = fit * self.devices if self.members_split else fit
        said = "all fit in one program" if fit >= self.members else f"{fit} fit in one program"
        share = f"{100 * fraction:.0f} % of the {footprint.size(free)} free"
        log.info("population of %d: %s (%s)", self.members, said, share)
        return fit

    def evaluate_members(self, state: TrainState, x: np.ndarray, y: np.ndarray, batch_size: int):
        """Each member's mean loss and error (%) over a split."""
        loss, error = self.evaluation_sums(state, x, y, batch_size)
        return [
            {"loss": float(a) / len(y), "error": 100.0 * float(b) / len(y)}
            for a, b in zip(loss[: self.members], error[: self.members], strict=True)
        ]

    def host_member(self, host_state: TrainState, k: int) -> TrainState:
        """Member k's state from the population's state on the host: a single run's state, array for array."""
        return jax.tree.map(lambda leaf: np.asarray(leaf[k]), host_state)


def population_model(model_cfg: Any, layout: str) -> Any:
    """The model config with its kernels as a population computes them: vmapped members with
    `kernels.for_population`'s, members in turn with a single run's. The members' recorded configs keep what
    the user asked for."""
    if layout == "in_turn":
        return model_cfg
    ops = {"conv": "conv_impl", "dense": "dense_impl"}
    chosen = {
        key: kernels.for_population(op, getattr(model_cfg, key))
        for op, key in ops.items()
        if hasattr(model_cfg, key)
    }
    return replace(model_cfg, **chosen)
