"""End-to-end training through `run`: accuracy on real digits, the run-directory contract, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers import final_arrays, tiny_config

from resnet_jax import models
from resnet_jax.data import load
from resnet_jax.engine import Engine, EpochSampler
from resnet_jax.lifecycle import train_population
from resnet_jax.loop import Diverged
from resnet_jax.members import build_engine
from resnet_jax.population import MemberJob
from resnet_jax.runner import run


def test_resnet_on_digits_reaches_under_ten_percent_test_error(tmp_path: Path) -> None:
    cfg = tiny_config("model.depth=8")
    cfg.trainer.steps, cfg.trainer.batch_size, cfg.trainer.eval_every, cfg.trainer.log_every = 120, 64, 60, 20
    summary = run(cfg, tmp_path)
    assert summary["status"] == "completed" and summary["step"] == 120
    assert summary["final"]["test/error"] < 10.0, summary
    assert summary["best"]["test/error"] <= summary["final"]["test/error"]
    assert summary["final"]["train/error"] < 10.0


def test_run_directory_contract(tmp_path: Path) -> None:
    """metrics.jsonl and summary.json keys are a public contract (docs/run-directory.md: "Layout")."""
    summary = run(tiny_config("model=mlp", "model.depth=4"), tmp_path)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [0, 10, 20]
    assert set(lines[0]) == {
        "step",
        "probe/grad_norm",
        "probe/weight_norm",
        "probe/response_std",
        "probe/branch_ratio",
    }
    rows = lines[1:]
    assert all({"step", "train/loss", "train/error", "lr"} <= set(r) for r in rows)
    assert all({"test/loss", "test/error"} <= set(r) for r in rows)  # eval_every=10
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert {"status", "step", "params", "wall_time_s", "steps_per_s", "final", "best"} <= set(on_disk)
    assert {"identity", "wandb_id"} <= set(on_disk) and "run_dir" not in on_disk  # no path: a moved run
    assert on_disk["final"]["test/error"] == rows[-1]["test/error"]
    assert on_disk["best"]["train/loss"] == min(r["train/loss"] for r in rows)
    assert on_disk["params"] == 64 * 64 + 64 + 2 * (64 * 64 + 64) + 64 * 10 + 10


def test_divergence_stops_the_run_and_is_recorded(tmp_path: Path) -> None:
    cfg = tiny_config("model=mlp", "model.depth=10", "optim.lr=1e6", "optim.schedule=constant")
    with pytest.raises(Diverged, match="training loss became nan"):
        run(cfg, tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["step"] == 10


def _train_params(log_every: int, steps: int = 6):
    cfg = tiny_config("model.depth=8")
    ds = load(cfg.data)
    model = models.build(cfg.model, ds.image_shape, 10, 0)
    data = {"x_train": ds.x_train, "y_train": ds.y_train}
    engine = Engine(model, cfg.optim, steps, **data, augment=True, dtype=np.float32, seed=0)
    sampler, state = EpochSampler(len(ds.y_train), 32, 0), engine.initial_state()
    losses = []
    for first in range(0, steps, log_every):
        state, rows = engine.train_chunk(state, sampler.indices(first, log_every))
        losses.extend(np.asarray(rows["loss"]))
    return state, np.array(losses)


def test_chunked_steps_equal_one_step_per_call() -> None:
    one, losses_one = _train_params(log_every=1)
    chunk, losses_chunk = _train_params(log_every=3)
    np.testing.assert_allclose(losses_one, losses_chunk, rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(chunk.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert int(chunk.step) == 6


def chunk_program(*overrides: str) -> str:
    """The training chunk a run of the augmented MLP with `overrides` compiles, as StableHLO text."""
    cfg = tiny_config("model=mlp", "model.depth=4", "model.width=16", "data.augment=true", *overrides)
    engine = build_engine([cfg], load(cfg.data), "in_turn")
    arguments = engine.chunk_arguments(np.zeros((2, 32), np.int32))
    return engine.compiled_chunk.lower(engine.initial_state(), *arguments).as_text()


def test_runs_differing_only_in_traced_values_and_seed_share_one_program() -> None:
    program = chunk_program()
    assert chunk_program("seed=3", "optim.lr=0.5", "optim.l2=0.01", "optim.momentum=0.5") == program
    assert chunk_program("optim.momentum=0") != program  # no momentum state to keep: another program


def test_epoch_sampler_is_a_deterministic_permutation_per_epoch() -> None:
    sampler = EpochSampler(10, 3, seed=7)
    epoch0 = sampler.indices(0, 3).ravel()
    assert len(set(epoch0)) == 9  # 3 steps of 3 from one permutation: no repeats
    np.testing.assert_array_equal(EpochSampler(10, 3, seed=7).indices(2, 2), sampler.indices(2, 2))
    assert not np.array_equal(sampler.indices(3, 1), sampler.indices(0, 1))


def test_bfloat16_compute_keeps_float32_parameters_and_tracks_float32_training(tmp_path: Path) -> None:
    results = {}
    for dtype in ("float32", "bfloat16"):
        cfg = tiny_config("model.depth=8")
        cfg.trainer.dtype = dtype
        results[dtype] = run(cfg, tmp_path / dtype)
    f32, bf16 = results["float32"]["final"], results["bfloat16"]["final"]
    assert results["bfloat16"]["status"] == "completed"
    assert abs(bf16["train/loss"] - f32["train/loss"]) < 0.1 * f32["train/loss"] + 0.05
    assert abs(bf16["test/error"] - f32["test/error"]) < 5.0
    arrays = final_arrays(tmp_path / "bfloat16")
    floats = {k: v for k, v in arrays.items() if np.issubdtype(v.dtype, np.floating)}
    assert any(k.startswith("params/") for k in floats) and any(k.startswith("opt_state/") for k in floats)
    assert all(v.dtype == np.float32 for v in floats.values())  # parameters and optimiser state


@pytest.mark.parametrize("depth", [10, 30])
def test_the_dense_net_trains_with_its_familys_defaults(depth: int, tmp_path: Path) -> None:
    """`model=mlp` alone: the MLP's recipe (LeCun init, lr 0.01, gradient norm clipped at 1) trains it."""
    cfg = tiny_config(
        "model=mlp",
        f"model.depth={depth}",
        "trainer.steps=200",
        "trainer.batch_size=128",
        "trainer.eval_every=100",
        "trainer.log_every=50",
        "probe.every=0",
    )
    summary = run(cfg, tmp_path)
    assert summary["status"] == "completed" and summary["final"]["test/error"] < 12.0, summary["final"]


def test_a_validation_split_is_evaluated_in_runs_and_populations(
    tmp_path: Path,
) -> None:
    """`data.validation=N`: val/loss and val/error at every evaluation, in the summary's final and best, and a
    population's members record exactly what their single runs do."""
    configs = [tiny_config("model=mlp", "model.depth=4", "data.validation=200", f"seed={s}") for s in (0, 1)]
    singles = [run(cfg, tmp_path / f"single{k}") for k, cfg in enumerate(configs)]
    rows = [json.loads(line) for line in (tmp_path / "single0" / "metrics.jsonl").read_text().splitlines()]
    evaluated = [r for r in rows if "test/error" in r]
    assert evaluated and all({"val/loss", "val/error"} <= set(r) for r in evaluated)
    assert (
        singles[0]["final"]["val/error"] == evaluated[-1]["val/error"] and "val/error" in singles[0]["best"]
    )
    members = train_population(
        [MemberJob(cfg, tmp_path / f"member{k}") for k, cfg in enumerate(configs)], group="g"
    )
    assert [m["final"] for m in members] == [s["final"] for s in singles]
