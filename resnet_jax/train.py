"""Hydra entry point: `python -m resnet_jax.train [overrides]` or `resnet-jax-train -m ...` for sweeps.

Thin by design: call `runner.run`, turn the outcome into a one-screen summary, an exit code and the run's
objective (returned to Hydra's sweeper, `resnet_jax.objective`). The jobs are checked before Hydra runs them
and a sweep's outcome is read from its run directories at its end (`resnet_jax.callbacks`). A failing job of
a multirun is recorded (summary.json, W&B) and the sweep goes on.
"""

from __future__ import annotations

# first of all, so that Ctrl-C or SIGTERM during the imports below is one line too (resnet_jax.interrupts)
from resnet_jax.interrupts import INTERRUPTS

INTERRUPTS.install()

import logging
import os
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from resnet_jax import arguments, faults, objective, outcome, preflight
from resnet_jax.callbacks import refusing
from resnet_jax.composition import register, to_config
from resnet_jax.config import CONF_DIR
from resnet_jax.errors import UserError
from resnet_jax.loop import Diverged
from resnet_jax.runner import run

log = logging.getLogger("resnet_jax")

register()


def format_summary(summary: dict[str, Any], run_dir: Path) -> str:
    """The one screen a user reads at the end of a run."""
    final = summary.get("final", {})
    best = summary.get("best", {})

    def pct(metrics: dict[str, float], key: str) -> str:
        return f"{metrics[key]:6.2f} %" if key in metrics else "     n/a"

    def error(split: str) -> tuple[str, str]:
        key = f"{split}/error"
        return f"{split} error", f"{pct(final, key)}  (best {pct(best, key).strip()})"

    rows = [
        ("status", summary["status"]),
        ("steps", f"{summary['step']}  ({summary.get('steps_per_s') or 0:.3g} steps/s)"),
        ("parameters", f"{summary['params']:,}"),
        *(error(split) for split in ("train", "val", "test") if split != "val" or "val/error" in final),
        ("wall time", f"{summary.get('wall_time_s', 0):.1f} s"),
        ("run directory", str(run_dir)),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(["", "=" * 60, *(f"{k:<{width}}  {v}" for k, v in rows), "=" * 60])


def _hydra_job(cfg: DictConfig) -> tuple[int, float | None]:
    """Run one job: its exit code and its objective (None without a result). Never raises, so a multirun
    carries on past a failed job (its run directory says why)."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        config = to_config(cfg)
        summary = run(
            config,
            run_dir,
            overrides=tuple(hydra_cfg.overrides.task),
            group=cfg.name,
            name=hydra_cfg.job.override_dirname or "default",
            wandb_dir=Path(hydra_cfg.sweep.dir) if multirun else run_dir,
            checked=preflight.checked_ahead(hydra_cfg),
        )
        print(format_summary(summary, run_dir), flush=True)
        return 0, objective.value(config, summary)
    except UserError as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            log.exception("error")
        log.error("error: %s", exc)
        return outcome.of_exception(exc)[1], None
    except Diverged as exc:
        log.error("diverged: %s", exc)
        return outcome.of_exception(exc)[1], None
    except Exception as exc:
        if INTERRUPTS.received is not None:  # an interrupt that surfaced through a library as its own error
            raise KeyboardInterrupt from None
        log.exception("run failed in %s", run_dir)
        return outcome.of_exception(exc)[1], None


def main() -> None:
    """Console script: check every job of the command line, run Hydra, exit with the worst job's code."""
    faults.point("startup")
    command = arguments.parse(sys.argv[1:])
    if command is not None:
        refusing(lambda: arguments.check_composes(command))
    codes: list[int] = []  # the jobs run in this process (a launcher's other processes keep their own)

    def task(cfg: DictConfig) -> float | None:
        """Hydra's task function: one job, its objective returned to the sweeper."""
        code, value = _hydra_job(cfg)
        if HydraConfig.get().mode == RunMode.RUN:  # a sweep's outcome is its own (resnet_jax.callbacks)
            codes.append(code)
        return value

    task.trains_populations = True  # resnet_jax.population_launcher trains its jobs as populations
    hydra_main = hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")(task)

    INTERRUPTS.begin()
    try:
        hydra_main()
    except SystemExit as exc:  # Hydra said why a launcher failed (e.g. a job killed before its result)
        codes.append(exc.code if isinstance(exc.code, int) else 1)
    except BaseException:
        if INTERRUPTS.received is None:
            raise
        INTERRUPTS.exit_after(INTERRUPTS.line())
    sys.exit(max(codes, default=0))


if __name__ == "__main__":
    main()
