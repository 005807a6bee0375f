"""Hydra entry point: `python -m resnet_jax.train [overrides]` or `resnet-jax-train -m ...` for sweeps.

Thin by design: compose and check the config, call `runner.run`, turn the outcome into a one-screen
summary and an exit code. A failing job of a multirun is recorded (summary.json, W&B) and the sweep
goes on; the process exits non-zero if any job failed.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from resnet_jax import commandline
from resnet_jax.config import CONF_DIR, register, to_config
from resnet_jax.errors import UserError
from resnet_jax.runner import Diverged, run, write_json_atomic
from resnet_jax.tracking import SUMMARY_FILE

log = logging.getLogger("resnet_jax")

register()

_exit_codes: list[int] = []


def format_summary(summary: dict[str, Any]) -> str:
    """The one screen a user reads at the end of a run."""
    final = summary.get("final", {})
    best = summary.get("best", {})

    def pct(metrics: dict[str, float], key: str) -> str:
        return f"{metrics[key]:6.2f} %" if key in metrics else "     n/a"

    rows = [
        ("status", summary["status"]),
        ("steps", f"{summary['step']}  ({summary.get('steps_per_s') or 0:.3g} steps/s)"),
        ("parameters", f"{summary['params']:,}"),
        ("train error", f"{pct(final, 'train/error')}  (best {pct(best, 'train/error').strip()})"),
        ("test error", f"{pct(final, 'test/error')}  (best {pct(best, 'test/error').strip()})"),
        ("wall time", f"{summary.get('wall_time_s', 0):.1f} s"),
        ("run directory", summary["run_dir"]),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(["", "=" * 60, *(f"{k:<{width}}  {v}" for k, v in rows), "=" * 60])


def _hydra_job(cfg: DictConfig) -> int:
    """Run one job; never raise, so a multirun carries on past a failed job."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    name = hydra_cfg.job.override_dirname or "default"
    try:
        summary = run(
            to_config(cfg),
            run_dir,
            group=cfg.name,
            name=name,
            wandb_dir=Path(hydra_cfg.sweep.dir) if multirun else run_dir,
        )
        print(format_summary(summary), flush=True)
        return 0
    except UserError as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            log.exception("error")
        log.error("error: %s", exc)
        _record_failure(run_dir, str(exc))
        return exc.exit_code
    except Diverged as exc:
        log.error("diverged: %s", exc)
        return 3
    except Exception as exc:
        log.exception("run failed in %s", run_dir)
        _record_failure(run_dir, f"{type(exc).__name__}: {exc}")
        return 1


def _record_failure(run_dir: Path, message: str) -> None:
    """Make a job that failed before training visible to the report; never touch an existing summary."""
    summary_path = run_dir / SUMMARY_FILE
    if run_dir.is_dir() and not summary_path.exists():
        write_json_atomic(
            summary_path, {"status": "failed", "step": 0, "error": message, "run_dir": str(run_dir)}
        )


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    _exit_codes.append(_hydra_job(cfg))


def main() -> None:
    """Console script: check every job of the command line, run Hydra, exit with the worst job's code."""
    try:
        commandline.check(sys.argv[1:])
    except UserError as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    _hydra_main()
    sys.exit(max(_exit_codes, default=0))


if __name__ == "__main__":
    main()
