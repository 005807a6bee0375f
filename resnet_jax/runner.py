"""`run(cfg, run_dir)`: one training run from a config to a completed run directory, importable for tests.

A single run is a population of one: its life is `resnet_jax.lifecycle`'s, and what would leave one member of
a population out (its directory refuses it, it diverges) is raised here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from resnet_jax.config import Config
from resnet_jax.lifecycle import train_population
from resnet_jax.population import MemberJob


def run(
    cfg: Config,
    run_dir: Path,
    *,
    overrides: tuple[str, ...] = (),
    group: str = "default",
    name: str = "default",
    wandb_dir: Path | None = None,
    checked: bool = False,
) -> dict[str, Any]:
    """Train, evaluate and log one configuration; returns what it writes to `summary.json`.

    The same call in the same directory resumes from the newest intact checkpoint; a run whose final
    checkpoint exists is reported, not repeated, and its results are not changed. Another configuration in
    the directory, or another process writing it, is a one-line error (`UserError`); a loss that is not
    finite raises `loop.Diverged` after the directory recorded it. `checked`: the command line's pre-flight
    has checked `cfg` (`preflight.checked_ahead`); otherwise it is checked here, before anything is written.
    """
    job = MemberJob(cfg, Path(run_dir), tuple(overrides), name, checked)
    (summary,) = train_population([job], group=group, wandb_dir=wandb_dir, strict=True)
    return summary
