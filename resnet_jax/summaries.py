"""What a run's `summary.json` says at each point of its life: when an attempt starts, at each checkpoint, and
when it ends early or never starts. `resnet_jax.lifecycle` calls these; `resnet_jax.rundir` writes them."""

from __future__ import annotations

import jax

from resnet_jax import outcome
from resnet_jax.config import Config, as_dict
from resnet_jax.identity import identity_digest
from resnet_jax.loop import Record
from resnet_jax.records import SCHEMA, Summary


def running(cfg: Config, params: int, devices: int, step: int, wandb_id: str) -> Summary:
    """summary.json's fields when an attempt starts at `step`."""
    return {
        "schema": SCHEMA,
        "status": "running",
        "step": step,
        "params": params,
        "devices": devices,
        "processes": jax.process_count(),
        "identity": identity_digest(as_dict(cfg)),
        "wandb_id": wandb_id,
    }


def at(summary: Summary, record: Record, steps_this_attempt: int) -> Summary:
    """`summary` with the record so far: final and best metrics, wall time, speed."""
    speed = record.speed(steps_this_attempt)
    return {
        **summary,
        "wall_time_s": round(record.wall_time_s, 3),
        "steps_per_s": speed,
        "final": dict(record.final),
        "best": dict(record.best),
    }


def ended_early(summary: Summary, exc: BaseException, record: Record, steps_this_attempt: int) -> Summary:
    """`summary` with the record so far, saying how `exc` ended the run (`outcome.of_exception`)."""
    status, code = outcome.of_exception(exc)
    ended = {**summary, "status": status, "exit_code": code, "error": f"{type(exc).__name__}: {exc}"}
    return at(ended, record, steps_this_attempt)


def not_started(exc: BaseException) -> Summary:
    """The summary of a run that did not start: why, and its exit code."""
    status, code = outcome.of_exception(exc)
    error = f"{type(exc).__name__}: {exc}"
    return {"schema": SCHEMA, "status": status, "step": 0, "exit_code": code, "error": error}
