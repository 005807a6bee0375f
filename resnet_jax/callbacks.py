"""Hydra callbacks (`hydra.callbacks` in conf/config.yaml): the command line's jobs are checked before Hydra
creates any directory, and a sweep's outcome is read back from its run directories at its end.

A bad job is one line on stderr and the process exits with its code (`SystemExit`, which Hydra lets through)
before anything is written. A sweep of lists (Hydra's basic sweeper) ends with one line per job that did not
complete, read from the run directories (the jobs may have run in other processes or on other machines), and
exits with the worst job's code; when Hydra ends it early (a launcher raised for a job that died before its
result), the lines follow Hydra's report as the process exits, with Hydra's exit code 1. A search (any other
sweeper) reports each failed trial to its sweeper, which goes on; the process exits 0 when the sweeper
finished (docs/sweeps.md).
"""

from __future__ import annotations

import atexit
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from resnet_jax import population_launcher, preflight
from resnet_jax.config import as_dict
from resnet_jax.errors import UserError
from resnet_jax.rundir import RunDir


def refusing(check: Callable[[], Any]) -> Any:
    """`check()`, or its one-line error on stderr and the process's exit with its code (Hydra would turn any
    other exception of a callback into a warning and go on unchecked)."""
    try:
        return check()
    except UserError as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(exc.exit_code) from None
    except Exception:
        traceback.print_exc()
        raise SystemExit(1) from None


def sweep_outcome(jobs: list[preflight.Job]) -> int:
    """Each job's outcome read from its run directory: one line per job that did not complete, named by the
    overrides that vary across the sweep, and the worst exit code."""
    worst = 0
    for job, named in preflight.varying_overrides(jobs):
        code, line, _ = RunDir(job.run_dir).outcome(as_dict(job.config))
        if code:
            print(f"job {' '.join(named) or '(no overrides)'}: {line} ({job.run_dir})", file=sys.stderr)
        worst = max(worst, code)
    return worst


class CheckJobs(Callback):
    """The pre-flight of a run or a sweep, and the sweep's outcome."""

    def __init__(self) -> None:
        self.jobs: list[preflight.Job] | None = None  # this sweep's jobs, when its sweeper runs them all

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        refusing(lambda: preflight.check(preflight.planned(config, multirun=False)[0]))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        def checked() -> tuple[list[preflight.Job], bool]:
            population_launcher.check(OmegaConf.to_container(config.hydra.launcher, resolve=False))
            jobs, complete = preflight.planned(config, multirun=True)
            preflight.check(jobs)
            return jobs, complete

        jobs, complete = refusing(checked)
        self.jobs = jobs if complete and preflight.lists_sweep(config.hydra) else None
        if self.jobs is not None:  # Hydra ends a sweep whose launcher raised without on_multirun_end
            atexit.register(self.report_outcome)
        # a search's sweeper may keep its study there (Optuna's storage) before the first job makes it
        Path(str(config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        code = self.report_outcome()
        if code:
            raise SystemExit(code)

    def report_outcome(self) -> int:
        """The sweep's outcome, said once: at its end, or as the process exits when the sweep raised (a job
        that died before its result), after Hydra's own report of why."""
        atexit.unregister(self.report_outcome)
        jobs, self.jobs = self.jobs, None
        return 0 if jobs is None else sweep_outcome(jobs)
