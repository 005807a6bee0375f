"""Hydra's own launcher test suites (`hydra.test_utils.launcher_common_tests`) against the population
launcher (the SLURM launcher's: tests/cluster), in a pytest process of their own: each suite's app
configures logging and Hydra's process-wide state (the version base) as an app does, which would leak into
the tests that share a worker with them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from helpers import REPO, command_env

SUITES = REPO / "tests" / "launcher_suites.py"
# LauncherTestSuite 9 cases, BatchedSweeperTestSuite 1, IntegrationTestSuite 11 (Hydra 1.3)
CASES = 21
SLURM_CASES = 20  # LauncherTestSuite and IntegrationTestSuite


def run_suites(tmp_path: Path, marker: str) -> dict[str, int]:
    """The suites' cases of `marker` in a pytest process of their own: how many passed, failed, skipped."""
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", marker, str(SUITES)],
        cwd=tmp_path,
        env=command_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout[-5000:]
    said = re.findall(r"(\d+) (passed|failed|skipped|error)", out.stdout)
    return {word: int(number) for number, word in said}


def test_the_population_launcher_passes_hydras_launcher_suites(tmp_path: Path) -> None:
    assert run_suites(tmp_path, "not cluster") == {"passed": CASES}
