"""Hydra's own launcher test suites (`hydra.test_utils.launcher_common_tests`) against the population
launcher, in a pytest process of their own: each suite's app configures logging and Hydra's process-wide
state (the version base) as an app does, which would leak into the tests that share a worker with them."""

from __future__ import annotations

import re
import subprocess
import sys

from helpers import REPO, command_env

SUITES = "launcher_suites.py"
# LauncherTestSuite 9 cases, BatchedSweeperTestSuite 1, IntegrationTestSuite 11 (Hydra 1.3)
CASES = 21


def test_the_population_launcher_passes_hydras_launcher_suites(tmp_path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(REPO / "tests/launcher_suites.py"),
        ],
        cwd=tmp_path,
        env=command_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout[-5000:]
    counts = dict(
        (word, int(n)) for n, word in re.findall(r"(\d+) (passed|failed|skipped|error)", out.stdout)
    )
    assert counts == {"passed": CASES}, out.stdout[-2000:]
