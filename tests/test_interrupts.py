"""Ctrl-C (once or twice) and SIGTERM at any moment, start-up and compilation included: one line, a non-zero
exit, no traceback, and a directory that the same command resumes to the uninterrupted run's record. The
signals are sent at named points (`resnet_jax.faults`), not after a timer."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from helpers import SHORT_RUN, assert_same_record, train

from resnet_jax.composition import compose
from resnet_jax.runner import run


def interrupted_lines(out: subprocess.CompletedProcess) -> list[str]:
    assert "Traceback" not in out.stderr and "Exception ignored" not in out.stderr, out.stderr[-3000:]
    return [line for line in out.stderr.splitlines() if "interrupted" in line]


# (where, the signal, the exit code, what the one line says, the status summary.json is left at)
MOMENTS = [
    ("startup", "sigint", 130, "interrupted by SIGINT before any run began; nothing was written", None),
    ("tracing", "sigint", 130, "error: interrupted by SIGINT: a run under way stopped", "interrupted"),
    (
        "tracing",
        "sigint2",
        130,
        "interrupted again by SIGINT: stopped at once; run the same command",
        "running",
    ),
    ("after_log@15", "sigterm", 143, "error: interrupted by SIGTERM: a run under way stopped", "interrupted"),
    ("after_log@25", "sigint2", 130, "interrupted again by SIGINT: stopped at once", "running"),
    ("write_summary@30", "sigint2", 130, "interrupted again by SIGINT: stopped at once", "running"),
]


@pytest.mark.parametrize(("point", "signal", "code", "says", "left_at"), MOMENTS)
def test_an_interrupt_at_any_moment_is_one_line_and_the_same_command_resumes(
    point: str, signal: str, code: int, says: str, left_at: str | None, short_run: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    out = train(*SHORT_RUN, f"hydra.run.dir={run_dir}", env={"RESNET_JAX_FAULT": f"{point}:{signal}"})
    assert out.returncode == code, out.stderr[-3000:]
    lines = interrupted_lines(out)
    assert len(lines) == 1 and says in lines[0], out.stderr[-3000:]
    summary = run_dir / "summary.json"
    assert (json.loads(summary.read_text())["status"] if summary.exists() else None) == left_at
    if signal != "sigint2":  # a second Ctrl-C skips the cleanup: its lock is taken over, as a killed one's
        assert not (run_dir / ".lock").exists()
    run(compose(*SHORT_RUN), run_dir)  # the same run, the cause gone (in this process: a faster check)
    assert_same_record(short_run, run_dir)


def test_an_interrupted_population_sweep_is_one_line_and_resumes(tmp_path: Path) -> None:
    sweep = ("-m", *SHORT_RUN, "seed=0,1", "launcher=population", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    out = train(*sweep, env={"RESNET_JAX_FAULT": "after_log@15:sigint"})
    assert out.returncode == 130, out.stderr[-3000:]
    assert len(interrupted_lines(out)) == 1
    statuses = {json.loads(p.read_text())["status"] for p in (tmp_path / "sweep").glob("*/summary.json")}
    assert statuses == {"interrupted"}
    again = train(*sweep)
    assert again.returncode == 0, again.stderr[-2000:]
    statuses = {json.loads(p.read_text())["status"] for p in (tmp_path / "sweep").glob("*/summary.json")}
    assert statuses == {"completed"}
