"""`run(cfg, run_dir)`: one training run from a validated config to `summary.json`, importable for tests.

The run directory is self-describing: `metrics.jsonl` (one JSON object per logged step), `summary.json`
(status, final and best metrics, speed), `train.log`, and with Hydra `.hydra/` and `wandb/`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from resnet_jax import data as datasets
from resnet_jax import distributed, models, optim, probes
from resnet_jax.checkpoint import Checkpoints
from resnet_jax.config import Config, validate
from resnet_jax.engine import Engine, EpochSampler, TrainState, chunk_boundaries
from resnet_jax.tracking import METRICS_FILE, SUMMARY_FILE, open_tracker

log = logging.getLogger(__name__)


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Readers never see a half-written file: write beside it, then rename over it (process 0 only)."""
    if not distributed.is_primary():
        return
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


def _update_best(best: dict[str, float], record: dict[str, float]) -> None:
    for key, value in record.items():
        if key.endswith(("/error", "/loss")) and math.isfinite(value):
            best[key] = min(best.get(key, math.inf), value)


def _probe_function(
    cfg: Config, engine: Engine, x_train: np.ndarray, y_train: np.ndarray
) -> Callable[[TrainState], dict[str, list[float]]] | None:
    """Probes on a fixed batch (the first `probe.batch_size` training examples), as JSON-ready lists."""
    if not cfg.probe.every:
        return None
    size = min(cfg.probe.batch_size, len(y_train))
    x, y = (distributed.put(a[:size], engine.replicated) for a in (x_train, y_train))
    measure = jax.jit(partial(probes.measure, engine.graphdef, dtype=engine.dtype))

    def measure_state(state: TrainState) -> dict[str, list[float]]:
        values = measure(state.params, state.model_state, x, y)
        return {
            f"probe/{key}": distributed.host_copy(value).round(6).tolist() for key, value in values.items()
        }

    return measure_state


def checkpoint_identity(cfg: Config, image_shape: tuple[int, ...], num_classes: int) -> dict[str, Any]:
    """What must match for a checkpoint to belong to this run (not how it is computed: remat, kernels)."""
    how = ("remat", "unroll", "conv_impl", "dense_impl")
    model = {k: v for k, v in dataclasses.asdict(cfg.model).items() if k not in how}
    return {
        "model": model,
        "data": cfg.data.name,
        "image_shape": list(image_shape),
        "num_classes": num_classes,
        "optim": cfg.optim.name,
    }


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
    validate(cfg)
    distributed.initialize_multihost()
    mesh = distributed.make_mesh()
    distributed.check_batch_divides(cfg.trainer.batch_size, mesh)
    data = datasets.load(cfg.data)
    model = models.build(cfg.model, data.image_shape, data.num_classes, cfg.seed)
    params = models.count_params(model)
    t = cfg.trainer
    tx, lr_at = optim.build(cfg.optim, t.steps)
    engine = Engine(
        model,
        tx,
        x_train=data.x_train,
        y_train=data.y_train,
        l2=cfg.optim.l2,
        augment=cfg.data.augment,
        dtype=jnp.dtype(t.dtype),
        seed=cfg.seed,
        mesh=mesh,
    )
    identity = checkpoint_identity(cfg, data.image_shape, data.num_classes)
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoints = Checkpoints(run_dir, t.keep_checkpoints)
    start = checkpoints.latest_step() or 0
    meta: dict[str, Any] = {}
    if start:
        restored, meta = checkpoints.restore(start, engine.host_initial_state, identity)
        previous = _previous_summary(run_dir)
        if start >= t.steps and previous and previous.get("status") == "completed":
            log.info("run already completed at step %d in %s; nothing to do", start, run_dir)
            checkpoints.close()
            return previous
        log.info("resuming from the checkpoint at step %d in %s", start, checkpoints.directory)
        _truncate_metrics(run_dir / METRICS_FILE, start)
        state = engine.place_state(restored)
    else:
        state = engine.initial_state()
    sampler = EpochSampler(len(data.y_train), t.batch_size, cfg.seed)
    measure_probes = _probe_function(cfg, engine, data.x_train, data.y_train)
    tracker = open_tracker(
        cfg.logger,
        run_dir,
        wandb_dir=wandb_dir or run_dir,
        group=group,
        name=name,
        config=dataclasses.asdict(cfg),
        primary=distributed.is_primary(),
    )
    log.info(
        "model=%s depth=%d residual=%s params=%d backend=%s devices=%d processes=%d",
        cfg.model.name,
        cfg.model.depth,
        cfg.model.residual,
        params,
        jax.default_backend(),
        engine.devices,
        jax.process_count(),
    )
    summary: dict[str, Any] = {
        "status": "running",
        "step": start,
        "params": params,
        "devices": engine.devices,
        "processes": jax.process_count(),
        "run_dir": str(run_dir),
    }
    write_json_atomic(run_dir / SUMMARY_FILE, summary)
    best, final = meta.get("best", {}), meta.get("final", {})
    timed_steps, timed_s = meta.get("timed_steps", 0), meta.get("timed_s", 0.0)
    started = time.perf_counter() - meta.get("wall_time_s", 0.0)
    label = f"{cfg.model.name}-{cfg.model.depth}"
    bar = tqdm(total=t.steps, initial=start, disable=not t.progress, desc=label, unit="step")
    probe_every, checkpoint_every = cfg.probe.every, t.checkpoint_every
    chunks = chunk_boundaries(start, t.steps, (t.log_every, t.eval_every, probe_every, checkpoint_every))
    try:
        if measure_probes is not None and start == 0:  # at initialisation
            tracker.log(0, measure_probes(state))
        for index, (first, count) in enumerate(chunks):
            chunk_start = time.perf_counter()
            state, rows = engine.train_chunk(state, sampler.indices(first, count))
            loss, error = (float(v) for v in distributed.host_copy(rows).mean(axis=0))
            if index > 0:  # the first call includes compilation
                timed_steps, timed_s = timed_steps + count, timed_s + time.perf_counter() - chunk_start
            step = summary["step"] = first + count
            record = {"train/loss": loss, "train/error": 100.0 * error, "lr": float(lr_at(step - 1))}
            if not math.isfinite(loss):
                summary["status"] = "diverged"
                tracker.log(step, record)
                raise Diverged(
                    f"training loss became {loss} at step {step}; lower optim.lr or check the data"
                )
            if step % t.eval_every == 0 or step == t.steps:
                evaluated = engine.evaluate(state, data.x_test, data.y_test, t.eval_batch_size)
                record.update({"test/loss": evaluated["loss"], "test/error": evaluated["error"]})
            _update_best(best, record)
            final.update(record)
            if measure_probes is not None and (step % probe_every == 0 or step == t.steps):
                record.update(measure_probes(state))
            tracker.log(step, record)
            if (checkpoint_every and step % checkpoint_every == 0) or step == t.steps:
                checkpoints.save(step, state, {
                    "identity": identity, "best": best, "final": final, "timed_steps": timed_steps,
                    "timed_s": timed_s, "wall_time_s": time.perf_counter() - started,
                })  # fmt: skip
            bar.update(count)
            bar.set_postfix(loss=f"{loss:.3f}", err=f"{100 * error:.1f}%", lr=f"{record['lr']:.3g}")
        summary["status"] = "completed"
    except (KeyboardInterrupt, SystemExit) as exc:  # preempted, timed out or stopped: resumable
        summary["status"] = "interrupted"
        summary["error"] = f"{type(exc).__name__}: {exc}"
        raise
    except BaseException as exc:
        summary["error"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        bar.close()
        checkpoints.close()
        if summary["status"] == "running":
            summary["status"] = "failed"
        wall = time.perf_counter() - started
        if not timed_steps:  # a single chunk: its time includes compilation
            timed_steps, timed_s = summary["step"] - start, wall
        summary.update(
            wall_time_s=round(wall, 3),
            steps_per_s=round(timed_steps / timed_s, 3) if timed_s > 0 else None,
            final=final,
            best=best,
        )
        write_json_atomic(run_dir / SUMMARY_FILE, summary)
        tracker.summarise(summary)
        tracker.close(0 if summary["status"] == "completed" else 1)
    return summary
