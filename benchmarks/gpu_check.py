"""The JAX half of the prepared GPU check (benchmarks/gpu_check.sh runs it): speed, compile time and memory.

    python benchmarks/gpu_check.py --output jax.json --budget-s 200           # the sizes of the GPU check
    python benchmarks/gpu_check.py --output jax.json --dry-run                 # every step at tiny sizes
    python benchmarks/gpu_check.py --merge jax.json torch.jsonl --table t.md --json all.json

Sections run in order of importance and each starts only while the budget lasts (a section left out is
recorded as such, never silently): ResNet training images/s (float32, K steps per call), the paper's recipe
through the real command line, bfloat16 against float32, K against one step per call, ResNet-1202 with and
without remat, the dense MLP, populations (`launcher=population`) beside one run. `--merge` joins our rows
with the PyTorch references' (one JSON line each, from the same chip in the same run) into one JSON file and
a Markdown table with the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import bench
import engines
import jax
import jax.numpy as jnp
import numpy as np
from gpu_table import merge

RECIPE_STEPS = 64_000  # He et al. 2015's CIFAR-10 schedule


@dataclass(frozen=True)
class Sizes:
    depths: tuple[int, ...]  # the ResNets compared with PyTorch
    very_deep: int  # ResNet-1202
    batch: int
    steps_per_call: int
    calls: int
    recipe_steps: int
    recipe_train_size: int
    mlp_depths: tuple[int, ...]
    members: int  # a population's members


FULL = Sizes((20, 56, 110), 1202, 128, 20, 5, 3000, 50_000, (10, 50), 8)
DRY = Sizes((8, 14), 20, 8, 2, 1, 20, 256, (4, 6), 2)


class Budget:
    """What is left of the check's time; a section says what it needs at the GPU's sizes, and a dry run's tiny
    sizes need a tenth of that (so that the dry run reaches every section)."""

    def __init__(self, seconds: float, scale: float = 1.0):
        self.end, self.scale = time.monotonic() + seconds, scale

    def allows(self, section: str, needs_s: float) -> bool:
        left = self.end - time.monotonic()
        needs_s *= self.scale
        if left < needs_s:
            bench.emit(
                bench="not_run", section=section, reason=f"budget: {left:.0f} s left, needs ~{needs_s:.0f}"
            )
            return False
        return True


def engine_for(depth: int, batch: int, *overrides: str, dtype=jnp.float32) -> bench.Engine:
    cfg = bench.config(f"model.depth={depth}", *overrides)
    return engines.make_engine(cfg, (32, 32, 3), batch, dtype=dtype)


def timed_rate(engine: bench.Engine, sizes: Sizes, steps_per_call: int) -> tuple[float, float]:
    """(images/s, compile seconds): the first call's time less one steady call's (a call of K steps)."""
    calls = sizes.calls if steps_per_call > 1 else sizes.calls * sizes.steps_per_call
    rate, first = engines.train_rate(engine, sizes.batch, steps_per_call=steps_per_call, calls=calls)
    return rate * sizes.batch, max(first - steps_per_call / rate, 0.0)


def resnets(sizes: Sizes, budget: Budget) -> None:
    for depth in sizes.depths:
        if not budget.allows(f"resnet{depth}", 20 + depth / 2):
            return
        images, compile_s = timed_rate(engine_for(depth, sizes.batch), sizes, sizes.steps_per_call)
        bench.emit(
            bench="cifar_train",
            depth=depth,
            batch=sizes.batch,
            dtype="float32",
            steps_per_call=sizes.steps_per_call,
            images_per_s=round(images, 1),
            compile_s=round(compile_s, 1),
        )


def recipe(sizes: Sizes, budget: Budget) -> None:
    """`experiment=he2015_cifar10` through the command line, on CIFAR-shaped synthetic data (augmented on
    device; the schedule's boundaries at the same fractions of the shorter run); the full 64k-step runs
    projected from its steady speed and, for the deeper nets, from each depth's measured rate."""
    if not budget.allows("recipe", 60):
        return
    with tempfile.TemporaryDirectory() as tmp:
        steps = sizes.recipe_steps
        overrides = [
            "experiment=he2015_cifar10",
            "data=synthetic",
            "data.test_size=1000",
            f"data.train_size={sizes.recipe_train_size}",
            f"trainer.steps={steps}",
            "logger=none",
            f"optim.boundaries=[{steps // 2},{steps * 3 // 4}]",
            "trainer.progress=false",
            f"trainer.eval_every={sizes.recipe_steps // 2}",
            f"hydra.run.dir={tmp}/run",
        ]
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "resnet_jax.train", *overrides],
            check=True,
            env={
                **os.environ,
                "WANDB_MODE": "disabled",  # this process holds its own share
                "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
            },
        )
        wall = time.perf_counter() - start
        summary = json.loads((Path(tmp) / "run" / "summary.json").read_text())
    rate = summary["steps_per_s"]
    bench.emit(
        bench="recipe",
        depth=20,
        steps=sizes.recipe_steps,
        process_wall_s=round(wall, 1),
        steps_per_s=rate,
        projected_64k_min=round(RECIPE_STEPS / rate / 60, 2),
    )
    project_deeper(rate)


def project_deeper(rate: float) -> None:
    """The deeper nets' 64k-step recipe, at ResNet-20's recipe speed (`rate`, steps/s) scaled per image by
    each depth's measured training rate."""
    measured = {r["depth"]: r["images_per_s"] for r in bench.RESULTS if r.get("bench") == "cifar_train"}
    for depth, images in measured.items():  # the deeper nets at the recipe's speed per image of ResNet-20
        if depth != 20 and 20 in measured:
            scaled = rate * images / measured[20]
            bench.emit(
                bench="recipe_projection",
                depth=depth,
                from_depth=20,
                projected_64k_min=round(RECIPE_STEPS / scaled / 60, 2),
            )


def precision(sizes: Sizes, budget: Budget) -> None:
    depth = sizes.depths[1]  # ResNet-56
    if not budget.allows("bfloat16", 60):
        return
    for name, dtype in (("float32", jnp.float32), ("bfloat16", jnp.bfloat16)):
        images, _ = timed_rate(engine_for(depth, sizes.batch, dtype=dtype), sizes, sizes.steps_per_call)
        bench.emit(bench="dtype", depth=depth, batch=sizes.batch, dtype=name, images_per_s=round(images, 1))


def steps_per_call(sizes: Sizes, budget: Budget) -> None:
    depth = sizes.depths[0]
    if not budget.allows("steps_per_call", 30):
        return
    engine = engine_for(depth, sizes.batch)
    for k in (1, sizes.steps_per_call):
        images, _ = timed_rate(engine, sizes, k)
        bench.emit(
            bench="steps_per_call",
            depth=depth,
            batch=sizes.batch,
            steps_per_call=k,
            images_per_s=round(images, 1),
        )


def very_deep(sizes: Sizes, budget: Budget) -> None:
    """ResNet-1202, scanned blocks, with and without remat: compile time, XLA's temporary memory, speed."""
    for remat in (True, False):
        if not budget.allows(f"resnet{sizes.very_deep}_remat_{remat}", 90):
            return
        engine = engine_for(
            sizes.very_deep, sizes.batch, "model.unroll=false", f"model.remat={str(remat).lower()}"
        )
        indices = np.zeros((1, sizes.batch), np.int32)
        start = time.perf_counter()
        compiled = engine.compiled_chunk.lower(
            engine.initial_state(), *engine.chunk_arguments(indices)
        ).compile()
        compile_s = time.perf_counter() - start
        temp = compiled.memory_analysis().temp_size_in_bytes / 2**30
        state = engine.initial_state()
        state, rows = compiled(state, *engine.chunk_arguments(indices))
        jax.block_until_ready(rows)
        start = time.perf_counter()
        for _ in range(sizes.calls):
            state, rows = compiled(state, *engine.chunk_arguments(indices))
        jax.block_until_ready(rows)
        images = sizes.calls * sizes.batch / (time.perf_counter() - start)
        bench.emit(
            bench="very_deep",
            depth=sizes.very_deep,
            batch=sizes.batch,
            remat=remat,
            compile_s=round(compile_s, 1),
            temp_gib=round(temp, 2),
            images_per_s=round(images, 1),
        )


def mlp(sizes: Sizes, budget: Budget) -> None:
    for depth in sizes.mlp_depths:
        if not budget.allows(f"mlp{depth}", 20):
            return
        cfg = bench.config("model=mlp", f"model.depth={depth}", "model.width=64")
        engine = engines.make_engine(cfg, (8, 8, 1), 128)
        rate, _ = engines.train_rate(engine, 128, steps_per_call=100, calls=sizes.calls)
        bench.emit(bench="mlp_train", depth=depth, width=64, batch=128, steps_per_s=round(rate, 1))


def population(sizes: Sizes, budget: Budget) -> None:
    """One run beside a population of `sizes.members` (`launcher=population`'s program), interleaved: side by
    side (vmap) with XLA's convolution (under vmap a grouped convolution) and with the shifted-matmul one
    (batched matmuls), and members in turn (each a single run's program). Beside them the ceiling: one net
    training on all the population's images at once (one batch of members x batch), which no population of
    separate nets can beat in images/s."""
    depth = sizes.depths[0]
    if not budget.allows(f"population_resnet{depth}", 200):
        return
    together = sizes.members * sizes.batch

    def timed(name: str, engine: bench.Engine, batch: int) -> tuple[str, bench.Engine, int, int, int]:
        return name, engine, batch, sizes.steps_per_call, sizes.calls

    def cfg(conv: str = "auto") -> bench.Config:
        return bench.config(f"model.depth={depth}", f"model.conv_impl={conv}")

    shape, members = (32, 32, 3), sizes.members
    runs = [timed(f"single_xla_batch_{together}", engines.make_engine(cfg("xla"), shape, together), together)]
    for conv in ("xla", "shifted"):
        runs.append(timed(f"single_{conv}", engines.make_engine(cfg(conv), shape, sizes.batch), sizes.batch))
        vmapped = engines.make_population(cfg(conv), shape, members, "vmap")
        runs.append(timed(f"members_{members}_vmap_{conv}", vmapped, sizes.batch))
    in_turn = engines.make_population(cfg(), shape, members, "in_turn")
    runs.append(timed(f"members_{members}_in_turn", in_turn, sizes.batch))
    rates = bench.interleaved_rates(runs, rounds=2)
    single = rates[("single_xla", sizes.steps_per_call)]
    batch = {name: run_batch for name, _, run_batch, _, _ in runs}
    for (name, _), rate in rates.items():
        bench.emit(
            bench="population_resnet",
            variant=name,
            depth=depth,
            batch=batch[name],
            member_images_per_s=round(rate * batch[name], 1),
            images_vs_single=round(rate * batch[name] / (single * sizes.batch), 2),
        )


def population_mlp(sizes: Sizes, budget: Budget) -> None:
    """One MLP beside 16 members, side by side and in turn, interleaved."""
    if not budget.allows("population_mlp", 30):
        return
    mlp_cfg = bench.config("model=mlp", f"model.depth={sizes.mlp_depths[0]}", "model.width=64")
    runs = [("single", engines.make_engine(mlp_cfg, (8, 8, 1), 128), 128, 100, sizes.calls)]
    for layout in ("vmap", "in_turn"):
        engine = engines.make_population(mlp_cfg, (8, 8, 1), 16, layout)
        runs.append((f"members_16_{layout}", engine, 128, 100, sizes.calls))
    rates = bench.interleaved_rates(runs, rounds=2)
    for (name, _), rate in rates.items():
        bench.emit(
            bench="population_mlp",
            variant=name,
            depth=sizes.mlp_depths[0],
            width=64,
            batch=128,
            member_steps_per_s=round(rate, 1),
            steps_vs_single=round(rate / rates[("single", 100)], 2),
        )


SECTIONS = (resnets, recipe, precision, steps_per_call, very_deep, mlp, population, population_mlp)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dry-run", action="store_true", help="every section at tiny sizes (CI, on CPU)")
    parser.add_argument("--budget-s", type=float, default=240)
    parser.add_argument("--only", nargs="*", choices=[s.__name__ for s in SECTIONS], help="some sections")
    parser.add_argument("--output", type=Path)
    parser.add_argument("--merge", nargs=2, type=Path, metavar=("JAX_JSON", "TORCH_JSONL"))
    parser.add_argument("--table", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.merge:
        merge(*args.merge, args.table, args.json)
        return
    sizes, budget = (DRY if args.dry_run else FULL), Budget(args.budget_s, 0.1 if args.dry_run else 1.0)
    bench.emit(
        bench="environment",
        jax=jax.__version__,
        devices=[str(d) for d in jax.devices()],
        date=time.strftime("%Y-%m-%d"),
    )
    failed = []
    for section in SECTIONS:
        if args.only and section.__name__ not in args.only:
            continue
        try:
            section(sizes, budget)
        except Exception as err:  # one broken section must not cost the others' numbers
            failed.append(section.__name__)
            bench.emit(bench="failed", section=section.__name__, reason=f"{type(err).__name__}: {err}"[:500])
        if args.output is not None:  # after each section: a cut-off run keeps its rows
            args.output.write_text(json.dumps(bench.RESULTS, indent=1))
    if failed:
        sys.exit(f"error: sections failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
