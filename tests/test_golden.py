"""Golden records: what today's code trains, committed (tests/golden/records.json), so that a change of the
code that changes what a run computes shows here, on any x86-64 CPU.

Each case's training loss at every step and its final test loss, for the MLP and ResNet-8, residual and
plain, as a single run, as members of a population of 3 (seeds 0, 1, 2) and as a run interrupted at a
checkpoint and resumed. The loss at step 1 is the initial network's on its first batch: a change of meaning
(initialisation, data order, normalisation, the loss) shows there, and float32 rounding alone moves it by
about 1e-7, so it is held to `FIRST_RTOL`. Later steps are held to each family's stated tolerance: CPUs of the
same kind round float32 differently (AVX2 or AVX-512 code from XLA and oneDNN) and training amplifies the
difference, the BatchNorm ResNet's far more than the unnormalised MLP's (`make test-avx2` reruns this file as
an AVX2-only CPU computes). `python tests/test_golden.py` rewrites the records, for a change that is meant
to change results; say why in its commit.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from helpers import TINY, metric_rows, tiny_config

from resnet_jax.lifecycle import train_population
from resnet_jax.population import MemberJob
from resnet_jax.runner import run

RECORDS = Path(__file__).parent / "golden" / "records.json"
RUN = (
    *TINY,
    "trainer.steps=8",
    "trainer.log_every=1",
    "trainer.eval_every=8",
    "trainer.checkpoint_every=4",
    "probe.every=0",
)
CASES = {
    "mlp": ("model=mlp", "model.depth=6", "model.width=16"),
    "mlp-plain": ("model=mlp", "model.depth=6", "model.width=16", "model.residual=false"),
    "resnet8": ("model.depth=8",),
    "resnet8-plain": ("model.depth=8", "model.residual=false"),
}
FIRST_RTOL = 1e-5
# every step: ten times the largest difference measured between the AVX-512 and the AVX2 code of one machine
# over 8 steps (the MLPs 1.0e-7; ResNet-8 2.4e-4, seed 0 with the family's gradient clipping, 2.3e-7 plain)
LATER_RTOL = {"mlp": 1e-5, "resnet8": 3e-3}


def record(run_dir: Path) -> dict[str, list[float]]:
    """A run's training loss at each step and its final test loss."""
    rows = metric_rows(run_dir)
    return {
        "train/loss": [row["train/loss"] for row in rows if "train/loss" in row],
        "test/loss": [rows[-1]["test/loss"]],
    }


def measure_single(case: str, root: Path) -> dict[str, list[float]]:
    run(tiny_config(*RUN, *CASES[case]), root / case)
    return record(root / case)


def measure_population(case: str, root: Path) -> list[dict[str, list[float]]]:
    jobs = [
        MemberJob(tiny_config(*RUN, *CASES[case], f"seed={seed}"), root / f"{case}-{seed}")
        for seed in range(3)
    ]
    train_population(jobs, layout="auto")
    return [record(job.run_dir) for job in jobs]


def measure_resumed(case: str, root: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, list[float]]:
    """The run failed right after its checkpoint at step 4 (a refused write); the same call resumed it."""
    cfg, run_dir = tiny_config(*RUN, *CASES[case]), root / f"{case}-resumed"
    with monkeypatch.context() as patched:
        patched.setenv("RESNET_JAX_FAULT", "after_checkpoint@4:eio")
        with pytest.raises(OSError):
            run(cfg, run_dir)
    assert json.loads((run_dir / "summary.json").read_text())["step"] == 4
    run(cfg, run_dir)
    return record(run_dir)


def assert_matches(case: str, measured: dict[str, list[float]], expected: dict[str, list[float]]) -> None:
    later = LATER_RTOL[case.split("-")[0]]
    assert measured.keys() == expected.keys()
    np.testing.assert_allclose(
        measured["train/loss"][0], expected["train/loss"][0], rtol=FIRST_RTOL, err_msg=case
    )
    for key in measured:
        assert len(measured[key]) == len(expected[key]), key
        np.testing.assert_allclose(measured[key], expected[key], rtol=later, err_msg=f"{case} {key}")


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads(RECORDS.read_text())


@pytest.mark.bits
@pytest.mark.parametrize("case", CASES)
def test_a_single_run_trains_its_golden_record(case: str, golden: dict, tmp_path: Path) -> None:
    assert_matches(case, measure_single(case, tmp_path), golden["single"][case])


@pytest.mark.bits
@pytest.mark.parametrize("case", ["mlp", "resnet8"])
def test_a_population_of_three_trains_each_members_record(case: str, golden: dict, tmp_path: Path) -> None:
    members = measure_population(case, tmp_path)
    for seed, measured in enumerate(members):
        assert_matches(case, measured, golden["population"][case][seed])
    assert_matches(case, members[0], golden["single"][case])  # seed 0 is the single run


@pytest.mark.bits
def test_a_resumed_run_trains_the_uninterrupted_record(golden: dict, tmp_path: Path, monkeypatch) -> None:
    measured = measure_resumed("resnet8-plain", tmp_path, monkeypatch)
    assert_matches("resnet8-plain", measured, golden["single"]["resnet8-plain"])


def write_records(root: Path) -> None:
    """Measure every case with this code and commit the result as the records."""
    records = {
        "single": {case: measure_single(case, root) for case in CASES},
        "population": {case: measure_population(case, root) for case in ("mlp", "resnet8")},
    }
    RECORDS.parent.mkdir(exist_ok=True)
    RECORDS.write_text(json.dumps(records, indent=1) + "\n")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as scratch:
        write_records(Path(scratch))
    print(f"wrote {RECORDS}", file=sys.stderr)
