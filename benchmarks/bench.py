"""Speed and memory benchmarks (never timed tests). Prints one JSON object per measurement, then a table.

    python benchmarks/bench.py                      # everything, resnet_jax only
    python benchmarks/bench.py --torch .venv-torch/bin/python   # plus the PyTorch references and ratios
    python benchmarks/bench.py --only cifar mlp     # some sections

Sections: cifar (training images/s, ResNet-20/56/110, batch 128, 32x32x3 and 28x28x1 images), scan (scanned vs
unrolled blocks, chunked vs one step per call), mlp (steps/s on digits shapes), compile (compile time
by depth), memory (temporary memory with and without remat), probes (probe overhead at the default
cadence), population (member-steps/s of populations beside one run; 16 runs, population vs basic launcher).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from engines import make_engine, make_population, train_rate
from table import summary_table

from resnet_jax.composition import compose
from resnet_jax.config import Config
from resnet_jax.engine import Engine

REFERENCES = Path(__file__).resolve().parents[2] / "shared" / "bench"
RESULTS: list[dict] = []


def keep(row: dict) -> dict:
    """Print `row` as a JSON line and keep it with the results (the closing table and `--output`)."""
    RESULTS.append(row)
    print(json.dumps(row), flush=True)
    return row


def emit(**row) -> dict:
    return keep({"framework": "resnet_jax", "backend": jax.default_backend(), **row})


def config(*overrides: str) -> Config:
    """The configuration `python -m resnet_jax.train OVERRIDES` runs (SGD, momentum 0.9, L2 1e-4), at lr 0.01
    so that random data does not diverge."""
    return compose("optim.lr=0.01", *overrides)


# the CIFAR nets' input shapes (height, width, channels): CIFAR-10's, and Fashion-MNIST's 28x28 grey images
# (stages at 28/14/7, a one-channel first convolution)
IMAGES = ((32, 32, 3), (28, 28, 1))


def bench_cifar(depths: tuple[int, ...], batch: int, steps: int, torch: str | None, rounds: int = 3) -> None:
    """Training images/s of ResNet-`depths` at each of `IMAGES`; with `torch` (a PyTorch environment's
    python), the reference at the same depth and shape in turns with ours, `rounds` times, and the ratio of
    the medians: this machine's speed drifts 10-20 % within minutes, else landing on one side."""
    for (height, width, channels), depth in itertools.product(IMAGES, depths):
        engine = make_engine(config(f"model.depth={depth}"), (height, width, channels), batch)
        image = [channels, height, width]  # as the PyTorch reference reports it
        sizes = ("--depth", str(depth), "--batch", str(batch), "--steps", "10" if depth > 20 else "20")
        reference = (*sizes, "--image", str(height), "--in-channels", str(channels), "--channels-last")
        ours, refs = [], []
        for _ in range(rounds if torch else 1):
            ours.append(train_rate(engine, batch, steps_per_call=steps, calls=2)[0] * batch)
            if torch:
                refs.append(run_torch(torch, "torch_cifar_resnet.py", *reference, record=False))
        rate = statistics.median(ours)
        emit(bench="cifar_train", depth=depth, batch=batch, image=image, images_per_s=round(rate, 1))
        if refs:
            median = statistics.median(r["images_per_s"] for r in refs)
            keep({**refs[0], "images_per_s": median, "rounds": len(refs)})
            emit(
                bench="ratio_cifar", depth=depth, image=image, rounds=len(refs), ratio=round(rate / median, 3)
            )


def interleaved_rates(runs: list[tuple[str, Engine, int, int, int]], rounds: int = 3) -> dict:
    """Median steps/s per (name, K) over `rounds`, the variants taking turns so machine noise hits all (a
    population's: member-steps/s)."""
    rates: dict[tuple[str, int], list[float]] = defaultdict(list)
    for _ in range(rounds):
        for name, engine, batch, k, calls in runs:
            rates[(name, k)].append(train_rate(engine, batch, steps_per_call=k, calls=calls)[0])
    return {key: statistics.median(values) for key, values in rates.items()}


def bench_scan(batch: int) -> None:
    """ResNet-20: scanned vs unrolled blocks, K steps per call vs one step per call, conv formulations."""
    scanned = make_engine(config("model.depth=20", "model.unroll=false"), (32, 32, 3), batch)
    unrolled = make_engine(config("model.depth=20", "model.unroll=true"), (32, 32, 3), batch)
    shifted = make_engine(
        config("model.depth=20", "model.unroll=true", "model.conv_impl=shifted"), (32, 32, 3), batch
    )
    # XLA's own conv, no loop anywhere (K=1): its best case on CPU
    xla_conv = make_engine(
        config("model.depth=20", "model.unroll=true", "model.conv_impl=xla"), (32, 32, 3), batch
    )
    runs = [
        ("scanned", scanned, batch, 1, 10),
        ("scanned", scanned, batch, 10, 1),
        ("unrolled", unrolled, batch, 1, 10),
        ("unrolled", unrolled, batch, 10, 1),
        ("shifted_conv_unrolled", shifted, batch, 10, 1),
        ("xla_conv_unrolled", xla_conv, batch, 1, 10),
    ]
    for (name, k), rate in interleaved_rates(runs).items():
        emit(
            bench="cifar_scan",
            variant=name,
            steps_per_call=k,
            depth=20,
            batch=batch,
            images_per_s=round(rate * batch, 1),
            statistic="median of 3 interleaved rounds",
        )
    mlp = make_engine(config("model=mlp", "model.depth=10", "model.width=64"), (8, 8, 1), 128)
    runs = [("mlp", mlp, 128, 1, 200), ("mlp", mlp, 128, 100, 2)]
    for (_, k), rate in interleaved_rates(runs).items():
        emit(
            bench="mlp_chunk",
            steps_per_call=k,
            depth=10,
            width=64,
            batch=128,
            steps_per_s=round(rate, 1),
            statistic="median of 3 interleaved rounds",
        )


def bench_mlp(depths: tuple[int, ...]) -> None:
    """The default (on CPU the oneDNN block stack) and XLA's scanned blocks, interleaved."""
    names = {"auto": "mlp_train", "xla": "mlp_train_scanned"}
    for depth in depths:
        runs = []
        for impl in names:
            cfg = config("model=mlp", f"model.depth={depth}", "model.width=64", f"model.dense_impl={impl}")
            runs.append((impl, make_engine(cfg, (8, 8, 1), 128), 128, 100, 5))
        for (impl, _), rate in interleaved_rates(runs).items():
            emit(
                bench=names[impl],
                depth=depth,
                width=64,
                batch=128,
                steps_per_s=round(rate, 1),
                statistic="median of 3 interleaved rounds",
            )


def compiled_chunk(engine: Engine, batch: int):
    arguments = engine.chunk_arguments(np.zeros((1, batch), np.int32))
    start = time.perf_counter()
    compiled = engine.compiled_chunk.lower(engine.initial_state(), *arguments).compile()
    return compiled, time.perf_counter() - start


def bench_compile(depths: tuple[int, ...], batch: int) -> None:
    for depth in depths:
        _, seconds = compiled_chunk(
            make_engine(config(f"model.depth={depth}"), (32, 32, 3), batch, 256), batch
        )
        emit(bench="compile", depth=depth, batch=batch, compile_s=round(seconds, 2))


def bench_memory(depths: tuple[int, ...], batch: int) -> None:
    """XLA's compiled memory analysis of one training step (temporaries beyond arguments/outputs):
    scanned blocks with and without remat, and the default (unrolled up to depth 110, remat above)."""
    for depth in depths:
        variants = {
            "scanned": config(f"model.depth={depth}", "model.unroll=false", "model.remat=false"),
            "scanned_remat": config(f"model.depth={depth}", "model.unroll=false", "model.remat=true"),
            "default": config(f"model.depth={depth}"),
        }
        for name, cfg in variants.items():
            compiled, _ = compiled_chunk(make_engine(cfg, (32, 32, 3), batch, 256), batch)
            stats = compiled.memory_analysis()
            emit(
                bench="memory",
                depth=depth,
                batch=batch,
                variant=name,
                temp_gib=round(stats.temp_size_in_bytes / 2**30, 3),
                args_gib=round(stats.argument_size_in_bytes / 2**30, 3),
            )


def bench_probes(batch: int) -> None:
    """Probe cost relative to the training steps between two probes at the default cadence."""
    from functools import partial

    from resnet_jax import probes

    every, probe_batch = config().probe.every, config().probe.batch_size
    for cfg, shape in (
        (config("model.depth=20"), (8, 8, 1)),
        (config("model=mlp", "model.depth=10"), (8, 8, 1)),
    ):
        engine = make_engine(cfg, shape, batch)
        rate, _ = train_rate(engine, batch, steps_per_call=20, calls=3)
        measure = jax.jit(partial(probes.measure, engine.graphdef, dtype=jnp.float32))
        x, y = engine.x_train[:probe_batch], engine.y_train[:probe_batch]
        state = engine.initial_state()
        jax.block_until_ready(measure(state.params, state.model_state, x, y))
        start = time.perf_counter()
        for _ in range(5):
            jax.block_until_ready(measure(state.params, state.model_state, x, y))
        probe_s = (time.perf_counter() - start) / 5
        emit(
            bench="probe_overhead",
            model=cfg.model.name,
            depth=cfg.model.depth,
            every=every,
            overhead_pct=round(100 * probe_s / (every / rate), 2),
        )


def run_torch(python: str, script: str, *args: str, record: bool = True) -> dict:
    """The reference's JSON row; `record`: also print it and keep it with the results."""
    out = subprocess.run(
        [python, str(REFERENCES / script), *args], capture_output=True, text=True, check=True
    )
    row = json.loads(out.stdout.strip().splitlines()[-1])
    return keep(row) if record else row


def bench_torch_mlp(python: str) -> None:
    """The PyTorch MLP references, in this same invocation; ratios against our matching rows."""
    for depth in (10, 50):  # PyTorch's eager MLP varies most from run to run: the median of 3
        args = ("--depth", str(depth), "--width", "64", "--batch", "128")
        ref = statistics.median(run_torch(python, "torch_mlp.py", *args)["steps_per_s"] for _ in range(3))
        ours = [r for r in RESULTS if r.get("bench") == "mlp_train" and r["depth"] == depth]
        if ours:
            emit(
                bench="ratio_mlp",
                depth=depth,
                torch_median_steps_per_s=ref,
                ratio=round(ours[-1]["steps_per_s"] / ref, 3),
            )


def bench_population(sweep_steps: tuple[int, ...] = (300, 3000)) -> None:
    """Member-steps/s of populations beside one run's steps/s (interleaved), and a sweep of 16 short MLP
    runs end to end: `launcher=population` against the basic launcher, in the same invocation."""
    population_mlp()
    population_resnet()
    for steps in sweep_steps:
        seconds = {launcher: sweep_seconds(launcher, steps) for launcher in ("basic", "population")}
        emit(
            bench="population_sweep",
            runs=16,
            steps=steps,
            basic_s=round(seconds["basic"], 1),
            population_s=round(seconds["population"], 1),
            speedup=round(seconds["basic"] / seconds["population"], 2),
        )


def population_mlp() -> None:
    """The MLP of depth 10: one run beside 8 and 16 members in turn and 16 side by side (two kernels)."""
    mlp = config("model=mlp", "model.depth=10", "model.width=64")
    xla_dense = config("model=mlp", "model.depth=10", "model.width=64", "model.dense_impl=xla")
    runs = [("single", make_engine(mlp, (8, 8, 1), 128), 128, 100, 3)]
    runs += [
        (f"members_{m}_in_turn", make_population(mlp, (8, 8, 1), m, "in_turn"), 128, 100, 3) for m in (8, 16)
    ]
    runs += [
        ("members_16_vmap", make_population(mlp, (8, 8, 1), 16, "vmap"), 128, 100, 3),  # oneDNN stack
        ("members_16_vmap_xla_dense", make_population(xla_dense, (8, 8, 1), 16, "vmap"), 128, 100, 3),
    ]
    rates = interleaved_rates(runs)
    for (name, _), rate in rates.items():
        emit(
            bench="population_mlp",
            variant=name,
            depth=10,
            width=64,
            batch=128,
            member_steps_per_s=round(rate, 1),
            vs_single=round(rate / rates[("single", 100)], 3),
            statistic="median of 3 interleaved rounds",
        )


def population_resnet() -> None:
    """ResNet-20: one run beside 4 members in turn and side by side (two convolutions)."""
    resnet, shifted = config("model.depth=20"), config("model.depth=20", "model.conv_impl=shifted")
    runs = [
        ("single", make_engine(resnet, (32, 32, 3), 128), 128, 5, 2),
        ("members_4_in_turn", make_population(resnet, (32, 32, 3), 4, "in_turn"), 128, 5, 2),
        ("members_4_vmap", make_population(resnet, (32, 32, 3), 4, "vmap"), 128, 5, 2),  # oneDNN conv
        ("members_4_vmap_shifted_conv", make_population(shifted, (32, 32, 3), 4, "vmap"), 128, 5, 2),
    ]
    rates = interleaved_rates(runs, rounds=2)
    for (name, _), rate in rates.items():
        emit(
            bench="population_resnet",
            variant=name,
            depth=20,
            batch=128,
            member_images_per_s=round(rate * 128, 1),
            vs_single=round(rate / rates[("single", 5)], 3),
            statistic="median of 2 interleaved rounds",
        )


def sweep_seconds(launcher: str, steps: int) -> float:
    """Wall time of `python -m resnet_jax.train -m` over 16 MLP runs (4 L2 values x 4 seeds), as a user runs
    it (defaults otherwise: evaluation, probes and checkpoints every 100 steps)."""
    chosen = [f"launcher={launcher}"] if launcher != "basic" else []
    with tempfile.TemporaryDirectory() as directory:
        args = [
            "-m",
            "model=mlp",
            "model.depth=10",
            "model.width=64",
            f"trainer.steps={steps}",
            "logger=none",
            "trainer.progress=false",
            "optim.l2=0,1e-4,1e-3,1e-2",
            "seed=0,1,2,3",
            f"hydra.sweep.dir={directory}/sweep",
            *chosen,
        ]
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "resnet_jax.train", *args], check=True, capture_output=True)
        return time.perf_counter() - start


SECTIONS = ("cifar", "scan", "mlp", "compile", "memory", "probes", "population")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="*", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--torch", help="python of a PyTorch environment (../shared/bench/setup-torch.sh)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--output", type=Path, help="also write all rows to this JSON file")
    args = parser.parse_args()
    print(
        json.dumps(
            {
                "jax": jax.__version__,
                "devices": [str(d) for d in jax.devices()],
                "date": time.strftime("%Y-%m-%d"),
            }
        ),
        flush=True,
    )
    if "cifar" in args.only:
        bench_cifar((20, 56, 110), args.batch, steps=10, torch=args.torch)
    if "scan" in args.only:
        bench_scan(args.batch)
    if "mlp" in args.only:
        bench_mlp((10, 50))
    if "compile" in args.only:
        bench_compile((20, 56, 110, 1202), args.batch)
    if "memory" in args.only:
        bench_memory((56, 110, 1202), args.batch)
    if "probes" in args.only:
        bench_probes(args.batch)
    if "population" in args.only:
        bench_population()
    if args.torch and "mlp" in args.only:
        bench_torch_mlp(args.torch)
    print("\n".join(summary_table(RESULTS)), flush=True)
    if args.output:
        args.output.write_text(json.dumps(RESULTS, indent=1))


if __name__ == "__main__":
    sys.exit(main())
