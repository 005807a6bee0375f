"""A run's objective: the one number a Hydra sweeper (Optuna, Nevergrad) optimises, read from the run's
summary. The task function returns it for every launcher; a run without a result returns None, which a
sweeper records as a failed trial (never as a value) and goes on."""

from __future__ import annotations

import math

from resnet_jax import rules
from resnet_jax.config import Config
from resnet_jax.records import Summary

SPLITS = ("train", "val", "test")
MEASURES = ("error", "loss")  # error in %, loss the mean cross-entropy: lower is better for both


def metric(cfg: Config) -> str:
    return chosen(cfg.optimized_metric, cfg.data.validation)


def chosen(optimized_metric: str | None, validation: int) -> str:
    """The metric a run optimises: `optimized_metric`, else val/error with a validation split, else
    test/error (also read from a run directory's config by the report)."""
    if optimized_metric is not None:
        return optimized_metric
    return "val/error" if validation else "test/error"


def allowed(cfg: Config) -> tuple[str, ...]:
    """The metrics a run of `cfg` reports at its final evaluation."""
    splits = [s for s in SPLITS if s != "val" or cfg.data.validation]
    return tuple(f"{split}/{measure}" for split in splits for measure in MEASURES)


def check(cfg: Config) -> None:
    if cfg.optimized_metric is not None:
        rules.one_of("optimized_metric", cfg.optimized_metric, allowed(cfg))


def value(cfg: Config, summary: Summary) -> float | None:
    return of_summary(metric(cfg), summary)


def of_summary(name: str, summary: Summary) -> float | None:
    """The objective of a finished run: its final `name` metric; None when it did not complete (failed,
    diverged, refused) or the value is not finite (also read from a run directory by the report)."""
    if summary.get("status") != "completed":
        return None
    found = summary.get("final", {}).get(name)
    return float(found) if isinstance(found, (int, float)) and math.isfinite(found) else None
