"""`python -m resnet_jax.report SWEEP_DIR [RUN_DIR ...]`: figures and tables from run directories only.

Writes into SWEEP_DIR: `report.md` (tables, damaged runs, the figures of `resnet_jax.figures`), `runs.csv`
(one row per run) and `figures/*.png`. Failed, diverged or unfinished runs are included and marked; damaged
ones are listed with the reason.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from resnet_jax import figures
from resnet_jax.runs import RunRecord, find_runs, load_run

CSV_COLUMNS = (
    "run", "model", "depth", "residual", "l2", "seed", "status", "step", "params",
    "final_train_error", "final_test_error", "best_test_error", "steps_per_s",
)  # fmt: skip


def _final(run: RunRecord, key: str) -> float | None:
    return run.summary.get("final", {}).get(key)


def _fmt(value: float | None, digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _relative(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def csv_rows(runs: list[RunRecord], root: Path) -> list[dict[str, object]]:
    rows = []
    for run in runs:
        rows.append({
            "run": _relative(run.path, root),
            "model": run.get("model.name"), "depth": run.get("model.depth"),
            "residual": run.get("model.residual"), "l2": run.get("optim.l2"), "seed": run.get("seed"),
            "status": run.status, "step": run.summary.get("step"), "params": run.summary.get("params"),
            "final_train_error": _final(run, "train/error"), "final_test_error": _final(run, "test/error"),
            "best_test_error": run.summary.get("best", {}).get("test/error"),
            "steps_per_s": run.summary.get("steps_per_s"),
        })  # fmt: skip
    return rows


def aggregate(runs: list[RunRecord]) -> list[dict[str, object]]:
    """Mean and std over seeds of the final errors, per configuration: model, residual, depth, L2 and any
    other key that varies in the sweep (its `variant`, e.g. `L2=0.001, pre-act`)."""
    others = [k for k in figures.varying(runs) if k not in ("model.name", "model.depth", "seed")]
    groups: dict[tuple, list[RunRecord]] = defaultdict(list)
    for run in runs:
        variant = ", ".join(figures.VARIANT_KEYS[k](run.get(k)) for k in others)
        key = (run.get("model.name"), bool(run.get("model.residual")), run.get("model.depth"),
               run.get("optim.l2"), variant)  # fmt: skip
        groups[key].append(run)

    def order(item: tuple[tuple, list]) -> tuple:
        model, residual, depth, l2, variant = item[0]
        return (str(model), residual, depth if isinstance(depth, int) else -1, l2 or 0.0, variant)

    out = []
    for (model, residual, depth, l2, variant), members in sorted(groups.items(), key=order):
        row: dict[str, object] = {
            "model": model,
            "residual": residual,
            "depth": depth,
            "l2": l2,
            "variant": variant,
            "runs": len(members),
            "not_completed": sum(r.status != "completed" for r in members),
        }
        for key in ("train/error", "test/error"):
            values = [v for v in (_final(r, key) for r in members) if v is not None]
            row[f"{key}_mean"] = statistics.fmean(values) if values else None
            row[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0 if values else None
        out.append(row)
    return out


def markdown_table(rows: list[dict[str, object]], columns: list[str]) -> str:
    """Errors with two decimals; other numbers (L2, ...) as written."""

    def cell(column: str, value: object) -> str:
        if value is None:
            return ""
        if isinstance(value, float):
            return _fmt(value) if "error" in column else f"{value:g}"
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(c, row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


FIGURES = {
    "fig6_training_curves.png": "(a) Training curves (Fig. 6): dashed train error, solid test error",
    "error_vs_depth.png": "(b) Final error against depth, mean ± std over seeds",
    "fig7_response_std.png": "(c) Layer response std after BN, before the nonlinearity (Fig. 7): by layer, "
    "and sorted by magnitude",
    "grad_norm_per_layer.png": "(d) Gradient norm per layer at init (dotted) and at the end (solid)",
    "branch_ratio_vs_l2.png": "(e) Residual-branch ratio ||F(x)||/||x|| per block, by L2",
    "identity_vs_l2.png": "(f) Against L2: branch ratio, block kernel norm, train and test error "
    "(mean ± std)",
}


def build_report(root: Path, extra: list[Path] = ()) -> Path:
    """Read every run under `root` (and `extra`), write figures, tables and report.md into `root`."""
    paths = sorted(set(find_runs(root)) | {p.resolve() for p in extra})
    every = [load_run(p) for p in paths]
    if not every:
        raise SystemExit(f"error: no run directories (with summary.json or metrics.jsonl) under {root}")
    damaged = [r for r in every if r.damage]
    # a run whose config or summary cannot be read has nothing to plot or aggregate: listed, not drawn
    runs = [r for r in every if r.config and "status" in r.summary and r.summary["status"] != "damaged"]
    folder = root / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    rows, table = csv_rows(every, root), aggregate(runs)
    with (root / "runs.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    figures.plot_training_curves(runs, folder / "fig6_training_curves.png")
    figures.plot_error_vs_depth(table, folder / "error_vs_depth.png")
    figures.plot_response_std(runs, folder / "fig7_response_std.png")
    figures.plot_per_layer(
        runs, "grad_norm", ("first", "last"), folder / "grad_norm_per_layer.png", "||dL/dW||"
    )
    figures.plot_branch_ratio(runs, folder / "branch_ratio_vs_l2.png")
    figures.plot_identity_vs_l2(runs, folder / "identity_vs_l2.png")
    summary_columns = [
        "model",
        "residual",
        "depth",
        "l2",
        *(
            ["variant"]
            if any(
                r["variant"] and not r["variant"].startswith("L2=") or ", " in str(r["variant"])
                for r in table
            )
            else []
        ),  # fmt: skip
        "runs",
        "not_completed",
        "train/error_mean",
        "train/error_std",
        "test/error_mean",
        "test/error_std",
    ]
    run_columns = ["run", "status", "step", "final_train_error", "final_test_error", "best_test_error"]
    text = [
        f"# Report: {root.name}",
        "",
        f"{len(every)} runs; {sum(r.status != 'completed' for r in every)} not completed (marked in "
        f"figures), {len(damaged)} damaged (listed below).",
        "Errors in %, final values at the last logged step.",
        "",
        "## Final error per configuration (mean and std over seeds)",
        "",
        markdown_table(table, summary_columns),
        "",
        "## Runs",
        "",
        markdown_table(rows, run_columns),
        "",
        "## Damaged runs",
        "",
        *([f"- `{_relative(r.path, root)}`: {r.damage}" for r in damaged] or ["none"]),
        "",
        "## Figures",
        "",
    ]
    for name, caption in FIGURES.items():
        text += [f"### {caption}", "", f"![{caption}](figures/{name})", ""]
    report = root / "report.md"
    report.write_text("\n".join(text))
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="resnet-jax-report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("sweep_dir", type=Path, help="a sweep directory (e.g. multirun/degradation)")
    parser.add_argument("run_dirs", type=Path, nargs="*", help="more run directories to include")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        sys.exit(f"error: sweep directory {args.sweep_dir} does not exist")
    print(build_report(args.sweep_dir.resolve(), args.run_dirs))


if __name__ == "__main__":
    main()
