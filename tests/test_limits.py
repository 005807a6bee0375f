"""The operating system's limits get one line: names longer than the file system allows, writes it refuses (a
file-size limit, a read-only file system, a permission), sizes that cannot fit in memory and a backend that
is not there. Each: one line naming the problem and what to do, a non-zero exit, no traceback, nothing
recorded as completed, and the same command completes once the cause is gone."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import REPO, SHORT_RUN, assert_same_record, planned_jobs, train

from resnet_jax import faults
from resnet_jax.composition import compose
from resnet_jax.names import NAME_BYTES, run_name
from resnet_jax.runner import run
from resnet_jax.storage import StorageRefused


def one_error_line(out: subprocess.CompletedProcess) -> str:
    """The one line a user reads, asserting it is the only one that says something went wrong."""
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, out.stderr[-3000:]
    return errors[0]


def status(run_dir: Path) -> str | None:
    path = run_dir / "summary.json"
    return json.loads(path.read_text())["status"] if path.exists() else None


def test_a_name_longer_than_the_file_system_allows_is_shortened_stably() -> None:
    long = "x" * 300
    assert run_name(long) == run_name(long) and len(run_name(long).encode()) <= NAME_BYTES
    assert run_name(long) != run_name(long + "y") and run_name("short") == "short"
    sweep = planned_jobs(*SHORT_RUN, f"name={long}", "seed=0,1", multirun=True)
    overrides = [f"optim.lr=0.0{i}00000000000000{i}" for i in range(1, 3)]
    many = planned_jobs(*SHORT_RUN, *overrides, "optim.boundaries=[" + ",".join(map(str, range(1, 39))) + "]")
    for job in [*sweep, *many]:
        assert all(len(part.encode()) <= 255 for part in job.run_dir.parts), job.run_dir


def test_a_run_whose_overrides_name_a_too_long_directory_trains_and_keeps_them(tmp_path: Path) -> None:
    overrides = ("optim.boundaries=[" + ",".join(map(str, range(1, 40))) + "]", "optim.warmup_lr=0.01")
    out = train(*SHORT_RUN, *overrides, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    (run_dir,) = (tmp_path / "outputs" / "default").iterdir()
    assert len(run_dir.name.encode()) <= NAME_BYTES and "optim.boundaries=(1,2,3" in run_dir.name
    assert {*SHORT_RUN, *overrides} <= set(yaml.safe_load((run_dir / "overrides.yaml").read_text()))
    again = train(*SHORT_RUN, *overrides, cwd=tmp_path)  # the same command finds the same directory
    assert again.returncode == 0 and "already completed" in again.stderr


def test_an_output_directory_with_brackets_is_one_line(tmp_path: Path) -> None:
    """Orbax finds a checkpoint's files by glob patterns: `[1]` in a path would hide them for good."""
    out = train(*SHORT_RUN, f"hydra.run.dir='{tmp_path / 'runs[1]'}'")
    assert out.returncode == 2 and "has '[' or ']' in its path" in one_error_line(out)
    assert not (tmp_path / "runs[1]").exists()


def test_an_output_directory_name_too_long_for_the_file_system_is_one_line(tmp_path: Path) -> None:
    run_dir = tmp_path / ("y" * 300) / "run"
    out = train(*SHORT_RUN, f"hydra.run.dir={run_dir}")
    assert out.returncode == 2
    assert "longer than the 255 the file system allows; choose a shorter hydra.run.dir" in one_error_line(out)
    assert list(tmp_path.iterdir()) == []  # nothing made


# (fault point, the OS's refusal, what the line says, what it says to do); `write_lock` and `write_log` are
# met while the directory is taken, before the run starts
REFUSALS = [
    (
        "write_checkpoint@20",
        "efbig",
        "reached the file-size limit (ulimit -f) while writing the checkpoint at step 20; the run stopped",
        "raise the limit",
    ),
    ("write_metrics@25", "erofs", "is on a read-only file system while writing metrics.jsonl", "writable"),
    ("write_summary@30", "eacces", "permission denied in", "give this user write permission"),
    ("write_config", "erofs", "while writing config.yaml; the run did not start", "command to start it"),
    ("write_lock", "eacces", "while writing its lock; the run did not start", "write permission"),
    ("write_log", "edquot", "disk quota is exceeded", "free space within your quota"),
]


@pytest.mark.parametrize(("fault", "action", "says", "remedy"), REFUSALS)
def test_a_refused_write_is_one_line_and_the_same_command_completes(
    fault: str, action: str, says: str, remedy: str, short_run: Path, tmp_path: Path, monkeypatch
) -> None:
    """In this process (the command line prints the same line: the real `ulimit -f` test below)."""
    run_dir = tmp_path / "run"
    monkeypatch.setenv(faults.ENV, f"{fault}:{action}")
    with pytest.raises(StorageRefused) as refused:
        run(compose(*SHORT_RUN), run_dir)
    line = str(refused.value)
    assert refused.value.exit_code == 1 and "\n" not in line and says in line and remedy in line, line
    assert status(run_dir) != "completed" and not (run_dir / ".lock").exists()
    monkeypatch.delenv(faults.ENV)
    run(compose(*SHORT_RUN), run_dir)  # the same run, the cause gone
    assert_same_record(short_run, run_dir)


def test_a_real_file_size_limit_is_one_line_and_the_run_resumes_without_it(
    short_run: Path, tmp_path: Path
) -> None:
    """`ulimit -f 8`: the first checkpoint's files pass 8 KiB (train.log too, with Orbax's echoes)."""
    run_dir = tmp_path / "run"
    limit = 8 * 1024
    command = shlex.join([sys.executable, "-m", "resnet_jax.train", *SHORT_RUN, f"hydra.run.dir={run_dir}"])
    limited = f"ulimit -f {limit // 1024} && exec {command}"
    out = subprocess.run(["bash", "-c", limited], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 1, out.stderr[-3000:]
    assert "reached the file-size limit (ulimit -f)" in one_error_line(out)
    assert status(run_dir) != "completed"
    run(compose(*SHORT_RUN), run_dir)  # the same run, the cause gone (in this process: a faster check)
    assert_same_record(short_run, run_dir)


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        (
            ("trainer.steps=1000000000000",),
            "trainer.steps=1000000000000 is not allowed; the step counter holds",
        ),
    ],
)
def test_a_step_count_out_of_range_is_refused_before_anything_is_made(
    overrides: tuple[str, ...], says: str, tmp_path: Path
) -> None:
    out = train(*SHORT_RUN, *overrides, f"hydra.run.dir={tmp_path / 'run'}")
    assert out.returncode == 2
    assert says in one_error_line(out)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("overrides", "most_of_it"),
    [
        (("model.width=1000000",), "parameters (model.depth=4, model.width=1000000)"),
        (("data=synthetic", "data.train_size=10000000000"), "the dataset (data=synthetic, data.train_size="),
        (
            ("trainer.steps=1000000000", "trainer.log_every=1000000000", "trainer.checkpoint_every=0"),
            "a chunk's batch indices (trainer.log_every=1000000000",
        ),
    ],
)
def test_a_run_too_large_for_memory_is_refused_before_allocating(
    overrides: tuple[str, ...], most_of_it: str, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    out = train(*SHORT_RUN, *overrides, f"hydra.run.dir={run_dir}")
    assert out.returncode == 1
    line = one_error_line(out)
    assert "would need at least" in line and "of memory, more than the" in line and most_of_it in line, line
    assert not run_dir.exists() or not any(run_dir.iterdir())  # nothing written


def test_a_backend_that_is_not_here_is_one_line_and_nothing_is_written(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    out = train(*SHORT_RUN, f"hydra.run.dir={run_dir}", env={"JAX_PLATFORMS": "gpu"})
    assert out.returncode == 2
    line = one_error_line(out)
    assert line.startswith("error: JAX_PLATFORMS=gpu asks for a backend this machine cannot start") and (
        "unset JAX_PLATFORMS" in line
    )
    assert not run_dir.exists() or not any(run_dir.iterdir())
    assert run(compose(*SHORT_RUN), run_dir)["status"] == "completed"  # JAX_PLATFORMS unset here
