"""The report in W&B (`python -m resnet_jax.report SWEEP_DIR --wandb`): its figures as images and its table
of runs, logged to one W&B run in the sweep's group (job type `report`) beside the sweep's own runs, so a
workspace grouped by sweep shows the paper's figures next to the runs they were drawn from. Offline unless
`WANDB_MODE` says otherwise, into the sweep's `wandb/` folder (`wandb sync` uploads it with the runs)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from resnet_jax.runs import RunRecord
from resnet_jax.tracking import project

log = logging.getLogger(__name__)


def log_report(root: Path, runs: list[RunRecord], rows: list[dict[str, Any]], figures: Path) -> str | None:
    """Log the report's figures and runs table; the W&B run's id, or None when W&B is disabled or failed
    (the report's files stand either way)."""
    mode = os.environ.get("WANDB_MODE", "offline")
    if mode == "disabled":
        return None
    config = runs[0].config if runs else {}
    logger = config.get("logger") or {}
    group = str(config.get("name") or root.name)
    try:
        import wandb

        run = wandb.init(
            project=project(logger.get("project")),
            entity=logger.get("entity"),
            mode=mode,
            dir=os.environ.get("WANDB_DIR") or str(root),
            group=group,
            job_type="report",
            name=f"report {group}",
            settings=wandb.Settings(console="off", silent=True),
        )
        columns = list(rows[0]) if rows else []
        payload: dict[str, Any] = {
            f"report/{p.stem}": wandb.Image(str(p)) for p in sorted(figures.glob("*.png"))
        }
        payload["report/runs"] = wandb.Table(
            columns=columns, data=[[row[c] for c in columns] for row in rows]
        )
        run.log(payload)
        run.finish()
        return run.id
    except Exception as exc:  # W&B is a guest: the report's files are written already
        log.warning("W&B could not take the report (%s); report.md and figures/ are written", exc)
        return None
