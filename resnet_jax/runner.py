"""`run(cfg, run_dir)`: one training run from a config to `summary.json`, importable for tests.

The run directory is self-describing: `metrics.jsonl` (one JSON object per logged step), `summary.json`
(status, final and best metrics, speed), `train.log`, and with Hydra `.hydra/` and `wandb/`. A run is a
short sequence of named steps: check, set up, start or resume, the chunk loop, finish.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import optax
from tqdm import tqdm

from resnet_jax import checks, distributed, models, optim, probes
from resnet_jax import data as datasets
from resnet_jax.checkpoint import Checkpoints
from resnet_jax.config import Config, as_dict
from resnet_jax.engine import Engine, EpochSampler, TrainState
from resnet_jax.loop import Diverged, Record, chunk_boundaries, due
from resnet_jax.tracking import METRICS_FILE, SUMMARY_FILE, Tracker, open_tracker

log = logging.getLogger(__name__)

__all__ = ["Diverged", "run", "write_json_atomic"]


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Readers never see a half-written file: write beside it, then rename over it (process 0 only)."""
    if not distributed.is_primary():
        return
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


@dataclass
class Setup:
    """Everything a run computes with, built from its config."""

    cfg: Config
    data: datasets.Dataset
    engine: Engine
    lr_at: optax.Schedule
    params: int
    identity: dict[str, Any]
    probe: Callable[[TrainState], dict[str, list[float]]] | None


def checkpoint_identity(cfg: Config, image_shape: tuple[int, ...], num_classes: int) -> dict[str, Any]:
    """What must match for a checkpoint to belong to this run (not how it is computed: remat, kernels)."""
    how = ("remat", "unroll", "conv_impl", "dense_impl")
    model = {k: v for k, v in as_dict(cfg.model).items() if k not in how}
    return {
        "model": model,
        "data": cfg.data.name,
        "image_shape": list(image_shape),
        "num_classes": num_classes,
        "optim": cfg.optim.name,
    }


def _probe_function(cfg: Config, engine: Engine, data: datasets.Dataset):
    """Probes on a fixed batch (the first `probe.batch_size` training examples), as JSON-ready lists."""
    if not cfg.probe.every:
        return None
    size = min(cfg.probe.batch_size, len(data.y_train))
    x, y = (distributed.put(a[:size], engine.replicated) for a in (data.x_train, data.y_train))
    measure = jax.jit(partial(probes.measure, engine.graphdef, dtype=engine.dtype))

    def measure_state(state: TrainState) -> dict[str, list[float]]:
        values = measure(state.params, state.model_state, x, y)
        return {
            f"probe/{key}": distributed.host_copy(value).round(6).tolist() for key, value in values.items()
        }

    return measure_state


def set_up(cfg: Config) -> Setup:
    """Devices, data, model, optimiser and the compiled engine."""
    distributed.initialize_multihost()
    mesh = distributed.make_mesh()
    distributed.check_batch_divides(cfg.trainer.batch_size, mesh)
    data = datasets.load(cfg.data)
    model = models.build(cfg.model, data.image_shape, data.num_classes, cfg.seed)
    tx, lr_at = optim.build(cfg.optim, cfg.trainer.steps)
    engine = Engine(model, tx, x_train=data.x_train, y_train=data.y_train, l2=cfg.optim.l2,
                    augment=cfg.data.augment, dtype=jnp.dtype(cfg.trainer.dtype), seed=cfg.seed,
                    mesh=mesh)  # fmt: skip
    identity = checkpoint_identity(cfg, data.image_shape, data.num_classes)
    return Setup(cfg, data, engine, lr_at, models.count_params(model), identity,
                 _probe_function(cfg, engine, data))  # fmt: skip


def _truncate_metrics(path: Path, last_step: int) -> None:
    """Drop rows logged after the checkpoint we resume from: they will be logged again, identically."""
    if path.is_file() and distributed.is_primary():
        kept = [line for line in path.read_text().splitlines() if _row_step(line) <= last_step]
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(f"{line}\n" for line in kept))
        os.replace(tmp, path)


def _row_step(line: str) -> float:
    try:
        return json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError):  # a row cut short by a kill
        return math.inf


def _previous_summary(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((run_dir / SUMMARY_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None


@dataclass
class Start:
    """Where training starts: a fresh or restored state, its step and the record so far."""

    state: TrainState
    step: int
    record: Record


def start_or_resume(setup: Setup, checkpoints: Checkpoints, run_dir: Path) -> Start | dict[str, Any]:
    """The newest checkpoint's state, or a fresh one; a completed run's summary if there is nothing to do."""
    step = checkpoints.latest_step() or 0
    if not step:
        return Start(setup.engine.initial_state(), 0, Record())
    restored, meta = checkpoints.restore(step, setup.engine.host_initial_state, setup.identity)
    previous = _previous_summary(run_dir)
    if step >= setup.cfg.trainer.steps and previous and previous.get("status") == "completed":
        log.info("run already completed at step %d in %s; nothing to do", step, run_dir)
        return previous
    log.info("resuming from the checkpoint at step %d in %s", step, checkpoints.directory)
    _truncate_metrics(run_dir / METRICS_FILE, step)
    return Start(setup.engine.place_state(restored), step, Record.resumed(meta))


def step_record(setup: Setup, state: TrainState, step: int, rows: jax.Array) -> dict[str, Any]:
    """One chunk's line of `metrics.jsonl`: mean train loss and error, lr, and at its cadence evaluation."""
    t = setup.cfg.trainer
    loss, error = (float(v) for v in distributed.host_copy(rows).mean(axis=0))
    record: dict[str, Any] = {
        "train/loss": loss,
        "train/error": 100.0 * error,
        "lr": float(setup.lr_at(step - 1)),
    }
    if not math.isfinite(loss):
        return record
    if due(step, t.eval_every, t.steps):
        evaluated = setup.engine.evaluate(state, setup.data.x_test, setup.data.y_test, t.eval_batch_size)
        record.update({"test/loss": evaluated["loss"], "test/error": evaluated["error"]})
    return record


def train_chunks(
    setup: Setup, start: Start, checkpoints: Checkpoints, tracker: Tracker, summary: dict
) -> None:
    """The chunk loop: K steps per compiled call, then the host logs, evaluates, probes and checkpoints."""
    cfg, engine, record = setup.cfg, setup.engine, start.record
    t, state = cfg.trainer, start.state
    sampler = EpochSampler(len(setup.data.y_train), t.batch_size, cfg.seed)
    label = f"{cfg.model.name}-{cfg.model.depth}"
    bar = tqdm(total=t.steps, initial=start.step, disable=not t.progress, desc=label, unit="step")
    try:
        if setup.probe is not None and start.step == 0:  # at initialisation
            tracker.log(0, setup.probe(state))
        cadences = (t.log_every, t.eval_every, cfg.probe.every, t.checkpoint_every)
        for index, (first, count) in enumerate(chunk_boundaries(start.step, t.steps, cadences)):
            chunk_start = time.perf_counter()
            state, rows = engine.train_chunk(state, sampler.indices(first, count))
            metrics = step_record(setup, state, first + count, rows)
            if index > 0:  # the first call includes compilation
                record.time_chunk(count, time.perf_counter() - chunk_start)
            step = summary["step"] = first + count
            if not math.isfinite(metrics["train/loss"]):
                summary["status"] = "diverged"
                tracker.log(step, metrics)
                raise Diverged(
                    f"training loss became {metrics['train/loss']} at step {step}; "
                    "lower optim.lr or check the data"
                )
            record.add(metrics)
            if setup.probe is not None and due(step, cfg.probe.every, t.steps):
                metrics.update(setup.probe(state))
            tracker.log(step, metrics)
            if due(step, t.checkpoint_every, t.steps):
                checkpoints.save(step, state, {"identity": setup.identity, **record.meta()})
            bar.update(count)
            bar.set_postfix(loss=f"{metrics['train/loss']:.3f}", err=f"{metrics['train/error']:.1f}%",
                            lr=f"{metrics['lr']:.3g}")  # fmt: skip
    finally:
        bar.close()


def finish(summary: dict[str, Any], record: Record, start_step: int, run_dir: Path, tracker: Tracker) -> None:
    """The final `summary.json` (whatever ended the run), W&B's summary, and the tracker closed."""
    if summary["status"] == "running":
        summary["status"] = "failed"
    speed = record.speed(summary["step"] - start_step)
    summary.update(wall_time_s=round(record.wall_time_s, 3), steps_per_s=speed, final=record.final,
                   best=record.best)  # fmt: skip
    write_json_atomic(run_dir / SUMMARY_FILE, summary)
    tracker.summarise(summary)
    tracker.close(0 if summary["status"] == "completed" else 1)


def run(
    cfg: Config,
    run_dir: Path,
    *,
    group: str = "default",
    name: str = "default",
    wandb_dir: Path | None = None,
) -> dict[str, Any]:
    """Train, evaluate and log one configuration; returns what it writes to `summary.json`.

    In a run directory that has checkpoints, training resumes from the newest one; a run that already
    completed is reported, not repeated, and nothing in its directory is changed.
    """
    checks.check(cfg)
    setup = set_up(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoints = Checkpoints(run_dir, cfg.trainer.keep_checkpoints)
    try:
        start = start_or_resume(setup, checkpoints, run_dir)
        if not isinstance(start, Start):
            return start
        tracker = open_tracker(cfg.logger, run_dir, wandb_dir=wandb_dir or run_dir, group=group, name=name,
                               config=as_dict(cfg), primary=distributed.is_primary())  # fmt: skip
        log.info("model=%s depth=%d residual=%s params=%d backend=%s devices=%d processes=%d",
                 cfg.model.name, cfg.model.depth, cfg.model.residual, setup.params, jax.default_backend(),
                 setup.engine.devices, jax.process_count())  # fmt: skip
        summary: dict[str, Any] = {"status": "running", "step": start.step, "params": setup.params,
                                   "devices": setup.engine.devices, "processes": jax.process_count(),
                                   "run_dir": str(run_dir)}  # fmt: skip
        write_json_atomic(run_dir / SUMMARY_FILE, summary)
        try:
            train_chunks(setup, start, checkpoints, tracker, summary)
            summary["status"] = "completed"
        except (KeyboardInterrupt, SystemExit) as exc:  # preempted, timed out or stopped: resumable
            summary.update(status="interrupted", error=f"{type(exc).__name__}: {exc}")
            raise
        except BaseException as exc:
            summary["error"] = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            finish(summary, start.record, start.step, run_dir, tracker)
        return summary
    finally:
        checkpoints.close()
