"""`python -m resnet_jax.report SWEEP_DIR [RUN_DIR ...]`: figures and tables from run directories only.

Writes into SWEEP_DIR: `report.md` (tables + the five figures), `runs.csv` (one row per run) and
`figures/*.png`:
  (a) fig6_training_curves: train error (dashed) and test error (solid) against steps, one panel for
      plain and one for residual nets (same axes), one line per depth (He et al. 2015, Fig. 6);
  (b) error_vs_depth: final train/test error against depth, plain vs residual, mean +- std over seeds;
  (c) fig7_response_std: response std per layer, plain vs residual (He et al. 2015, Fig. 7);
  (d) grad_norm_per_layer: gradient norm per layer at initialisation and at the end;
  (e) branch_ratio_vs_l2: residual-branch ratio ||F(x)||/||x|| per block, one line per L2.
Failed, diverged or unfinished runs are included and marked.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from resnet_jax.runs import RunRecord, find_runs, load_run  # noqa: E402

CSV_COLUMNS = (
    "run", "model", "depth", "residual", "l2", "seed", "status", "step", "params",
    "final_train_error", "final_test_error", "best_test_error", "steps_per_s",
)  # fmt: skip
KINDS = (("plain", False), ("residual", True))


def _final(run: RunRecord, key: str) -> float | None:
    return run.summary.get("final", {}).get(key)


def _fmt(value: float | None, digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _mark(run: RunRecord) -> str:
    return "" if run.status == "completed" else f" [{run.status}]"


def _depth_colors(runs: list[RunRecord]) -> dict[int, str]:
    depths = sorted({run.get("model.depth") for run in runs})
    cmap = plt.get_cmap("viridis", max(len(depths), 2))
    return {d: cmap(i) for i, d in enumerate(depths)}


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
    """Mean and std over seeds of the final errors, per (model, residual, depth, l2)."""
    groups: dict[tuple, list[RunRecord]] = defaultdict(list)
    for run in runs:
        key = (
            run.get("model.name"),
            bool(run.get("model.residual")),
            run.get("model.depth"),
            run.get("optim.l2"),
        )
        groups[key].append(run)

    def order(item: tuple[tuple, list]) -> tuple:
        model, residual, depth, l2 = item[0]
        return (str(model), residual, depth if isinstance(depth, int) else -1, l2 or 0.0)

    out = []
    for (model, residual, depth, l2), members in sorted(groups.items(), key=order):
        row: dict[str, object] = {
            "model": model,
            "residual": residual,
            "depth": depth,
            "l2": l2,
            "runs": len(members),
            "not_completed": sum(r.status != "completed" for r in members),
        }
        for key in ("train/error", "test/error"):
            values = [v for v in (_final(r, key) for r in members) if v is not None]
            row[f"{key}_mean"] = statistics.fmean(values) if values else None
            row[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0 if values else None
        out.append(row)
    return out


def _legend(ax: plt.Axes, **kwargs) -> None:
    """One legend entry per label (seeds of one configuration share a label)."""
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    if unique:
        ax.legend(unique.values(), unique.keys(), **kwargs)


def _save(fig: plt.Figure, axes, path: Path, ylabel: str, legend_size: int = 8) -> None:
    """Grid and legend on every panel, the y label on the first, then write and close the figure."""
    for ax in axes:
        ax.grid(alpha=0.3)
        _legend(ax, fontsize=legend_size)
    axes[0].set_ylabel(ylabel)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_training_curves(runs: list[RunRecord], path: Path) -> None:
    """(a) He et al. 2015, Fig. 6: dashed train error, solid test error, per depth; plain | residual."""
    colors = _depth_colors(runs)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharex=True, sharey=True)
    for ax, (title, residual) in zip(axes, KINDS, strict=True):
        for run in (r for r in runs if bool(r.get("model.residual")) == residual):
            color = colors[run.get("model.depth")]
            label = f"{run.get('model.depth')}-layer{_mark(run)}"
            steps, train = run.series("train/error")
            ax.plot(steps, train, "--", color=color, linewidth=1)
            steps, test = run.series("test/error")
            ax.plot(
                steps,
                test,
                "-",
                color=color,
                linewidth=2,
                label=label,
                marker="x" if run.status != "completed" else None,
            )
        ax.set_title(f"{title} (dashed: train, solid: test)")
        ax.set_xlabel("step")
    _save(fig, axes, path, "error (%)")


def plot_error_vs_depth(table: list[dict[str, object]], path: Path) -> None:
    """(b) final error against depth, plain vs residual, mean +- std over seeds."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, split in zip(axes, ("train", "test"), strict=True):
        for title, residual in KINDS:
            for l2 in sorted({r["l2"] for r in table if r["residual"] == residual}, key=lambda v: v or 0.0):
                rows = sorted(
                    (
                        r
                        for r in table
                        if r["residual"] == residual
                        and r["l2"] == l2
                        and r[f"{split}/error_mean"] is not None
                    ),
                    key=lambda r: r["depth"],
                )
                if rows:
                    ax.errorbar(
                        [r["depth"] for r in rows],
                        [r[f"{split}/error_mean"] for r in rows],
                        yerr=[r[f"{split}/error_std"] for r in rows],
                        marker="o",
                        capsize=3,
                        linestyle="--" if not residual else "-",
                        label=f"{title}, L2={l2}",
                    )
        ax.set_title(f"final {split} error")
        ax.set_xlabel("depth (weighted layers)")
    _save(fig, axes, path, "error (%)")


def plot_per_layer(
    runs: list[RunRecord], key: str, which: tuple[str, ...], path: Path, ylabel: str, log: bool = False
) -> None:
    """(c)/(d) a per-layer probe, plain | residual panels, one line per run (and per `which` step)."""
    colors = _depth_colors(runs)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    styles = {"first": ":", "last": "-"}
    for ax, (title, residual) in zip(axes, KINDS, strict=True):
        for run in (r for r in runs if bool(r.get("model.residual")) == residual):
            for moment in which:
                values = run.probe(key, moment)
                if values:
                    when = {"first": "init", "last": "end"}[moment]
                    ax.plot(
                        range(1, len(values) + 1),
                        values,
                        styles[moment],
                        color=colors[run.get("model.depth")],
                        label=f"{run.get('model.depth')}-layer, {when}{_mark(run)}",
                    )
        ax.set_title(title)
        ax.set_xlabel("layer index (input side first)")
        if log:
            ax.set_yscale("log")
    _save(fig, axes, path, ylabel, legend_size=7)


def plot_branch_ratio(runs: list[RunRecord], path: Path) -> None:
    """(e) ||F(x)||/||x|| per block at the end of training, one line per L2 (residual nets)."""
    residual = [r for r in runs if r.get("model.residual") and r.probe("branch_ratio")]
    l2s = sorted({r.get("optim.l2") for r in residual})
    cmap = plt.get_cmap("plasma", max(len(l2s), 2))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for i, l2 in enumerate(l2s):
        members = [r for r in residual if r.get("optim.l2") == l2]
        for run in members:
            values = run.probe("branch_ratio")
            axes[0].plot(range(1, len(values) + 1), values, color=cmap(i), label=f"L2={l2}", alpha=0.8)
        means = [statistics.fmean(r.probe("branch_ratio")) for r in members]
        axes[1].scatter([l2] * len(means), means, color=cmap(i))
    axes[0].set_title("residual-branch ratio per block (end)")
    axes[0].set_xlabel("block index")
    axes[1].set_title("mean ratio over blocks against L2")
    axes[1].set_xlabel("optim.l2")
    if l2s and min(l2s) > 0:
        axes[1].set_xscale("log")
    _save(fig, axes, path, "||F(x)|| / ||x||")


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
    "fig7_response_std.png": "(c) Layer response std after BN, before the nonlinearity (Fig. 7)",
    "grad_norm_per_layer.png": "(d) Gradient norm per layer at init (dotted) and at the end (solid)",
    "branch_ratio_vs_l2.png": "(e) Residual-branch ratio ||F(x)||/||x|| per block, by L2",
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
    figures = root / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    rows, table = csv_rows(every, root), aggregate(runs)
    with (root / "runs.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    plot_training_curves(runs, figures / "fig6_training_curves.png")
    plot_error_vs_depth(table, figures / "error_vs_depth.png")
    plot_per_layer(runs, "response_std", ("last",), figures / "fig7_response_std.png", "response std")
    plot_per_layer(
        runs, "grad_norm", ("first", "last"), figures / "grad_norm_per_layer.png", "||dL/dW||", log=True
    )
    plot_branch_ratio(runs, figures / "branch_ratio_vs_l2.png")
    summary_columns = [
        "model",
        "residual",
        "depth",
        "l2",
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
