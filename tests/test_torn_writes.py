"""Records that survive a torn write: metrics.jsonl, summary.json and train.log cut short at any byte, or
followed by garbage (a crash mid-write, a full disk, the zeros a crashed file system leaves), are repaired by
the next attempt to exactly the uninterrupted run's record, and the report reads them as they are."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import SHORT_RUN, assert_same_record

from resnet_jax import faults, report
from resnet_jax.composition import compose
from resnet_jax.runner import run
from resnet_jax.runs import load_run


def torn(data: bytes, how: str) -> bytes:
    """`data` as an interrupted write leaves it: cut at a byte offset, or followed by garbage or zeros."""
    cuts = {
        "cut-1": data[:-1],  # only the last newline lost
        "cut-2": data[:-2],  # the last line's last character too
        "cut-half": data[: len(data) // 2],
        "cut-third": data[: len(data) // 3],
        "garbage": data + b'{"step": 4',
        "zeros": data[:-9] + b"\0" * 512,  # what a crashed file system leaves at the end of a file
        "binary": data + b"\xff\xfe\x00junk\n",
    }
    return cuts[how]


HOW = ["cut-1", "cut-2", "cut-half", "cut-third", "garbage", "zeros", "binary"]


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("name", ["metrics.jsonl", "summary.json"])
def test_a_completed_run_s_torn_record_is_rebuilt_exactly(
    name: str, how: str, short_run: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(short_run, run_dir)
    path = run_dir / name
    path.write_bytes(torn(path.read_bytes(), how))
    # the report says so before the repair (a file that lost only its last newline still reads whole)
    assert (load_run(run_dir).damage is None) == (how == "cut-1")
    run(compose(*SHORT_RUN), run_dir)
    assert path.read_bytes() == (short_run / name).read_bytes()
    assert load_run(run_dir).damage is None


@pytest.mark.parametrize("how", ["cut-2", "cut-half", "garbage", "zeros"])
def test_an_interrupted_run_s_torn_metrics_resume_to_the_uninterrupted_record(
    how: str, short_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = tmp_path / "run"

    def crashed_writing(name: str, step: int | None = None) -> None:
        if name == "after_log" and step == 25:  # a row after the step-20 checkpoint, then the crash
            raise KeyboardInterrupt("killed")

    with monkeypatch.context() as patch:
        patch.setattr(faults, "point", crashed_writing)
        with pytest.raises(KeyboardInterrupt):
            run(compose(*SHORT_RUN), run_dir)
    metrics = run_dir / "metrics.jsonl"
    metrics.write_bytes(torn(metrics.read_bytes(), how))
    run(compose(*SHORT_RUN), run_dir)
    assert_same_record(short_run, run_dir)
    assert metrics.read_bytes() == (short_run / "metrics.jsonl").read_bytes()


@pytest.mark.parametrize("how", ["cut-2", "cut-half", "zeros"])
def test_a_torn_train_log_line_is_cut_and_the_next_attempt_starts_on_its_own_line(
    how: str, short_run: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(short_run, run_dir)
    log = run_dir / "train.log"
    earlier = "".join(
        f"[2026-12-01 10:00:{i:02d},000][resnet_jax.runner][INFO] line {i}\n" for i in range(20)
    )
    damaged = torn(earlier.encode(), how)
    log.write_bytes(damaged)
    run(compose(*SHORT_RUN), run_dir)
    lines = log.read_text().splitlines()
    assert all(line.startswith("[20") for line in lines), lines  # every line a whole logged line
    assert "train.log ended in a line cut short" in log.read_text()
    assert log.read_bytes().startswith(damaged[: damaged.rfind(b"\n") + 1])  # the whole lines kept


def test_the_report_reads_a_torn_metrics_file_and_draws_the_run(short_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "sweep" / "run"
    shutil.copytree(short_run, run_dir)
    metrics = run_dir / "metrics.jsonl"
    metrics.write_bytes(torn(metrics.read_bytes(), "cut-2"))
    rows = [json.loads(line) for line in (short_run / "metrics.jsonl").read_text().splitlines()]
    record = load_run(run_dir)
    assert record.rows == rows[:-1] and record.status == "completed"
    assert "metrics.jsonl has unreadable lines (the readable rows are used)" in record.damage
    text = report.build_report(tmp_path / "sweep").read_text()
    assert "metrics.jsonl has unreadable lines" in text
    assert "| run | completed | 40 |" in text
