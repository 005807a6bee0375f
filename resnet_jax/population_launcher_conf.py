"""The population launcher's settings (`hydra.launcher` of `launcher=population`), registered in Hydra's
ConfigStore as `hydra/launcher: population`.

A module of its own because Hydra's plugin discovery imports it (`hydra_plugins.resnet_jax_launchers`) in
every Hydra app, where the option must exist before the launcher is made: it imports Hydra and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class PopulationLauncherConf:
    _target_: str = "hydra_plugins.resnet_jax_launchers.PopulationLauncher"
    # members per compiled program; null: as many as fit in 80 % of the device's free memory, from XLA's
    # memory analysis of the group's compiled chunk (measured where the program runs)
    max_members: int | None = None
    backend: str = "local"  # one of population_launcher.BACKENDS
    # how a program computes its members (population.LAYOUTS): auto is in_turn on CPU, vmap on GPU/TPU
    layout: str = "auto"
    # the submitit backends' settings, the keys of launcher=submitit_slurm (submitit_local: its resources)
    executor: dict[str, Any] = field(default_factory=dict)


ConfigStore.instance().store(group="hydra/launcher", name="population", node=PopulationLauncherConf)
