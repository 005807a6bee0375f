"""The life of a run, written once for one configuration and for many: a single run is a population of one.

    claim each member's directory → its newest intact checkpoint (a completed member is reported, not
    retrained) → set up (data on the devices once, one engine) → start or resume each member → chunks: one
    compiled call of K steps for every training member, then per member: log, evaluate, probe, checkpoint,
    stop if diverged → a summary per member → release

The engine owns how members are stacked and stepped (`engine.Engine`, `population.PopulationEngine`); this
module owns what happens between the chunks; the run directory (`resnet_jax.rundir`) owns the files. Every
member's directory ends as that of the single run with its config.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np
import optax

from resnet_jax import checks, distributed, faults, footprint, optim, runlog, summaries
from resnet_jax import data as datasets
from resnet_jax.checkpoint import DamagedCheckpoint, as_tree
from resnet_jax.config import Config, as_dict
from resnet_jax.engine import Engine, EpochSampler, TrainState
from resnet_jax.errors import CheckpointError, UserError
from resnet_jax.loop import Record, chunk_boundaries, chunk_metrics, divergence, due, passed
from resnet_jax.members import build_engine, member_probes
from resnet_jax.population import POPULATION_KEYS, MemberJob, TooLarge, group_key, resolve_layout
from resnet_jax.progress import Progress
from resnet_jax.records import SCHEMA, CheckpointMeta, Summary
from resnet_jax.rundir import Restored, RunDir
from resnet_jax.tracking import Tracker, open_tracker, run_id

log = logging.getLogger(__name__)


@dataclass
class Member:
    """One run of the program: its job, its directory, where it stands and what it has recorded."""

    job: MemberJob
    directory: RunDir
    restored: Restored | None = None
    lr_at: optax.Schedule | None = None  # its learning rate at each step, for its logs
    step: int = 0
    start_step: int = 0  # where this attempt started
    record: Record | None = None
    tracker: Tracker | None = None
    summary: Summary | None = None
    live: bool = True  # still training: not complete, not diverged, not refused
    refused: bool = False  # its directory cannot take this run (`Life.refuse`): it is left out of the program

    @property
    def cfg(self) -> Config:
        return self.job.config


@dataclass
class Done:
    """What a chunk produced for the members: their rows (`loss`, `error`: (K, M) each) and, at their
    cadences, the evaluation of each split, the probes and the state on the host (for the checkpoints)."""

    rows: dict[str, np.ndarray]
    evaluated: dict[str, list[dict[str, float]]] | None = None  # by split, each member's loss and error
    elapsed: float | None = None  # None for the first chunk of an attempt: it includes the compilation
    probed: list[dict[str, list[float]]] | None = None
    host_state: TrainState | None = None


class Life:
    """The members of one program from claim to release. `strict` (a single run called as a function): what
    would leave one member out (its directory refuses it, it diverges) raises instead, as `runner.run`
    promises; otherwise the member is recorded and its siblings go on."""

    def __init__(self, jobs: Sequence[MemberJob], *, group: str, wandb_dir: Path | None, strict: bool):
        primary = distributed.is_primary()
        self.members = [
            Member(job, RunDir(job.run_dir, primary=primary, keep=job.config.trainer.keep_checkpoints))
            for job in jobs
        ]
        self.group, self.wandb_dir, self.strict = group, wandb_dir, strict

    @property
    def program(self) -> list[Member]:
        """The members the compiled program holds: all but the refused."""
        return [m for m in self.members if not m.refused]

    def claim(self, stack: contextlib.ExitStack) -> None:
        """Own each member's directory (its lock, its config) for as long as `stack` is open."""
        for member in self.members:
            owned = contextlib.ExitStack()
            try:
                owned.enter_context(member.directory.owned())
                member.directory.claim(as_dict(member.cfg), list(member.job.overrides))
            except UserError as exc:  # another process's directory, or another configuration's: not ours
                owned.close()  # let it go before saying why: not a line of it is written
                self.refuse(member, exc, record=False)
            else:
                stack.enter_context(owned)

    def refuse(self, member: Member, exc: UserError, *, record: bool) -> None:
        """This member alone cannot train, for a reason in its own directory (held by another process, another
        configuration's, no intact checkpoint): one line, and its siblings train. `record`: the directory is
        this run's, and its summary says why (never replacing a result)."""
        member.summary = summaries.not_started(exc)
        if record:
            member.directory.record_failure(member.summary)
        member.live, member.refused = False, True
        if self.strict:
            raise exc
        with runlog.speaking(member.directory.path):
            log.error("error: %s", exc)

    def restore(self) -> None:
        """Each member's newest intact checkpoint; a completed member is reported as it is."""
        for m in self.program:
            with runlog.speaking(m.directory.path):
                try:
                    m.restored = m.directory.restore_newest()
                except UserError as exc:
                    self.refuse(m, exc, record=True)
                    continue
                if m.restored is not None and m.restored.step >= m.cfg.trainer.steps:
                    done, path = m.restored.step, m.directory.path
                    log.info("run already completed at step %d in %s; nothing to do", done, path)
                    m.summary, m.live = m.directory.complete_from(m.restored), False

    def size(self, layout: str) -> tuple[datasets.Dataset, Engine]:
        """The data and the engine of every member, sized before any directory is claimed: `TooLarge` when the
        program does not fit in the device's memory (the launcher then trains smaller ones)."""
        cfg = self.members[0].cfg
        data = datasets.load(cfg.data)
        engine = build_engine([m.cfg for m in self.members], data, resolve_layout(layout))
        fit = engine.members_that_fit(min(cfg.trainer.log_every, cfg.trainer.steps), cfg.trainer.batch_size)
        if fit < len(self.members):
            raise TooLarge(fit)
        return data, engine

    def set_up(
        self, layout: str, sized: tuple[datasets.Dataset, Engine] | None
    ) -> tuple[Engine, datasets.Dataset, TrainState]:
        """The data (once), the engine of the program's members (`sized`'s when no member was left out), and
        their stacked state, each member started or resumed."""
        program = self.program
        cfg = program[0].cfg
        if sized is not None and len(program) == len(self.members):
            data, engine = sized
        else:
            data = datasets.load(cfg.data)
            engine = build_engine([m.cfg for m in program], data, resolve_layout(layout))
        if engine.members_split:  # said once the directories are claimed, so their train.log has it
            log.info(
                "%d members split over %d devices (%d slots)", engine.members, engine.devices, engine.slots
            )
        params = engine.params
        states = []
        for k, m in enumerate(program):
            _, m.lr_at = optim.build(m.cfg.optim, cfg.trainer.steps)
            with runlog.speaking(m.directory.path):
                states.append(self.start(m, engine.member_initial[k], params, engine.devices))
        return engine, data, engine.stacked(states)

    def start(self, member: Member, initial: TrainState, params: int, devices: int) -> TrainState:
        """The member's host state (fresh, restored, or its final one if complete), its metrics so far, its
        tracker and first summary."""
        restored, directory, cfg = member.restored, member.directory, member.cfg
        if not member.live:  # complete: frozen in the program at its final state
            member.step = restored.step
            return as_tree(restored.arrays, initial)
        state, member.step, member.record, wandb_id = resumed(initial, directory, restored)
        member.start_step = member.step
        wandb_dir = self.wandb_dir or directory.path
        member.tracker = open_tracker(
            cfg.logger,
            directory,
            wandb_id,
            wandb_dir=wandb_dir,
            group=self.group,
            name=member.job.name,
            config=as_dict(cfg),
            concurrent=len(self.members) > 1,
        )
        log.info(
            "model=%s depth=%d residual=%s params=%d backend=%s devices=%d processes=%d",
            cfg.model.name,
            cfg.model.depth,
            cfg.model.residual,
            params,
            jax.default_backend(),
            devices,
            jax.process_count(),
        )
        member.summary = summaries.running(cfg, params, devices, member.step, wandb_id)
        directory.restart_summary(summaries.at(member.summary, member.record, 0))
        return state

    def finish(self, member: Member, error: BaseException | None = None) -> None:
        """Close the member's tracker; with `error`, its summary says how the run ended."""
        if member.summary is None:
            return
        if error is not None and member.record is not None:
            steps = member.step - member.start_step
            member.summary = summaries.ended_early(member.summary, error, member.record, steps)
            member.directory.record_end(member.summary)
        if member.tracker is not None:
            member.tracker.summarise(member.summary, member.cfg)
            member.tracker.close(0 if member.summary["status"] == "completed" else 1)
            member.tracker = None
        member.live = False

    def train(self, engine: Engine, data: datasets.Dataset, state: TrainState) -> None:
        """The chunk loop: K steps of every training member in one compiled call, then each member's end."""
        members = self.program
        cfg = members[0].cfg
        t = cfg.trainer
        samplers = [EpochSampler(len(data.y_train), t.batch_size, m.cfg.seed) for m in members]
        probe = member_probes(cfg, engine, data)
        start = min(m.step for m in members if m.live)
        if probe is not None and start == 0:  # at initialisation
            for m, probed in zip(members, probe(state), strict=True):
                if m.live and m.step == 0:
                    m.tracker.log(0, probed)
        bar = Progress(members, start)
        try:
            cadences = (t.log_every, t.eval_every, cfg.probe.every)
            for index, (first, count) in enumerate(chunk_boundaries(start, t.steps, cadences)):
                active = [k for k, m in enumerate(members) if m.live and m.step == first]
                if active:
                    indices = np.stack([s.indices(first, count) for s in samplers], axis=1)
                    state = self.chunk(engine, data, state, indices, active, first, index, probe)
                bar.update(count)
        finally:
            bar.close()

    def chunk(
        self,
        engine: Engine,
        data: datasets.Dataset,
        state: TrainState,
        indices: np.ndarray,
        active: list[int],
        first: int,
        index: int,
        probe,
    ) -> TrainState:
        """One compiled call for the `active` members, what its end computes for all of them at once, then
        each member's own chunk end."""
        members, t = self.program, self.program[0].cfg.trainer
        alive = np.array([k in active for k in range(len(members))])
        chunk_start = time.perf_counter()
        state, rows = engine.train_members(state, indices, alive)
        step = first + indices.shape[0]
        done = Done(rows=jax.tree.map(distributed.host_copy, rows))
        if due(step, t.eval_every, t.steps):
            done.evaluated = {
                split: engine.evaluate_members(state, x, y, t.eval_batch_size)
                for split, (x, y) in data.evaluated_splits().items()
            }
        done.elapsed = time.perf_counter() - chunk_start if index > 0 else None
        if probe is not None and due(step, members[0].cfg.probe.every, t.steps):
            done.probed = probe(state)
        if passed(first, step, t.checkpoint_every, t.steps):  # once for all members, sliced on the host
            done.host_state = jax.tree.map(distributed.host_copy, state)
        for k in active:
            with runlog.speaking(members[k].directory.path):
                self.chunk_end(members[k], k, step, done, engine)
        return state

    def chunk_end(self, member: Member, k: int, step: int, done: Done, engine: Engine) -> None:
        """What a run does after a chunk: record, log, probe, checkpoint; stop if its loss is not finite."""
        record = member.record
        metrics = chunk_metrics(member.lr_at, step, {key: row[:, k] for key, row in done.rows.items()})
        if done.elapsed is not None:
            record.time_chunk(step - member.step, done.elapsed)
        member.step = member.summary["step"] = step
        if not math.isfinite(metrics["train/loss"]):
            member.tracker.log(step, metrics)
            if self.strict:
                raise divergence(metrics, step)
            log.error(
                "diverged: member %s: training loss became %s at step %d",
                member.job.name,
                metrics["train/loss"],
                step,
            )
            self.finish(member, error=divergence(metrics, step))
            return
        minimised = ["train/loss", "train/error"]
        for split, evaluated in (done.evaluated or {}).items():
            metrics.update({f"{split}/loss": evaluated[k]["loss"], f"{split}/error": evaluated[k]["error"]})
            minimised += [f"{split}/loss", f"{split}/error"]
        record.add(metrics, minimised)
        if done.probed is not None:
            metrics.update(done.probed[k])
        member.tracker.log(step, metrics)
        faults.point("after_log", step)
        if done.host_state is not None:
            checkpoint(member, engine.host_member(done.host_state, k))
        if step == member.cfg.trainer.steps:
            self.finish(member)


def resumed(
    initial: TrainState, directory: RunDir, restored: Restored | None
) -> tuple[TrainState, int, Record, str]:
    """On the host: the restored checkpoint's state in `initial`'s structure (its metrics rows become
    metrics.jsonl), or `initial` itself; with the step, the record so far and the run's W&B id."""
    if restored is None:
        directory.start_metrics([])
        return initial, 0, Record(), run_id(directory.path)
    try:
        state = as_tree(restored.arrays, initial)
    except DamagedCheckpoint as exc:
        raise CheckpointError(f"{directory.path} holds a checkpoint this run cannot use: {exc}") from None
    log.info("resuming from the checkpoint at step %d in %s", restored.step, directory.path)
    directory.start_metrics(restored.meta["metrics"])
    wandb_id = restored.meta["summary"].get("wandb_id") or run_id(directory.path)
    return state, restored.step, Record.resumed(restored.meta["record"]), wandb_id


def checkpoint(member: Member, state: TrainState) -> None:
    """Save the member's state with the summary it completes, then rewrite summary.json to match (a killed run
    never reads `running, step 0`; a run killed between the two is completed from the checkpoint)."""
    cfg, summary, step = member.cfg, member.summary, member.step
    final = step == cfg.trainer.steps
    saved = summaries.at(
        {**summary, "status": "completed" if final else "running"}, member.record, step - member.start_step
    )
    meta: CheckpointMeta = {
        "schema": SCHEMA,
        "config": as_dict(cfg),
        "record": member.record.meta(),
        "summary": saved,
    }
    member.directory.save_checkpoint(step, state, meta)
    if final:
        faults.point("after_final_checkpoint", step)
    member.directory.write_summary(saved)
    summary.update(saved)
    faults.point("after_checkpoint", step)


def train_population(
    jobs: Sequence[MemberJob],
    *,
    group: str = "default",
    wandb_dir: Path | None = None,
    fit_to_memory: bool = False,
    layout: str = "auto",
    strict: bool = False,
) -> list[Summary]:
    """Train `jobs` (configs equal but for `POPULATION_KEYS`) as one program; each member's run directory ends
    as that of the single run with its config. Returns the members' summaries.

    A member whose final checkpoint exists is reported, not retrained (it stays in the program, frozen, so the
    others compute exactly as before); one that diverges is frozen and recorded as `diverged`; one whose
    directory cannot take it is left out (`Life.refuse`: its summary here says why). With `fit_to_memory`,
    a program larger than the device's memory raises `TooLarge` before any directory is claimed. `layout`:
    one of `population.LAYOUTS`. `strict`: see `Life`.
    """
    distributed.initialize_multihost()  # before anything touches a JAX backend (the kernel check does)
    if len({group_key(job.config) for job in jobs}) != 1:
        raise ValueError("a population's members must differ only in " + ", ".join(POPULATION_KEYS))
    distributed.check_backend()
    for job in jobs:
        if not job.checked:  # a job the pre-flight never saw: a search's, or a Python caller's
            checks.check(job.config)
    footprint.check_fits(jobs[0].config)  # one member at least, before anything is allocated or written
    life = Life(jobs, group=group, wandb_dir=wandb_dir, strict=strict)
    sized = life.size(layout) if fit_to_memory and len(jobs) > 1 else None
    with contextlib.ExitStack() as stack:
        life.claim(stack)
        try:
            life.restore()
            if not any(m.live for m in life.program):
                return [m.summary for m in life.members]
            engine, data, state = life.set_up(layout, sized)
        except BaseException as exc:
            for m in life.program:
                if m.live:
                    m.directory.record_failure(summaries.not_started(exc))
                    life.finish(m)
            raise
        try:
            life.train(engine, data, state)
        except BaseException as exc:
            for m in life.program:
                if m.live:
                    life.finish(m, error=exc)
            raise
        return [m.summary for m in life.members]
