"""Where metrics go: the run directory's `metrics.jsonl` (always, through `RunDir`) and Weights & Biases.

W&B is a guest: it runs offline by default (`wandb sync` uploads later), and any failure of it warns
once and never stops training. Each job opens its own W&B run and finishes it, so a sequential Hydra
multirun (one process) still gives one W&B run per job.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

from resnet_jax import rules
from resnet_jax.config import LoggerConfig, WandbLogger
from resnet_jax.rundir import RunDir, json_safe

log = logging.getLogger(__name__)

MAX_LAYER_SERIES = 128  # per-layer W&B series up to this depth; deeper nets log min/mean/max only


WANDB_MODES = ("offline", "online", "disabled")


def check(cfg: LoggerConfig) -> None:
    if isinstance(cfg, WandbLogger):
        rules.one_of("logger.mode", cfg.mode, WANDB_MODES)
        rules.positive("logger.init_timeout", cfg.init_timeout)
        project_name = r"[^/\\#?%:]{1,128}"  # W&B refuses these characters in a project's name
        rules.pattern("logger.project", cfg.project, project_name, "a W&B project name (no / \\ # ? % :)")


def run_id(run_dir: Path) -> str:
    """A new run's W&B id, derived from its directory; its checkpoints keep it (`runner.Start.wandb_id`), so
    a resumed or requeued job, in the same directory or a moved one, continues the same W&B run."""
    return hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:16]


def wandb_payload(metrics: dict[str, Any]) -> dict[str, float]:
    """Per-layer probe lists become W&B series `probe/<kind>/L000`, ... plus their min, mean and max."""
    payload: dict[str, float] = {}
    for key, value in metrics.items():
        if not isinstance(value, list):
            payload[key] = value
            continue
        if value:
            payload.update(
                {f"{key}/min": min(value), f"{key}/mean": sum(value) / len(value), f"{key}/max": max(value)}
            )
        if len(value) <= MAX_LAYER_SERIES:
            payload.update({f"{key}/L{i:03d}": v for i, v in enumerate(value)})
    return payload


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


class Tracker:
    """One run's metric sinks; `log` takes flat dicts keyed like `train/loss`."""

    def __init__(self, directory: RunDir, wandb_run: Any = None):
        self.directory = directory  # writes metrics.jsonl (process 0 only)
        self.wandb_run = wandb_run

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        self.directory.append_metrics({"step": step, **{k: json_safe(v) for k, v in metrics.items()}})
        self._wandb("log", wandb_payload(metrics), step=step)

    def summarise(self, summary: dict[str, Any]) -> None:
        if self.wandb_run is not None:
            flat = {k: v for k, v in summary.items() if not isinstance(v, dict)}
            for group in ("final", "best"):
                flat.update({f"{group}/{k}": v for k, v in summary.get(group, {}).items()})
            self._wandb_call(lambda: self.wandb_run.summary.update(flat))

    def close(self, exit_code: int) -> None:
        if self.wandb_run is not None:
            self._wandb_call(lambda: self.wandb_run.finish(exit_code=exit_code))
            self.wandb_run = None

    def _wandb(self, method: str, *args: Any, **kwargs: Any) -> None:
        if self.wandb_run is not None:
            self._wandb_call(lambda: getattr(self.wandb_run, method)(*args, **kwargs))

    def _wandb_call(self, call: Any) -> None:
        try:
            call()
        except Exception as exc:  # W&B must never stop training
            log.warning("W&B failed (%s); continuing with metrics.jsonl only", _one_line(exc))
            self.wandb_run = None


def open_tracker(
    cfg: LoggerConfig,
    directory: RunDir,
    wandb_id: str,
    *,
    wandb_dir: Path,
    group: str,
    name: str,
    config: dict[str, Any],
    concurrent: bool = False,
) -> Tracker:
    """Open the sinks. `wandb_dir` may be shared by a sweep's runs so `wandb leet` shows them together;
    `concurrent`: other runs of this process stay open (a population's members)."""
    mode = os.environ.get("WANDB_MODE", getattr(cfg, "mode", "disabled"))
    if not isinstance(cfg, WandbLogger) or not directory.primary or mode == "disabled":
        return Tracker(directory)
    try:
        import wandb

        wandb_dir.mkdir(parents=True, exist_ok=True)
        tags = [
            config["model"]["name"],
            "residual" if config["model"]["residual"] else "plain",
            f"depth={config['model']['depth']}",
            f"l2={config['optim']['l2']}",
            *cfg.tags,
        ]
        run = wandb.init(
            project=cfg.project,
            entity=cfg.entity,
            mode=mode,
            dir=str(wandb_dir),
            id=wandb_id,
            resume="allow",
            group=group,
            name=name,
            job_type="train",
            tags=tags,
            config=config,
            reinit="create_new" if concurrent else "finish_previous",
            settings=wandb.Settings(console="off", silent=True, init_timeout=cfg.init_timeout),
        )
        for split in ("train", "test"):
            run.define_metric(f"{split}/error", summary="min,last")
            run.define_metric(f"{split}/loss", summary="min,last")
        return Tracker(directory, run)
    except Exception as exc:
        log.warning("W&B could not start (%s); continuing with metrics.jsonl only", _one_line(exc))
        return Tracker(directory)
