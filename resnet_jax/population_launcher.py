"""The sweep's population launcher (`launcher=population`): a sweep's jobs that differ only in
`resnet_jax.population.POPULATION_KEYS` are trained as one compiled program each, in the launching process.

Each job's config and run directory are the ones the basic launcher would give it (Hydra's own sweep config
and `hydra.sweep.dir`/`hydra.sweep.subdir`), so the run directories cannot tell which launcher wrote them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, configure_log, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

from resnet_jax import population, rules
from resnet_jax.config import to_config
from resnet_jax.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class PopulationLauncherConf:
    _target_: str = "hydra_plugins.resnet_jax_launchers.PopulationLauncher"
    # members per compiled program; null: as many as fit in 80 % of the device's free memory, from XLA's
    # memory analysis of one member's compiled chunk
    max_members: int | None = None


ConfigStore.instance().store(group="hydra/launcher", name="population", node=PopulationLauncherConf)


def check(launcher: dict) -> None:
    """The population launcher's settings (any other launcher's are its own business)."""
    ours = launcher.get("_target_") == PopulationLauncherConf._target_
    if ours and launcher.get("max_members") is not None:
        rules.positive("hydra.launcher.max_members", launcher["max_members"])


class PopulationLauncher(Launcher):
    def __init__(self, max_members: int | None = None) -> None:
        self.max_members = max_members
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context

    def _member_jobs(self, job_overrides: Sequence[Sequence[str]], first: int) -> list[population.MemberJob]:
        """Each job's config and run directory, exactly as the basic launcher composes them."""
        jobs = []
        for number, overrides in enumerate(job_overrides, start=first):
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = number
                sweep_config.hydra.job.num = number
            HydraConfig.instance().set_config(sweep_config)
            run_dir = Path(str(sweep_config.hydra.sweep.dir)) / str(sweep_config.hydra.sweep.subdir)
            name = str(sweep_config.hydra.job.override_dirname) or "default"
            jobs.append(population.MemberJob(to_config(sweep_config), run_dir, tuple(overrides), name))
        return jobs

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        jobs = self._member_jobs(job_overrides, initial_job_idx)
        configure_log(self.config.hydra.job_logging, self.config.hydra.verbose)  # what a single job logs
        codes: dict[Path, int] = {}
        for members in population.populations(jobs, self.max_members):
            log.info("population of %d: %s", len(members), "; ".join(m.name for m in members))
            code = _train(members, sweep_dir)
            codes.update({m.run_dir: code for m in members})
        return [
            JobReturn(
                overrides=list(job.overrides), _return_value=codes[job.run_dir], status=JobStatus.COMPLETED
            )
            for job in jobs
        ]


def _train(members: list[population.MemberJob], sweep_dir: Path) -> int:
    """One population; its failure is recorded in its members' directories and the sweep goes on."""
    try:
        summaries = population.train_population(members, group=members[0].config.name, wandb_dir=sweep_dir)
    except UserError as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            log.exception("error")
        log.error("error: %s", exc)
        return exc.exit_code
    except Exception:
        log.exception("population failed: %s", ", ".join(str(m.run_dir) for m in members))
        return 1
    for job, summary in zip(members, summaries, strict=True):
        final = summary.get("final", {})
        log.info("%s: %s at step %s, train error %s %%, test error %s %%", job.name, summary["status"],
                 summary["step"], final.get("train/error"), final.get("test/error"))  # fmt: skip
    return 0
