"""The run directory under the faults a cluster produces: kills at every point of a run's life (at named
points, `resnet_jax.faults`, not races with a timer), damaged files and checkpoints, a second writer, a rerun
with another config. The same command afterwards always ends with the uninterrupted run's record."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import SHORT_RUN, assert_same_record, snapshot, train, trained, write_lock

from resnet_jax import storage
from resnet_jax.lock import RunLock, process_start_time

ARGS = SHORT_RUN


def run_in(run_dir: Path, *extra: str, fault: str | None = None, env: dict | None = None):
    env = {**(env or {}), **({"RESNET_JAX_FAULT": fault} if fault else {})}
    return train(*ARGS, *extra, f"hydra.run.dir={run_dir}", env=env)


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def assert_same_run(reference: Path, run_dir: Path) -> None:
    """The record a reader compares, at the run's last step, and the directory given back (no lock)."""
    assert_same_record(reference, run_dir)
    assert summary(run_dir)["step"] == 40 and not (run_dir / ".lock").exists()


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained(tmp_path_factory.mktemp("reference") / "run", *ARGS)


@pytest.fixture
def completed(reference: Path, tmp_path: Path) -> Path:
    """A copy of the completed reference run to damage."""
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    return run_dir


# (where the process is killed, the step summary.json then shows, the checkpoint the rerun starts from)
KILLS = [
    ("after_log@5", 0, None),  # before the first checkpoint
    ("during_checkpoint_save@10", 0, None),  # during the first save
    ("after_checkpoint@20", 20, 20),  # between two checkpoints
    ("during_checkpoint_save@30", 20, 20),  # during a later save: the one before stands
    ("after_log@35", 30, 30),
    ("after_final_checkpoint@40", 30, 40),  # between the final save and the summary
]


@pytest.mark.parametrize(("fault", "shown", "resumes_from"), KILLS)
def test_a_kill_at_any_point_then_the_same_command_ends_as_the_uninterrupted_run(
    fault: str, shown: int, resumes_from: int | None, reference: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    killed = run_in(run_dir, fault=fault)
    assert killed.returncode == -9, killed.stderr[-2000:]  # SIGKILL, at that point
    after_kill = summary(run_dir)
    assert (after_kill["status"], after_kill["step"]) == ("running", shown)
    again = run_in(run_dir)
    assert again.returncode == 0, again.stderr[-2000:]
    if resumes_from == 40:
        assert "run already completed at step 40" in again.stderr
    elif resumes_from:
        assert f"resuming from the checkpoint at step {resumes_from}" in again.stderr
    else:
        assert "resuming" not in again.stderr
    assert_same_run(reference, run_dir)


# (the write that meets a full disk, what the error names, the checkpoint the rerun starts from)
FULL_DISK = [
    ("write_checkpoint@20", "the checkpoint at step 20", 10),  # Orbax's save: the one before stands
    ("write_metrics@25", "metrics.jsonl", 20),  # a row's append
    ("write_summary@30", "summary.json", 30),  # the checkpoint is committed, its summary not written
]


@pytest.mark.parametrize(("fault", "what", "resumes_from"), FULL_DISK)
def test_a_full_disk_stops_the_run_with_one_line_and_the_same_command_resumes_it(
    fault: str, what: str, resumes_from: int, reference: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    full = run_in(run_dir, fault=f"{fault}:enospc")
    assert full.returncode == 1, full.stderr[-2000:]
    errors = [line for line in full.stderr.splitlines() if line.startswith("error: ")]
    said = (
        f"error: no space left on the device of {run_dir} while writing {what}; the run stopped there: "
        "free space, then run the same command to resume from its newest checkpoint"
    )
    assert errors == [said]
    assert "Traceback" not in full.stderr and not (run_dir / ".lock").exists()
    assert summary(run_dir)["status"] in ("failed", "running")  # never "completed"
    again = run_in(run_dir)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resuming from the checkpoint at step {resumes_from}" in again.stderr
    assert_same_run(reference, run_dir)


def test_a_refused_write_is_recognised_through_orbax_s_wrapping() -> None:
    """Orbax reports a full disk as a ValueError carrying the OS's words (seen on a full tmpfs)."""
    orbax = ValueError(
        'RESOURCE_EXHAUSTED: Error writing "step/0" in OCDBT database at local file "/x/": '
        "Failed to write 12016 bytes to file 15: No space left on device [os_error_code='28']"
    )
    assert storage.refusal(orbax) == errno.ENOSPC
    assert storage.refusal(ValueError("Failed to write [os_error_code='27']")) == errno.EFBIG
    try:
        raise RuntimeError("saving failed") from OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))
    except RuntimeError as exc:
        assert storage.refusal(exc) == errno.EDQUOT
    assert storage.refusal(OSError(errno.ENOENT, os.strerror(errno.ENOENT))) is None


@pytest.mark.parametrize("damage", ["garbage", "truncated", "missing"])
def test_a_damaged_summary_or_metrics_file_is_rebuilt_from_the_final_checkpoint(
    damage: str, reference: Path, completed: Path
) -> None:
    for name in ("summary.json", "metrics.jsonl"):
        path = completed / name
        if damage == "garbage":
            path.write_bytes(b"\x00\xff not json {")
        elif damage == "truncated":
            path.write_text(path.read_text()[: len(path.read_text()) // 2])
        else:
            path.unlink()
    out = run_in(completed)
    assert out.returncode == 0 and "run already completed at step 40" in out.stderr, out.stderr[-2000:]
    warnings = [line for line in out.stderr.splitlines() if "was damaged; rebuilt" in line]
    assert len(warnings) == (0 if damage == "missing" else 2), out.stderr
    assert_same_run(reference, completed)


def test_a_killed_runs_damaged_files_are_rebuilt_when_it_resumes(reference: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    assert run_in(run_dir, fault="after_log@25").returncode == -9
    (run_dir / "summary.json").write_text('{"status": "runn')
    with (run_dir / "metrics.jsonl").open("a") as f:
        f.write("\x00garbage\n")
    out = run_in(run_dir)
    assert out.returncode == 0 and "resuming from the checkpoint at step 20" in out.stderr, out.stderr[-2000:]
    warnings = [line for line in out.stderr.splitlines() if "was damaged; rebuilt" in line]
    assert len(warnings) == 2 and any("summary.json" in w for w in warnings), warnings
    assert_same_run(reference, run_dir)


def test_a_damaged_config_is_rebuilt_from_the_checkpoint(reference: Path, completed: Path) -> None:
    (completed / "config.yaml").write_text("model: [unclosed")
    out = run_in(completed)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "config.yaml is missing or damaged; rebuilt from the checkpoint at step 40" in out.stderr
    assert (completed / "config.yaml").read_text() == (reference / "config.yaml").read_text()


def _damage_checkpoint(run_dir: Path, step: int, how: str) -> None:
    files = sorted(
        (p for p in (run_dir / "checkpoints" / str(step) / "state").rglob("*") if p.is_file()),
        key=lambda p: p.stat().st_size,
    )
    if how == "truncated":
        for path in files:
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:  # bytes flipped all through the largest file (the arrays): a disk that corrupted the data itself.
        # Spread out, not in one spot: the data file's layout varies from save to save, and a single spot can
        # fall on bytes no array is read from (then the restored state is intact, and rightly accepted)
        data = bytearray(files[-1].read_bytes())
        for i in range(0, len(data), 97):
            data[i] ^= 0xFF
        files[-1].write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["truncated", "flipped"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(
    how: str, reference: Path, completed: Path
) -> None:
    _damage_checkpoint(completed, 40, how)
    out = run_in(completed)
    assert out.returncode == 0, out.stderr[-2000:]
    said = [line for line in out.stderr.splitlines() if "the checkpoint at step 40" in line]
    assert len(said) == 1 and "cannot be read" in said[0] and "moved to damaged/" in said[0]
    assert "resuming from the checkpoint at step 30" in out.stderr
    assert_same_run(reference, completed)
    assert [p.name.split("-")[1] for p in (completed / "damaged").iterdir()] == ["40"]


def test_no_intact_checkpoint_is_one_line_naming_the_directory_and_the_fix(completed: Path) -> None:
    for step in (30, 40):
        _damage_checkpoint(completed, step, "truncated")
    out = run_in(completed)
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert out.returncode == 2 and len(errors) == 1, out.stderr[-2000:]
    assert errors[0].startswith(f"error: no intact checkpoint in {completed / 'checkpoints'}")
    assert "start over in another directory (hydra.run.dir=... or another name=...)" in errors[0]
    assert summary(completed)["status"] == "completed"  # the record of the finished run stays


def test_a_second_writer_is_refused_naming_the_holder_and_changes_nothing(completed: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        write_lock(completed, pid=holder.pid, start=process_start_time(holder.pid))
        before = snapshot(completed)
        out = run_in(completed)
        assert out.returncode == 2 and out.stderr.strip() == (
            f"error: {completed} is in use by PID {holder.pid} on {socket.gethostname()}, since 2026-01-01 "
            f"00:00:00; wait for it to finish, or if that process is gone, delete {completed / '.lock'}"
        ), out.stderr
        assert snapshot(completed) == before
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize(
    "holder",
    [
        {"pid": 2**22 + 7, "start": "1"},  # a process that has exited
        {"pid": os.getpid(), "start": "0"},  # a PID that another process now has
        {"pid": 1, "host": "node-17", "slurm_job": "4242"},  # an earlier attempt of this SLURM job
    ],
)
def test_a_lock_of_a_process_that_is_gone_is_taken_over_with_a_warning(
    holder: dict, reference: Path, completed: Path
) -> None:
    write_lock(completed, **holder)
    out = run_in(completed, env={"SLURM_JOB_ID": "4242"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert len([line for line in out.stderr.splitlines() if "taking over the lock of" in line]) == 1
    assert_same_run(reference, completed)


def test_a_lock_held_on_another_host_is_not_taken_over(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_lock(run_dir, pid=1, host="node-17", slurm_job="99")
    lock = RunLock(run_dir / ".lock")
    with pytest.raises(Exception, match="is in use by PID 1 on node-17, SLURM job 99"):
        lock.acquire()


def test_two_locks_in_one_directory_exclude_each_other_and_release_only_their_own(tmp_path: Path) -> None:
    first, second = RunLock(tmp_path / ".lock"), RunLock(tmp_path / ".lock")
    first.acquire()
    with pytest.raises(Exception, match="is in use by PID"):
        second.acquire()
    second.release()  # not its lock: nothing happens
    assert (tmp_path / ".lock").exists()
    first.release()
    second.acquire()
    assert json.loads((tmp_path / ".lock").read_text())["token"] == second.record["token"]


@pytest.mark.parametrize(
    ("extra", "changed"),
    [
        (("optim.lr=0.5",), "optim.lr: 0.01 -> 0.5"),  # the MLP recipe's lr
        (("trainer.steps=80",), "trainer.steps: 40 -> 80"),  # extending a run is refused (README)
        (("seed=1", "model.residual=false"), "model.residual: True -> False; seed: 0 -> 1"),
    ],
)
def test_another_config_in_the_same_directory_is_refused_listing_the_keys(
    extra: tuple[str, ...], changed: str, completed: Path
) -> None:
    before = snapshot(completed)
    out = run_in(completed, *extra)
    assert out.returncode == 2 and out.stderr.strip() == (
        f"error: {completed} holds a run of another configuration ({changed}); run it elsewhere with "
        "hydra.run.dir=... (hydra.sweep.dir=... with -m) or another name=..., or rerun with the recorded "
        "values"
    ), out.stderr
    assert snapshot(completed) == before


def test_keys_that_do_not_change_results_may_differ(completed: Path) -> None:
    before = snapshot(completed, skip=("train.log",))
    neutral = ("trainer.keep_checkpoints=3", "trainer.checkpoint_every=20", "logger=wandb")
    out = run_in(completed, *neutral)
    assert out.returncode == 0 and "run already completed at step 40" in out.stderr, out.stderr[-2000:]
    assert snapshot(completed, skip=("train.log",)) == before


SWEEP = (
    "-m",
    "model=mlp",
    "model.depth=4",
    "model.width=16",
    "trainer.steps=20",
    "trainer.batch_size=32",
    "trainer.log_every=10",
    "trainer.eval_every=10",
    "probe.every=0",
    "logger=none",
    "optim.schedule=constant",
    "optim.clip_norm=0",
    "optim.lr=0.05,1e6",
)


@pytest.mark.parametrize("launcher", ["basic", "joblib", "submitit_local", "population"])
def test_a_sweep_with_a_diverged_job_exits_non_zero_naming_it(launcher: str, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    chosen = () if launcher == "basic" else (f"launcher={launcher}",)
    out = train(*SWEEP, *chosen, f"hydra.sweep.dir={sweep}")
    assert out.returncode == 3, out.stderr[-3000:]
    lines = [line for line in out.stderr.splitlines() if line.startswith("job ")]
    assert len(lines) == 1 and lines[0].startswith(
        "job optim.lr=1000000.0: diverged at step 10: Diverged: "
    ), lines
    statuses = sorted(summary(p.parent)["status"] for p in sweep.glob("*/summary.json"))
    assert statuses == ["completed", "diverged"]
    assert "None" not in out.stderr  # every line says what a run reached, never a missing number
    if launcher == "population":  # the members' own lines: the diverged one says what ended it
        said = [line for line in out.stderr.splitlines() if "optim.lr=1000000.0: diverged at step 10" in line]
        assert said and "training loss became" in said[0], out.stderr[-3000:]


def test_a_sweep_whose_jobs_died_before_a_result_exits_non_zero_naming_each(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    out = train(
        *SWEEP[:-1],
        "optim.lr=0.05,0.1",
        "launcher=submitit_local",
        f"hydra.sweep.dir={sweep}",
        env={"RESNET_JAX_FAULT": "after_log@10"},
    )
    assert out.returncode == 1, out.stderr[-3000:]
    lines = sorted(line for line in out.stderr.splitlines() if line.startswith("job "))
    assert [line.split(":")[0] for line in lines] == ["job optim.lr=0.05", "job optim.lr=0.1"]
    assert all("never finished: running at step 0" in line for line in lines), lines
