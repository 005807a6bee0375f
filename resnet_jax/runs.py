"""Read run directories back (through the readers of `resnet_jax.rundir`): the report sees a run only
through the files it wrote, and a damaged run as damaged, with the reason."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resnet_jax.rundir import CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, read_json, read_rows, read_yaml


@dataclass
class RunRecord:
    path: Path
    config: dict[str, Any]
    summary: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    damage: str | None = None  # what could not be read, if anything

    @property
    def status(self) -> str:
        return "damaged" if self.damage else self.summary.get("status", "unknown")

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


def load_run(path: Path) -> RunRecord:
    """A run as its files tell it; what cannot be read is named in `damage` (the report lists such runs)."""
    problems = []
    config = read_yaml(path / CONFIG_FILE)
    if config is None:
        problems.append(f"{CONFIG_FILE} missing or unreadable")
    summary = read_json(path / SUMMARY_FILE)
    if summary is None:
        problems.append(f"{SUMMARY_FILE} missing or unreadable")
    rows, damaged_rows = read_rows(path / METRICS_FILE)
    if damaged_rows:
        problems.append(f"{METRICS_FILE} has unreadable lines")
    return RunRecord(path, config or {}, summary or {"status": "damaged"}, rows, "; ".join(problems) or None)


def find_runs(root: Path) -> list[Path]:
    """Every run directory under `root` (holding config.yaml, summary.json or metrics.jsonl), sorted."""
    found = {p.parent for name in (CONFIG_FILE, SUMMARY_FILE, METRICS_FILE) for p in root.rglob(name)}
    return sorted(p for p in found if "wandb" not in p.parts)
