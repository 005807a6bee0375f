"""The report's view of a search (an Optuna sweep, or any sweep whose runs name `optimized_metric`): its runs
ranked by their objective, the objective against each hyperparameter the runs differ in, and the command
line that reruns the best one."""

from __future__ import annotations

import math
import shlex
from pathlib import Path

from resnet_jax import figures, objective
from resnet_jax.identity import flat
from resnet_jax.runs import RunRecord, read_overrides

OPTUNA_RESULTS = "optimization_results.yaml"  # what Hydra's Optuna sweeper writes into the sweep directory


def is_search(root: Path, runs: list[RunRecord]) -> bool:
    return (root / OPTUNA_RESULTS).exists() or any(r.get("optimized_metric") for r in runs)


def objective_of(run: RunRecord) -> tuple[str, float | None]:
    """The run's metric and its objective (None when the run did not complete)."""
    metric = objective.chosen(run.get("optimized_metric"), run.get("data.validation", 0))
    return metric, objective.of_summary(metric, run.summary)


def searched(runs: list[RunRecord]) -> list[str]:
    """The numeric config keys whose values differ across the runs (what the search varied)."""
    configs = [flat(r.config) for r in runs]
    keys = sorted(set().union(*configs)) if configs else []
    numeric = [k for k in keys if all(isinstance(c.get(k), (int, float)) for c in configs)]
    return [k for k in numeric if len({c[k] for c in configs}) > 1 and not isinstance(configs[0][k], bool)]


def command_line(run: RunRecord) -> str:
    """The command that reruns `run`, from its recorded overrides."""
    return " ".join(["python -m resnet_jax.train", *(shlex.quote(o) for o in read_overrides(run.path))])


def section(root: Path, runs: list[RunRecord], folder: Path) -> list[str]:
    """report.md's lines for a search, and its figures (`objective_vs_<key>.png`) drawn into `folder`."""
    scored = [(run, *objective_of(run)) for run in runs]
    ranked = sorted(scored, key=lambda s: (s[2] is None, s[2] if s[2] is not None else math.inf))
    keys = searched(runs)
    metric = ranked[0][1] if ranked else "test/error"
    lines = [f"## Search: runs ranked by the objective ({metric}, lower is better)", ""]
    lines += ["| rank | run | objective | " + " | ".join(keys) + " |", "|" + " --- |" * (3 + len(keys))]
    for rank, (run, _, value) in enumerate(ranked, start=1):
        shown = f"{value:.4g}" if value is not None else f"— ({run.status})"
        cells = [str(rank), f"`{run.path.relative_to(root) if run.path.is_relative_to(root) else run.path}`"]
        lines.append("| " + " | ".join([*cells, shown, *(f"{run.get(k):.4g}" for k in keys)]) + " |")
    best = next((s for s in ranked if s[2] is not None), None)
    lines += ["", "The best run again:" if best else "No run completed.", ""]
    if best:
        lines += ["```bash", command_line(best[0]), "```", ""]
    for key in keys:
        points = [(run.get(key), value) for run, _, value in scored if value is not None]
        figures.plot_objective(points, key, metric, folder / f"objective_vs_{key}.png")
        lines += [f"![{metric} against {key}](figures/objective_vs_{key}.png)", ""]
    return lines
