"""Data parallelism on 8 CPU host devices: the same numbers as 1 device, and a clear batch-size error."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
from helpers import final_arrays, metric_rows, train

ARGS = (
    "model=cifar",
    "model.depth=8",
    "trainer.steps=6",
    "trainer.batch_size=32",
    "trainer.log_every=3",
    "trainer.eval_every=3",
    "probe.every=3",
    "probe.batch_size=16",
    "trainer.progress=false",
    "logger=none",
)


def train_on(devices: int, run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    devices_flag = {"XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    return train(*ARGS, *extra, f"hydra.run.dir={run_dir}", env=devices_flag)


def test_eight_devices_compute_what_one_device_computes(tmp_path: Path) -> None:
    one, eight = tmp_path / "one", tmp_path / "eight"
    for devices, run_dir in ((1, one), (8, eight)):
        out = train_on(devices, run_dir, "data.augment=true")
        assert out.returncode == 0, out.stderr[-3000:]
        assert json.loads((run_dir / "summary.json").read_text())["devices"] == devices
    a, b = final_arrays(one), final_arrays(eight)
    assert a.keys() == b.keys()
    for key in a:  # BatchNorm statistics over the global batch: same running means and variances too
        np.testing.assert_allclose(a[key], b[key], rtol=2e-4, atol=2e-5, err_msg=key)
    rows_one, rows_eight = metric_rows(one), metric_rows(eight)
    assert [r["step"] for r in rows_one] == [r["step"] for r in rows_eight] == [0, 3, 6]
    for r1, r8 in zip(rows_one, rows_eight, strict=True):
        for key in ("train/loss", "test/loss"):
            if key in r1:
                np.testing.assert_allclose(r1[key], r8[key], rtol=1e-4)
        np.testing.assert_allclose(r1["probe/grad_norm"], r8["probe/grad_norm"], rtol=1e-3)


def test_batch_that_does_not_divide_the_devices_is_a_clear_error(tmp_path: Path) -> None:
    out = train_on(8, tmp_path / "run", "trainer.batch_size=12")
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    expected = (
        "error: trainer.batch_size=12 does not divide evenly over 8 devices; choose a multiple of 8 (e.g. 8)"
    )
    assert lines == [expected]
