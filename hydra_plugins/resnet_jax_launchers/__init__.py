"""resnet_jax's Hydra launchers, where Hydra looks for launchers (the `hydra_plugins` namespace package).

Hydra imports every module of `hydra_plugins` whenever any Hydra app starts (plugin discovery), so this one
imports no more than Hydra does: each launcher hands its work to the class of the same name in `resnet_jax`,
imported when Hydra makes the launcher (JAX and the training code take a second to import; Hydra's own
launchers import their dependencies as late, for the same reason)."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from resnet_jax import population_launcher_conf  # noqa: F401  (the `hydra/launcher: population` option)


class _HandedOver(Launcher):
    """A launcher whose work is done by `launcher`, an `implementation()` built from the same keys."""

    def __init__(self, **params: Any) -> None:
        self.launcher = self.implementation()(**params)

    @staticmethod
    @abstractmethod
    def implementation() -> type[Launcher]:
        """The class that does the work (abstract here, so Hydra does not list this one as a launcher)."""

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.launcher.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        return self.launcher.launch(job_overrides, initial_job_idx)


class SlurmLauncher(_HandedOver):
    """`launcher=submitit_slurm`: resnet_jax.slurm.SlurmLauncher."""

    @staticmethod
    def implementation() -> type[Launcher]:
        from resnet_jax.slurm import SlurmLauncher

        return SlurmLauncher


class PopulationLauncher(_HandedOver):
    """`launcher=population`: resnet_jax.population_launcher.PopulationLauncher."""

    @staticmethod
    def implementation() -> type[Launcher]:
        from resnet_jax.population_launcher import PopulationLauncher

        return PopulationLauncher
