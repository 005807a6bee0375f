"""The sweep's population launcher (`launcher=population`): a sweep's jobs that differ only in
`resnet_jax.population.POPULATION_KEYS` are trained as one compiled program each.

Each job's config and run directory are the ones the basic launcher would give it (Hydra's own sweep config
and `hydra.sweep.dir`/`hydra.sweep.subdir`), so the run directories cannot tell which launcher wrote them.
`hydra.launcher.backend` says where the programs run: one after another in the launching process (`local`),
or each group of jobs as one submitit job (`submitit_local`, `submitit_slurm`), requeued on preemption or
time limit and resumed from its members' checkpoints, as single runs are (`resnet_jax.slurm`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, configure_log, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from resnet_jax import lifecycle, objective, outcome, population, preflight, rules, slurm
from resnet_jax.composition import to_config
from resnet_jax.config import as_dict
from resnet_jax.errors import ConfigError, UserError
from resnet_jax.population_launcher_conf import PopulationLauncherConf
from resnet_jax.rundir import RunDir

log = logging.getLogger(__name__)


BACKENDS = ("local", "submitit_local", "submitit_slurm")
PROCESS_KEYS = ("nodes", "tasks_per_node")  # the executor's keys that make a group's job several processes


def check(launcher: dict) -> None:
    """The population launcher's settings (any other launcher's are its own business)."""
    if launcher.get("_target_") != PopulationLauncherConf._target_:
        return
    if launcher.get("max_members") is not None:
        rules.positive("hydra.launcher.max_members", launcher["max_members"])
    rules.one_of("hydra.launcher.backend", launcher.get("backend"), BACKENDS)
    rules.one_of("hydra.launcher.layout", launcher.get("layout"), population.LAYOUTS)
    for key in PROCESS_KEYS:  # several JAX processes per group come from SLURM's srun alone
        value = (launcher.get("executor") or {}).get(key)
        if value is None:
            continue
        rules.positive(f"hydra.launcher.executor.{key}", value)
        if value > 1 and launcher.get("backend") != "submitit_slurm":
            raise ConfigError(
                f"hydra.launcher.executor.{key}={value} needs hydra.launcher.backend="
                "submitit_slurm (only SLURM starts a group's job as several JAX processes); "
                "set it to 1 or choose that backend"
            )


@dataclass
class PopulationJob:
    """One submitit job: a group trained as one program, or as smaller ones when it does not fit (sized where
    the job runs, when `max_members` is unset). Preempted or out of time, submitit calls `checkpoint` and
    requeues the same call, which resumes every member from its run directory."""

    sweep_dir: Path
    max_members: int | None
    layout: str
    job_logging: dict[str, Any]
    verbose: Any = False

    def __call__(self, members: list[population.MemberJob]) -> int:
        configure_log(OmegaConf.create(self.job_logging), self.verbose)
        codes = _train(members, self.sweep_dir, fit_to_memory=self.max_members is None, layout=self.layout)
        return slurm.completed(max(codes.values()))

    def checkpoint(self, members: list[population.MemberJob]) -> submitit.helpers.DelayedSubmission:
        return submitit.helpers.DelayedSubmission(self, members)


class PopulationLauncher(Launcher):
    def __init__(
        self, *, max_members: int | None, backend: str, layout: str, executor: dict[str, Any]
    ) -> None:
        """Hydra passes every key of the launcher's config: `PopulationLauncherConf` owns their defaults."""
        self.max_members, self.backend, self.layout = max_members, backend, layout
        if OmegaConf.is_config(executor):
            executor = OmegaConf.to_container(executor, resolve=True)
        self.executor: dict[str, Any] = dict(executor)
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def _sweep_config(self, overrides: Sequence[str], number: int) -> DictConfig:
        """The job's config exactly as the basic launcher composes it."""
        sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = number
            sweep_config.hydra.job.num = number
        return sweep_config

    def _run_job(self, sweep_config: DictConfig, task_function: TaskFunction) -> JobReturn:
        """One job's return, through Hydra's own `run_job` (its callbacks, its complete `JobReturn`)."""
        return run_job(
            hydra_context=self.hydra_context,
            task_function=task_function,
            config=sweep_config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        """Train the jobs as populations, then return each job's objective as the task would have (Hydra's
        callbacks fire for every job, after its population trained). A task function that is not
        resnet_jax's (`trains_populations`) is called for each job in turn, as the basic launcher does."""
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        configs = [self._sweep_config(o, n) for n, o in enumerate(job_overrides, start=initial_job_idx)]
        if not getattr(self.task_function, "trains_populations", False):
            return [self._run_job(sweep_config, self.task_function) for sweep_config in configs]
        jobs = [member_job(sweep_config) for sweep_config in configs]
        configure_log(self.config.hydra.job_logging, self.config.hydra.verbose)  # what a single job logs
        if self.backend == "local":
            for members in population.form_groups(jobs, self.max_members or len(jobs)):
                _train(members, sweep_dir, fit_to_memory=self.max_members is None, layout=self.layout)
        else:
            self._submit(jobs, sweep_dir)
        # each job's objective from its run directory, whatever process wrote it: a job without a result
        # (failed, diverged, cancelled, killed) returns None, as the task does
        return [
            self._run_job(sweep_config, lambda _cfg, job=job: recorded_objective(job))
            for sweep_config, job in zip(configs, jobs, strict=True)
        ]

    def _submit(self, jobs: list[population.MemberJob], sweep_dir: Path) -> None:
        """One submitit job per group (split by `max_members` here when it is set, so that the parts run at
        once), waited for."""
        groups = population.form_groups(jobs, self.max_members or len(jobs))
        settings = {
            **self.executor,
            "submitit_folder": self.executor.get("submitit_folder") or str(sweep_dir / ".submitit" / "%j"),
        }
        executor, params = slurm.make_executor(self.backend, settings)
        task = PopulationJob(
            sweep_dir,
            self.max_members,
            self.layout,
            OmegaConf.to_container(self.config.hydra.job_logging, resolve=True),
            self.config.hydra.verbose,
        )
        for members in groups:
            log.info("population job of %d: %s", len(members), "; ".join(m.name for m in members))

        def submit_and_wait() -> None:
            for job in executor.map_array(task, groups):
                job.results()  # raises for a job that ended without a result: its run directories say so

        if self.backend == "submitit_slurm":
            slurm.watched(params, submit_and_wait)
        else:
            submit_and_wait()


def member_job(sweep_config: DictConfig) -> population.MemberJob:
    """A job of the sweep as a population's member: its config and run directory."""
    HydraConfig.instance().set_config(sweep_config)  # what the run directory's interpolations read
    run_dir = Path(str(sweep_config.hydra.sweep.dir)) / str(sweep_config.hydra.sweep.subdir)
    name = str(sweep_config.hydra.job.override_dirname) or "default"
    overrides = tuple(sweep_config.hydra.overrides.task)
    checked = preflight.checked_ahead(sweep_config.hydra)
    return population.MemberJob(to_config(sweep_config), run_dir, overrides, name, checked)


def recorded_objective(job: population.MemberJob) -> float | None:
    """The job's objective as its run directory records it; None when it holds no completed run of it."""
    code, _, summary = RunDir(job.run_dir, primary=False).outcome(as_dict(job.config))
    return None if code or summary is None else objective.value(job.config, summary)


def member_line(name: str, summary: dict) -> str:
    """What a completed member reached, as its summary says: its errors where it has them."""
    said = f"{name}: {summary['status']} at step {summary['step']}"
    final = summary.get("final", {})
    errors = [
        f"{label} {final[key]:.2f} %"
        for key, label in (("train/error", "train error"), ("test/error", "test error"))
        if isinstance(final.get(key), (int, float))
    ]
    return f"{said}: {', '.join(errors)}" if errors else said


def _train(
    members: list[population.MemberJob], sweep_dir: Path, *, fit_to_memory: bool, layout: str
) -> dict[Path, int]:
    """One population (in smaller ones if it does not fit in memory), each member's exit code; a failure is
    recorded in its members' directories and the sweep goes on."""
    log.info("population of %d: %s", len(members), "; ".join(m.name for m in members))
    codes = {m.run_dir: 0 for m in members}
    try:
        summaries = lifecycle.train_population(
            members,
            group=members[0].config.name,
            wandb_dir=sweep_dir,
            fit_to_memory=fit_to_memory,
            layout=layout,
        )
    except population.TooLarge as exc:
        log.info("%d members do not fit in the device's memory: %d per program", len(members), exc.fit)
        for part in population.form_groups(members, exc.fit):
            codes.update(_train(part, sweep_dir, fit_to_memory=False, layout=layout))
        return codes
    except UserError as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            log.exception("error")
        log.error("error: %s", exc)
        return dict.fromkeys(codes, exc.exit_code)
    except Exception:
        log.exception("population failed: %s", ", ".join(str(m.run_dir) for m in members))
        return dict.fromkeys(codes, 1)
    for job, summary in zip(members, summaries, strict=True):
        if summary["status"] == "completed":  # one that did not has said why, once (lifecycle.Life)
            log.info("%s", member_line(job.name, summary))
        codes[job.run_dir] = outcome.exit_code(summary)  # a member that diverged or was refused
    return codes
