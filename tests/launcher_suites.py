"""Hydra's own launcher test suites, run against the population launcher (and, marked `cluster`, the SLURM
launcher) by tests/test_conformance.py and tests/cluster, in a process of their own (they configure logging
and Hydra's global state as an app does).

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

import resnet_jax.population_launcher  # noqa: F401  stores `hydra/launcher=population` in Hydra's ConfigStore


@mark.parametrize("launcher_name, overrides", [("population", [])])
class TestPopulationLauncher(LauncherTestSuite):
    pass


# the basic sweeper in batches of 2: the launcher is called three times, each with its jobs' first index
@mark.parametrize("launcher_name, overrides", [("population", ["hydra.sweeper.max_batch_size=2"])])
class TestPopulationLauncherBatches(BatchedSweeperTestSuite):
    pass


@mark.parametrize("task_launcher_cfg, extra_flags", [({}, ["-m", "hydra/launcher=population"])])
class TestPopulationLauncherIntegration(IntegrationTestSuite):
    pass


# the SLURM launcher (resnet_jax.slurm.SlurmLauncher): run by tests/cluster against a real SLURM only
SLURM = [
    "hydra.launcher._target_=hydra_plugins.resnet_jax_launchers.SlurmLauncher",
    "hydra.launcher.partition=cpu",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
]


@mark.cluster
@mark.parametrize("launcher_name, overrides", [("submitit_slurm", SLURM)])
class TestSlurmLauncher(LauncherTestSuite):
    pass


@mark.cluster
@mark.parametrize("task_launcher_cfg, extra_flags", [({}, ["-m", "hydra/launcher=submitit_slurm", *SLURM])])
class TestSlurmLauncherIntegration(IntegrationTestSuite):
    pass
