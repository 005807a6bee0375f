"""What a run's `summary.json` says at each point of its life: when an attempt starts, at each checkpoint, and
when it ends early or never starts. `resnet_jax.lifecycle` calls these; `resnet_jax.rundir` writes them."""

from __future__ import annotations

from typing import Any

import jax

from resnet_jax import outcome
from resnet_jax.config import Config, as_dict
from resnet_jax.identity import identity_digest
from resnet_jax.loop import Record


def running(cfg: Config, params: int, devices: int, step: int, wandb_id: str) -> dict[str, Any]:
    """summary.json's fields when an attempt starts at `step`."""
    return {
        "status": "running",
        "step": step,
        "params": params,
        "devices": devices,
        "processes": jax.process_count(),
        "identity": identity_digest(as_dict(cfg)),  # what config.yaml must say (resnet_jax.runs)
        "wandb_id": wandb_id,  # the run's W&B id, kept by its checkpoints: a moved directory continues it
    }


def at(summary: dict[str, Any], record: Record, steps_this_attempt: int) -> dict[str, Any]:
    """`summary` with the record so far: final and best metrics, wall time, speed."""
    speed = record.speed(steps_this_attempt)
    return {
        **summary,
        "wall_time_s": round(record.wall_time_s, 3),
        "steps_per_s": speed,
        "final": dict(record.final),
        "best": dict(record.best),
    }


def ended_early(
    summary: dict[str, Any], exc: BaseException, record: Record, steps_this_attempt: int
) -> dict[str, Any]:
    """`summary` with the record so far, saying how `exc` ended the run (`outcome.of_exception`)."""
    status, code = outcome.of_exception(exc)
    ended = {**summary, "status": status, "exit_code": code, "error": f"{type(exc).__name__}: {exc}"}
    return at(ended, record, steps_this_attempt)


def not_started(exc: BaseException) -> dict[str, Any]:
    """The summary of a run that did not start: why, and its exit code."""
    status, code = outcome.of_exception(exc)
    return {"status": status, "step": 0, "exit_code": code, "error": f"{type(exc).__name__}: {exc}"}
