"""Where metrics go: the run directory's `metrics.jsonl` (always, through `RunDir`) and Weights & Biases.

W&B is a guest: it runs offline by default (`wandb sync` uploads later), and any failure of it warns
once and never stops training. Each job opens its own W&B run and finishes it, so a sequential Hydra
multirun (one process) still gives one W&B run per job. A run's workspace stays small at any depth: a
per-layer probe is one chart with the layer on the x-axis, not one series per layer (`metrics.jsonl` keeps
every layer). W&B's own environment variables work as W&B users expect: `WANDB_MODE`, `WANDB_PROJECT` and
`WANDB_ENTITY` (when the config leaves them unset), `WANDB_TAGS` (added to the run's tags), `WANDB_DIR`.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

from resnet_jax import objective, rules
from resnet_jax.config import Config, LoggerConfig, WandbLogger
from resnet_jax.rundir import RunDir, json_safe

log = logging.getLogger(__name__)

DEFAULT_PROJECT = "resnet_jax"  # without logger.project and WANDB_PROJECT
LAYER_AXIS = "layer"


WANDB_MODES = ("offline", "online", "disabled")


def check(cfg: LoggerConfig) -> None:
    if isinstance(cfg, WandbLogger):
        rules.one_of("logger.mode", cfg.mode, WANDB_MODES)
        rules.positive("logger.init_timeout", cfg.init_timeout)
        project_name = r"[^/\\#?%:]{1,128}"  # W&B refuses these characters in a project's name
        if cfg.project is not None:
            rules.pattern("logger.project", cfg.project, project_name, "a W&B project name (no / \\ # ? % :)")


def run_id(run_dir: Path) -> str:
    """A new run's W&B id, derived from its directory; its checkpoints keep it (`runner.Start.wandb_id`), so
    a resumed or requeued job, in the same directory or a moved one, continues the same W&B run."""
    return hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:16]


def layer_chart(key: str, values: list[float]) -> Any:
    """A per-layer probe at one step as one W&B line chart over the layers (the x-axis a researcher
    compares), stored as a table with the run."""
    import wandb

    kind = key.rsplit("/", 1)[-1]
    table = wandb.Table(columns=[LAYER_AXIS, kind], data=[[i, v] for i, v in enumerate(values)])
    return wandb.plot.line(table, LAYER_AXIS, kind, title=f"{key} by layer")


def wandb_payload(metrics: dict[str, Any]) -> dict[str, Any]:
    """Scalars as they are; a per-layer probe list as `<key>/by_layer` (`layer_chart`) and its min, mean and
    max as scalars: a handful of panels per run, whatever its depth."""
    payload: dict[str, Any] = {}
    for key, value in metrics.items():
        if not isinstance(value, list):
            payload[key] = value
        elif value:
            payload.update(
                {f"{key}/min": min(value), f"{key}/mean": sum(value) / len(value), f"{key}/max": max(value)}
            )
            payload[f"{key}/by_layer"] = layer_chart(key, value)
    return payload


def project(configured: str | None) -> str:
    """The W&B project: the config's, else `WANDB_PROJECT`, else `DEFAULT_PROJECT`."""
    return configured or os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT


def run_tags(config: dict[str, Any], extra: list[str]) -> list[str]:
    """What a workspace filters runs by: family, residual or plain, depth, dataset, L2, then the config's and
    `WANDB_TAGS`'s own."""
    tags = [
        config["model"]["name"],
        "residual" if config["model"]["residual"] else "plain",
        f"depth={config['model']['depth']}",
        f"data={config['data']['name']}",
        f"l2={config['optim']['l2']}",
        *extra,
        *(t.strip() for t in os.environ.get("WANDB_TAGS", "").split(",") if t.strip()),
    ]
    return list(dict.fromkeys(tags))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


class Tracker:
    """One run's metric sinks; `log` takes flat dicts keyed like `train/loss`."""

    def __init__(self, directory: RunDir, wandb_run: Any = None):
        self.directory = directory  # writes metrics.jsonl (process 0 only)
        self.wandb_run = wandb_run

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        self.directory.append_metrics({"step": step, **{k: json_safe(v) for k, v in metrics.items()}})
        if self.wandb_run is not None:
            self._wandb_call(lambda: self.wandb_run.log(wandb_payload(metrics), step=step))

    def summarise(self, summary: dict[str, Any], cfg: Config) -> None:
        """The run's summary in W&B, with its objective (what a search compares its trials by)."""
        if self.wandb_run is not None:
            flat = {k: v for k, v in summary.items() if not isinstance(v, dict)}
            for group in ("final", "best"):
                flat.update({f"{group}/{k}": v for k, v in summary.get(group, {}).items()})
            flat["objective"], flat["optimized_metric"] = objective.value(cfg, summary), objective.metric(cfg)
            self._wandb_call(lambda: self.wandb_run.summary.update(flat))

    def close(self, exit_code: int) -> None:
        if self.wandb_run is not None:
            self._wandb_call(lambda: self.wandb_run.finish(exit_code=exit_code))
            self.wandb_run = None

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

        wandb_dir = Path(os.environ.get("WANDB_DIR") or wandb_dir)
        wandb_dir.mkdir(parents=True, exist_ok=True)
        run = wandb.init(
            project=project(cfg.project),
            entity=cfg.entity,  # None: WANDB_ENTITY, else the account's default
            mode=mode,
            dir=str(wandb_dir),
            id=wandb_id,
            resume="allow",
            group=group,
            name=name,
            job_type="train",
            tags=run_tags(config, cfg.tags),
            config=config,
            reinit="create_new" if concurrent else "finish_previous",
            settings=wandb.Settings(console="off", silent=True, init_timeout=cfg.init_timeout),
        )
        for split in ("train", "val", "test"):
            run.define_metric(f"{split}/error", summary="min,last")
            run.define_metric(f"{split}/loss", summary="min,last")
        return Tracker(directory, run)
    except Exception as exc:
        log.warning("W&B could not start (%s); continuing with metrics.jsonl only", _one_line(exc))
        return Tracker(directory)
