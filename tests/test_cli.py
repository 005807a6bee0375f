"""The command line as users run it: Hydra single runs, multirun sweeps, and errors as one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO


def train(*args: str, cwd: Path, wandb_mode: str = "disabled") -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": wandb_mode, "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, "-m", "resnet_jax.train", *args, "trainer.progress=false"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


FAST = (
    "model=mlp",
    "model.width=16",
    "trainer.steps=4",
    "trainer.log_every=2",
    "trainer.eval_every=2",
    "trainer.batch_size=16",
)


def test_sequential_multirun_gives_one_run_dir_and_one_offline_wandb_run_per_job(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    out = train("-m", *FAST, "model.depth=4,6", f"hydra.sweep.dir={sweep}", cwd=REPO, wandb_mode="offline")
    assert out.returncode == 0, out.stderr[-3000:]
    runs = sorted(p.parent for p in sweep.glob("*/summary.json"))
    assert [p.name.split(",")[0] for p in runs] == ["model.depth=4", "model.depth=6"]
    for run_dir in runs:
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["step"] == 4
        assert (run_dir / ".hydra" / "overrides.yaml").is_file() and (run_dir / "train.log").is_file()
    offline = sorted((sweep / "wandb").glob("offline-run-*"))
    assert len(offline) == 2, offline  # one W&B run per job, side by side for `wandb leet`
    ids = {p.name.rsplit("-", 1)[-1] for p in offline}
    assert len(ids) == 2
    assert all(list(p.glob("*.wandb")) for p in offline)


def test_bad_depth_exits_non_zero_with_one_clear_line(tmp_path: Path) -> None:
    out = train("model.depth=21", f"hydra.run.dir={tmp_path / 'run'}", cwd=REPO)
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert lines == [
        "error: model.depth=21 is not valid for model=cifar: depth must be 6n+2 with n >= 1 "
        "(8, 14, 20, 32, 44, 56, 110, 1202, ...); nearest valid: 20 or 26"
    ]
    assert "Traceback" not in out.stdout + out.stderr


def test_a_failing_job_does_not_stop_the_sweep_and_is_marked_failed(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    out = train("-m", *FAST, "model.depth=7,4", f"hydra.sweep.dir={sweep}", cwd=REPO)
    assert out.returncode == 2, out.stderr[-2000:]
    summaries = {p.parent.name.split(",")[0]: json.loads(p.read_text()) for p in sweep.glob("*/summary.json")}
    assert summaries["model.depth=4"]["status"] == "completed"
    failed = summaries["model.depth=7"]
    assert failed["status"] == "failed" and "6 or 8" in failed["error"]


def test_submitit_local_sweep_runs_each_job_in_its_own_process(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    out = train(
        "-m", "launcher=submitit_local", *FAST, "model.depth=4,6", f"hydra.sweep.dir={sweep}", cwd=REPO
    )
    assert out.returncode == 0, out.stderr[-3000:]
    summaries = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/summary.json"))]
    assert [s["status"] for s in summaries] == ["completed", "completed"]
    block = 2 * (16 * 16 + 16)
    assert [s["params"] for s in summaries] == [64 * 16 + 16 + block + 170, 64 * 16 + 16 + 2 * block + 170]
    job_logs = list((sweep / ".submitit").glob("*/*_log.out"))
    assert len(job_logs) == 2  # two submitit jobs, each with its own log
