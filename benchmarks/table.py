"""The benchmark's closing table (`bench.py`): each measurement beside PyTorch's and the ratio."""

from __future__ import annotations


def summary_table(rows: list[dict]) -> list[str]:
    """The measurements (`rows`, as `bench.py` emits them) as a Markdown table: ours, PyTorch's where it ran,
    and the ratio."""
    lines = ["| measurement | resnet_jax | PyTorch | ratio |", "| --- | --- | --- | --- |"]

    def find(**match) -> list[dict]:
        return [r for r in rows if all(r.get(k) == v for k, v in match.items())]

    for r in find(bench="cifar_train"):
        ref = find(framework="torch", depth=r["depth"], channels_last=True, image=r["image"])
        ratio = find(bench="ratio_cifar", depth=r["depth"], image=r["image"])
        torch, times = (ref[-1]["images_per_s"] if ref else "-"), (ratio[-1]["ratio"] if ratio else "-")
        channels, height, width = r["image"]
        name = f"ResNet-{r['depth']} training, batch {r['batch']}, {height}×{width}×{channels} (images/s)"
        lines.append(f"| {name} | {r['images_per_s']} | {torch} | {times} |")
    for r in find(bench="mlp_train"):
        ratio = find(bench="ratio_mlp", depth=r["depth"])
        torch, times = (ratio[-1]["torch_median_steps_per_s"], ratio[-1]["ratio"]) if ratio else ("-", "-")
        name = f"MLP depth {r['depth']}, width 64, batch 128 (steps/s; PyTorch: median of 3)"
        lines.append(f"| {name} | {r['steps_per_s']} | {torch} | {times} |")
    for r in find(bench="mlp_train_scanned"):
        lines.append(f"| MLP depth {r['depth']}, XLA's scanned blocks (steps/s) | {r['steps_per_s']} | | |")
    for r in find(bench="cifar_scan") + find(bench="mlp_chunk"):
        rate = r.get("images_per_s", r.get("steps_per_s"))
        name = f"ResNet-20 {r['variant']}" if "variant" in r else f"MLP depth {r['depth']}"
        lines.append(f"| {name}, K = {r['steps_per_call']} steps per call | {rate} | | |")
    for r in find(bench="compile"):
        lines.append(f"| compile time, depth {r['depth']} (s) | {r['compile_s']} | | |")
    for r in find(bench="memory"):
        lines.append(f"| temporary memory, depth {r['depth']}, {r['variant']} (GiB) | {r['temp_gib']} | | |")
    for r in find(bench="probe_overhead"):
        lines.append(f"| probe overhead, {r['model']} depth {r['depth']} (%) | {r['overhead_pct']} | | |")
    for r in find(bench="population_mlp") + find(bench="population_resnet"):
        what = "member-steps/s" if "member_steps_per_s" in r else "member-images/s"
        rate = r.get("member_steps_per_s", r.get("member_images_per_s"))
        name = f"{'MLP depth 10' if r['bench'] == 'population_mlp' else 'ResNet-20'}, {r['variant']} ({what})"
        lines.append(f"| {name}, vs one run | {rate} | | {r['vs_single']} |")
    for r in find(bench="population_sweep"):
        lines.append(
            f"| sweep of 16 MLP runs, {r['steps']} steps: basic / population launcher (s) | "
            f"{r['basic_s']} / {r['population_s']} | | {r['speedup']} |"
        )
    return lines
