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
from typing import Any

from resnet_jax import figures, report_wandb, search_report
from resnet_jax.runs import RunRecord, find_runs, load_run

CSV_COLUMNS = (
    "run",
    "model",
    "depth",
    "residual",
    "l2",
    "seed",
    "status",
    "step",
    "params",
    "final_train_error",
    "final_test_error",
    "final_val_error",
    "best_test_error",
    "steps_per_s",
)


def _fmt(value: float | None, digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _relative(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def csv_rows(runs: list[RunRecord], root: Path) -> list[dict[str, object]]:
    rows = []
    for run in runs:
        rows.append(
            {
                "run": _relative(run.path, root),
                "model": run.get("model.name"),
                "depth": run.get("model.depth"),
                "residual": run.get("model.residual"),
                "l2": run.get("optim.l2"),
                "seed": run.get("seed"),
                "status": run.status,
                "step": run.summary.get("step"),
                "params": run.summary.get("params"),
                "final_train_error": run.metric("train/error"),
                "final_test_error": run.metric("test/error"),
                "final_val_error": run.metric("val/error"),
                "best_test_error": run.metric("test/error", "best"),
                "steps_per_s": run.summary.get("steps_per_s"),
            }
        )
    return rows


def aggregate(runs: list[RunRecord]) -> list[dict[str, object]]:
    """Mean and std over seeds of the final errors, per configuration: model, residual, depth, L2 and any
    other key that varies in the sweep (its `variant`, e.g. `L2=0.001, pre-act`)."""
    others = [k for k in figures.varying(runs) if k not in ("model.name", "model.depth", "seed")]
    groups: dict[tuple, list[RunRecord]] = defaultdict(list)
    for run in runs:
        variant = ", ".join(figures.VARIANT_KEYS[k](run.get(k)) for k in others)
        key = (
            run.get("model.name"),
            bool(run.get("model.residual")),
            run.get("model.depth"),
            run.get("optim.l2"),
            variant,
        )
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
            values = [v for v in (r.metric(key) for r in members) if v is not None]
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


def draw_figures(runs: list[RunRecord], table: list[dict[str, object]], folder: Path) -> list[str]:
    """Every figure of `FIGURES` that can be drawn from these runs; one line for each that could not."""
    drawers = {
        "fig6_training_curves.png": lambda path: figures.plot_training_curves(runs, path),
        "error_vs_depth.png": lambda path: figures.plot_error_vs_depth(table, path),
        "fig7_response_std.png": lambda path: figures.plot_response_std(runs, path),
        "grad_norm_per_layer.png": lambda path: figures.plot_per_layer(
            runs, "grad_norm", ("first", "last"), path, "||dL/dW||"
        ),
        "branch_ratio_vs_l2.png": lambda path: figures.plot_branch_ratio(runs, path),
        "identity_vs_l2.png": lambda path: figures.plot_identity_vs_l2(runs, path),
    }
    failed = []
    for name, draw in drawers.items():
        try:
            draw(folder / name)
        except OSError:
            raise  # the output cannot be written: said once, by `main`
        except Exception as exc:  # a figure the runs' values cannot make; the rest of the report stands
            figures.close_all()
            failed.append(f"`figures/{name}` not drawn: {type(exc).__name__}: {exc}")
    return failed


def build_report(
    root: Path, extra: list[Path] = (), output: Path | None = None, to_wandb: bool = False
) -> Path:
    """Read every run under `root` (and `extra`), write figures, tables and report.md into `output` (by
    default `root`); `to_wandb`: log the figures and the runs table to W&B too (`resnet_jax.report_wandb`)."""
    output = output or root
    paths = sorted(set(find_runs(root)) | {p.resolve() for p in extra})
    every = [load_run(p) for p in paths]
    if not every:
        raise SystemExit(f"error: no run directories (with summary.json or metrics.jsonl) under {root}")
    damaged = [r for r in every if r.damage]
    # a run whose config or summary cannot be read has nothing to plot or aggregate: listed, not drawn
    runs = [r for r in every if r.status != "damaged"]
    folder = output / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    rows, table = csv_rows(every, root), aggregate(runs)
    with (output / "runs.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    not_drawn = draw_figures(runs, table, folder)
    search = search_report.section(root, runs, folder) if search_report.is_search(root, runs) else []
    report = output / "report.md"
    report.write_text(report_text(root, every, damaged, table, rows, not_drawn, search))
    if to_wandb:
        report_wandb.log_report(output, runs, rows, folder)
    return report


def summary_columns(table: list[dict[str, Any]]) -> list[str]:
    """The per-configuration table's columns: `variant` only where a configuration differs in more than L2."""
    varies = any(
        r["variant"] and not r["variant"].startswith("L2=") or ", " in str(r["variant"]) for r in table
    )
    return [
        "model",
        "residual",
        "depth",
        "l2",
        *(["variant"] if varies else []),
        "runs",
        "not_completed",
        "train/error_mean",
        "train/error_std",
        "test/error_mean",
        "test/error_std",
    ]


def report_text(
    root: Path,
    every: list[RunRecord],
    damaged: list[RunRecord],
    table: list[dict[str, Any]],
    rows: list[dict[str, Any]],
    not_drawn: list[str],
    search: list[str],
) -> str:
    """report.md: a search's ranking (when the sweep is one), the tables, the damaged runs, the figures."""
    run_columns = ["run", "status", "step", "final_train_error", "final_test_error", "best_test_error"]
    text = [
        f"# Report: {root.name}",
        "",
        f"{len(every)} runs; {sum(r.status != 'completed' for r in every)} not completed (marked in "
        f"figures), {len(damaged)} damaged (listed below).",
        "Errors in %, final values at the last logged step.",
        "",
        *search,
        "## Final error per configuration (mean and std over seeds)",
        "",
        markdown_table(table, summary_columns(table)),
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
        *[f"- {line}" for line in not_drawn],
        *([""] if not_drawn else []),
    ]
    for name, caption in FIGURES.items():
        text += [f"### {caption}", "", f"![{caption}](figures/{name})", ""]
    return "\n".join(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="resnet-jax-report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("sweep_dir", type=Path, help="a sweep directory (e.g. multirun/degradation)")
    parser.add_argument("run_dirs", type=Path, nargs="*", help="more run directories to include")
    parser.add_argument("--output", type=Path, help="where to write the report (default: SWEEP_DIR)")
    parser.add_argument(
        "--wandb", action="store_true", help="log the figures and the runs table to W&B, in the sweep's group"
    )
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        sys.exit(f"error: sweep directory {args.sweep_dir} does not exist")
    output = (args.output or args.sweep_dir).resolve()
    try:
        print(build_report(args.sweep_dir.resolve(), args.run_dirs, output, to_wandb=args.wandb))
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        sys.exit(
            f"error: cannot write the report into {output} ({exc.strerror or exc}{where}); write it "
            "elsewhere with --output DIR"
        )


if __name__ == "__main__":
    main()
