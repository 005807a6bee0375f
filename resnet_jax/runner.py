"""`run(cfg, run_dir)`: one training run from a config to a completed run directory, importable for tests.

A run is a short sequence of named steps: check the config, own the directory (its lock and its config),
finish at once if the final checkpoint exists, set up, start or resume, the chunk loop, finish. The
directory's files are written by `resnet_jax.rundir` alone.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from resnet_jax import checks, distributed, faults, footprint, models, optim, probes
from resnet_jax import data as datasets
from resnet_jax.checkpoint import DamagedCheckpoint, as_tree
from resnet_jax.config import Config, as_dict, identity_digest
from resnet_jax.engine import Engine, EpochSampler, TrainState
from resnet_jax.errors import CheckpointError, UserError
from resnet_jax.interrupts import INTERRUPTS
from resnet_jax.loop import Diverged, Record, chunk_boundaries, due, passed
from resnet_jax.rundir import Restored, RunDir
from resnet_jax.tracking import Tracker, open_tracker, run_id

log = logging.getLogger(__name__)

__all__ = ["Diverged", "run"]


@dataclass
class Setup:
    """Everything a run computes with, built from its config."""

    cfg: Config
    data: datasets.Dataset
    engine: Engine
    lr_at: optax.Schedule
    params: int
    probe: Callable[[TrainState], dict[str, list[float]]] | None


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


def probe_function(cfg: Config, engine: Engine, data: datasets.Dataset):
    """Probes on a fixed batch (`probe_batch`), as JSON-ready lists."""
    if not cfg.probe.every:
        return None
    x, y = probe_batch(engine, cfg, data)
    measure = jax.jit(partial(probes.measure, engine.graphdef, dtype=engine.dtype))

    def measure_state(state: TrainState) -> dict[str, list[float]]:
        values = measure(state.params, state.model_state, x, y)
        return probe_lists({key: distributed.host_copy(value) for key, value in values.items()})

    return measure_state


def set_up(cfg: Config) -> Setup:
    """Devices, data, model, optimiser and the compiled engine."""
    mesh = distributed.make_mesh()
    distributed.check_batch_divides(cfg.trainer.batch_size, mesh)
    data = datasets.load(cfg.data)
    model = models.build(cfg.model, data.image_shape, data.num_classes, cfg.seed)
    tx, lr_at = optim.build(cfg.optim, cfg.trainer.steps)
    engine = Engine(model, tx, x_train=data.x_train, y_train=data.y_train, l2=cfg.optim.l2,
                    l2_scope=cfg.optim.l2_scope, augment=cfg.data.augment, dtype=jnp.dtype(cfg.trainer.dtype),
                    seed=cfg.seed, mesh=mesh)  # fmt: skip
    return Setup(cfg, data, engine, lr_at, models.count_params(model), probe_function(cfg, engine, data))


@dataclass
class Start:
    """Where training starts: a fresh or restored state, its step and the record so far."""

    state: TrainState
    step: int
    record: Record
    wandb_id: str  # the run's W&B id, kept by its checkpoints: a moved directory continues the same W&B run


def start_from(template: TrainState, directory: RunDir, restored: Restored | None) -> Start:
    """On the host: the restored checkpoint's state in `template`'s structure (its metrics rows become
    metrics.jsonl), or `template` itself, the fresh state."""
    if restored is None:
        directory.start_metrics([])
        return Start(template, 0, Record(), run_id(directory.path))
    try:
        state = as_tree(restored.arrays, template)
    except DamagedCheckpoint as exc:
        raise CheckpointError(f"{directory.path} holds a checkpoint this run cannot use: {exc}") from None
    log.info("resuming from the checkpoint at step %d in %s", restored.step, directory.path)
    directory.start_metrics(restored.meta["metrics"])
    wandb_id = restored.meta["summary"].get("wandb_id") or run_id(directory.path)
    return Start(state, restored.step, Record.resumed(restored.meta["record"]), wandb_id)


def start_or_resume(setup: Setup, directory: RunDir, restored: Restored | None) -> Start:
    """`start_from` the engine's fresh state, placed on the devices."""
    start = start_from(setup.engine.host_initial_state, directory, restored)
    return replace(start, state=setup.engine.place_state(start.state))


def running_summary(setup: Setup, start: Start) -> dict[str, Any]:
    """summary.json's fields when an attempt starts."""
    return {
        "status": "running",
        "step": start.step,
        "params": setup.params,
        "devices": setup.engine.devices,
        "processes": jax.process_count(),
        "identity": identity_digest(as_dict(setup.cfg)),  # what config.yaml must say (resnet_jax.runs)
        "wandb_id": start.wandb_id,
    }


def ended_early(
    summary: dict[str, Any], exc: BaseException, record: Record, steps_this_attempt: int
) -> dict[str, Any]:
    """`summary` with the record so far, saying how `exc` ended the run (`outcome_of`)."""
    status, code = outcome_of(exc)
    ended = {**summary, "status": status, "exit_code": code, "error": f"{type(exc).__name__}: {exc}"}
    return summary_at(ended, record, steps_this_attempt)


def failure_to_start(exc: BaseException) -> dict[str, Any]:
    """The summary of a run that did not start: why, and its exit code."""
    status, code = outcome_of(exc)
    return {"status": status, "step": 0, "exit_code": code, "error": f"{type(exc).__name__}: {exc}"}


def record_failure_to_start(directory: RunDir, exc: BaseException) -> None:
    """Before training: the directory says why the run did not start, unless it holds a result."""
    directory.record_failure(failure_to_start(exc))


def chunk_metrics(lr_at: optax.Schedule, step: int, rows: Any) -> dict[str, Any]:
    """A chunk's mean train loss and error (from its (K, 2) rows) and the lr of its last step."""
    loss, error = (float(v) for v in distributed.host_copy(rows).mean(axis=0))
    return {"train/loss": loss, "train/error": 100.0 * error, "lr": float(lr_at(step - 1))}


def step_record(setup: Setup, state: TrainState, step: int, rows: jax.Array) -> dict[str, Any]:
    """One chunk's line of `metrics.jsonl`: mean train loss and error, lr, and at its cadence evaluation."""
    t = setup.cfg.trainer
    record = chunk_metrics(setup.lr_at, step, rows)
    if not math.isfinite(record["train/loss"]):
        return record
    if due(step, t.eval_every, t.steps):
        for split, (x, y) in setup.data.evaluated_splits().items():
            evaluated = setup.engine.evaluate(state, x, y, t.eval_batch_size)
            record.update({f"{split}/loss": evaluated["loss"], f"{split}/error": evaluated["error"]})
    return record


def summary_at(summary: dict[str, Any], record: Record, steps_this_attempt: int) -> dict[str, Any]:
    """`summary` with the record so far: final and best metrics, wall time, speed."""
    speed = record.speed(steps_this_attempt)
    return {**summary, "wall_time_s": round(record.wall_time_s, 3), "steps_per_s": speed,
            "final": dict(record.final), "best": dict(record.best)}  # fmt: skip


def checkpoint(
    setup: Setup, directory: RunDir, state: TrainState, record: Record, summary: dict, start: int
) -> None:
    """Save the state with the summary it completes, then rewrite summary.json to match (a killed run never
    reads `running, step 0`; a run killed between the two is completed from the checkpoint)."""
    step, final = summary["step"], summary["step"] == setup.cfg.trainer.steps
    saved = summary_at({**summary, "status": "completed" if final else "running"}, record, step - start)
    directory.save_checkpoint(
        step, state, {"config": as_dict(setup.cfg), "record": record.meta(), "summary": saved}
    )
    if final:
        faults.point("after_final_checkpoint", step)
    directory.write_summary(saved)
    summary.update(saved)
    faults.point("after_checkpoint", step)


def train_chunks(setup: Setup, start: Start, directory: RunDir, tracker: Tracker, summary: dict) -> None:
    """The chunk loop: K steps per compiled call, then the host logs, evaluates, probes and checkpoints."""
    cfg, engine, record = setup.cfg, setup.engine, start.record
    t, state = cfg.trainer, start.state
    sampler = EpochSampler(len(setup.data.y_train), t.batch_size, cfg.seed)
    label = f"{cfg.model.name}-{cfg.model.depth}"
    bar = tqdm(total=t.steps, initial=start.step, disable=not t.progress, desc=label, unit="step")
    try:
        if setup.probe is not None and start.step == 0:  # at initialisation
            tracker.log(0, setup.probe(state))
        cadences = (t.log_every, t.eval_every, cfg.probe.every)
        for index, (first, count) in enumerate(chunk_boundaries(start.step, t.steps, cadences)):
            chunk_start = time.perf_counter()
            state, rows = engine.train_chunk(state, sampler.indices(first, count))
            metrics = step_record(setup, state, first + count, rows)
            if index > 0:  # the first call includes compilation
                record.time_chunk(count, time.perf_counter() - chunk_start)
            step = summary["step"] = first + count
            if not math.isfinite(metrics["train/loss"]):
                tracker.log(step, metrics)
                raise Diverged(
                    f"training loss became {metrics['train/loss']} at step {step}; "
                    "lower optim.lr or check the data"
                )
            record.add(metrics)
            if setup.probe is not None and due(step, cfg.probe.every, t.steps):
                metrics.update(setup.probe(state))
            tracker.log(step, metrics)
            faults.point("after_log", step)
            if passed(first, step, t.checkpoint_every, t.steps):
                checkpoint(setup, directory, state, record, summary, start.step)
            bar.update(count)
            bar.set_postfix(loss=f"{metrics['train/loss']:.3f}", err=f"{metrics['train/error']:.1f}%",
                            lr=f"{metrics['lr']:.3g}")  # fmt: skip
    finally:
        bar.close()


def outcome_of(exc: BaseException) -> tuple[str, int]:
    """summary.json's status and the exit code for what ended a run early."""
    if isinstance(exc, Diverged):
        return "diverged", 3
    interrupted = isinstance(exc, (KeyboardInterrupt, SystemExit)) or INTERRUPTS.received is not None
    if interrupted:  # preempted, timed out or stopped (or an interrupt a library wrapped): resumable
        return "interrupted", 1
    return "failed", exc.exit_code if isinstance(exc, UserError) else 1


def train(setup: Setup, directory: RunDir, restored: Restored | None, *, group: str, name: str,
          wandb_dir: Path) -> dict[str, Any]:  # fmt: skip
    """Start or resume, run the chunk loop, and write the summary however it ends."""
    cfg = setup.cfg
    start = start_or_resume(setup, directory, restored)
    tracker = open_tracker(
        cfg.logger,
        directory,
        start.wandb_id,
        wandb_dir=wandb_dir,
        group=group,
        name=name,
        config=as_dict(cfg),
    )
    log.info("model=%s depth=%d residual=%s params=%d backend=%s devices=%d processes=%d",
             cfg.model.name, cfg.model.depth, cfg.model.residual, setup.params, jax.default_backend(),
             setup.engine.devices, jax.process_count())  # fmt: skip
    summary = running_summary(setup, start)
    directory.restart_summary(summary_at(summary, start.record, 0))
    try:
        train_chunks(setup, start, directory, tracker, summary)
    except BaseException as exc:
        summary = ended_early(summary, exc, start.record, summary["step"] - start.step)
        directory.record_end(summary)
        raise
    finally:
        tracker.summarise(summary)
        tracker.close(0 if summary["status"] == "completed" else 1)
    return summary


def run(
    cfg: Config,
    run_dir: Path,
    *,
    overrides: tuple[str, ...] = (),
    group: str = "default",
    name: str = "default",
    wandb_dir: Path | None = None,
) -> dict[str, Any]:
    """Train, evaluate and log one configuration; returns what it writes to `summary.json`.

    The same call in the same directory resumes from the newest intact checkpoint; a run whose final
    checkpoint exists is reported, not repeated, and its results are not changed. Another configuration in
    the directory, or another process writing it, is a one-line error.
    """
    distributed.initialize_multihost()  # before anything touches a JAX backend (the kernel check does)
    distributed.check_backend()
    checks.check(cfg)
    footprint.check_fits(cfg)  # before anything is allocated or written
    directory = RunDir(run_dir, primary=distributed.is_primary(), keep=cfg.trainer.keep_checkpoints)
    with directory.owned():
        directory.claim(as_dict(cfg), list(overrides))
        try:
            restored = directory.restore_newest()
            if restored is not None and restored.step >= cfg.trainer.steps:
                log.info(
                    "run already completed at step %d in %s; nothing to do", restored.step, directory.path
                )
                return directory.complete_from(restored)
            setup = set_up(cfg)
        except BaseException as exc:
            record_failure_to_start(directory, exc)
            raise
        return train(
            setup, directory, restored, group=group, name=name, wandb_dir=wandb_dir or directory.path
        )
