"""The training loop's rules and bookkeeping: where compiled chunks end, what the trainer keys may be, and
the running record (best, final, timing) that a checkpoint carries so a resumed run continues it."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optax

from resnet_jax import rules
from resnet_jax.config import ProbeConfig, TrainerConfig
from resnet_jax.errors import ConfigError
from resnet_jax.records import RecordMeta

DTYPES = ("float32", "bfloat16")
# the step counter is an int32 on the device (TrainState.step, optax's schedules count in int32)
STEPS_MAX = 2**31 - 1


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


def check(trainer: TrainerConfig, probe: ProbeConfig) -> None:
    for key in ("steps", "batch_size", "eval_every", "log_every", "eval_batch_size", "keep_checkpoints"):
        rules.positive(f"trainer.{key}", getattr(trainer, key))
    rules.positive("trainer.checkpoint_every", trainer.checkpoint_every, allow_zero=True)
    if trainer.steps > STEPS_MAX:
        raise ConfigError(
            f"trainer.steps={trainer.steps} is not allowed; the step counter holds at most {STEPS_MAX} steps"
        )


def chunk_boundaries(start: int, stop: int, every: tuple[int, ...]) -> Iterator[tuple[int, int]]:
    """(first_step, count) for each compiled call from `start` to `stop`, ending at every multiple of
    each of `every` (logging, evaluation, probes, ...) so the host sees the state exactly there. Lazy: a
    run of any length costs nothing until it gets there."""
    first = start
    while first < stop:
        end = min([stop, *((first // n + 1) * n for n in every if n > 0)])
        yield first, end - first
        first = end


def due(step: int, every: int, last: int) -> bool:
    """Whether something done every `every` steps (0: never) and at the last step is due at `step`."""
    return step == last or (every > 0 and step % every == 0)


def passed(first: int, step: int, every: int, last: int) -> bool:
    """Whether a chunk from `first` to `step` reached a multiple of `every` (0: never) or the last step. What
    the host does this way (checkpoints) never ends a chunk of its own, so its cadence cannot change where the
    chunks end, nor the results: a checkpoint is taken at the first chunk end at or after each multiple."""
    return step == last or (every > 0 and step // every > first // every)


@dataclass
class Record:
    """What a run has measured so far: the newest and best (min) metrics and the time spent training."""

    final: dict[str, float] = field(default_factory=dict)
    best: dict[str, float] = field(default_factory=dict)
    timed_steps: int = 0  # steps of chunks after the first (which includes compilation) ...
    timed_s: float = 0.0  # ... and their time
    wall_before_s: float = 0.0  # wall time of earlier attempts (a resumed run)
    started: float = field(default_factory=time.perf_counter)

    @classmethod
    def resumed(cls, meta: RecordMeta) -> Record:
        """The record a checkpoint carried (empty for a fresh start)."""
        return cls(
            final=dict(meta.get("final", {})),
            best=dict(meta.get("best", {})),
            timed_steps=meta.get("timed_steps", 0),
            timed_s=meta.get("timed_s", 0.0),
            wall_before_s=meta.get("wall_time_s", 0.0),
        )

    def add(self, metrics: dict[str, float], minimised: Sequence[str]) -> None:
        """A chunk's metrics: the newest of each, and the best (least) of those named in `minimised`."""
        for key in minimised:
            if math.isfinite(metrics[key]):
                self.best[key] = min(self.best.get(key, math.inf), metrics[key])
        self.final.update(metrics)

    def time_chunk(self, steps: int, seconds: float) -> None:
        self.timed_steps, self.timed_s = self.timed_steps + steps, self.timed_s + seconds

    @property
    def wall_time_s(self) -> float:
        return self.wall_before_s + time.perf_counter() - self.started

    def meta(self) -> RecordMeta:
        """What a checkpoint stores of the record."""
        return {
            "best": self.best,
            "final": self.final,
            "timed_steps": self.timed_steps,
            "timed_s": self.timed_s,
            "wall_time_s": self.wall_time_s,
        }

    def speed(self, steps_this_attempt: int) -> float | None:
        """Steps per second without compilation; a run of one chunk has only its compiled time."""
        steps, seconds = self.timed_steps, self.timed_s
        if not steps:
            steps, seconds = steps_this_attempt, time.perf_counter() - self.started
        return round(steps / seconds, 3) if seconds > 0 and steps else None


def chunk_metrics(lr_at: optax.Schedule, step: int, rows: dict[str, np.ndarray]) -> dict[str, Any]:
    """A chunk's mean train loss and error (from one member's rows, (K,) each) and the lr of its last step.
    Both means as one reduction over the steps of a (K, 2) array: the summation order every record was
    written with."""
    loss, error = (float(v) for v in np.stack([rows["loss"], rows["error"]], axis=1).mean(axis=0))
    return {"train/loss": loss, "train/error": 100.0 * error, "lr": float(lr_at(step - 1))}


def divergence(metrics: dict[str, Any], step: int) -> Diverged:
    """What ends a run whose chunk's training loss is not finite."""
    return Diverged(
        f"training loss became {metrics['train/loss']} at step {step}; lower optim.lr or check the data"
    )
