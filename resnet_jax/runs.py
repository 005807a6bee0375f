"""Read run directories back (through the readers of `resnet_jax.rundir`): the report sees a run only
through the files it wrote, and a damaged run as damaged, with the reason."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from resnet_jax.identity import identity_digest
from resnet_jax.records import NUMBER, summary_problems, wrong_types
from resnet_jax.rundir import (
    CONFIG_FILE,
    METRICS_FILE,
    OVERRIDES_FILE,
    SUMMARY_FILE,
    read_json,
    read_rows,
    read_yaml,
)

# the config fields the report uses, and the types each may have (a field may be absent): a file whose YAML
# parses but holds something else (a list for a number, text for a depth) is damaged, not drawn
CONFIG_TYPES: dict[str, tuple[type, ...]] = {
    "model": (dict,),
    "optim": (dict,),
    "data": (dict,),
    "model.name": (str,),
    "model.depth": (int,),
    "model.residual": (bool,),
    "model.width": (int,),
    "optim.l2": NUMBER,
    "optim.lr": NUMBER,
    "seed": (int,),
}


@dataclass
class RunRecord:
    path: Path
    config: dict[str, Any]
    summary: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    damage: str | None = None  # what could not be read, if anything

    @property
    def status(self) -> str:
        """The run's status as its summary says; `damaged` when its config or summary cannot be used (it is
        not drawn). A problem elsewhere (a torn metrics line) is in `damage`, beside its status."""
        if not self.config:
            return "damaged"
        return self.summary.get("status", "damaged")

    def metric(self, key: str, section: str = "final") -> float | None:
        """A final (or best) metric from the summary as a finite number; None when absent or not finite (a
        diverged run's NaN is kept as text)."""
        value = self.summary.get(section, {}).get(key)
        finite = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return value if finite else None

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


def _rows_that_fit(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """The rows whose values are numbers, texts (a NaN kept as text) or lists of numbers (probes)."""

    def fits(value: Any) -> bool:
        if isinstance(value, list):
            return all(isinstance(v, NUMBER) and not isinstance(v, bool) for v in value)
        return isinstance(value, (*NUMBER, str)) and not isinstance(value, bool)

    kept = [row for row in rows if all(fits(v) for v in row.values())]
    return kept, len(rows) - len(kept)


def load_run(path: Path) -> RunRecord:
    """A run as its files tell it; what cannot be read is named in `damage` (the report lists such runs, and
    draws none whose config or summary is unusable)."""
    problems = []
    config = read_yaml(path / CONFIG_FILE)
    if config is None:
        problems.append(f"{CONFIG_FILE} missing or unreadable")
    elif wrong := wrong_types(config, CONFIG_TYPES):
        problems.append(f"{CONFIG_FILE} holds values of the wrong type ({', '.join(wrong)})")
        config = None
    summary = read_json(path / SUMMARY_FILE)
    if summary is None:
        problems.append(f"{SUMMARY_FILE} missing or unreadable")
    elif wrong := summary_problems(summary):
        problems.append(f"{SUMMARY_FILE} holds values of the wrong type ({', '.join(wrong)})")
        summary = None
    elif config is not None and "identity" in summary and summary["identity"] != identity_digest(config):
        problems.append(
            f"{CONFIG_FILE} does not say what the run was trained with (its checkpoints do; the run's own "
            "command rewrites it from them)"
        )
        config = None
    rows, damaged_rows = read_rows(path / METRICS_FILE)
    rows, unfit = _rows_that_fit(rows)
    if damaged_rows or unfit:
        problems.append(f"{METRICS_FILE} has unreadable lines (the readable rows are used)")
    return RunRecord(path, config or {}, summary or {"status": "damaged"}, rows, "; ".join(problems) or None)


def read_overrides(path: Path) -> list[str]:
    """overrides.yaml of the run directory at `path`: its command-line overrides ([] when unreadable)."""
    try:
        value = yaml.safe_load((path / OVERRIDES_FILE).read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return []
    return [str(o) for o in value] if isinstance(value, list) else []


def find_runs(root: Path) -> list[Path]:
    """Every run directory under `root` (holding config.yaml, summary.json or metrics.jsonl), sorted, found
    in one walk that does not follow links (a link loop, or a link to elsewhere, is not walked into) and
    skips folders it cannot read."""
    names = {CONFIG_FILE, SUMMARY_FILE, METRICS_FILE}
    found = []
    for folder, subfolders, files in os.walk(root, followlinks=False):
        subfolders[:] = sorted(d for d in subfolders if d != "wandb")
        if names & set(files):
            found.append(Path(folder))
    return sorted(found)
