"""Hydra's own launcher test suites, run against the population launcher (SLURM's: tests/cluster).

The suites train nothing of this project: their tasks are Hydra's test apps, which the population launcher
calls one job at a time through Hydra's `run_job`, as the basic launcher does (it trains populations only of
resnet_jax's task, `resnet_jax.train`). Every case applies and passes.
"""

from __future__ import annotations

from hydra.test_utils.launcher_common_tests import (
    BatchedSweeperTestSuite,
    IntegrationTestSuite,
    LauncherTestSuite,
)
from pytest import mark


@mark.parametrize("launcher_name, overrides", [("population", [])])
class TestPopulationLauncher(LauncherTestSuite):
    pass


@mark.parametrize("launcher_name, overrides", [("population", [])])
class TestPopulationLauncherBatches(BatchedSweeperTestSuite):
    pass


@mark.parametrize("task_launcher_cfg, extra_flags", [({}, ["-m", "hydra/launcher=population"])])
class TestPopulationLauncherIntegration(IntegrationTestSuite):
    pass
