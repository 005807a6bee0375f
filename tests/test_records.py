"""The records a run writes are types with a schema version (`resnet_jax.records`), and a run directory
written before versions existed (`tests/data/run_written_before_schemas`: a run killed after its step-10
checkpoint, by the code of 2026-12-07) still reads, resumes and reports."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
from helpers import metric_rows, tiny_config

from resnet_jax import records
from resnet_jax.runner import run
from resnet_jax.runs import load_run

WRITTEN_BEFORE = Path(__file__).parent / "data" / "run_written_before_schemas"
OVERRIDES = (
    "model=mlp",
    "model.depth=4",
    "model.width=16",
    "trainer.log_every=5",
    "trainer.checkpoint_every=10",
)


def test_a_run_written_before_schemas_reads_resumes_and_reports(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="resnet_jax")
    old = tmp_path / "old"
    shutil.copytree(WRITTEN_BEFORE, old)
    before = json.loads((old / "summary.json").read_text())
    assert "schema" not in before and before["status"] == "running" and before["step"] == 10
    read = load_run(old)
    assert read.damage is None and read.status == "running" and read.metric("train/loss") is not None
    summary = run(tiny_config(*OVERRIDES), old)
    assert summary["status"] == "completed" and summary["schema"] == records.SCHEMA
    assert f"resuming from the checkpoint at step 10 in {old}" in caplog.messages
    fresh = tmp_path / "fresh"
    run(tiny_config(*OVERRIDES), fresh)
    ours, theirs = metric_rows(old), metric_rows(fresh)
    assert [r["step"] for r in ours] == [r["step"] for r in theirs]
    for a, b in zip(ours, theirs, strict=True):  # written on another CPU, its first 10 steps may round apart
        for key, value in b.items():
            np.testing.assert_allclose(a[key], value, rtol=1e-5, err_msg=key)
    assert load_run(old).damage is None


def test_every_record_says_its_schema(tmp_path: Path) -> None:
    summary = run(tiny_config(*OVERRIDES, "trainer.steps=10"), tmp_path)
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert summary == on_disk and on_disk["schema"] == records.SCHEMA
    assert records.summary_problems(on_disk) == []


def test_a_summary_of_a_newer_schema_or_the_wrong_types_is_not_used() -> None:
    good = {"schema": records.SCHEMA, "status": "completed", "step": 3, "final": {"train/loss": 0.5}}
    assert records.summary_problems(good) == []
    assert records.summary_problems({**good, "schema": records.SCHEMA + 1}) == [
        f"schema {records.SCHEMA + 1} is newer than this code reads ({records.SCHEMA})"
    ]
    assert records.summary_problems({**good, "step": "3"}) == ["step is str"]
    assert records.summary_problems({**good, "final": {"train/loss": [1]}}) == ["final.train/loss is list"]
