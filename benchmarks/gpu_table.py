"""The GPU check's table (`gpu_check.py --merge`): our rows beside the PyTorch references' from the same chip
in the same run, with the ratios, as one JSON file and a Markdown table."""

from __future__ import annotations

import json
from pathlib import Path


def ratio(ours: float | None, theirs: float | None) -> str:
    return f"{ours / theirs:.2f}" if ours and theirs else "-"


def rows_where(rows: list[dict], **match) -> list[dict]:
    return [r for r in rows if all(r.get(k) == v for k, v in match.items())]


def merged_table(rows: list[dict]) -> list[str]:
    """Our rows beside the PyTorch references' (eager, torch.compile modes) with the ratios, then the rest."""
    return [*speed_table(rows), "", *measurement_table(rows)]


def speed_table(rows: list[dict]) -> list[str]:
    """ResNet training images/s: ours, each PyTorch mode's, and the ratios."""

    def find(**match) -> list[dict]:
        return rows_where(rows, **match)

    def torch_rate(depth: int, mode: str) -> float | None:
        found = [r for r in find(framework="torch", depth=depth) if (r.get("compile") or "eager") == mode]
        return found[-1].get("images_per_s") if found else None

    modes = ["eager", *dict.fromkeys(r["compile"] for r in find(framework="torch") if r.get("compile"))]
    head = " | ".join(f"torch {m}" for m in modes)
    lines = [
        f"| ResNet, batch 128, float32 (images/s) | resnet_jax | {head} | vs eager | vs best compiled |",
        "| --- " * (len(modes) + 4) + "|",
    ]
    for r in find(bench="cifar_train"):
        theirs = {m: torch_rate(r["depth"], m) for m in modes}
        compiled = max((v for m, v in theirs.items() if m != "eager" and v), default=None)
        cells = " | ".join(str(theirs[m] or "-") for m in modes)
        ours = r["images_per_s"]
        lines.append(
            f"| ResNet-{r['depth']} | {ours} | {cells} | "
            f"{ratio(ours, theirs['eager'])} | {ratio(ours, compiled)} |"
        )
    for r in find(framework="torch", error=True):
        lines.append(
            f"| torch {r.get('compile') or 'eager'} ResNet-{r['depth']}: {r['reason']} |"
            + " |" * (len(modes) + 3)
        )
    return lines


def measurement_table(rows: list[dict]) -> list[str]:
    """Every other measurement, one row each: compile times, the recipe, precision, K, very deep nets, the
    MLP, populations, and the sections that did not run."""

    def find(**match) -> list[dict]:
        return rows_where(rows, **match)

    lines = ["| measurement | value |", "| --- | --- |"]
    for r in find(bench="cifar_train"):
        lines.append(
            f"| compile time, ResNet-{r['depth']}, K = {r['steps_per_call']} (s) | {r['compile_s']} |"
        )
    for r in find(bench="recipe"):
        lines.append(f"| he2015 recipe, ResNet-20, {r['steps']} steps (steps/s) | {r['steps_per_s']} |")
        lines.append(f"| projected 64k-step ResNet-20 (min) | {r['projected_64k_min']} |")
    for r in find(bench="recipe_projection"):
        lines.append(
            f"| projected 64k-step ResNet-{r['depth']} (min, scaled by images/s) | {r['projected_64k_min']} |"
        )
    dtypes = {r["dtype"]: r["images_per_s"] for r in find(bench="dtype")}
    for name, images in dtypes.items():
        lines.append(f"| ResNet-{find(bench='dtype')[0]['depth']} {name} (images/s) | {images} |")
    if len(dtypes) == 2:
        lines.append(f"| bfloat16 / float32 | {ratio(dtypes['bfloat16'], dtypes['float32'])} |")
    for r in find(bench="steps_per_call"):
        lines.append(
            f"| ResNet-{r['depth']}, K = {r['steps_per_call']} steps per call (images/s) "
            f"| {r['images_per_s']} |"
        )
    for r in find(bench="very_deep"):
        lines.append(
            f"| ResNet-{r['depth']} remat={r['remat']}: images/s, compile s, temporary GiB | "
            f"{r['images_per_s']}, {r['compile_s']}, {r['temp_gib']} |"
        )
    for r in find(bench="mlp_train"):
        lines.append(f"| MLP depth {r['depth']}, width 64, batch 128 (steps/s) | {r['steps_per_s']} |")
    for r in find(bench="population_resnet"):
        name = f"ResNet-{r['depth']}, batch {r['batch']}, {r['variant']}"
        lines.append(
            f"| {name}: images/s, all members (× one run) "
            f"| {r['member_images_per_s']} ({r['images_vs_single']}x) |"
        )
    for r in find(bench="population_mlp"):
        lines.append(
            f"| MLP depth {r['depth']}, {r['variant']}: steps/s, all members (× one run) "
            f"| {r['member_steps_per_s']} ({r['steps_vs_single']}x) |"
        )
    for r in find(bench="not_run") + find(bench="failed"):
        lines.append(f"| {r['bench'].replace('_', ' ')}: {r['section']} | {r['reason']} |")
    return lines


def merge(ours: Path, torch_rows: Path, table: Path, combined: Path) -> None:
    rows = json.loads(ours.read_text())
    if torch_rows.exists():
        rows += [json.loads(line) for line in torch_rows.read_text().splitlines() if line.strip()]
    combined.write_text(json.dumps(rows, indent=1))
    lines = merged_table(rows)
    table.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
