"""Read run directories back: the report and the CLI see a run only through the files it wrote."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from resnet_jax.tracking import METRICS_FILE, SUMMARY_FILE


@dataclass
class RunRecord:
    path: Path
    config: dict[str, Any]
    summary: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def status(self) -> str:
        return self.summary.get("status", "unknown")

    def get(self, dotted: str, default: Any = None) -> Any:
        """A config value by dotted key, e.g. `model.depth`."""
        node: Any = self.config
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """(steps, values) of a scalar metric, skipping rows without it and non-finite values."""
        points = [(r["step"], r[key]) for r in self.rows if isinstance(r.get(key), (int, float))]
        points = [(s, v) for s, v in points if math.isfinite(v)]
        return [s for s, _ in points], [v for _, v in points]

    def probe(self, key: str, which: str = "last") -> list[float] | None:
        """A per-layer probe (e.g. `grad_norm`) from the first (step 0) or last row that has it."""
        rows = [r for r in self.rows if f"probe/{key}" in r]
        if not rows:
            return None
        return rows[0 if which == "first" else -1][f"probe/{key}"]


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a run killed mid-write leaves a partial last line
                continue
    return rows


def load_run(path: Path) -> RunRecord:
    config_file = path / ".hydra" / "config.yaml"
    config = yaml.safe_load(config_file.read_text()) if config_file.is_file() else {}
    summary_file = path / SUMMARY_FILE
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {"status": "unknown"}
    return RunRecord(path, config or {}, summary, _read_metrics(path / METRICS_FILE))


def find_runs(root: Path) -> list[Path]:
    """Every run directory under `root` (one that holds summary.json or metrics.jsonl), sorted."""
    found = {p.parent for name in (SUMMARY_FILE, METRICS_FILE) for p in root.rglob(name)}
    return sorted(p for p in found if "wandb" not in p.parts)
