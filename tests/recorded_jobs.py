"""A Hydra callback for the tests: every job's start and end, as Hydra reports them to callbacks, one JSON
line each in the file `path` (`+hydra.callbacks.record._target_=recorded_jobs.RecordJobs`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn
from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class RecordJobs(Callback):
    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def _write(self, **line: Any) -> None:
        with self.path.open("a") as out:
            out.write(json.dumps(line) + "\n")

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._write(event="start", overrides=list(config.hydra.overrides.task))

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        self._write(
            event="end",
            overrides=list(job_return.overrides),
            status=job_return.status.name,
            value=job_return._return_value,
            working_dir=job_return.working_dir,
            output_dir=job_return.hydra_cfg.hydra.runtime.output_dir,
            seed=job_return.cfg.seed,
        )
