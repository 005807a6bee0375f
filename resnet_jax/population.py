"""Populations: a sweep's runs that differ only in traced scalars, trained as one compiled program.

The members of a population share the network's structure, the data and every static setting; each has its
own seed (initial parameters, data order, augmentation) and its own optimiser hyperparameters, which enter the
compiled step as arrays with a leading member axis (`jax.vmap`). Each member writes exactly the run directory
a single run of its config writes (`resnet_jax.runner`), so the report, W&B and resume cannot tell.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import PartitionSpec as P
from tqdm import tqdm

from resnet_jax import checks, distributed, faults, footprint, models, optim, probes
from resnet_jax import data as datasets
from resnet_jax.checkpoint import as_tree
from resnet_jax.config import Config, OptimConfig, as_dict
from resnet_jax.engine import Engine, EpochSampler, TrainState, run_steps
from resnet_jax.errors import UserError
from resnet_jax.loop import Diverged, Record, chunk_boundaries, due, passed
from resnet_jax.ops import kernels
from resnet_jax.rundir import Restored, RunDir
from resnet_jax.runner import (
    Setup,
    checkpoint,
    chunk_metrics,
    ended_early,
    failure_to_start,
    probe_batch,
    probe_lists,
    record_failure_to_start,
    running_summary,
    start_from,
    summary_at,
)
from resnet_jax.tracking import Tracker, open_tracker

log = logging.getLogger(__name__)

# the optimiser's keys that may differ within a population: scalars the compiled step takes as arrays
TRACED_OPTIM_KEYS = ("lr", "l2", "momentum", "weight_decay", "warmup_lr")
POPULATION_KEYS = ("seed", *(f"optim.{key}" for key in TRACED_OPTIM_KEYS))

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


def group_key(cfg: Config) -> str:
    """What the members of one program share: the config without the population keys' values (whether
    momentum is used at all stays: it changes the optimiser's state)."""
    shared = as_dict(cfg)
    shared.pop("seed")
    for key in TRACED_OPTIM_KEYS:
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

    def __init__(self, networks: Sequence[nnx.Module], optim_cfgs: Sequence[OptimConfig], steps: int, *,
                 seeds: Sequence[int], x_train: np.ndarray, y_train: np.ndarray, augment: bool, dtype: Any,
                 layout: str, mesh=None):  # fmt: skip
        self.optim_cfg, self.steps, self.layout = optim_cfgs[0], steps, layout
        tx, _ = optim.build(self.optim_cfg, steps)
        super().__init__(networks[0], tx, x_train=x_train, y_train=y_train, l2=self.optim_cfg.l2,
                         l2_scope=self.optim_cfg.l2_scope, augment=augment, dtype=dtype, seed=seeds[0],
                         mesh=mesh)  # fmt: skip
        self.members = len(networks)
        self.members_split = self.devices > 1 and self.members >= self.devices
        self.slots = -(-self.members // self.devices) * self.devices if self.members_split else self.members
        if self.members_split:
            self.state_sharding = distributed.batch_sharded(self.mesh)  # axis 0: the members
            self.eval_sharding = self.replicated
            self.indices_sharding = distributed.batch_sharded(self.mesh, axis=1)  # (K, members, B)
        else:
            self.indices_sharding = distributed.batch_sharded(self.mesh, axis=2)
        self.member_initial = []
        for network in networks:
            _, params, model_state = nnx.split(network, nnx.Param, ...)
            self.member_initial.append(
                jax.device_get(TrainState(jnp.zeros((), jnp.int32), params, model_state, tx.init(params)))
            )
        # without momentum (0 for every member: it is part of the group key) the optimiser keeps no trace
        keys = [key for key in TRACED_OPTIM_KEYS if hasattr(self.optim_cfg, key)
                and (key != "momentum" or self.optim_cfg.momentum)]  # fmt: skip
        values = {key: np.array([getattr(c, key) for c in optim_cfgs], np.float32) for key in keys}
        hyper = {key: self._padded(array) for key, array in values.items()}
        self.hyper = distributed.put_tree(hyper, self.state_sharding)
        seeds = self._padded(np.asarray(seeds, np.int32))
        self.augment_keys = jax.jit(jax.vmap(jax.random.key), out_shardings=self.state_sharding)(seeds + 1)
        self.compiled_chunk = jax.jit(self._population_chunk, donate_argnums=0)
        self._programs: dict[tuple[int, ...], Any] = {}  # the chunk compiled, by the indices' shape
        self.eval_batch = jax.jit(self._population_eval_batch)

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

    def _member_step(self, state: TrainState, indices: jax.Array, hyper: dict, augment_key: jax.Array,
                     data: tuple[jax.Array, jax.Array] | None = None):  # fmt: skip
        cfg = replace(self.optim_cfg, **hyper)
        tx, _ = optim.build(cfg, self.steps)
        return self.step_with(tx, cfg.l2, augment_key, state, indices, data)

    def _population_chunk(self, state: TrainState, indices: jax.Array, alive: jax.Array, hyper: dict,
                          augment_keys: jax.Array):  # fmt: skip
        """Every alive member trains the chunk's K steps (the others keep their state); (K, M, 2) rows. The
        per-member arrays are arguments, not closed over: split over several processes, a jitted function
        may not close over an array that spans them."""
        chunk = self._side_by_side if self.layout == "vmap" else self._in_turn
        new, rows = chunk(state, indices, alive, hyper, augment_keys)
        return new, jax.lax.with_sharding_constraint(rows, self.replicated)

    def _side_by_side(self, state: TrainState, indices: jax.Array, alive: jax.Array, hyper: dict,
                      augment_keys: jax.Array):  # fmt: skip
        """The vmapped step inside the K-step scan. Masking once per chunk, not per step: a select over the
        whole state each step cost a fifth of the speed."""
        step = jax.vmap(self._member_step)
        new, rows = run_steps(lambda s, batch: step(s, batch, hyper, augment_keys), state, indices)
        kept = jax.tree.map(
            lambda n, o: jnp.where(alive.reshape((-1,) + (1,) * (n.ndim - 1)), n, o), new, state
        )
        return kept, rows

    def _in_turn(self, state: TrainState, indices: jax.Array, alive: jax.Array, hyper: dict,
                 augment_keys: jax.Array):  # fmt: skip
        """Each member's K steps after the previous member's, each the single run's chunk with the member's
        hyperparameters; a member not alive is skipped, not computed. With the members split over devices,
        each device takes its own members in turn."""

        def local(state, indices, hyper, augment_keys, alive, data):
            def member_chunk(member):
                state, indices, hyper, augment_key, member_alive = member

                def train(s: TrainState):
                    s, rows = run_steps(lambda st, b: self._member_step(st, b, hyper, augment_key, data), s,
                                        indices)  # fmt: skip
                    return s, rows.astype(jnp.float32)  # float32 holds every dtype's loss exactly

                def skip(s: TrainState):
                    return s, jnp.zeros((indices.shape[0], 2), jnp.float32)

                return jax.lax.cond(member_alive, train, skip, state)

            members = (state, jnp.moveaxis(indices, 1, 0), hyper, augment_keys, alive)
            new, rows = jax.lax.map(member_chunk, members)
            return new, jnp.moveaxis(rows, 0, 1)

        if self.members_split:  # each device its own members (and its own copy of the data)
            members, steps_members = P(distributed.DATA_AXIS), P(None, distributed.DATA_AXIS)
            # no value crosses devices, so shard_map's varying-axis check has nothing to find; it is off
            # because the oneDNN kernels' custom VJPs do not carry its types
            local = jax.shard_map(local, mesh=self.mesh, check_vma=False,
                                  in_specs=(members, steps_members, members, members, members, P()),
                                  out_specs=(members, steps_members))  # fmt: skip
        return local(state, indices, hyper, augment_keys, alive, (self.x_train, self.y_train))

    def _program(self, state: TrainState, indices: jax.Array, *rest: Any):
        """The chunk for these shapes, compiled once: the program that trains, and that `members_that_fit`
        sizes (sizing it costs no compilation of its own)."""
        if indices.shape not in self._programs:
            self._programs[indices.shape] = self.compiled_chunk.lower(state, indices, *rest).compile()
        return self._programs[indices.shape]

    def _chunk_arguments(self, indices: np.ndarray, alive: np.ndarray) -> tuple[Any, ...]:
        """The chunk's arguments after the state: the indices and alive flags placed, and the members'
        hyperparameters and augmentation keys."""
        indices = np.moveaxis(self._padded(np.moveaxis(indices, 1, 0)), 0, 1)
        alive = self._padded(np.asarray(alive, bool), fill=False)
        return (distributed.put(indices, self.indices_sharding), distributed.put(alive, self.state_sharding),
                self.hyper, self.augment_keys)  # fmt: skip

    def train_members(self, state: TrainState, indices: np.ndarray, alive: np.ndarray):
        """K steps of every alive member: `indices` (K, M, B); returns the state and (K, M, 2) rows."""
        arguments = self._chunk_arguments(indices, alive)
        state, rows = self._program(state, *arguments)(state, *arguments)
        return state, rows[:, : self.members]

    def members_that_fit(self, steps: int, batch_size: int, fraction: float = 0.8) -> int:
        """How many members fit in `fraction` of each device's free memory: this population's compiled
        chunk of `steps` steps, as XLA's memory analysis sizes it (arguments, outputs and temporaries, per
        device), lowered from the state's shapes (no copy of it is placed). The dataset, which the members
        share, counts once; so do the temporaries of members taken in turn (one member's at a time), while
        side by side every member has its own."""
        arguments = self._chunk_arguments(
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


def member_state(host_state: TrainState, k: int) -> TrainState:
    """Member k's state, from the population's state on the host: a single run's state, array for array."""
    return jax.tree.map(lambda leaf: np.asarray(leaf[k]), host_state)


@dataclass
class Member:
    """One member's run: its directory, where it stands and what it has recorded."""

    job: MemberJob
    directory: RunDir
    restored: Restored | None
    setup: Setup | None = None
    step: int = 0
    start_step: int = 0
    record: Record | None = None
    tracker: Tracker | None = None
    summary: dict[str, Any] | None = None
    live: bool = True  # still training: not complete, not diverged
    refused: bool = False  # its directory cannot take this run (see `_refuse`): it is left out of the program

    @property
    def cfg(self) -> Config:
        return self.job.config


def _start(
    member: Member, engine: PopulationEngine, k: int, *, group: str, wandb_dir: Path | None
) -> TrainState:
    """The member's host state (fresh or restored), its metrics so far, tracker and first summary."""
    restored, directory = member.restored, member.directory
    if not member.live:  # complete: frozen in the program at its final state
        member.step = restored.step
        return as_tree(restored.arrays, engine.member_initial[k])
    start = start_from(engine.member_initial[k], directory, restored)
    member.record, member.step, member.start_step = start.record, start.step, start.step
    member.tracker = open_tracker(member.cfg.logger, directory, start.wandb_id,
                                  wandb_dir=wandb_dir or directory.path, group=group, name=member.job.name,
                                  config=as_dict(member.cfg), concurrent=True)  # fmt: skip
    member.summary = running_summary(member.setup, start)
    directory.restart_summary(summary_at(member.summary, member.record, 0))
    return start.state


def _refuse(member: Member, exc: UserError, *, record: bool) -> None:
    """This member alone cannot train, for a reason in its own directory (held by another process, another
    configuration's, no intact checkpoint): one line, as a single run says it, and its siblings train.
    `record`: the directory is this run's, and its summary says why (never replacing a result)."""
    member.summary = failure_to_start(exc)
    with member.directory.speaking():
        log.error("error: %s", exc)
        if record:
            member.directory.record_failure(member.summary)
    member.live, member.refused = False, True


def _finish(member: Member, error: BaseException | None = None) -> None:
    """Close the member's tracker; with `error`, its summary says how the run ended."""
    if member.summary is None:
        return
    if error is not None:
        member.summary = ended_early(member.summary, error, member.record, member.step - member.start_step)
        member.directory.record_end(member.summary)
    if member.tracker is not None:
        member.tracker.summarise(member.summary)
        member.tracker.close(0 if member.summary["status"] == "completed" else 1)
        member.tracker = None
    member.live = False


def member_probes(cfg: Config, engine: PopulationEngine, data: datasets.Dataset):
    """Every member's probes (`runner.probe_function`'s) in one call (`PopulationEngine.each_member`): a list
    of JSON-ready dicts, one per member."""
    if not cfg.probe.every:
        return None
    x, y = probe_batch(engine, cfg, data)
    measure = partial(probes.measure, engine.graphdef, dtype=engine.dtype)
    measure_all = jax.jit(engine.each_member(measure), out_shardings=engine.replicated)

    def measure_members(state: TrainState) -> list[dict[str, list[float]]]:
        values = {
            key: distributed.host_copy(v)
            for key, v in measure_all(state.params, state.model_state, x, y).items()
        }
        return [probe_lists({key: v[k] for key, v in values.items()}) for k in range(engine.members)]

    return measure_members


def _train(
    members: list[Member], engine: PopulationEngine, state: TrainState, data: datasets.Dataset, probe
) -> None:
    """The chunk loop of `runner.train_chunks`, for every member at once."""
    cfg = members[0].cfg
    t = cfg.trainer
    samplers = [EpochSampler(len(data.y_train), t.batch_size, m.cfg.seed) for m in members]
    start = min(m.step for m in members if m.live)
    if probe is not None and start == 0:
        for m, probed in zip(members, probe(state), strict=True):
            if m.live and m.step == 0:
                m.tracker.log(0, probed)
    cadences = (t.log_every, t.eval_every, cfg.probe.every)
    label = f"{len(members)} x {cfg.model.name}-{cfg.model.depth}"
    bar = tqdm(total=t.steps, initial=start, disable=not t.progress, desc=label, unit="step")
    try:
        for index, (first, count) in enumerate(chunk_boundaries(start, t.steps, cadences)):
            active = [k for k, m in enumerate(members) if m.live and m.step == first]
            bar.update(count)
            if not active:
                continue
            alive = np.array([k in active for k in range(len(members))])
            indices = np.stack([s.indices(first, count) for s in samplers], axis=1)
            chunk_start = time.perf_counter()
            state, rows = engine.train_members(state, indices, alive)
            step = first + count
            done = Done(rows=distributed.host_copy(rows))
            if due(step, t.eval_every, t.steps):
                done.evaluated = {
                    split: engine.evaluate_members(state, x, y, t.eval_batch_size)
                    for split, (x, y) in data.evaluated_splits().items()
                }
            elapsed = time.perf_counter() - chunk_start
            done.elapsed = elapsed if index > 0 else None  # the first call includes compilation
            if probe is not None and due(step, cfg.probe.every, t.steps):
                done.probed = probe(state)
            if passed(first, step, t.checkpoint_every, t.steps):  # once for all members, sliced on the host
                done.host_state = jax.tree.map(distributed.host_copy, state)
            for k in active:
                with members[k].directory.speaking():
                    _after_chunk(members[k], k, step, done)
            bar.set_postfix(training=sum(m.live for m in members))
    finally:
        bar.close()


@dataclass
class Done:
    """What a chunk produced for the members: their (K, M, 2) rows and, at their cadences, the test
    evaluation, the probes and the state on the host (for the checkpoints)."""

    rows: np.ndarray
    evaluated: dict[str, list[dict[str, float]]] | None = None  # by split, each member's loss and error
    elapsed: float | None = None
    probed: list[dict[str, list[float]]] | None = None
    host_state: TrainState | None = None


def _after_chunk(member: Member, k: int, step: int, done: Done) -> None:
    """What a single run does after a chunk, for one member: record, log, probe, checkpoint."""
    cfg, record, setup = member.cfg, member.record, member.setup
    count = step - member.step
    metrics = chunk_metrics(setup.lr_at, step, done.rows[:, k])
    if done.elapsed is not None:
        record.time_chunk(count, done.elapsed)
    member.step = member.summary["step"] = step
    if not math.isfinite(metrics["train/loss"]):
        member.tracker.log(step, metrics)
        log.error(
            "diverged: member %s: training loss became %s at step %d",
            member.job.name,
            metrics["train/loss"],
            step,
        )
        _finish(member, error=Diverged(f"training loss became {metrics['train/loss']} at step {step}; "
                                             "lower optim.lr or check the data"))  # fmt: skip
        return
    for split, members in (done.evaluated or {}).items():
        metrics.update({f"{split}/loss": members[k]["loss"], f"{split}/error": members[k]["error"]})
    record.add(metrics)
    if done.probed is not None:
        metrics.update(done.probed[k])
    member.tracker.log(step, metrics)
    faults.point("after_log", step)
    if done.host_state is not None:
        state = member_state(done.host_state, k)
        checkpoint(setup, member.directory, state, record, member.summary, member.start_step)
    if step == cfg.trainer.steps:
        _finish(member)


def train_population(
    jobs: Sequence[MemberJob],
    *,
    group: str,
    wandb_dir: Path | None = None,
    fit_to_memory: bool = False,
    layout: str = "auto",
) -> list[dict[str, Any]]:
    """Train the members of one population (configs equal but for `POPULATION_KEYS`) as one program; each
    member's run directory ends as that of the single run with its config. Returns the members' summaries.

    A member whose final checkpoint exists is reported, not retrained (it stays in the program, frozen, so the
    others compute exactly as before); one that diverges is frozen and recorded as `diverged`; one whose
    directory cannot take it is left out (`_refuse`: its summary here says why). With `fit_to_memory`, a
    program larger than the device's memory raises `TooLarge` before any training. `layout`: one of
    `LAYOUTS`.
    """
    distributed.initialize_multihost()
    keys = {group_key(job.config) for job in jobs}
    if len(keys) != 1:
        raise ValueError("a population's members must differ only in " + ", ".join(POPULATION_KEYS))
    distributed.check_backend()
    for job in jobs:
        checks.check(job.config)
    footprint.check_fits(jobs[0].config)  # one member at least, before any directory is taken
    primary = distributed.is_primary()
    with contextlib.ExitStack() as stack:
        members = []
        for job in jobs:
            directory = RunDir(job.run_dir, primary=primary, keep=job.config.trainer.keep_checkpoints)
            member = Member(job, directory, None)
            members.append(member)
            owned = contextlib.ExitStack()
            try:
                owned.enter_context(member.directory.owned())
                member.directory.claim(as_dict(job.config), list(job.overrides))
            except UserError as exc:  # another process's directory, or another configuration's: not ours
                owned.close()  # let it go before saying why: not a line of it is written
                _refuse(member, exc, record=False)
            else:
                stack.enter_context(owned)
        program = [m for m in members if not m.refused]  # the members the compiled program holds
        try:
            _prepare(program)
            program = [m for m in program if not m.refused]
            if not any(m.live for m in program):
                return [m.summary for m in members]
            engine, data = _set_up(program, resolve_layout(layout))
            if fit_to_memory:
                t = program[0].cfg.trainer
                fit = engine.members_that_fit(min(t.log_every, t.steps), t.batch_size)
                if fit < len(program):
                    raise TooLarge(fit)
            states = []
            for k, m in enumerate(program):
                with m.directory.speaking():
                    states.append(_start(m, engine, k, group=group, wandb_dir=wandb_dir))
        except TooLarge:  # nothing has started: the members are trained in smaller programs
            raise
        except BaseException as exc:
            for m in program:
                if m.live:
                    record_failure_to_start(m.directory, exc)
                    _finish(m)
            raise
        try:
            _train(program, engine, engine.stacked(states), data, member_probes(program[0].cfg, engine, data))
        except BaseException as exc:
            for m in program:
                if m.live:
                    _finish(m, error=exc)
            raise
        return [m.summary for m in members]


def _prepare(members: list[Member]) -> None:
    """Each member's newest intact checkpoint; completed members are reported as they are, and a member with
    checkpoints but none intact is refused."""
    for m in members:
        with m.directory.speaking():
            try:
                m.restored = m.directory.restore_newest()
            except UserError as exc:
                _refuse(m, exc, record=True)
                continue
            if m.restored is not None and m.restored.step >= m.cfg.trainer.steps:
                log.info(
                    "run already completed at step %d in %s; nothing to do", m.restored.step, m.directory.path
                )
                m.summary, m.live = m.directory.complete_from(m.restored), False


def population_model(model_cfg: Any, layout: str) -> Any:
    """The model config with its kernels as a population computes them: vmapped members with
    `kernels.for_population`'s, members in turn with a single run's. The members' recorded configs keep what
    the user asked for."""
    if layout == "in_turn":
        return model_cfg
    ops = {"conv": "conv_impl", "dense": "dense_impl"}
    chosen = {key: kernels.for_population(op, getattr(model_cfg, key))
              for op, key in ops.items() if hasattr(model_cfg, key)}  # fmt: skip
    return replace(model_cfg, **chosen)


def _set_up(members: list[Member], layout: str) -> tuple[PopulationEngine, datasets.Dataset]:
    """The data (once), every member's network from its own seed, the population engine and each member's
    `Setup` (its learning-rate schedule for the logs, and the probes)."""
    cfg = members[0].cfg
    mesh = distributed.make_mesh()
    if len(members) < mesh.devices.size:  # each member's batch is split over the devices
        distributed.check_batch_divides(cfg.trainer.batch_size, mesh)
    data = datasets.load(cfg.data)
    networks = [models.build(population_model(m.cfg.model, layout), data.image_shape, data.num_classes,
                             m.cfg.seed) for m in members]  # fmt: skip
    engine = PopulationEngine(networks, [m.cfg.optim for m in members], cfg.trainer.steps,
                              seeds=[m.cfg.seed for m in members], x_train=data.x_train,
                              y_train=data.y_train, augment=cfg.data.augment,
                              dtype=jnp.dtype(cfg.trainer.dtype), layout=layout, mesh=mesh)  # fmt: skip
    if engine.members_split:
        log.info("%d members split over %d devices (%d slots)", engine.members, engine.devices, engine.slots)
    params = models.count_params(networks[0])
    for m in members:
        _, lr_at = optim.build(m.cfg.optim, cfg.trainer.steps)
        m.setup = Setup(
            m.cfg, data, engine, lr_at, params, probe=None
        )  # probes: `member_probes`, all at once
    return engine, data
