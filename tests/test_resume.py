"""Resume: an interrupted run continues bit-identically, a preempted submitit job is requeued and resumes,
completed runs stay as they are (kills at every point of a run's life: test_faults.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_same_record, final_arrays, metric_rows, tiny_config, train

from resnet_jax import faults
from resnet_jax.checkpoint import Checkpoints
from resnet_jax.errors import ConfigError
from resnet_jax.runner import run

# a CIFAR net with BatchNorm, small enough for a submitit job in a few seconds
ARGS = (
    "model=cifar",
    "model.depth=8",
    "trainer.steps=40",
    "trainer.batch_size=32",
    "trainer.log_every=5",
    "trainer.eval_every=10",
    "trainer.checkpoint_every=10",
    "probe.every=20",
    "trainer.progress=false",
    "logger=none",
)


def test_resume_in_process_matches_uninterrupted_and_completed_runs_are_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tiny_config("model=mlp", "model.depth=4", "trainer.checkpoint_every=10")
    full = run(cfg, tmp_path / "full")

    def preempted(name: str, step: int | None = None) -> None:
        if name == "after_checkpoint" and step == 10:  # as a preempted job: stopped after its checkpoint
            raise KeyboardInterrupt("preempted")

    monkeypatch.setattr(faults, "point", preempted)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, tmp_path / "resumed")
    stopped = json.loads((tmp_path / "resumed" / "summary.json").read_text())
    assert (stopped["status"], stopped["step"]) == ("interrupted", 10)
    monkeypatch.undo()
    resumed = run(cfg, tmp_path / "resumed")
    assert resumed["status"] == "completed" and resumed["step"] == 20
    assert (resumed["final"], resumed["best"]) == (full["final"], full["best"])
    assert metric_rows(tmp_path / "resumed") == metric_rows(tmp_path / "full")
    a, b = final_arrays(tmp_path / "full"), final_arrays(tmp_path / "resumed")
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    results = [p for p in (tmp_path / "full").rglob("*") if p.is_file() and p.name != "train.log"]
    before = {p: p.stat().st_mtime_ns for p in results}
    again = run(cfg, tmp_path / "full")
    assert again == full
    assert before == {p: p.stat().st_mtime_ns for p in results}


def test_a_run_of_another_model_in_the_directory_is_a_clear_error(tmp_path: Path) -> None:
    run(tiny_config("model=mlp", "model.depth=4"), tmp_path)
    bigger = tiny_config("model=mlp", "model.depth=6", "trainer.steps=40")
    with pytest.raises(
        ConfigError,
        match=r"holds a run of another configuration \(model.depth: 4 -> 6; "
        r"trainer.steps: 20 -> 40\); run it elsewhere with hydra.run.dir",
    ):
        run(bigger, tmp_path)
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "completed"


def test_checkpoints_keep_only_the_newest(tmp_path: Path) -> None:
    cfg = tiny_config(
        "model=mlp",
        "model.depth=4",
        "trainer.log_every=5",
        "trainer.checkpoint_every=5",
        "trainer.keep_checkpoints=2",
    )
    run(cfg, tmp_path)
    assert Checkpoints(tmp_path / "checkpoints", 2).steps() == [20, 15]


def test_submitit_preemption_requeues_and_resumes_bit_identically(tmp_path: Path) -> None:
    """The job gets submitit's preemption signal (USR2, as SLURM would send it; sent by the job itself right
    after its step-20 checkpoint): the launcher checkpoints and requeues it, and the requeued job resumes
    from the newest checkpoint and ends as the uninterrupted run, bit for bit."""
    reference = tmp_path / "reference"
    assert train(*ARGS, f"hydra.run.dir={reference}").returncode == 0
    sweep, signalled = tmp_path / "sweep", tmp_path / "signalled"
    fault = {"RESNET_JAX_FAULT": "after_checkpoint@20:usr2", "RESNET_JAX_FAULT_ONCE": str(signalled)}
    launcher = ("-m", "launcher=submitit_local", "+hydra.launcher.max_num_timeout=3")
    out = train(*launcher, *ARGS, "seed=0", f"hydra.sweep.dir={sweep}", env=fault)
    assert out.returncode == 0 and signalled.exists(), out.stderr[-3000:]
    (run_dir,) = [p.parent for p in sweep.glob("*/summary.json")]
    log = (run_dir / "train.log").read_text()
    assert "resuming from the checkpoint at step 20" in log, log[-2000:]
    job_logs = "".join(p.read_text() for p in (sweep / ".submitit").glob("*/*_log.err"))
    assert "this job is preempted" in job_logs and "Requeued job" in job_logs
    assert_same_record(reference, run_dir)
