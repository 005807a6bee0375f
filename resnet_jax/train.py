"""Hydra entry point: `python -m resnet_jax.train [overrides]` or `resnet-jax-train -m ...` for sweeps.

Thin by design: check every job of the command line, call `runner.run`, turn the outcome into a one-screen
summary and an exit code. A failing job of a multirun is recorded (summary.json, W&B) and the sweep goes on;
at the end the sweep's outcome is read back from its run directories, whatever launcher ran the jobs, and
the process exits non-zero, with one line per job, if any job failed, diverged or never finished.
"""

from __future__ import annotations

# first of all, so that Ctrl-C or SIGTERM during the imports below is one line too (resnet_jax.interrupts)
from resnet_jax.interrupts import INTERRUPTS

INTERRUPTS.install()

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

from resnet_jax import commandline, faults, outcome
from resnet_jax.composition import register, to_config
from resnet_jax.config import CONF_DIR, as_dict
from resnet_jax.errors import UserError
from resnet_jax.loop import Diverged
from resnet_jax.rundir import RunDir
from resnet_jax.runner import run

log = logging.getLogger("resnet_jax")

register()


def format_summary(summary: dict[str, Any], run_dir: Path) -> str:
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
        ("run directory", str(run_dir)),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(["", "=" * 60, *(f"{k:<{width}}  {v}" for k, v in rows), "=" * 60])


def _hydra_job(cfg: DictConfig) -> int:
    """Run one job; never raise, so a multirun carries on past a failed job (its run directory says why)."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        summary = run(
            to_config(cfg),
            run_dir,
            overrides=tuple(hydra_cfg.overrides.task),
            group=cfg.name,
            name=hydra_cfg.job.override_dirname or "default",
            wandb_dir=Path(hydra_cfg.sweep.dir) if multirun else run_dir,
        )
        print(format_summary(summary, run_dir), flush=True)
        return 0
    except UserError as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            log.exception("error")
        log.error("error: %s", exc)
        return outcome.of_exception(exc)[1]
    except Diverged as exc:
        log.error("diverged: %s", exc)
        return outcome.of_exception(exc)[1]
    except Exception as exc:
        if INTERRUPTS.received is not None:  # an interrupt that surfaced through a library as its own error
            raise KeyboardInterrupt from None
        log.exception("run failed in %s", run_dir)
        return outcome.of_exception(exc)[1]


def sweep_outcome(jobs: list[commandline.Job]) -> int:
    """Each job's outcome read from its run directory (the jobs may have run in other processes or on other
    machines): one line per job that did not complete, named by the overrides that vary across the sweep,
    and the worst exit code."""
    values: dict[str, set[str]] = {}
    for job in jobs:
        for override in job.overrides:
            key, _, value = override.partition("=")
            values.setdefault(key, set()).add(value)
    varying = {key for key, seen in values.items() if len(seen) > 1}
    worst = 0
    for job in jobs:
        code, line = RunDir(job.run_dir).outcome(as_dict(job.config))
        if code:
            named = [o for o in job.overrides if o.partition("=")[0] in varying] or list(job.overrides)
            print(f"job {' '.join(named) or '(no overrides)'}: {line} ({job.run_dir})", file=sys.stderr)
        worst = max(worst, code)
    return worst


def main() -> None:
    """Console script: check every job of the command line, run Hydra, exit with the worst job's code."""
    faults.point("startup")
    try:
        jobs = commandline.check(sys.argv[1:])
    except UserError as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    codes: list[int] = []  # the jobs run in this process (a launcher's other processes keep their own)

    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
    def hydra_main(cfg: DictConfig) -> None:
        codes.append(_hydra_job(cfg))

    INTERRUPTS.begin()
    try:
        hydra_main()
    except SystemExit as exc:  # Hydra said why a launcher failed (e.g. a job killed before its result)
        codes.append(exc.code if isinstance(exc.code, int) else 1)
    except BaseException:
        if INTERRUPTS.received is None:
            raise
        INTERRUPTS.exit_after(INTERRUPTS.line())
    if jobs is not None and jobs.multirun:
        codes.append(sweep_outcome(jobs.jobs))
    sys.exit(max(codes, default=0))


if __name__ == "__main__":
    main()
