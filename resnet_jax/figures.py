"""The report's figures, drawn from run records only. Every line is told apart: its colour and legend name the
keys that vary across the runs drawn (depth, L2, seed, init, block, ...), and runs that did not complete are
marked.

  (a) fig6_training_curves: train (dashed) and test (solid) error against steps; plain | residual panels
  (b) error_vs_depth: final error against depth, mean +- std over seeds, one line per other variant
  (c) fig7_response_std: response std per layer (top) and sorted by magnitude (bottom), He et al. Fig. 7
  (d) grad_norm_per_layer: gradient norm per layer at initialisation (dotted) and at the end (solid)
  (e) branch_ratio_vs_l2: ||F(x)||/||x|| per block, and its mean against L2
  (f) identity_vs_l2: against L2, mean +- std over seeds: the branch ratio, the blocks' kernel norm, the error
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from resnet_jax.runs import RunRecord  # noqa: E402

KINDS = (("plain", False), ("residual", True))
# keys that tell runs apart in a figure, and how a legend names a value of each
VARIANT_KEYS: dict[str, Callable[[object], str]] = {
    "model.name": lambda v: f"{v}",
    "model.depth": lambda v: f"{v}-layer",
    "model.block": lambda v: f"{v}",
    "model.preact": lambda v: "pre-act" if v else "post-act",
    "model.zero_init_residual": lambda v: "zero-init" if v else "default init",
    "model.init": lambda v: f"{v} init",
    "optim.l2": lambda v: f"L2={v}",
    "optim.l2_scope": lambda v: f"L2 on {v}",
    "seed": lambda v: f"seed {v}",
}


def close_all() -> None:
    """Let go of every open figure (one whose drawing failed halfway included)."""
    plt.close("all")


def varying(runs: Iterable[RunRecord], keys: Iterable[str] = VARIANT_KEYS) -> list[str]:
    """The keys whose values differ across `runs`."""
    runs = list(runs)
    return [key for key in keys if len({repr(r.get(key)) for r in runs}) > 1]


def label(run: RunRecord, keys: list[str]) -> str:
    """A run's name in a legend: the values of `keys` (at least its depth), and its status if unfinished."""
    shown = keys or ["model.depth"]
    mark = "" if run.status == "completed" else f" [{run.status}]"
    return ", ".join(VARIANT_KEYS[k](run.get(k)) for k in shown) + mark


def colours(names: Iterable[str]) -> dict[str, object]:
    """One distinct colour per name (qualitative up to 20, then a continuous map)."""
    names = list(dict.fromkeys(names))
    cmap = plt.get_cmap(
        "tab10" if len(names) <= 10 else "tab20" if len(names) <= 20 else "viridis", max(len(names), 2)
    )
    return {name: cmap(i) for i, name in enumerate(names)}


def _legend(ax: plt.Axes, **kwargs) -> None:
    """One legend entry per label."""
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    if unique:
        ax.legend(unique.values(), unique.keys(), **kwargs)


def _save(fig: plt.Figure, axes, path: Path, ylabel: str, legend_size: int = 7) -> None:
    """Grid and legend on every panel, the y label on each row's first, then write and close the figure."""
    for ax in axes:
        ax.grid(alpha=0.3)
        _legend(ax, fontsize=legend_size)
    axes[0].set_ylabel(ylabel)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _by_kind(runs: list[RunRecord], residual: bool) -> list[RunRecord]:
    return [r for r in runs if bool(r.get("model.residual")) == residual]


def plot_training_curves(runs: list[RunRecord], path: Path) -> None:
    """(a) He et al. 2015, Fig. 6."""
    keys = varying(runs)
    names = {id(r): label(r, keys) for r in runs}
    colour = colours(names.values())
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharex=True, sharey=True)
    for ax, (title, residual) in zip(axes, KINDS, strict=True):
        for run in _by_kind(runs, residual):
            name = names[id(run)]
            ax.plot(*run.series("train/error"), "--", color=colour[name], linewidth=1)
            ax.plot(
                *run.series("test/error"),
                "-",
                color=colour[name],
                linewidth=2,
                label=name,
                marker="x" if run.status != "completed" else None,
            )
        ax.set_title(f"{title} (dashed: train, solid: test)")
        ax.set_xlabel("step")
    _save(fig, axes, path, "error (%)")


def plot_error_vs_depth(table: list[dict[str, object]], path: Path) -> None:
    """(b) final error against depth, mean +- std over seeds; one line per kind and other variant."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    lines: dict[tuple, list[dict]] = defaultdict(list)
    for row in table:
        lines[(row["residual"], row["variant"])].append(row)
    for ax, split in zip(axes, ("train", "test"), strict=True):
        for (residual, variant), rows in sorted(
            lines.items(), key=lambda item: (item[0][0], str(item[0][1]))
        ):
            rows = sorted((r for r in rows if r[f"{split}/error_mean"] is not None), key=lambda r: r["depth"])
            if rows:
                kind = "residual" if residual else "plain"
                ax.errorbar(
                    [r["depth"] for r in rows],
                    [r[f"{split}/error_mean"] for r in rows],
                    yerr=[r[f"{split}/error_std"] for r in rows],
                    marker="o",
                    capsize=3,
                    linestyle="-" if residual else "--",
                    label=f"{kind}, {variant}" if variant else kind,
                )
        ax.set_title(f"final {split} error")
        ax.set_xlabel("depth (weighted layers)")
    _save(fig, axes, path, "error (%)")


def plot_per_layer(runs: list[RunRecord], key: str, which: tuple[str, ...], path: Path, ylabel: str) -> None:
    """(d) a per-layer probe on a log scale: one row per variant other than depth and seed (e.g. init, L2),
    plain | residual columns, one line per depth and moment, the geometric mean over seeds (readable where a
    sweep has dozens of runs; zeros, a signal that died, are left out of the log scale)."""
    keys = varying(runs)
    facet_keys = [k for k in keys if k not in ("model.depth", "seed")]
    facets: dict[str, list[RunRecord]] = defaultdict(list)
    for run in runs:
        facets[", ".join(VARIANT_KEYS[k](run.get(k)) for k in facet_keys)].append(run)
    seeds = " (geometric mean over seeds)" if "seed" in keys else ""
    fig, axes = plt.subplots(len(facets), 2, figsize=(11, 3.6 * len(facets)), sharey=True, squeeze=False)
    styles, moments = {"first": ":", "last": "-"}, {"first": "init", "last": "end"}
    for row, (facet, members) in zip(axes, facets.items(), strict=True):
        for ax, (title, residual) in zip(row, KINDS, strict=True):
            lines: dict[tuple[str, str], list[list[float]]] = defaultdict(list)
            for run in _by_kind(members, residual):
                for moment in which:
                    if values := run.probe(key, moment):
                        lines[(label(run, ["model.depth"]), moment)].append(values)
            colour = colours(name for name, _ in lines)
            for (name, moment), series in lines.items():
                by_layer = zip(*series, strict=True)  # the seeds of one depth: as many layers each
                points = [
                    (i, statistics.geometric_mean(p))
                    for i, layer in enumerate(by_layer, start=1)
                    if (p := [v for v in layer if v > 0])
                ]
                if points:
                    ax.plot(
                        *zip(*points, strict=True),
                        styles[moment],
                        color=colour[name],
                        label=f"{name}, {moments[moment]}",
                    )
            ax.set_title(", ".join(filter(None, [title, facet])) + seeds, fontsize=9)
            ax.set_xlabel("layer index (input side first)")
            ax.set_yscale("log")
    _save(fig, axes.ravel(), path, ylabel)


def plot_response_std(runs: list[RunRecord], path: Path) -> None:
    """(c) He et al. 2015, Fig. 7: each layer's response std at the end, by layer (top) and sorted by
    magnitude (bottom), plain | residual."""
    keys = varying(runs)
    names = {id(r): label(r, keys) for r in runs}
    colour = colours(names.values())
    fig, grid = plt.subplots(2, 2, figsize=(11, 7), sharey="row")
    for column, (title, residual) in enumerate(KINDS):
        for run in _by_kind(runs, residual):
            values = run.probe("response_std")
            if not values:
                continue
            name = names[id(run)]
            grid[0][column].plot(range(1, len(values) + 1), values, color=colour[name], label=name)
            ranked = sorted(values, reverse=True)
            grid[1][column].plot(range(1, len(ranked) + 1), ranked, color=colour[name], label=name)
        grid[0][column].set_title(f"{title}: by layer")
        grid[0][column].set_xlabel("layer index (input side first)")
        grid[1][column].set_title(f"{title}: sorted by magnitude")
        grid[1][column].set_xlabel("rank")
    grid[1][0].set_ylabel("response std")
    _save(fig, [*grid[0], *grid[1]], path, "response std")


def plot_branch_ratio(runs: list[RunRecord], path: Path) -> None:
    """(e) ||F(x)||/||x|| per block at the end of training (residual nets), and its mean against L2."""
    residual = [r for r in runs if r.get("model.residual") and r.probe("branch_ratio")]
    keys = varying(residual)
    names = {id(r): label(r, keys) for r in residual}
    colour = colours(names.values())
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for run in residual:
        values = run.probe("branch_ratio")
        name = names[id(run)]
        axes[0].plot(range(1, len(values) + 1), values, color=colour[name], label=name, alpha=0.85)
        axes[1].scatter([run.get("optim.l2")], [statistics.fmean(values)], color=colour[name], label=name)
    axes[0].set_title("residual-branch ratio per block (end)")
    axes[0].set_xlabel("block index")
    axes[1].set_title("mean ratio over blocks against L2")
    axes[1].set_xlabel("optim.l2")
    l2s = [r.get("optim.l2") for r in residual]
    if l2s and min(l2s) > 0:
        axes[1].set_xscale("log")
    _save(fig, axes, path, "||F(x)|| / ||x||")


def _block_kernel_norm(run: RunRecord) -> float | None:
    """Mean ||W|| of the block layers at the end (the weight-norm probe less the first and last layer)."""
    norms = run.probe("weight_norm")
    return statistics.fmean(norms[1:-1]) if norms and len(norms) > 2 else None


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def plot_identity_vs_l2(runs: list[RunRecord], path: Path) -> None:
    """(f) against L2 (mean +- std over seeds, one line per other variant): the mean branch ratio, the block
    layers' mean kernel norm, and the final train and test error. L2 = 0 sits at the left edge."""
    measures = {
        "mean ||F(x)|| / ||x|| (end)": lambda r: statistics.fmean(r.probe("branch_ratio") or [float("nan")]),
        "mean block ||W|| (end)": _block_kernel_norm,
        "final train error (%)": lambda r: r.metric("train/error"),
        "final test error (%)": lambda r: r.metric("test/error"),
    }
    others = [k for k in varying(runs) if k not in ("optim.l2", "seed")]
    groups: dict[str, list[RunRecord]] = defaultdict(list)
    for run in runs:
        kind = "residual" if run.get("model.residual") else "plain"
        groups[", ".join([kind, *(VARIANT_KEYS[k](run.get(k)) for k in others)])].append(run)
    l2s = sorted({r.get("optim.l2") for r in runs})
    positive = [v for v in l2s if v]
    zero_at = min(positive) / 10 if positive else 1.0  # where L2 = 0 is drawn on the log axis
    fig, axes = plt.subplots(1, len(measures), figsize=(16, 4))
    colour = colours(groups)
    for ax, (title, measure) in zip(axes, measures.items(), strict=True):
        for name, members in groups.items():
            points = []
            for l2 in l2s:
                values = [
                    v for v in (measure(r) for r in members if r.get("optim.l2") == l2) if v is not None
                ]
                if values and all(v == v for v in values):  # skip NaN (no branch ratio for plain nets)
                    points.append((l2 or zero_at, *_mean_std(values)))
            if points:
                xs, ys, errs = zip(*points, strict=True)
                ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, color=colour[name], label=name)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(f"optim.l2 (0 drawn at {zero_at:g})")
        if positive:
            ax.set_xscale("log")
    _save(fig, axes, path, "")


def plot_objective(points: list[tuple[float, float]], key: str, metric: str, path: Path) -> None:
    """A search's objective against one hyperparameter, one point per completed trial (log axis for a
    positive range wider than 10x, as searched ranges usually are)."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    xs = [x for x, _ in points]
    ax.scatter(xs, [y for _, y in points], s=18)
    if xs and min(xs) > 0 and max(xs) > 10 * min(xs):
        ax.set_xscale("log")
    ax.set_xlabel(key)
    ax.set_title(f"{metric} against {key}")
    _save(fig, [ax], path, metric)
